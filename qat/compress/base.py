"""The contract every compression technique keeps.

A technique is a frozen dataclass whose fields are its options (``ratio``, ``bits``,
``teacher``...) and which is registered under a short name with ``@register``. A
compression run applies a list of them in order to a trained checkpoint; each takes a
checkpoint and returns a new one (its spec may change: a pruned MLP has smaller
``widths``), so the result is a checkpoint like any other and ``flows build
--checkpoint`` takes it through the whole flow.

- ``check(spec, data)`` runs before any work for every technique of a run: bad options
  raise ConfigError naming the option (validate the whole run first, then work).
- ``setup(ctx)`` runs before ``apply`` and also when a finished technique's checkpoint
  is reused on a resumed run: what later techniques' fine-tunes must see (distillation
  sets ``ctx.hooks.loss``) goes there, not in ``apply``.
- ``apply(ckpt, ctx)`` does the work, fine-tuning with ``ctx.train`` and ``ctx.hooks``
  (distillation replaces the loss there for every later fine-tune) and writes only
  under ``ctx.out``.
- ``fpga_effect`` says honestly what the technique can change on a FINN dataflow
  design: ``shape`` (fewer cycles or resources: smaller matrices), ``io`` (fewer DMA
  cycles: fewer or narrower input values), ``storage`` (fewer bytes to store or ship,
  same hardware), or ``none`` (FINN's matrix units are dense).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from host.errors import ConfigError

if TYPE_CHECKING:
    from qat.data import Dataset
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo, TrainConfig, TrainHooks

FpgaEffect = Literal["shape", "io", "storage", "none"]
FPGA_EFFECTS: tuple[str, ...] = ("shape", "io", "storage", "none")


@dataclass
class CompressContext:
    """What the techniques of one run share."""

    ds: "Dataset"  # training and test data
    train: "TrainConfig"  # how to fine-tune (epochs, lr, seed, ...)
    hooks: "TrainHooks"  # the loss and optimiser of every fine-tune (distillation changes the loss)
    out: Path  # the run folder; technique i writes only under out/<i>_<name>/
    progress: bool = True
    base_ds: "Dataset | None" = None  # the original images when ``ds`` holds a pixel-pruned model's (prune_pixels)


@dataclass(frozen=True)
class Technique:
    """Base of every technique: a frozen dataclass of options with a registered ``name``."""

    name: ClassVar[str]
    fpga_effect: ClassVar[FpgaEffect]

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        """Refuse bad options for this model and data before any work (ConfigError naming the option)."""

    def planned_spec(self, spec: "ModelSpec") -> "ModelSpec":
        """The spec this technique will produce from ``spec`` (so the next ones are checked against it)."""
        return spec

    def setup(self, ctx: CompressContext) -> None:
        """Change what later fine-tunes see (ctx.hooks); runs even when this technique's result is reused."""

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        raise NotImplementedError

    def report(self, ckpt: "Checkpoint") -> dict:
        """Figures of this technique's own about the compressed checkpoint (e.g. sparsity)."""
        return {}

    def to_dict(self) -> dict:
        """Options as plain JSON/YAML values (tuples as lists), with the registered ``name``."""
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v
                                      for k, v in dataclasses.asdict(self).items()}}


REGISTRY: dict[str, type[Technique]] = {}
BUILTIN = ("structured", "bits", "pixels", "distill", "unstructured", "lowrank", "sharing")  # qat.compress.<module>


def load_techniques() -> None:
    """Import the built-in technique modules, each of which registers its techniques (idempotent)."""
    import importlib

    for module in BUILTIN:
        importlib.import_module(f"qat.compress.{module}")


def register(cls: type[Technique]) -> type[Technique]:
    """Class decorator: make ``cls`` available under ``cls.name`` in configs and on the command line."""
    if cls.fpga_effect not in FPGA_EFFECTS:
        raise TypeError(f"{cls.__name__}.fpga_effect must be one of {FPGA_EFFECTS}")
    REGISTRY[cls.name] = cls
    return cls


def technique_from_dict(d: dict, source: str = "compression config") -> Technique:
    """``{"name": "prune", "ratio": 0.5}`` -> the registered technique with those options; errors name the field."""
    load_techniques()
    if not isinstance(d, dict) or "name" not in d:
        raise ConfigError(f"{source}: each technique needs a 'name' (one of {', '.join(sorted(REGISTRY))})")
    cls = REGISTRY.get(d["name"])
    if cls is None:
        raise ConfigError(f"{source}: unknown technique {d['name']!r}; known: {', '.join(sorted(REGISTRY))}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields - {"name"})
    if unknown:
        raise ConfigError(f"{source}: technique {d['name']!r} has no option(s) {', '.join(unknown)}; "
                          f"options: {', '.join(sorted(fields))}")
    try:
        return cls(**{k: v for k, v in d.items() if k != "name"})
    except TypeError as exc:
        raise ConfigError(f"{source}: technique {d['name']!r}: {exc}") from None
