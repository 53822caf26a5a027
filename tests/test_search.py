"""flows search: the space file, the study (resume, identity), cheap-first trials, the Pareto
front and the comparison with uniform models, and bad input."""
import json
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from flows.errors import ConfigError
from flows.search import SearchConfig, make_sampler
from flows.search import report as rep
from flows.search import study as st
from flows.search.inputs import DesignInputs
from flows.search.space import Design, SearchSpace, load_space
from qat.data import load_dataset
from qat.models import default_widths

TINY = {"arch": "tfc", "weight_bits": [2], "act_bits": [2], "in_bits": [2], "prune": [0.0, 0.5]}


def test_space_defaults_cover_every_layer():
    space = SearchSpace.default("lenet")
    assert len(space.weight_bits) == 3 and len(space.act_bits) == 2 and len(space.prune) == 2
    assert space.rank == ((None, 32, 72), (None, 8, 24), (None,))  # hidden layers at 1/8 and 1/4; output whole
    assert space.pixels == (0.5, 0.75, 1.0) and space.distill == (False, True)
    assert space.teacher.model == "lenet-w8a8"
    assert space.size == 4 ** 3 * 3 ** 2 * 4 * 4 ** 2 * 3 * 3 * 3 * 2
    for arch in ("tfc", "sfc", "lfc"):
        SearchSpace.default(arch).check_data(784, 10)  # every default rank fits its layer on MNIST


def test_a_space_file_without_the_new_techniques_means_what_it_meant():
    space = SearchSpace.from_dict(TINY)
    assert space.rank is None and space.pixels == (1.0,) and space.distill == (False,)
    assert set(space.to_dict()) == {"arch", "weight_bits", "act_bits", "in_bits", "prune", "width_multiple"}


def test_designs_apply_ranks_pixels_and_distillation():
    space = SearchSpace.from_dict({**TINY, "rank": [[None, 16], [None, 16], [None], [None]], "pixels": [0.5, 0.6, 1.0],
                                   "distill": [False, True], "teacher_model": "tfc-w2a2"})
    choices = {"w": [2] * 4, "a": [2] * 3, "in": 2, "p": [0.0, 0.75, 0.0], "r": [16, 16, None, None], "pix": 0.6,
               "kd": True}
    design = space.design(choices, 64, 10)
    assert design.kept == 32  # 38.4 pixels snapped down to a multiple of 8
    assert design.spec.ranks == (16, None, None, None)  # layer 1 is pruned to 16 wide: a rank 16 keeps it whole
    assert design.distill and Design.from_dict(design.to_dict()) == design
    whole = space.design({**choices, "r": [None] * 4, "pix": 1.0, "kd": False}, 64, 10)
    assert whole.kept is None and whole.spec.ranks is None and whole.to_dict() == whole.spec.to_dict()


def test_pruned_widths_snap_to_the_multiple():
    space = SearchSpace.from_dict({**TINY, "arch": "lenet", "width_multiple": 16})
    spec = space.spec([2, 2, 2], [2, 2], 2, [0.5, 0.75])
    assert spec.widths == (144, 16) and all(w % 16 == 0 for w in spec.widths)
    assert space.spec([2, 2, 2], [2, 2], 2, [0.0, 0.0]).widths is None  # unpruned: the zoo's widths


@pytest.mark.parametrize("change, field", [
    ({"prune": [1.0]}, "prune"), ({"weight_bits": []}, "weight_bits"), ({"act_bits": [0]}, "act_bits"),
    ({"weight_bits": [[2], [2]]}, "weight_bits"), ({"arch": "vgg"}, "field 'arch'"), ({"colour": [1]}, "colour"),
    ({"width_multiple": 0}, "width_multiple"), ({"rank": [0]}, "rank"), ({"rank": [[8]] * 3}, "rank"),
    ({"pixels": [0.0]}, "pixels"), ({"pixels": [1.5]}, "pixels"), ({"pixels": []}, "pixels"),
    ({"distill": [True]}, "distill"), ({"distill": ["yes"]}, "distill"),
    ({"distill": [True], "teacher": "t.pt", "teacher_model": "tfc-w8a8"}, "teacher"),
    ({"distill": [True], "teacher_model": "tfc-w9a9"}, "teacher_model"), ({"temperature": 2.0}, "temperature"),
    ({"distill": [True], "teacher_model": "tfc-w8a8", "alpha": 2}, "alpha")])
def test_bad_space_names_the_field(change, field):
    with pytest.raises(ConfigError, match=field):
        SearchSpace.from_dict({**TINY, **change})


def test_space_file_round_trips(tmp_path):
    path = tmp_path / "space.yaml"
    space = SearchSpace.from_dict(TINY)
    path.write_text(str(space.to_dict()).replace("'", '"'))
    assert load_space(path) == space
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "missing.yaml")


def _trial(number, values, acc_gap, fits=0.0, val=0.9):
    t = create_trial(values=list(values), params={"x": number}, distributions={"x": CategoricalDistribution(list(range(20)))},
                     system_attrs={"constraints:accuracy": acc_gap, "constraints:fits": fits},
                     user_attrs={"val_accuracy": val})
    t.number = number
    return t


def test_pareto_front_keeps_feasible_non_dominated_trials():
    trials = [_trial(0, (10, 100), -0.01), _trial(1, (5, 200), -0.02), _trial(2, (5, 90), 0.05),  # 2 misses target
              _trial(3, (20, 300), -0.03), _trial(4, (4, 500), 0.0, fits=1.0),  # 3 dominated, 4 does not fit
              _trial(5, (30, 400), -0.05, val=0.95)]  # slower and larger, but more accurate: on the front
    assert [t.number for t in rep.pareto_front(trials)] == [1, 0, 5]


def _row(name, acc, cycles, lut, fits=True):
    return {"name": name, "spec": {"arch": "tfc", "weight_bits": [1], "act_bits": [1], "in_bits": 1},
            "test_accuracy": {"mean": acc}, "estimate": {"cycles_per_image": cycles, "total": {"LUT": lut}, "fits": fits}}


def test_gain_compares_designs_at_the_best_uniform_accuracy():
    uniform = [_row("tfc-w1a1", 0.90, 100, 1000), _row("tfc-w8a8", 0.95, 400, 8000)]
    front = [_row("a", 0.949, 100, 3000), _row("b", 0.951, 200, 2000), _row("c", 0.93, 50, 500)]
    gain = rep.gain_over_uniform(front, uniform)
    assert gain["best_uniform"] == "tfc-w8a8" and gain["matching_designs"] == 2  # c is 2 points below
    assert gain["latency_ratio"] == 4.0 and gain["lut_ratio"] == 4.0
    none = rep.chosen_per_target(front, [0.99])[0]
    assert none["design"] is None and none["closest"]["test_accuracy"] == 0.951


def test_trials_estimate_first_train_then_resume_and_refuse_another_study(tmp_path):
    cfg = SearchConfig(arch="tfc", out=tmp_path / "s", trials=2, epochs=1, target_accuracy=0.5, seed=1)
    space = SearchSpace.from_dict(TINY)
    ds = load_dataset("digits")
    study = st.open_study(cfg, space, make_sampler("random", 0))
    evaluator = st.Evaluator(cfg, space, st.validation_split(ds, cfg.val_fraction, cfg.seed))
    st.run_trials(study, evaluator, cfg.trials)
    done = study.get_trials(deepcopy=False)
    assert len(done) == 2 and all(t.state == TrialState.COMPLETE for t in done)
    for t in done:
        widths = t.user_attrs["spec"].get("widths") or list(default_widths("tfc"))
        assert t.values[0] == t.user_attrs["estimate"]["cycles_per_image"]
        assert ("val_accuracy" in t.user_attrs) or ("not_trained" in t.user_attrs) or ("duplicate_of" in t.user_attrs)
        assert widths[0] in (64, 32)
    again = st.open_study(cfg, space, make_sampler("random", 0))  # resume: the same study, one more trial
    st.run_trials(again, evaluator, 3)
    assert st.finished_count(again) == 3
    with pytest.raises(ConfigError, match="another design.*board='pynq-z1'"):
        st.open_study(SearchConfig(arch="tfc", board="pynq-z1", out=cfg.out, epochs=1, target_accuracy=0.5, seed=1),
                      space, make_sampler("random", 0))


NEW = {**TINY, "prune": [0.0], "rank": [[16], [None], [None], [None]], "pixels": [0.5], "distill": [True],
       "teacher_model": "tfc-w2a2", "teacher_epochs": 1}


def test_low_rank_pixels_and_distillation_reach_a_trial_and_the_report(tmp_path):
    cfg = SearchConfig(arch="tfc", out=tmp_path / "s", trials=1, epochs=1, target_accuracy=0.3, seed=1)
    space = SearchSpace.from_dict(NEW)
    data = st.validation_split(load_dataset("digits"), cfg.val_fraction, cfg.seed)
    study = st.open_study(cfg, space, make_sampler("random", 0))
    st.run_trials(study, st.Evaluator(cfg, space, data), 1)
    t = study.get_trials(deepcopy=False)[0]
    assert t.state == TrialState.COMPLETE and "val_accuracy" in t.user_attrs, t.user_attrs
    assert t.user_attrs["spec"]["ranks"] == [16, None, None, None]
    assert t.user_attrs["spec"]["kept_pixels"] == 32 and t.user_attrs["spec"]["distill"]
    # the untrained estimate saw both shapes: 32 input pixels of 2 bits (the input quantiser runs on the host
    # when in_bits < 8, so the DMA moves 32 x 2 bits = 8 bytes), two units for layer 0
    est = t.user_attrs["estimate"]
    assert est["in_bytes"] == 32 * 2 // 8 and sum(1 for layer in est["layers"] if layer["op_type"].startswith("MVAU")) == 5
    teacher = tmp_path / "s" / "teacher" / "tfc-w2a2-e1-s1.pt"
    stamp = teacher.stat().st_mtime_ns
    DesignInputs(space, data, cfg).teacher()  # another worker or a rerun loads it, never retrains
    assert teacher.stat().st_mtime_ns == stamp
    row = rep.trial_rows(study.get_trials(deepcopy=False))[0]
    assert rep._design(row["spec"]).endswith("ranks [16, '-', '-', '-'] pixels 32 distilled")


def test_sensitivity_has_a_row_per_new_technique():
    space = SearchSpace.from_dict({**TINY, "prune": [0.0], "rank": [[None, 16], [None], [None], [None]],
                                   "pixels": [0.5, 1.0], "distill": [False, True], "teacher_model": "tfc-w2a2"})
    rows = {change: choices for _, change, choices in rep.sensitivity_variants(space)}
    assert set(rows) == {"-", "low rank 16", "pixels kept 100% -> 50%", "distillation on"}
    designs = {change: space.design(c, 64, 10) for change, c in rows.items()}
    assert designs["-"] == Design(designs["-"].spec) and designs["-"].spec.ranks is None  # the reference: all off
    assert designs["low rank 16"].spec.ranks == (16, None, None, None)
    assert designs["pixels kept 100% -> 50%"].kept == 32 and designs["distillation on"].distill


def test_a_teacher_file_that_does_not_match_is_refused_before_any_trial(tmp_path):
    import torch

    path = tmp_path / "teacher.ts"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))), str(path))
    space = SearchSpace.from_dict({**TINY, "distill": [False, True], "teacher": str(path)})
    cfg = SearchConfig(arch="tfc", out=tmp_path / "s")
    with pytest.raises(ConfigError, match="field 'teacher'.*the student has 10 classes"):
        DesignInputs(space, load_dataset("digits"), cfg).check()


class EstimateOnly(st.Evaluator):
    """The search's evaluator with a given estimate instead of the flow's (the decision is under test)."""

    estimate_result: dict = None

    def estimate(self, spec, work):
        return self.estimate_result

    def train(self, spec, trial):
        raise AssertionError("a design decided from its estimate must not be trained")


def _estimate(cycles, lut, fits):
    return {"cycles_per_image": cycles, "total": {"LUT": lut}, "fits": fits,
            "over_capacity": [] if fits else ["BRAM_18K"]}


def test_misfit_and_dominated_designs_are_not_trained(tmp_path):
    cfg = SearchConfig(arch="tfc", out=tmp_path / "s", trials=1, epochs=1, target_accuracy=0.5)
    space = SearchSpace.from_dict(TINY)
    study = st.open_study(cfg, space, make_sampler("random", 0))
    study.add_trial(_trial(0, (50, 1000), -0.1))  # a finished design that met the target
    evaluator = EstimateOnly(cfg, space, st.validation_split(load_dataset("digits"), 0.1, 0))
    for estimate, why in ((_estimate(10, 500, False), "does not fit: BRAM_18K"),
                          (_estimate(60, 1200, True), "dominated before training by trial 0")):
        evaluator.estimate_result = estimate
        study.optimize(evaluator, n_trials=1)
        t = study.get_trials(deepcopy=False)[-1]
        assert t.user_attrs["not_trained"].startswith(why) and "val_accuracy" not in t.user_attrs
        assert max(st.constraints(t)) == 1.0  # not known to meet the target: never on the front


def test_a_distilled_twin_reuses_the_estimate_of_its_shape(tmp_path):
    cfg = SearchConfig(arch="tfc", out=tmp_path / "s", trials=1, epochs=1, target_accuracy=0.5)
    space = SearchSpace.from_dict({**TINY, "prune": [0.0], "distill": [False, True], "teacher_model": "tfc-w2a2"})
    study = st.open_study(cfg, space, make_sampler("random", 0))
    plain = space.design({"w": [2] * 4, "a": [2] * 3, "in": 2, "p": [0.0] * 3}, 64, 10)
    done = _trial(0, (50, 1000), 0.1)
    done.user_attrs.update(spec=plain.to_dict(), estimate=_estimate(50, 1000, True))
    study.add_trial(done)
    evaluator = st.Evaluator(cfg, space, st.validation_split(load_dataset("digits"), 0.1, 0))
    trial = study.ask()
    assert evaluator._same_shape(trial, Design(plain.spec, None, True)) == _estimate(50, 1000, True)
    assert evaluator._same_shape(trial, Design(plain.spec, 32, True)) is None  # fewer pixels: another shape


@pytest.mark.slow
def test_lfc_at_8_bits_misses_the_board_and_is_not_trained(tmp_path):
    cfg = SearchConfig(arch="lfc", out=tmp_path / "s", trials=1, epochs=1, target_accuracy=0.5)
    space = SearchSpace.from_dict({"arch": "lfc", "weight_bits": [8], "act_bits": [8], "in_bits": [8], "prune": [0.0]})
    study = st.open_study(cfg, space, make_sampler("random", 0))
    st.run_trials(study, st.Evaluator(cfg, space, st.validation_split(load_dataset("digits"), 0.1, 0)), 1)
    t = study.get_trials(deepcopy=False)[0]
    assert t.user_attrs["not_trained"].startswith("does not fit") and "val_accuracy" not in t.user_attrs


def test_rf_sampler_proposes_unseen_designs_in_the_space():
    sampler = make_sampler("rf", 0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial):
        a, b = trial.suggest_categorical("a", [1, 2, 4, 8]), trial.suggest_categorical("b", [0.0, 0.25, 0.5])
        r, kd = trial.suggest_categorical("r", [None, 8, 16]), trial.suggest_categorical("kd", [False, True])
        trial.set_constraint("accuracy", 0.0)
        trial.set_constraint("fits", 0.0)
        return a * (1 - b) + (r or 0) + kd, 1.0 / a

    study.optimize(objective, n_trials=14)
    params = [tuple(t.params.values()) for t in study.trials]
    assert len(study.trials) == 14 and len(set(params[8:])) == len(params[8:])  # past start-up: no repeats
    assert all(t.params["r"] in (None, 8, 16) and t.params["kd"] in (False, True) for t in study.trials)


def flows_cli(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("options, message", [
    ({"target_accuracy": 98}, "--target-accuracy must be in (0, 1]"),
    ({"target_accuracy": float("inf")}, "--target-accuracy must be a finite number"),
    ({"sampler": "smac"}, "unknown --sampler 'smac'"), ({"trials": 0}, "--trials must be at least 1"),
    ({"data": "mnist"}, "--data mnist needs --data-dir"), ({"shift": -1}, "--shift must be 0 or more"),
    ({"jobs": 0}, "--jobs must be at least 1")])
def test_bad_search_config_names_the_option(options, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        SearchConfig(**options)


@pytest.mark.parametrize("args, message", [
    (["--storage", "postgresql://nobody@127.0.0.1:9/none"], "cannot open the study storage 127.0.0.1:9/none"),
    (["--target-accuracy", "nan"], "--target-accuracy must be a finite number"),
    (["--model", "cnv", "--data", "digits"], "cnv needs images of at least 32x32 pixels")])
def test_bad_search_input_is_one_line_exit_2(tmp_path, args, message):
    result = flows_cli("search", "--out", tmp_path / "s", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_contradictory_space_is_one_line_exit_2_before_any_trial(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({**TINY, "rank": [32]}))  # the output layer (64 -> 10) has no rank 32
    result = flows_cli("search", "--space", path, "--out", tmp_path / "s")
    assert result.returncode == 2, result.stderr
    assert "field 'rank' has 32 for layer 3 (64 -> 10), larger than the layer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_equal_accuracy_compares_with_the_cheapest_uniform_model_that_is_as_accurate():
    # w4a4 is as accurate as w8a8 and much faster: the searched design is judged against it, not w8a8
    uniform = [_row("tfc-w2a2", 0.970, 50, 4000), _row("tfc-w4a4", 0.981, 300, 3000),
               _row("tfc-w8a8", 0.982, 1200, 3500), _row("tfc-w8a8-big", 0.99, 10, 10, fits=False)]
    front = [_row("a", 0.980, 100, 3000), _row("b", 0.9855, 600, 1000), _row("c", 0.975, 20, 500, fits=False)]
    rows = rep.iso_accuracy(front, uniform)
    assert len(rows) == 2  # c does not fit
    a, b = rows
    assert a["uniform_peers"] == ["tfc-w4a4", "tfc-w8a8"]  # w2a2 is 1 point below a; the big one does not fit
    assert a["fastest_uniform"] == "tfc-w4a4" and a["latency_ratio"] == 3.0
    assert a["small_uniform"] == "tfc-w4a4" and a["lut_ratio"] == 1.0
    assert b["uniform_peers"] == [] and b["above_uniform"] == "tfc-w8a8" and round(b["above_points"], 2) == 0.35
    assert "latency_ratio" not in b
    assert rep.gain_over_uniform(front, uniform)["iso_accuracy"] == rows


def test_report_trainings_run_ahead_in_processes_and_the_report_reads_them(tmp_path, monkeypatch):
    import qat.train
    from flows.search import parallel
    from qat.models import parse_model_name

    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({**TINY, "pixels": [0.5, 1.0]}))
    cfg = SearchConfig(arch="tfc", out=tmp_path / "s", epochs=1, seeds=2, seed=1, jobs=2, space=space_file)
    space = load_space(space_file)
    ds = load_dataset("digits")
    inputs = DesignInputs(space, st.validation_split(ds, cfg.val_fraction, cfg.seed), cfg)
    sens = [inputs.design(c) for _, _, c in rep.sensitivity_variants(space)]
    pruned = next(d for d in sens if d.kept is not None)
    retrained = [(pruned, tmp_path / "s" / "front" / "0007"), (Design(parse_model_name("tfc-w2a2")), tmp_path / "u")]
    tasks = parallel.report_tasks(cfg, retrained, sens)
    assert len(sens) == 5 and len(tasks) == 2 * 2 + 5  # reference, 3 hidden layers pruned, pixels
    parallel.train_ahead(cfg, tasks)
    assert len(list((tmp_path / "s" / "cache").glob("*.json"))) == len(tasks)

    def no_training(*args, **kwargs):
        raise AssertionError("the report trained a design the pool had trained")
    monkeypatch.setattr(qat.train, "train", no_training)
    cache = rep.Cache(tmp_path / "s" / "cache")
    for design, work in retrained:
        for seed in (1, 2):
            run = rep.trained_run(design, seed, ds, cfg, cache, work, inputs)
            assert 0 <= run["test_accuracy"] <= 1 and run["checkpoint"] == str(work / f"seed{seed}.pt")
            assert (work / f"seed{seed}.pt").is_file()
    assert all(0 <= rep.sensitivity_accuracy(d, cfg, cache, inputs) <= 1 for d in sens)


def test_augmentation_is_part_of_what_a_study_searches_and_of_every_cached_training():
    plain, shifted = SearchConfig(arch="tfc"), SearchConfig(arch="tfc", shift=1)
    assert "shift" not in plain.identity()  # a study made before --shift existed keeps its identity
    assert shifted.identity() == {**plain.identity(), "shift": 1}
    assert plain.training_key() != shifted.training_key() and st.train_config(shifted, 0).shift == 1


def test_the_report_states_each_designs_equal_accuracy_comparison():
    from pathlib import Path

    report = json.loads((Path(__file__).parents[1] / "docs/search/lenet_mnist_layeraware/report.json").read_text())
    uniform = [_row("lenet-w2a2", 0.970, 50, 4000), _row("lenet-w4a4", 0.981, 300, 3000)]
    front = [_row("a", 0.980, 100, 3000), _row("b", 0.99, 600, 1000)]
    report["gain"] = rep.gain_over_uniform(front, uniform)
    text = rep.markdown(report)
    assert "| w[1] a[1] in1 | 98.00 | 100 | 3,000 | lenet-w4a4 | 3.00x (lenet-w4a4) | 1.00x (lenet-w4a4) |" in text
    assert "| w[1] a[1] in1 | 99.00 | 600 | 1,000 | none: +0.90 points over lenet-w4a4 | - | - |" in text


def test_weight_storage_counts_each_weight_at_its_bits():
    import torch

    from qat.models import build_model, parse_model_name
    from qat.train import Checkpoint, DatasetInfo, TrainConfig

    ds = load_dataset("digits")
    spec = parse_model_name("tfc-w2a2")
    model = build_model(spec, ds.image_shape, ds.num_classes, ds.pixel_max)
    ckpt = Checkpoint(spec, DatasetInfo.of(ds), TrainConfig(epochs=1), model.state_dict(), {})
    size = rep.weight_storage(ckpt)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert size["params"] > weights  # batch-norm and scales beside the weights
    side = size["params"] - weights
    assert size["dense_bytes"] == -(-(2 * weights + 32 * side) // 8)
    assert size["float32_bytes"] == 4 * size["params"]
    from qat.compress.storage import storage_report  # the dense-only total is the full report's dense totals
    full = storage_report(ckpt)["total"]
    assert (size["dense_bytes"], size["float32_bytes"], size["params"]) == (
        full["bytes"]["dense_quant"], full["bytes"]["dense_float32"], full["params"])
