"""Fewer bits: the input quantiser (``input_bits``) and the weights and activations (``bits``).

``input_bits`` narrows the input quantiser (spec ``in_bits``) and fine-tunes. It moves the
input-DMA bound only when the accelerator's input stream carries the quantised values
(in_bits per pixel, 8/in_bits pixels a byte) instead of raw 8-bit pixels; the candidate
report shows both bounds. A 1-bit input quantiser in front of multi-bit weights is refused
by FINN's HW conversion today (``MultiThreshold out_scale must be 1``); 2 bits and up build.

``bits`` sets the weight and/or activation bit widths (one for all, or per layer; and
``in_bits``, the input quantiser, if given) and
fine-tunes from the same float weights: fewer bits make FINN's matrix units cheaper and,
where LUTs bound the folding, faster.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from host.errors import ConfigError
from qat.compress.base import CompressContext, Technique, register

if TYPE_CHECKING:
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo


def _fine_tune(ckpt: "Checkpoint", spec: "ModelSpec", ctx: CompressContext) -> "Checkpoint":
    from qat.train import train

    return train(spec, ctx.ds, ctx.train, progress=ctx.progress, hooks=ctx.hooks, init_state=ckpt.state_dict)


@register
@dataclass(frozen=True)
class InputBits(Technique):
    """Quantise the input to ``bits`` (1..8) and fine-tune."""

    name: ClassVar[str] = "input_bits"
    fpga_effect: ClassVar[str] = "io"

    bits: int = 2

    def planned_spec(self, spec: "ModelSpec") -> "ModelSpec":
        from qat.models import ModelSpec

        return ModelSpec.from_dict({**spec.to_dict(), "in_bits": self.bits}, source="input_bits: option 'bits'")

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        self.planned_spec(spec)

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        return _fine_tune(ckpt, self.planned_spec(ckpt.spec), ctx)

    def report(self, ckpt: "Checkpoint") -> dict:
        return {"in_bits": ckpt.spec.in_bits}


@register
@dataclass(frozen=True)
class Bits(Technique):
    """Set weight and/or activation bit widths (an integer for all layers, or a list) and fine-tune."""

    name: ClassVar[str] = "bits"
    fpga_effect: ClassVar[str] = "shape"

    weight_bits: int | tuple[int, ...] | None = None  # None: keep
    act_bits: int | tuple[int, ...] | None = None
    in_bits: int | None = None  # the input quantiser too (as input_bits), in the same fine-tune

    def __post_init__(self):
        for f in ("weight_bits", "act_bits"):
            if isinstance(getattr(self, f), list):
                object.__setattr__(self, f, tuple(getattr(self, f)))

    def planned_spec(self, spec: "ModelSpec") -> "ModelSpec":
        from qat.models import ModelSpec

        d = spec.to_dict()
        d.update({k: v for k, v in (("weight_bits", self.weight_bits), ("act_bits", self.act_bits),
                                    ("in_bits", self.in_bits)) if v is not None})
        return ModelSpec.from_dict(d, source="bits")

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        if self.weight_bits is None and self.act_bits is None and self.in_bits is None:
            raise ConfigError("bits: give option 'weight_bits', 'act_bits' and/or 'in_bits'")
        self.planned_spec(spec)

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        return _fine_tune(ckpt, self.planned_spec(ckpt.spec), ctx)

    def report(self, ckpt: "Checkpoint") -> dict:
        return {"weight_bits": list(ckpt.spec.weight_bits), "act_bits": list(ckpt.spec.act_bits),
                "in_bits": ckpt.spec.in_bits}
