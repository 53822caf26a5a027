"""``flows search``: a layer-aware search for the cheapest FPGA design at a target accuracy.

Python API (what the command runs)::

    from flows.search import SearchConfig, search
    report = search(SearchConfig(arch="lenet", data="mnist", data_dir="../shared/datasets/mnist",
                                 target_accuracy=0.98, trials=60, out="build/s1"))

The study is an Optuna study (flows.search.study); open it in optuna-dashboard with
``optuna-dashboard sqlite:///build/s1/study.db``. Several workers share one study through
``storage="postgresql://..."`` and ``worker=True``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from flows.search.config import SAMPLERS, SearchConfig
from flows.search.space import SearchSpace, load_space

__all__ = ["SAMPLERS", "SearchConfig", "SearchSpace", "search", "make_sampler"]


def make_sampler(name: str, seed: int):
    import optuna

    # trials set their constraints themselves (Trial.set_constraint); the samplers read them
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=12)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    from flows.search.rf_sampler import RandomForestSampler

    return RandomForestSampler(seed=seed)


def search(cfg: SearchConfig, progress=None) -> dict | None:
    """Run (or resume) the search's trials, then (unless ``cfg.worker``) write the report;
    returns the report dict (None for a worker)."""
    import optuna
    import torch

    from flows.search import report as rep
    from flows.search import study as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(cfg.threads)
    space, ds, inputs = prepare(cfg)
    out = Path(cfg.out)
    inputs.check()  # ranks, teacher: refused before anything is written
    _make_out(out)
    study = st.open_study(cfg, space, make_sampler(cfg.sampler, st.worker_seed(cfg)))
    if not cfg.worker:
        (out / "search.json").write_text(cfg.to_json())
    start = time.perf_counter()
    evaluator = st.Evaluator(cfg, space, inputs.ds, inputs)
    st.run_trials(study, evaluator, cfg.trials,
                  on_trial=(lambda s, t: progress(f"trial {t.number}: {t.state.name} {_summary(t)}")) if progress else None)
    wall = time.perf_counter() - start
    if cfg.worker:
        return None
    cache = rep.Cache(out / "cache")
    if progress:
        progress("retraining the Pareto front and the uniform zoo models with "
                 f"{cfg.seeds} seeds each; per-layer sensitivity")
    trials = study.get_trials(deepcopy=False)
    front_work = [(_design(t), out / "front" / f"{t.number:04d}") for t in rep.pareto_front(trials)[:rep.MAX_FRONT]]
    uniform_work = [(d, out / "baselines" / name) for d, name in rep.uniform_designs(cfg.arch)]
    if cfg.jobs > 1:
        _train_ahead(cfg, space, inputs, front_work + uniform_work, progress)
    front = [rep.evaluate_design(d, ds, cfg, cache, work, inputs) for d, work in front_work]
    uniform = [rep.evaluate_design(d, ds, cfg, cache, work, inputs) for d, work in uniform_work]
    report = {"config": json.loads(cfg.to_json()), "space": space.to_dict(), "wall_s": _wall(out, wall),
              "trials": {"finished": st.finished_count(study), "total": len(trials)},
              "front": front, "uniform": uniform, "gain": rep.gain_over_uniform(front, uniform),
              "published": rep.against_published(front) if cfg.data == "mnist" else None,
              "chosen": rep.chosen_per_target(front, sorted({cfg.target_accuracy, cfg.target_accuracy - 0.005,
                                                             cfg.target_accuracy - 0.01})),
              "sensitivity": rep.sensitivity(space, inputs, cfg, cache),
              "teacher": inputs.teacher_accuracy(),
              "trial_rows": rep.trial_rows(trials),
              "cpu_label": (front or uniform)[0]["cpu"]["label"] if (front or uniform) else None}
    report["plots"] = rep.save_plots(report, out)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(rep.markdown(report))
    return report


def prepare(cfg: SearchConfig):
    """What every process of a search works from: the space (the file's, or the architecture's default),
    the dataset, and the design inputs on the search's training/validation split."""
    from flows.search import study as st
    from flows.search.inputs import DesignInputs
    from qat.data import load_dataset

    space = load_space(cfg.space) if cfg.space else SearchSpace.default(cfg.arch)
    if space.arch != cfg.arch:
        raise _config_error(f"the search space is for {space.arch}, the search for {cfg.arch}; make them agree")
    ds = load_dataset(cfg.data, cfg.data_dir, verify=cfg.verify_checksums)
    return space, ds, DesignInputs(space, st.validation_split(ds, cfg.val_fraction, cfg.seed), cfg)


def _train_ahead(cfg: SearchConfig, space: SearchSpace, inputs, retrained: list[tuple], progress) -> None:
    """The report's trainings in cfg.jobs processes (flows.search.parallel); the teacher first, once."""
    from flows.search import parallel
    from flows.search import report as rep

    if True in space.distill and space.teacher is not None:
        inputs.teacher()
    sensitivity = [inputs.design(choices) for _, _, choices in rep.sensitivity_variants(space)]
    parallel.train_ahead(cfg, parallel.report_tasks(cfg, retrained, sensitivity), progress)


def _design(trial):
    from flows.search.space import Design

    return Design.from_dict(trial.user_attrs["spec"])


def _summary(t) -> str:
    a = t.user_attrs
    est = a.get("estimate", {})
    acc = a.get("val_accuracy")
    return (f"{est.get('cycles_per_image', '?')} cycles, {est.get('total', {}).get('LUT', 0):,.0f} LUT"
            + (f", val {100 * acc:.2f}%" if acc is not None else "")
            + (f" ({a.get('not_trained') or a.get('failed') or ''})" if a.get("not_trained") or a.get("failed") else ""))


def _wall(out: Path, seconds: float) -> float:
    """Search wall time summed over the runs of this command (a resumed search adds up)."""
    path = out / "wall_s.json"
    total = (json.loads(path.read_text()) if path.is_file() else 0.0) + seconds
    path.write_text(json.dumps(total))
    return total


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _config_error(f"cannot create --out {out}: {exc.strerror}") from None


def _config_error(message: str):
    from flows.errors import ConfigError

    return ConfigError(message)
