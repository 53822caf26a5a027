"""flows search on CNV: its space (9 weight layers, 8 activations, 8 pruned widths, the 8-bit input),
what a convolutional network refuses (other input bits, low rank, pixel pruning, small images), and
trials and the report on a small CIFAR-shaped set (tests/synthetic.py; CIFAR-10 is not on every machine)."""
import json
import subprocess
import sys

import pytest
from optuna.trial import TrialState

import qat.data
from flows.errors import ConfigError
from flows.search import SearchConfig, make_sampler, search
from flows.search import report as rep
from flows.search import study as st
from flows.search.inputs import DesignInputs
from flows.search.space import SearchSpace
from qat.models import build_model
from synthetic import synthetic_cifar

DS = synthetic_cifar(n_train=256, n_test=64)
# every layer at 1 bit, pruned to a few channels (64 and 128 -> 8, 256 -> 24, 512 -> 48): a CNV that trains in a second
TINY = {"arch": "cnv", "weight_bits": [1], "act_bits": [1], "prune": [0.9]}


def test_cnv_default_space_covers_every_layer_with_the_8_bit_input():
    space = SearchSpace.default("cnv")
    assert len(space.weight_bits) == 9 and len(space.act_bits) == 8 and len(space.prune) == 8
    assert space.in_bits == (8,) and space.rank is None and space.pixels == (1.0,)
    assert space.distill == (False, True) and space.teacher.model == "cnv-w8a8"
    assert space.size == 3 ** 9 * 2 ** 8 * 3 ** 8 * 2


def test_cnv_designs_remove_channels_and_neurons_snapped_to_the_multiple():
    space = SearchSpace.from_dict({**TINY, "prune": [0.0, 0.5, 0.9], "width_multiple": 16})
    prune = [0.5, 0.0, 0.9, 0.0, 0.5, 0.9, 0.0, 0.5]
    design = space.design({"w": [1] * 9, "a": [1] * 8, "in": 8, "p": prune}, 3 * 32 * 32, 10)
    assert design.spec.widths == (32, 64, 16, 128, 128, 16, 512, 256)  # 12.8 and 25.6 snap to 16
    assert design.spec.in_bits == 8 and design.kept is None and design.spec.ranks is None
    model = build_model(design.spec, (3, 32, 32), 10, 255)  # the model code takes the pruned widths
    assert [m.out_channels for m in model.conv_features if hasattr(m, "out_channels")] == [32, 64, 16, 128, 128, 16]
    unpruned = space.design({"w": [1] * 9, "a": [1] * 8, "in": 8, "p": [0.0] * 8}, 3 * 32 * 32, 10)
    assert unpruned.spec.widths is None and unpruned.spec.name == "cnv-w1a1"


@pytest.mark.parametrize("change, message", [
    ({"in_bits": [4]}, "field 'in_bits' has [4]; cnv's input quantiser is fixed at 8 bits"),
    ({"in_bits": [4, 8]}, "field 'in_bits' has [4, 8]; cnv's input quantiser is fixed at 8 bits"),
    ({"pixels": [0.5, 1.0]}, "field 'pixels' is for the MLPs; cnv's convolutions need the whole image"),
    ({"rank": [[None, 8]] * 9}, "field 'rank' is for the MLPs (tfc, sfc, lfc, lenet); cnv has no low-rank"),
    ({"rank": [8]}, "field 'rank' is for the MLPs"),
    ({"act_bits": [[1]] * 9}, "field 'act_bits' has 9 per-layer lists; this architecture needs 8"),
    ({"prune": [[0.5]] * 9}, "field 'prune' has 9 per-layer lists; this architecture needs 8")], ids=[
    "in_bits", "in_bits-choice", "pixels", "rank", "rank-flat", "act_bits-count", "prune-count"])
def test_bad_cnv_space_is_refused_naming_the_field(change, message):
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict({**TINY, **change})
    assert message in str(info.value)


def test_cnv_space_accepts_what_changes_nothing():
    plain = SearchSpace.from_dict(TINY)
    assert SearchSpace.from_dict({**TINY, "in_bits": [8], "pixels": [1.0], "rank": None}) == plain
    assert plain.to_dict()["in_bits"] == [8] and SearchSpace.from_dict(plain.to_dict()) == plain


def test_cnv_sensitivity_rows_name_convolutions_and_linears():
    space = SearchSpace.from_dict({**TINY, "weight_bits": [[1, 2]] + [[1]] * 8,
                                   "act_bits": [[1]] * 7 + [[1, 2]], "prune": [[0.9]] * 6 + [[0.5, 0.9]] * 2})
    rows = [(where, change) for where, change, _ in rep.sensitivity_variants(space)]
    assert rows == [("reference", "-"), ("conv 0", "weight bits 2 -> 1"), ("fc 1", "activation bits 2 -> 1"),
                    ("fc 0", "pruned 90%"), ("fc 1", "pruned 90%")]
    for _, _, choices in rep.sensitivity_variants(space):
        assert space.design(choices, 3 * 32 * 32, 10).spec.arch == "cnv"


def test_cnv_design_column_shows_channels_and_linear_widths():
    spec = {"arch": "cnv", "weight_bits": [1] * 9, "act_bits": [1] * 8, "in_bits": 8,
            "widths": [8, 8, 8, 8, 24, 24, 48, 48]}
    assert rep._design(spec).endswith("in8 channels [8, 8, 8, 8, 24, 24] fc [48, 48]")


def test_cnv_on_images_it_cannot_convolve_is_refused_before_any_trial(tmp_path):
    from qat.data import load_dataset

    space = SearchSpace.from_dict(TINY)
    with pytest.raises(ConfigError, match="cnv needs images of at least 32x32 pixels"):
        DesignInputs(space, load_dataset("digits"), SearchConfig(arch="cnv", out=tmp_path / "s")).check()


def flows_cli(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True)


def test_a_cnv_space_file_with_other_input_bits_is_one_line_exit_2(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({**TINY, "in_bits": [2, 8]}))
    result = flows_cli("search", "--model", "cnv", "--space", path, "--out", tmp_path / "s")
    assert result.returncode == 2, result.stderr
    assert "field 'in_bits' has [2, 8]; cnv's input quantiser is fixed at 8 bits" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_a_cnv_trial_is_estimated_as_convolutions_then_trained_with_its_teacher(tmp_path):
    cfg = SearchConfig(arch="cnv", data="cifar10", data_dir=tmp_path, out=tmp_path / "s", trials=1, epochs=1,
                       target_accuracy=0.1, seed=1)
    space = SearchSpace.from_dict({**TINY, "distill": [True], "teacher_model": "cnv-w1a1", "teacher_epochs": 1})
    study = st.open_study(cfg, space, make_sampler("random", 0))
    with pytest.MonkeyPatch.context() as mp:  # the estimate's build loads the data too
        mp.setattr(qat.data, "load_dataset", lambda *args, **kwargs: DS)
        st.run_trials(study, st.Evaluator(cfg, space, st.validation_split(DS, cfg.val_fraction, cfg.seed)), 1)
    t = study.get_trials(deepcopy=False)[0]
    assert t.state == TrialState.COMPLETE and "val_accuracy" in t.user_attrs, t.user_attrs
    assert t.user_attrs["spec"]["widths"] == [8, 8, 8, 8, 24, 24, 48, 48]
    est = t.user_attrs["estimate"]
    ops = [layer["op_type"].rsplit("_", 1)[0] for layer in est["layers"]]
    assert ops.count("MVAU") == 9 and ops.count("ConvolutionInputGenerator") == 8 and ops.count("Pool") == 2
    assert t.values[0] == est["cycles_per_image"] and est["in_bytes"] == 3 * 32 * 32  # 8-bit pixels on the DMA
    assert t.user_attrs["spec"]["distill"] and (tmp_path / "s" / "teacher" / "cnv-w1a1-e1-s1.pt").is_file()


@pytest.mark.slow
def test_a_cnv_search_reports_a_design_with_its_estimate_and_the_uniform_cnv_models(tmp_path):
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({**TINY, "weight_bits": [[1, 2]] + [[1]] * 8}))
    cfg = SearchConfig(arch="cnv", data="cifar10", data_dir=tmp_path, out=tmp_path / "s", space=space_file,
                       trials=2, epochs=1, seeds=1, target_accuracy=0.1, seed=1, sampler="random")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qat.data, "load_dataset", lambda *args, **kwargs: DS)
        search(cfg)
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["front"], report["trial_rows"]
    design = report["front"][0]
    assert design["spec"]["arch"] == "cnv" and design["spec"]["widths"] == [8, 8, 8, 8, 24, 24, 48, 48]
    assert design["estimate"]["cycles_per_image"] > 0 and design["estimate"]["total"]["LUT"] > 0
    assert [r["name"] for r in report["uniform"]] == [f"cnv-{p}" for p in rep.UNIFORM]
    assert [r["where"] for r in report["sensitivity"]] == ["reference", "conv 0"]
    md = (tmp_path / "s" / "report.md").read_text()
    assert "# flows search: cnv on pynq-z2, cifar10" in md and "channels [8, 8, 8, 8, 24, 24] fc [48, 48]" in md
