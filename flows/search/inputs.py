"""What a searched design needs beyond its model spec: the pixels it keeps and its teacher.

Made once per search (per worker) from the search's training split (the training split less
the validation split), so every trial, the retrained Pareto front and the sensitivity rows
of one search see the same pixels and the same teacher:

- kept pixels: for a count K, the K highest-variance pixels of that split
  (``qat.compress.pixels.informative_pixels``); a design's images are ``ds.gather(kept)``
  and its checkpoint records them, so the estimate and every later build see (1, 1, K).
- teacher: a file named by the space (flows checkpoint, TorchScript or ONNX; checked against
  the images and classes before any trial), or the space's ``teacher_model`` trained once on
  that split and cached as ``<out>/teacher/<model>-e<epochs>-s<seed>.pt`` (a file lock keeps two
  workers on one machine from training it twice; a rerun reuses it). Never retrained per trial.
  A student that keeps K pixels learns from the teacher's view of the whole image with the
  dropped pixels at their training mean (they are the lowest-variance pixels, so the mean is
  close to what they hold).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flows.errors import ConfigError
from flows.search.space import Design, SearchSpace


class FillPixels(torch.nn.Module):
    """A teacher of whole images fed a pixel-pruned batch: the kept pixels go back in place, the
    others take their training mean."""

    def __init__(self, teacher: torch.nn.Module, kept: tuple[int, ...], fill: np.ndarray, shape: tuple):
        super().__init__()
        self.teacher, self.shape = teacher, tuple(shape)
        self.register_buffer("index", torch.tensor(kept, dtype=torch.long))
        self.register_buffer("fill", torch.from_numpy(fill.astype(np.float32)))  # (C*H*W,) training means

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (N, 1, 1, K) raw pixels
        full = self.fill.to(x.device).expand(x.shape[0], -1).clone()
        full[:, self.index.to(x.device)] = x.reshape(x.shape[0], -1)
        return self.teacher(full.reshape(x.shape[0], *self.shape))


class DesignInputs:
    """Kept pixels and the teacher of one search; ``check`` validates the space against the data."""

    def __init__(self, space: SearchSpace, ds_search, cfg):
        self.space, self.ds, self.cfg = space, ds_search, cfg
        self._kept: dict[int, tuple[int, ...]] = {}
        self._teacher = None

    @property
    def image_pixels(self) -> int:
        return int(np.prod(self.ds.image_shape))

    def check(self) -> None:
        """Before any trial: CNV has images it can convolve (32x32 or more), ranks fit their layers, the
        teacher file takes these images and classes, a teacher model can be built for them (ConfigError
        naming the field)."""
        from qat.cnv import check_image_shape
        from qat.compress.distill import check_teacher
        from qat.models import build_model, parse_model_name
        from qat.train import DatasetInfo

        if self.space.arch == "cnv":
            check_image_shape(self.ds.image_shape)
        self.space.check_data(self.image_pixels, self.ds.num_classes)
        teacher = self.space.teacher
        if teacher is None or True not in self.space.distill:
            return
        if teacher.path is not None:
            try:
                check_teacher(teacher.path, DatasetInfo.of(self.ds))
            except ConfigError as exc:
                raise ConfigError(f"search space field 'teacher': {exc}") from None
        else:
            try:
                build_model(parse_model_name(teacher.model), self.ds.image_shape, self.ds.num_classes,
                            self.ds.pixel_max)
            except ConfigError as exc:
                raise ConfigError(f"search space field 'teacher_model' {teacher.model}: {exc}") from None

    def design(self, choices: dict) -> Design:
        return self.space.design(choices, self.image_pixels, self.ds.num_classes)

    def kept_pixels(self, count: int | None) -> tuple[int, ...] | None:
        from qat.compress.pixels import informative_pixels

        if count is None:
            return None
        if count not in self._kept:
            self._kept[count] = informative_pixels(self.ds.train.images, count)
        return self._kept[count]

    def dataset(self, design: Design, ds):
        """``ds`` (the search's split or the whole dataset) as ``design`` takes it."""
        return ds.gather(self.kept_pixels(design.kept))

    def hooks(self, design: Design):
        """The training hooks of ``design``: distillation's loss when it distils, the default otherwise."""
        from qat.compress.distill import TeacherLoss
        from qat.train import TrainHooks

        if not design.distill:
            return TrainHooks()
        teacher = self.teacher()
        kept = self.kept_pixels(design.kept)
        if kept is not None:
            flat = self.ds.train.images.reshape(len(self.ds.train.images), -1)
            teacher = FillPixels(teacher, kept, flat.astype(np.float64).mean(0), self.ds.image_shape)
        t = self.space.teacher
        return TrainHooks(loss=TeacherLoss(teacher, t.temperature, t.alpha))

    def teacher_key(self) -> dict | None:
        """What the teacher is, for cache keys of distilled designs."""
        t = self.space.teacher
        return None if t is None else {**t.to_dict(), "epochs": self.teacher_epochs, "seed": self.cfg.seed,
                                       **({"shift": self.cfg.shift} if self.cfg.shift else {})}

    @property
    def teacher_epochs(self) -> int:
        t = self.space.teacher
        return (t.epochs if t is not None and t.epochs is not None else None) or self.cfg.epochs

    def teacher(self) -> torch.nn.Module:
        """The teacher module (eval mode), loaded or trained once and cached."""
        if self._teacher is None:
            self._teacher = self._load_teacher()
        return self._teacher

    def teacher_path(self) -> Path | None:
        t = self.space.teacher
        if t is None or t.model is None:
            return None
        shift = f"-shift{self.cfg.shift}" if self.cfg.shift else ""
        return Path(self.cfg.out) / "teacher" / f"{t.model}-e{self.teacher_epochs}-s{self.cfg.seed}{shift}.pt"

    def _load_teacher(self) -> torch.nn.Module:
        from filelock import FileLock

        from qat.compress.distill import load_teacher
        from qat.models import parse_model_name
        from qat.train import DatasetInfo, TrainConfig, load_checkpoint, train

        t = self.space.teacher
        if t.path is not None:
            return load_teacher(t.path, DatasetInfo.of(self.ds))
        path = self.teacher_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not path.is_file():
                cfg = TrainConfig(epochs=self.teacher_epochs, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                                  seed=self.cfg.seed, dropout=self.cfg.dropout, shift=self.cfg.shift)
                train(parse_model_name(t.model), self.ds, cfg, progress=False).save(path)
        return load_checkpoint(path).model().eval()

    def teacher_accuracy(self) -> dict | None:
        """The trained teacher's validation accuracy (measured), for the report; None without one."""
        path = self.teacher_path()
        if path is None or not path.is_file():
            return None
        from qat.train import load_checkpoint

        ckpt = load_checkpoint(path)
        return {"model": ckpt.spec.name, "epochs": self.teacher_epochs, "path": str(path.relative_to(self.cfg.out)),
                "val_accuracy": ckpt.metrics["test_accuracy"]}
