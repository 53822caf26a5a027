"""How to train (`TrainConfig`): light to import (no torch), so that flows.config can carry it
as a build's training options and qat.train, the compression techniques and the search share one class."""
from __future__ import annotations

from dataclasses import dataclass

from host.errors import ConfigError, finite

DROPOUT = 0.2  # MLPs' dropout probability (Brevitas' bnn_pynq models)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults train TFC on the bundled digits in a few seconds."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.05  # peak learning rate of Adam under a one-cycle schedule (OneCycleLR)
    seed: int = 0
    device: str = "cpu"  # "cuda" when a GPU is present and asked for
    dropout: float = DROPOUT  # MLPs' dropout probability (Brevitas' 0.2); CNV has none
    shift: int = 0  # augmentation: each training image moved by up to this many pixels (zero fill)

    def __post_init__(self):
        finite("training config: epochs", self.epochs, minimum=1)
        finite("training config: batch_size", self.batch_size, minimum=1)
        finite("training config: lr", self.lr, positive=True)
        finite("training config: dropout", self.dropout)
        finite("training config: shift", self.shift)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"bad training config: dropout must be in [0, 1), got {self.dropout}")
        if self.shift < 0:
            raise ConfigError(f"bad training config: shift must be 0 or more pixels, got {self.shift}")
