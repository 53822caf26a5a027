"""Training loop and checkpoints.

A checkpoint is one ``torch.save`` dict that carries everything needed to
rebuild and judge the model: the model spec, the dataset it was trained on,
the training config, the metrics, and (for resuming) the optimiser state.
Checkpoints are written atomically and never overwritten silently.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from flows.errors import ConfigError, ModelError
from qat.data import Dataset
from qat.models import ModelSpec, QuantMLP, build_model

CHECKPOINT_FORMAT = "qnn-flows-checkpoint/1"


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults train TFC on the bundled digits in a few seconds."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.05  # Adam, cosine-annealed to zero
    seed: int = 0
    device: str = "cpu"  # "cuda" when a GPU is present and asked for

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"bad training config {self}: epochs, batch_size and lr must be positive")


@dataclass(frozen=True)
class DatasetInfo:
    """What a checkpoint records of the data it was trained on."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    pixel_max: int

    @classmethod
    def of(cls, ds: Dataset) -> "DatasetInfo":
        return cls(ds.name, tuple(ds.image_shape), ds.num_classes, ds.pixel_max)


@dataclass
class Checkpoint:
    spec: ModelSpec
    data: DatasetInfo
    train: TrainConfig
    state_dict: dict
    metrics: dict  # e.g. {"test_accuracy": 0.95, "train_seconds": 4.1, "epochs_done": 12}
    optimizer: dict | None = None

    def model(self) -> QuantMLP:
        """Rebuild the model in eval mode."""
        model = build_model(self.spec, self.data.image_shape, self.data.num_classes, self.data.pixel_max)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, path: Path, *, overwrite: bool = False) -> None:
        """Write atomically; refuse to replace an existing file unless ``overwrite``."""
        if path.exists() and not overwrite:
            raise ConfigError(f"checkpoint {path} exists; choose another path or remove it first")
        blob = {"format": CHECKPOINT_FORMAT, "spec": self.spec.to_dict(), "data": asdict(self.data),
                "train": asdict(self.train), "state_dict": self.state_dict, "metrics": self.metrics,
                "optimizer": self.optimizer}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :meth:`Checkpoint.save`; any other file is a ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise ModelError(f"checkpoint {path} cannot be read ({type(exc).__name__}); "
                         "is it a qnn-flows checkpoint?") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a qnn-flows checkpoint (format {CHECKPOINT_FORMAT})")
    data = blob["data"]
    return Checkpoint(ModelSpec.from_dict(blob["spec"]),
                      DatasetInfo(data["name"], tuple(data["image_shape"]), data["num_classes"], data["pixel_max"]),
                      TrainConfig(**blob["train"]), blob["state_dict"], blob["metrics"], blob.get("optimizer"))


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, C, H, W) uint8 -> float32 tensor of raw pixel values."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32))


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits for ``images`` ((N, C, H, W) raw pixels) -> (N, classes) float32."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(as_tensor(images[i:i + batch_size]).to(device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(model, images).argmax(1) == labels).mean())


def train(spec: ModelSpec, ds: Dataset, cfg: TrainConfig, *, progress: bool = True) -> Checkpoint:
    """Train ``spec`` on ``ds.train``; return a checkpoint with test accuracy and wall time."""
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    model = build_model(spec, ds.image_shape, ds.num_classes, ds.pixel_max).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps = cfg.epochs * -(-len(ds.train.labels) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    x, y = as_tensor(ds.train.images).to(cfg.device), torch.from_numpy(np.array(ds.train.labels)).to(cfg.device)
    for _ in _epochs(cfg.epochs, progress, spec.name):
        _train_epoch(model, opt, sched, x, y, cfg.batch_size)
    model.eval()
    metrics = {"test_accuracy": accuracy(model, ds.test.images, ds.test.labels),
               "train_seconds": round(time.perf_counter() - start, 2), "epochs_done": cfg.epochs}
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return Checkpoint(spec, DatasetInfo.of(ds), cfg, state, metrics, None)


def _epochs(n: int, progress: bool, name: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=f"train {name}", unit="epoch", leave=False)


def _train_epoch(model: QuantMLP, opt, sched, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    model.train()
    perm = torch.randperm(len(x), device=x.device)
    for i in range(0, len(x), batch_size):
        idx = perm[i:i + batch_size]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        sched.step()
        model.clip_weights()
