"""The typed build configuration, validated on creation."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flows.errors import ConfigError

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")


@dataclass(frozen=True)
class TrainOptions:
    """Training used when the build has no checkpoint (see qat.train.TrainConfig)."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class BuildConfig:
    """One ``flows build``: what to build, for which board, and where."""

    board: str = "pynq-z2"
    model: str = "tfc-w1a1"  # zoo name; ignored with ``onnx``
    checkpoint: Path | None = None  # trained qnn-flows checkpoint
    onnx: Path | None = None  # QONNX file instead of a checkpoint
    data: str = "digits"
    data_dir: Path | None = None
    verify_checksums: bool = True
    target_fps: float | None = None  # fold for this rate instead of the DMA bound
    folding: Path | None = None  # FINN folding-config JSON to apply as is
    out: Path | None = None  # run directory; default build/<model>_<board>
    from_step: str | None = None
    to_step: str | None = None
    allow_overflow: bool = False  # go on when the design does not fit the board
    train: TrainOptions = field(default_factory=TrainOptions)

    def __post_init__(self):
        if self.checkpoint and self.onnx:
            raise ConfigError("give --checkpoint or --onnx, not both")
        if self.target_fps is not None and self.folding is not None:
            raise ConfigError("give --target-fps or --folding, not both")
        if self.target_fps is not None and self.target_fps <= 0:
            raise ConfigError(f"--target-fps must be positive, got {self.target_fps}")
        if self.data not in DATASETS:
            raise ConfigError(f"unknown dataset '{self.data}'; known: {', '.join(DATASETS)}")
        if self.data != "digits" and self.data_dir is None:
            raise ConfigError(f"--data {self.data} needs --data-dir DIR holding its files")

    @property
    def run_name(self) -> str:
        model = Path(self.onnx).stem if self.onnx else self.model
        return f"{model}_{self.board}" + ("" if self.data == "digits" else f"_{self.data}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("build") / self.run_name

    def identity(self) -> dict:
        """The fields that define what a run directory holds; a resume must match them."""
        return {"model": self.model if not self.onnx else None, "onnx": str(self.onnx) if self.onnx else None,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "data": self.data, "board": self.board}

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, indent=2)
