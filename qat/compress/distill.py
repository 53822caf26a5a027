"""Knowledge distillation (Hinton, Vinyals and Dean 2015): the student learns from a teacher's soft targets.

The loss of every later fine-tune (and of this technique's own) is
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)``:
the T^2 factor keeps the soft term's gradients on the scale of the hard term's as T grows.
It goes in as ``TrainHooks.loss``, so the training loop is not forked.

Teacher (``teacher: path``, the kind read from the file): a qnn-flows checkpoint of any spec
trained on the same images and classes (a float teacher is an 8-bit qnn-flows model, e.g.
``lenet-w8a8``); a plain PyTorch model saved with ``torch.jit.save`` (TorchScript); or an ONNX
file, run with onnxruntime (a teacher needs no gradients). A plain teacher takes what a
qnn-flows model takes, raw pixels as float32 ``(N, C, H, W)`` in ``0..pixel_max``, and returns
``(N, classes)`` logits. Or a zoo model trained on the fly (``teacher_model: lenet-w8a8``,
``teacher_epochs``) into the technique's folder. The teacher's input shape and classes must
match the student's (checked before any work, one error naming 'teacher'); distil after
``prune_pixels``, not before (the teacher takes the images the student takes).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch.nn import functional as F

from host.errors import ConfigError, ModelError
from qat.compress.base import CompressContext, Technique, register

if TYPE_CHECKING:
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
                 alpha: float) -> torch.Tensor:
    """Hinton's loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True)
    return alpha * t * t * soft + (1 - alpha) * F.cross_entropy(student, labels)


class TeacherLoss:
    """TrainHooks.loss: the teacher (eval mode, no gradients) scores the same images as the student."""

    def __init__(self, teacher: torch.nn.Module, temperature: float, alpha: float):
        self.teacher, self.temperature, self.alpha = teacher.eval(), temperature, alpha

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher.to(images.device)(images)
        return distill_loss(logits, target, labels, self.temperature, self.alpha)


@register
@dataclass(frozen=True)
class Distill(Technique):
    """Fine-tune (or train anew, ``from_scratch``) with a teacher's soft targets; later fine-tunes distil too."""

    name: ClassVar[str] = "distill"
    fpga_effect: ClassVar[str] = "none"  # same model shape: accuracy, not hardware

    teacher: str | None = None  # a file (flows checkpoint, TorchScript, ONNX); or teacher_model, trained on the fly
    teacher_model: str | None = None  # zoo name of a teacher to train here, e.g. lenet-w8a8
    teacher_epochs: int = 10
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the soft (teacher) term; 1 - alpha for the labels
    from_scratch: bool = False  # train the student from a fresh initialisation instead of fine-tuning
    fine_tune: bool = True  # False: no training of its own, only the later techniques' fine-tunes distil

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        if (self.teacher is None) == (self.teacher_model is None):
            raise ConfigError("distill: give option 'teacher' (a checkpoint) or 'teacher_model' (a zoo model to "
                              "train on the fly), exactly one")
        if not self.temperature > 0:
            raise ConfigError(f"distill: option 'temperature' must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"distill: option 'alpha' must be in [0, 1], got {self.alpha}")
        if self.teacher_epochs < 1:
            raise ConfigError(f"distill: option 'teacher_epochs' must be >= 1, got {self.teacher_epochs}")
        if self.teacher is not None:
            check_teacher(self.teacher, data)
        else:
            from qat.models import parse_model_name

            parse_model_name(self.teacher_model)

    def setup(self, ctx: CompressContext) -> None:
        ctx.hooks = dataclasses.replace(ctx.hooks, loss=TeacherLoss(self.teacher_module(ctx), self.temperature,
                                                                    self.alpha))

    def teacher_module(self, ctx: CompressContext) -> torch.nn.Module:
        """The teacher: loaded (any kind of file), or trained once into ``ctx.out/teacher.pt`` and reused after."""
        from qat.models import parse_model_name
        from qat.train import DatasetInfo, TrainConfig, load_checkpoint, train_to_file

        if self.teacher is not None:
            return load_teacher(self.teacher, DatasetInfo.of(ctx.ds))
        path = Path(ctx.out) / "teacher.pt"
        if path.is_file():
            return load_checkpoint(path).model()
        cfg = TrainConfig(epochs=self.teacher_epochs, batch_size=ctx.train.batch_size, seed=ctx.train.seed)
        return train_to_file(parse_model_name(self.teacher_model), ctx.ds, cfg, path, progress=ctx.progress).model()

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        from qat.train import train

        if not self.fine_tune:
            return ckpt
        init = None if self.from_scratch else ckpt.state_dict
        return train(ckpt.spec, ctx.ds, ctx.train, progress=ctx.progress, hooks=ctx.hooks, init_state=init)

    def report(self, ckpt: "Checkpoint") -> dict:
        return {"teacher": self.teacher or f"{self.teacher_model} ({self.teacher_epochs} epochs, trained here)",
                "temperature": self.temperature, "alpha": self.alpha}


def teacher_kind(path: str | Path) -> str:
    """'onnx' (a ``.onnx`` file), 'torchscript' (a ``torch.jit.save`` archive: a zip holding ``code/``)
    or 'checkpoint' (anything else: a qnn-flows checkpoint)."""
    import zipfile

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any("/code/" in name for name in z.namelist()):
                return "torchscript"
    return "checkpoint"


def load_teacher(path: str | Path, data: "DatasetInfo") -> torch.nn.Module:
    """The teacher in ``path`` as a module in eval mode, checked to take ``data``'s images and give
    its classes (ConfigError naming option 'teacher' otherwise); the file is read once."""
    return _checked_teacher(path, data)


def _open_plain_teacher(path: str | Path) -> torch.nn.Module:
    """A TorchScript or ONNX teacher (qnn-flows checkpoints go through _check_checkpoint_teacher)."""
    kind = teacher_kind(path)
    try:
        if kind == "onnx":
            return OnnxTeacher(path)
        import warnings

        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; the format is what users have
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit and onnxruntime raise many kinds for a damaged file
        raise ConfigError(f"distill: option 'teacher' {path} is not a readable {kind} file: "
                          f"{' '.join(str(exc).split())[:160]}") from None


class OnnxTeacher(torch.nn.Module):
    """An ONNX model run by onnxruntime (CPU) as a teacher: float32 images in, logits out, no gradients."""

    def __init__(self, path: str | Path):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]

    def input_shape(self) -> tuple:
        """The declared shape after the batch dimension (a named or unknown dimension reads None)."""
        return tuple(d if isinstance(d, int) else None for d in self.input.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input.name: x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def check_teacher(path: str | Path, data: "DatasetInfo") -> None:
    """A teacher must exist and take the student's images (shape) and classes: a qnn-flows checkpoint by
    its recorded data, a plain model by running it on two blank images."""
    _checked_teacher(path, data)


def _checked_teacher(path: str | Path, data: "DatasetInfo") -> torch.nn.Module:
    """The teacher in ``path`` in eval mode, after check_teacher's checks."""
    if not Path(path).is_file():
        raise ConfigError(f"distill: option 'teacher': {path} not found")
    if teacher_kind(path) == "checkpoint":
        return _check_checkpoint_teacher(path, data).model().eval()
    teacher = _open_plain_teacher(path).eval()
    shape = tuple(data.image_shape)
    declared = teacher.input_shape() if isinstance(teacher, OnnxTeacher) else None
    if declared is not None and (len(declared) != len(shape) or any(
            d is not None and d != s for d, s in zip(declared, shape))):
        raise ConfigError(f"distill: option 'teacher' {path} takes {declared} images, the student {shape} "
                          f"({data.name}); export the teacher for the student's input")
    try:
        with torch.no_grad():
            out = teacher(torch.zeros(2, *shape))
    except Exception as exc:  # whatever the model raises on an input it does not take
        raise ConfigError(f"distill: option 'teacher' {path} does not take {shape} images ({data.name}): "
                          f"{' '.join(str(exc).split())[:160]}") from None
    if tuple(out.shape) != (2, data.num_classes):
        raise ConfigError(f"distill: option 'teacher' {path} gives outputs of shape {tuple(out.shape)[1:]} per image, "
                          f"the student has {data.num_classes} classes ({data.name}); use a teacher for them")
    return teacher


def _check_checkpoint_teacher(path: str | Path, data: "DatasetInfo") -> "Checkpoint":
    from qat.train import load_checkpoint

    try:
        teacher = load_checkpoint(path)
    except ModelError as exc:
        raise ConfigError(f"distill: option 'teacher': {exc}") from None
    if tuple(teacher.data.image_shape) != tuple(data.image_shape):
        raise ConfigError(f"distill: option 'teacher' {path} takes {tuple(teacher.data.image_shape)} images, the "
                          f"student {tuple(data.image_shape)} ({data.name}); use a teacher trained on {data.name}")
    if teacher.data.num_classes != data.num_classes:
        raise ConfigError(f"distill: option 'teacher' {path} has {teacher.data.num_classes} classes, the student "
                          f"{data.num_classes} ({data.name}); use a teacher trained on {data.name}")
    return teacher
