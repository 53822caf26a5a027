"""Training loop and checkpoints.

A checkpoint is one ``torch.save`` dict that carries everything needed to
rebuild and judge the model: the model spec, the dataset it was trained on,
the training config, the metrics, and (for resuming) the optimiser state.
Checkpoints are written atomically and never overwritten silently.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from host.errors import ConfigError, ModelError, ToolMissingError
from qat.data import Dataset
from qat.models import ModelSpec, build_model
from qat.progress import TrainProgress
from qat.train_config import TrainConfig  # noqa: F401  (re-exported: its home is qat.train_config)

CHECKPOINT_FORMAT = "qnn-flows-checkpoint/1"


@dataclass(frozen=True)
class DatasetInfo:
    """What a checkpoint records of the data it was trained on."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    pixel_max: int
    kept_pixels: tuple[int, ...] | None = None  # pixel-pruned input: these pixels of the flattened original image

    @classmethod
    def of(cls, ds: Dataset) -> "DatasetInfo":
        return cls(ds.name, tuple(ds.image_shape), ds.num_classes, ds.pixel_max, ds.kept_pixels)


@dataclass
class Checkpoint:
    spec: ModelSpec
    data: DatasetInfo
    train: TrainConfig
    state_dict: dict
    metrics: dict  # e.g. {"test_accuracy": 0.95, "train_seconds": 4.1, "epochs_done": 12}
    optimizer: dict | None = None
    resume: dict | None = None  # in a ``.last`` file: epoch, optimizer, scheduler, RNG states

    def model(self) -> torch.nn.Module:
        """Rebuild the model in eval mode."""
        model = build_model(self.spec, self.data.image_shape, self.data.num_classes, self.data.pixel_max)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, path: Path, *, overwrite: bool = False, compact: bool = False) -> None:
        """Write atomically; refuse to replace an existing file unless ``overwrite``.

        ``compact`` stores each quantised layer's weights as the int8 integers its quantiser
        makes of them (and the scale): the model computes exactly the same, but the float
        weights training would continue from are gone, so only a finished run is compact.
        """
        if path.exists() and not overwrite:
            raise ConfigError(f"checkpoint {path} exists; choose another path or remove it first")
        if compact and self.resume is not None:
            raise ConfigError("a resumable training state cannot be saved compact")
        state, scales = (self.compact_state() if compact else (self.state_dict, {}))
        blob = {"format": CHECKPOINT_FORMAT, "spec": self.spec.to_dict(), "data": asdict(self.data),
                "train": asdict(self.train), "state_dict": state, "metrics": self.metrics,
                "optimizer": self.optimizer, "resume": self.resume, "weight_scales": scales}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, path)


    def compact_state(self) -> tuple[dict, dict]:
        """(state dict with int8 quantised weights, {weight key: scale})."""
        model = self.model()
        state, scales = dict(self.state_dict), {}
        for prefix, m in model.named_modules():
            if hasattr(m, "quant_weight") and hasattr(m, "weight"):
                q = m.quant_weight()
                scale = float(q.scale.reshape(-1)[0])
                if q.scale.numel() != 1 or int(q.bit_width) > 8:
                    continue  # per-channel scales or wide weights stay float
                state[f"{prefix}.weight"] = torch.round(q.value.detach() / scale).to(torch.int8)
                scales[f"{prefix}.weight"] = scale
        return state, scales


def _expand(state: dict, scales: dict) -> dict:
    """Undo :meth:`Checkpoint.compact_state`: int8 weights back to float (exactly their quantised values)."""
    return {k: (v.float() * scales[k] if k in scales else v) for k, v in state.items()}


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :meth:`Checkpoint.save`; any other file is a ModelError.

    Every record is checked on load, and the weights against the model the spec builds, so a
    broken or mismatched file fails here, before any step uses it."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"checkpoint {path} is a directory; give the .pt file itself")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise ModelError(f"checkpoint {path} cannot be read ({type(exc).__name__}); "
                         "is it a qnn-flows checkpoint?") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a qnn-flows checkpoint (format {CHECKPOINT_FORMAT})")
    try:
        data = blob["data"]
        ckpt = Checkpoint(ModelSpec.from_dict(blob["spec"], source=f"checkpoint {path}: spec"),
                          DatasetInfo(data["name"], tuple(data["image_shape"]), data["num_classes"],
                                      data["pixel_max"],
                                      None if data.get("kept_pixels") is None else tuple(data["kept_pixels"])),
                          TrainConfig(**blob["train"]), _expand(blob["state_dict"], blob.get("weight_scales") or {}),
                          blob["metrics"], blob.get("optimizer"), blob.get("resume"))
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        what = f"lacks its {exc.args[0]!r} record" if isinstance(exc, KeyError) else f"is malformed ({exc})"
        raise ModelError(f"checkpoint {path} {what}; it was not written by this qnn-flows "
                         "(flows train writes complete ones)") from None
    _check_weights(ckpt, path)
    return ckpt


def _check_weights(ckpt: Checkpoint, path: Path) -> None:
    """ModelError unless the state dict fits the model its spec builds (same keys, same shapes)."""
    want = build_model(ckpt.spec, ckpt.data.image_shape, ckpt.data.num_classes, ckpt.data.pixel_max).state_dict()
    have = ckpt.state_dict
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    shapes = [k for k in want if k in have and tuple(getattr(have[k], "shape", ())) != tuple(want[k].shape)]
    if missing or extra or shapes:
        first = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra else
                 f"{shapes[0]} is {tuple(have[shapes[0]].shape)}, the spec needs {tuple(want[shapes[0]].shape)}")
        raise ModelError(f"checkpoint {path}: its weights do not fit its model spec {ckpt.spec.name} "
                         f"({len(missing)} missing, {len(extra)} unexpected, {len(shapes)} of another shape; "
                         f"first: {first}); use the checkpoint flows train wrote, unedited")


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


EpochCallback = Callable[[int, dict], None]  # (epochs done, that epoch's metrics)
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels, images) -> loss
OptimizerFn = Callable[[list, float], torch.optim.Optimizer]  # (parameters, peak lr) -> optimiser
StepCallback = Callable[[torch.nn.Module, int], None]  # (model, optimiser steps done so far)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def adam(params: list, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


@dataclass(frozen=True)
class TrainHooks:
    """What a compression technique changes in training, without forking the loop.

    ``loss`` replaces cross-entropy (distillation: a teacher's soft targets on the same
    images); ``optimizer`` replaces Adam (the one-cycle schedule drives whichever is made);
    ``after_step`` runs after every optimiser step and weight clipping (gradual pruning:
    recompute and apply masks). Exact resume holds when the hooks are functions of the
    model and the step count only, as these are.
    """

    loss: LossFn = cross_entropy
    optimizer: OptimizerFn = adam
    after_step: StepCallback | None = None


def train(spec: ModelSpec, ds: Dataset, cfg: TrainConfig, *, progress: bool = True,
          state_path: Path | None = None, resume: bool = False,
          on_epoch: EpochCallback | None = None, hooks: TrainHooks = TrainHooks(),
          init_state: dict | None = None) -> Checkpoint:
    """Train ``spec`` on ``ds.train``; return a checkpoint with test accuracy and wall time.

    With ``state_path`` every finished epoch is saved there (model, optimiser, scheduler,
    RNG states) and ``resume`` continues from it: an interrupted run resumed gives
    the same weights as an uninterrupted one. ``on_epoch`` is called after each save.
    ``init_state`` (a state dict of the same spec) starts from trained weights instead of
    a random initialisation: fine-tuning. ``hooks`` change the loss, the optimiser and
    what happens after each step (TrainHooks).
    """
    check_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(spec, ds.image_shape, ds.num_classes, ds.pixel_max, cfg.dropout).to(cfg.device)
    if init_state is not None:
        model.load_state_dict(init_state)
    opt = hooks.optimizer(list(model.parameters()), cfg.lr)
    steps = cfg.epochs * -(-len(ds.train.labels) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    done, seconds, history = 0, 0.0, []
    if resume:
        done, seconds, history = _restore(state_path, spec, ds, cfg, model, opt, sched)
    x, y = as_tensor(ds.train.images).to(cfg.device), torch.from_numpy(np.array(ds.train.labels)).to(cfg.device)
    with TrainProgress(spec.name, cfg.epochs, done) if progress else contextlib.nullcontext() as bars:
        for epoch in range(done + 1, cfg.epochs + 1):
            start = time.perf_counter()
            loss, train_acc = _train_epoch(model, opt, sched, x, y, cfg.batch_size, bars, cfg.shift, hooks)
            test_acc = accuracy(model, ds.test.images, ds.test.labels)
            seconds += time.perf_counter() - start
            history.append({"epoch": epoch, "loss": round(loss, 5), "train_accuracy": round(train_acc, 5),
                            "test_accuracy": test_acc, "seconds": round(seconds, 2)})
            if bars is not None:
                bars.epoch_done(_epoch_line(history[-1], cfg.epochs))
            if state_path is not None:
                _checkpoint(spec, ds, cfg, model, {"epochs_done": epoch, "history": history},
                            {"epoch": epoch, "seconds": seconds, "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "rng": _rng_state(cfg.device)}).save(state_path,
                                                                                                   overwrite=True)
            if on_epoch is not None:
                on_epoch(epoch, history[-1])
    model.eval()
    metrics = {"test_accuracy": accuracy(model, ds.test.images, ds.test.labels),
               "train_seconds": round(seconds, 2), "epochs_done": cfg.epochs, "history": history}
    return _checkpoint(spec, ds, cfg, model, metrics, None)


def train_to_file(spec: ModelSpec, ds: Dataset, cfg: TrainConfig, out: Path, *, resume: bool = False,
                  progress: bool = True, on_epoch: EpochCallback | None = None, compact: bool = False,
                  hooks: TrainHooks = TrainHooks(), init_state: dict | None = None) -> Checkpoint:
    """Train and save to ``out``, keeping a resumable ``<out>.last`` until the run is complete.

    Refuses before training when ``out`` exists, when ``--resume`` has nothing to resume,
    or when an interrupted run's ``.last`` would be lost without ``resume``.
    """
    out, last = Path(out), last_path(out)
    if out.exists():
        raise ConfigError(f"checkpoint {out} exists; choose another --out or remove it first")
    if resume and not last.is_file():
        raise ConfigError(f"nothing to resume: {last} not found (it is written after each epoch)")
    if last.is_file() and not resume:
        raise ConfigError(f"{last} holds an interrupted run; pass --resume to continue it, or remove it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out.parent}: {exc.strerror}") from None
    ckpt = train(spec, ds, cfg, progress=progress, state_path=last, resume=resume, on_epoch=on_epoch,
                 hooks=hooks, init_state=init_state)
    ckpt.save(out, compact=compact)
    last.unlink()
    return ckpt


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work."""
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise ConfigError(f"unknown device '{device}'; use cpu or cuda (cuda:N)")
    if not torch.cuda.is_available():
        raise ToolMissingError(f"--device {device} asked for, but PyTorch sees no CUDA GPU here"
                               f"{' (a CPU-only build of torch)' if torch.version.cuda is None else ''}; "
                               "use --device cpu")


def last_path(out: Path) -> Path:
    """The resumable state file of a training run writing ``out``."""
    return Path(out).with_name(Path(out).name + ".last")


def _checkpoint(spec, ds, cfg, model, metrics, resume) -> Checkpoint:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return Checkpoint(spec, DatasetInfo.of(ds), cfg, state, metrics, None, resume)


def _rng_state(device: str) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def _restore(path: Path, spec, ds, cfg, model, opt, sched) -> tuple[int, float, list]:
    """Load ``path`` into model, optimiser, scheduler and RNGs; refuse a run of something else."""
    last = load_checkpoint(path)
    if last.resume is None:
        raise ModelError(f"{path} holds no training state to resume")
    theirs = {"model": last.spec.to_dict(), "data": asdict(last.data), "train": asdict(last.train)}
    ours = {"model": spec.to_dict(), "data": asdict(DatasetInfo.of(ds)), "train": asdict(cfg)}
    for key in ours:
        if theirs[key] != ours[key]:
            diff = sorted(k for k in ours[key] if ours[key][k] != theirs[key].get(k))
            raise ConfigError(f"cannot resume {path}: its {key} differs in {', '.join(diff)} "
                              f"({', '.join(f'{k}={theirs[key].get(k)}' for k in diff)}); resume with the same options")
    model.load_state_dict(last.state_dict)
    opt.load_state_dict(last.resume["optimizer"])
    sched.load_state_dict(last.resume["scheduler"])
    torch.set_rng_state(last.resume["rng"]["cpu"])
    if "cuda" in last.resume["rng"]:
        torch.cuda.set_rng_state(last.resume["rng"]["cuda"], torch.device(cfg.device))
    return int(last.resume["epoch"]), float(last.resume["seconds"]), list(last.metrics.get("history", []))


def _epoch_line(h: dict, epochs: int) -> str:
    return (f"epoch {h['epoch']}/{epochs}: loss {h['loss']:.4f}, train {100 * h['train_accuracy']:.2f}%, "
            f"test {100 * h['test_accuracy']:.2f}%, {h['seconds']:.1f} s")


def random_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Move each (C, H, W) image of ``x`` by its own random offset in [-shift, shift]^2, filling with 0."""
    if shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift)).permute(0, 2, 3, 1)  # N, H', W', C
    dy, dx = (torch.randint(0, 2 * shift + 1, (n, 1), device=x.device) for _ in range(2))
    rows = (torch.arange(h, device=x.device) + dy)[:, :, None]
    cols = (torch.arange(w, device=x.device) + dx)[:, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)


def _train_epoch(model, opt, sched, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 bars: TrainProgress | None = None, shift: int = 0,
                 hooks: TrainHooks = TrainHooks()) -> tuple[float, float]:
    """One pass over (x, y) in shuffled batches; returns (mean loss, train accuracy in train mode)."""
    model.train()
    perm = torch.randperm(len(x), device=x.device)
    total_loss, correct = 0.0, 0
    n = -(-len(x) // batch_size)
    for b in bars.batches(n) if bars is not None else range(n):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        opt.zero_grad()
        images = random_shift(x[idx], shift)
        logits = model(images)
        loss = hooks.loss(logits, y[idx], images)
        loss.backward()
        opt.step()
        sched.step()
        model.clip_weights()
        if hooks.after_step is not None:
            hooks.after_step(model, sched.last_epoch)
        total_loss += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y[idx]).sum())
    return total_loss / len(x), correct / len(x)
