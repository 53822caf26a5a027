"""The Optuna study of a search: storage, identity, and one trial's evaluation.

A trial picks a design (flows.search.space: the model spec, the input pixels kept,
distillation), then, cheapest first:
1. estimates it on the board with the flow itself, up to the estimate step, from an
   untrained model of that shape and those bit widths (FINN's estimate needs only
   shapes and bit widths; low-rank halves and the kept pixels are shapes, so the estimate
   sees them); a design that does not fit, or that a finished trial that
   met the accuracy target beats on both estimated latency and LUTs, is not trained;
2. trains it (qat.train) on the training split less a validation split, stopping early
   when at half its epochs it is ``stop_margin`` below the target;
3. reports (estimated cycles per image, estimated LUTs) as objectives and
   (target - validation accuracy, does-not-fit) as constraints, so the result is a
   Pareto front of designs that meet the target and fit.

The study lives in an Optuna RDB storage (SQLite under the run folder by default,
PostgreSQL for several workers) with a heartbeat: a killed worker's trial is marked
failed and retried once by another worker (RetryFailedTrialCallback), so every trial
is accounted for and none runs twice under one number.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from flows.errors import ConfigError
from flows.search.config import SearchConfig
from flows.search.inputs import DesignInputs
from flows.search.space import Design, SearchSpace, space_hash

STUDY_NAME = "flows-search"
HEARTBEAT_S = 10
GRACE_S = 30
OBJECTIVES = ("estimated cycles per image", "estimated LUTs")


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S):
    """Optuna RDB storage with a heartbeat (a trial whose worker stops beating for ``grace_s`` is
    failed and retried once); one clear error when the storage cannot be reached."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # heartbeats are 'experimental' in Optuna, and used as documented
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s, grace_period=grace_s,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as exc:  # sqlalchemy and the database drivers raise many kinds
        raise ConfigError(f"cannot open the study storage {_shown(url)}: {' '.join(str(exc).split())[:200]}; "
                          "check the URL, that the server runs and accepts you") from None


def open_study(cfg: SearchConfig, space: SearchSpace, sampler):
    """Create the study, or load it when it is a search of the same (identity and space)."""
    import warnings

    import optuna

    if cfg.storage is None:
        try:
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create --out {cfg.out}: {exc.strerror}") from None
    storage = open_storage(cfg.storage_url)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, sampler=sampler,
                                directions=["minimize", "minimize"], load_if_exists=True)
    want = {**cfg.identity(), "space": space_hash(space)}
    have = study.user_attrs.get("identity")
    if have is None:
        study.set_user_attr("identity", want)
        study.set_user_attr("space", space.to_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
    elif have != want:
        diff = sorted(k for k in want if want[k] != have.get(k))
        raise ConfigError(f"the study in {_shown(cfg.storage_url)} is a search of another design "
                          f"({', '.join(f'{k}={have.get(k)!r}' for k in diff)}; this one has "
                          f"{', '.join(f'{k}={want[k]!r}' for k in diff)}); use another --out or --storage")
    return study


def _shown(url: str) -> str:
    return url.split("@")[-1] if "@" in url else url


def constraints(trial) -> list[float]:
    """The trial's constraints (<= 0 is met): accuracy target, and fitting the board; a trial
    that set none (failed) meets neither."""
    c = trial.constraints
    return [c.get("accuracy", 1.0), c.get("fits", 1.0)]


def set_constraints(trial, accuracy_gap: float, misfit: float) -> None:
    trial.set_constraint("accuracy", accuracy_gap)
    trial.set_constraint("fits", misfit)


def finished_count(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


@dataclass
class Evaluator:
    """Evaluates trials of one search: the data split, the space and the folders are set once."""

    cfg: SearchConfig
    space: SearchSpace
    data: object  # qat.data.Dataset whose test split is the validation split
    inputs: DesignInputs | None = None  # kept pixels and teacher; made from ``data`` when not given

    def __post_init__(self):
        if self.inputs is None:
            self.inputs = DesignInputs(self.space, self.data, self.cfg)

    def __call__(self, trial) -> tuple[float, float]:
        from flows.errors import FlowsError

        try:
            return self._evaluate(trial)
        except FlowsError as exc:  # a design the flow refuses or fails on: recorded, the search goes on
            trial.set_user_attr("failed", f"{type(exc).__name__}: {exc}")
            raise

    def _evaluate(self, trial) -> tuple[float, float]:
        import optuna

        design = self.inputs.design(self.space.suggest(trial))
        trial.set_user_attr("spec", design.to_dict())
        twin = self._same_design(trial)
        if twin is not None:
            for key, value in twin.user_attrs.items():
                trial.set_user_attr(key, value)
            set_constraints(trial, *constraints(twin))
            trial.set_user_attr("duplicate_of", twin.number)
            return tuple(twin.values)
        work = Path(self.cfg.out) / "trials" / f"{trial.number:04d}"
        est = self._same_shape(trial, design) or self.estimate(design, work / "untrained")
        trial.set_user_attr("estimate", est)
        values = (float(est["cycles_per_image"]), float(est["total"]["LUT"]))
        fits = 0.0 if est["fits"] else 1.0
        why = None if est["fits"] else f"does not fit: {', '.join(est['over_capacity'])}"
        why = why or self._dominated(trial.study, values)
        if why:
            trial.set_user_attr("not_trained", why)
            set_constraints(trial, 1.0, fits)
            return values
        acc = self.train(design, trial)
        trial.set_user_attr("val_accuracy", acc)
        set_constraints(trial, self.cfg.target_accuracy - acc, fits)
        if acc < self.cfg.target_accuracy - self.cfg.stop_margin and trial.user_attrs.get("stopped_at"):
            raise optuna.TrialPruned(f"validation accuracy {acc:.4f} at epoch {trial.user_attrs['stopped_at']}")
        return values

    def estimate(self, design: Design, work: Path) -> dict:
        """The flow's estimate of ``design`` from an untrained model: shapes and bit widths are all it needs."""
        return estimate_checkpoint(untrained(design.spec, self.inputs.dataset(design, self.data), self.cfg), work,
                                   self.cfg)

    def train(self, design: Design, trial) -> float:
        from qat.train import train

        def stop_early(epoch: int, metrics: dict) -> None:
            half = self.cfg.epochs // 2
            if self.cfg.epochs >= 4 and epoch == half and metrics["test_accuracy"] < self.cfg.target_accuracy - self.cfg.stop_margin:
                trial.set_user_attr("stopped_at", epoch)
                raise _Stop(metrics["test_accuracy"])

        try:
            ckpt = train(design.spec, self.inputs.dataset(design, self.data), train_config(self.cfg, self.cfg.seed),
                         progress=False, on_epoch=stop_early, hooks=self.inputs.hooks(design))
        except _Stop as stop:
            return stop.accuracy
        return float(ckpt.metrics["test_accuracy"])

    def _same_design(self, trial):
        """A finished trial of the same design: its result is reused, not trained again."""
        from optuna.trial import TrialState

        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if other.params == trial.params and other.number != trial.number:
                return other
        return None

    def _same_shape(self, trial, design: Design) -> dict | None:
        """The estimate of a finished trial of the same shape (a distilled twin): reused, not built again."""
        from optuna.trial import TrialState

        shape = design.shape_dict()
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            spec = other.user_attrs.get("spec")
            if spec is not None and "estimate" in other.user_attrs and Design.from_dict(spec).shape_dict() == shape:
                return other.user_attrs["estimate"]
        return None

    def _dominated(self, study, values: tuple[float, float]) -> str | None:
        """Why training cannot put this design on the front: a design meeting the target that is
        no slower and no larger (estimated) exists already."""
        from optuna.trial import TrialState

        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if max(constraints(other)) <= 0 and all(o <= v for o, v in zip(other.values, values)):
                return f"dominated before training by trial {other.number} (estimates {other.values})"
        return None


class _Stop(Exception):
    def __init__(self, accuracy: float):
        self.accuracy = float(accuracy)


def train_config(cfg: SearchConfig, seed: int):
    from qat.train import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, dropout=cfg.dropout,
                       shift=cfg.shift)


def untrained(spec, ds, cfg: SearchConfig):
    """A checkpoint of ``spec`` with its initial weights for ``ds``'s images (pixel-pruned ones record their
    kept pixels): enough for FINN's estimate (shapes, bits)."""
    import torch

    from qat.models import build_model
    from qat.train import Checkpoint, DatasetInfo

    torch.manual_seed(cfg.seed)
    model = build_model(spec, ds.image_shape, ds.num_classes, ds.pixel_max)
    return Checkpoint(spec, DatasetInfo.of(ds), train_config(cfg, cfg.seed), model.state_dict(), {"untrained": True})


def estimate_checkpoint(ckpt, work: Path, cfg: SearchConfig) -> dict:
    """The flow's own estimate (build steps up to 'estimate') of a checkpoint on the board."""
    from flows.build import run_build
    from flows.config import BuildConfig, input_quant_for

    work.mkdir(parents=True, exist_ok=True)
    path = work / "checkpoint.pt"
    ckpt.save(path, overwrite=True)
    reports = run_build(BuildConfig(board=cfg.board, checkpoint=path, data=cfg.data, data_dir=cfg.data_dir,
                                    verify_checksums=cfg.verify_checksums, out=work / "build",
                                    to_step="estimate", allow_overflow=True,
                                    input_quant=input_quant_for(ckpt.spec.in_bits)))
    est = reports["estimate"]
    keep = ("cycles_per_image", "compute_cycles", "binding", "fps", "latency_us", "total", "capacity", "fits",
            "over_capacity", "io_in_cycles", "in_bytes")
    return {**{k: est[k] for k in keep if k in est},
            "layers": [{"name": l["name"], "op_type": l["op_type"], "cycles": l["cycles"],
                        "LUT": l["resources"]["LUT"]} for l in est["layers"]]}


def validation_split(ds, fraction: float, seed: int):
    """The dataset with its test split replaced by a held-out part of its training split (the search
    never selects on the test split)."""
    import numpy as np

    from qat.data import Dataset, Split

    order = np.random.default_rng(seed).permutation(len(ds.train))
    n_val = max(1, int(len(order) * fraction))
    val, rest = np.sort(order[:n_val]), np.sort(order[n_val:])
    return Dataset(ds.name, Split(ds.train.images[rest], ds.train.labels[rest]),
                   Split(ds.train.images[val], ds.train.labels[val]), ds.pixel_max, ds.num_classes)


def run_trials(study, evaluator: Evaluator, trials: int, on_trial=None) -> None:
    """Run trials until the study holds ``trials`` finished ones (across every worker). A trial the
    flow fails on is marked failed with its reason and the search goes on; at most ``trials``
    such failures in one call, so a space the flow cannot build ends instead of looping."""
    from flows.errors import FlowsError

    failures = 0
    while finished_count(study) < trials and failures < trials:
        before = len(study.get_trials(deepcopy=False))
        study.optimize(evaluator, n_trials=1, catch=(FlowsError,), callbacks=[on_trial] if on_trial else None,
                       gc_after_trial=True)
        mine = study.get_trials(deepcopy=False)[before:]
        failures += sum(1 for t in mine if t.user_attrs.get("failed"))


def worker_seed(cfg: SearchConfig) -> int:
    """The sampler seed: the configured one for the main process; workers differ so they do not
    propose the same designs."""
    return cfg.seed if not cfg.worker else cfg.seed + os.getpid()
