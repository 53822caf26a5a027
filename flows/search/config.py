"""The typed configuration of one ``flows search``, validated on creation."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.errors import ConfigError
from qat.data import check_data_option

SAMPLERS = ("tpe", "nsga2", "random", "rf")


@dataclass(frozen=True)
class SearchConfig:
    """What to search, for which board and data, how long, and where the study lives."""

    arch: str = "tfc"  # an architecture of the zoo (tfc, sfc, lfc, lenet, cnv); a zoo name names its arch
    board: str = "pynq-z2"
    data: str = "digits"
    data_dir: Path | None = None
    verify_checksums: bool = True
    target_accuracy: float = 0.9  # on the validation split (a part of the training split, never the test split)
    trials: int = 30  # finished trials (complete or stopped early) across every worker
    out: Path = Path("build/search")
    storage: str | None = None  # Optuna RDB URL; default: SQLite in <out>/study.db
    space: Path | None = None  # YAML/JSON search space (flows.search.space); default: SearchSpace.default
    sampler: str = "tpe"
    epochs: int = 10  # training epochs of each trial
    batch_size: int = 128
    lr: float = 0.05
    dropout: float = 0.2  # the MLPs' dropout in training (Brevitas' 0.2; 0 suits short schedules)
    shift: int = 0  # augmentation: training images moved by up to this many pixels (qat TrainConfig.shift)
    seed: int = 0
    seeds: int = 3  # seeds each Pareto point and baseline is retrained with before it is reported
    val_fraction: float = 0.1
    stop_margin: float = 0.1  # a trial this far below target at half its epochs stops early (one-cycle
    # schedules peak there, so half-way accuracy sits well below the final one)
    threads: int = 1  # torch threads per worker (and per report job)
    jobs: int = 1  # processes that run the report's retrainings at once (flows.search.parallel)
    worker: bool = False  # only run trials (no baselines, no report)

    def __post_init__(self):
        for name in ("target_accuracy", "lr", "dropout", "val_fraction", "stop_margin"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
        if not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"--target-accuracy must be in (0, 1], got {self.target_accuracy} (0.98 means 98%)")
        if not isinstance(self.shift, int) or self.shift < 0:
            raise ConfigError(f"--shift must be 0 or more pixels, got {self.shift!r}")
        for name in ("trials", "epochs", "batch_size", "seeds", "threads", "jobs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 < self.val_fraction < 0.5 or self.stop_margin < 0:
            raise ConfigError("--lr must be positive, --val-fraction in (0, 0.5), --stop-margin >= 0")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown --sampler '{self.sampler}'; choose one of {', '.join(SAMPLERS)}")
        check_data_option(self.data, self.data_dir)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out) / 'study.db').resolve()}"

    def identity(self) -> dict:
        """What a study is a search of; a study is only continued by a search of the same. ``shift``
        only when used, so studies made before it existed keep their identity."""
        return {"arch": self.arch, "board": self.board, "data": self.data, "epochs": self.epochs,
                "dropout": self.dropout, **({"shift": self.shift} if self.shift else {}),
                "target_accuracy": self.target_accuracy, "val_fraction": self.val_fraction}

    def training_key(self) -> dict:
        """What a trained result depends on besides the design and the seed (the report's cache keys)."""
        return {"epochs": self.epochs, "data": self.data, "lr": self.lr, "dropout": self.dropout,
                "shift": self.shift, "batch_size": self.batch_size}

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, indent=2)
