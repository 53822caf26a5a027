"""The model zoo: FINN-style quantised MLPs, named like ``tfc-w2a2``.

Topologies follow Brevitas' bnn_pynq FC (``brevitas_examples/bnn_pynq/models/FC.py``):
input quantiser, then per hidden layer QuantLinear -> BatchNorm1d -> QuantIdentity,
then a final QuantLinear. Two differences, both for the flow's sake:
- the model takes raw pixels (0..pixel_max) and scales them itself, so the
  exported graph's input is the integer image the board's DMA streams;
- the final scale is a learned *positive* scalar (no bias), so argmax of the
  logits equals argmax of the last layer's integer accumulators and FINN can
  absorb it into the label-select layer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from brevitas.nn import QuantIdentity, QuantLinear
from torch import nn

from flows.errors import ConfigError
from qat.quantizers import ActQuant, WeightQuant

# hidden layer widths per MLP architecture
MLP_HIDDEN: dict[str, tuple[int, ...]] = {
    "tfc": (64, 64, 64),
    "sfc": (256, 256, 256),
    "lfc": (1024, 1024, 1024),
    "lenet": (300, 100),
}
PRECISIONS = ("w1a1", "w1a2", "w2a2", "w4a4", "w8a8")
DROPOUT = 0.2
_NAME = re.compile(r"^(?P<arch>[a-z]+)-w(?P<w>\d+)a(?P<a>\d+)$")


@dataclass(frozen=True)
class ModelSpec:
    """What to build: architecture and bit widths, one entry per layer."""

    arch: str
    weight_bits: tuple[int, ...]  # one per QuantLinear
    act_bits: tuple[int, ...]  # one per hidden activation
    in_bits: int  # input quantiser

    @property
    def name(self) -> str:
        w, a = self.weight_bits[0], self.act_bits[0]
        uniform = set(self.weight_bits) == {w} and set(self.act_bits) == {a} and self.in_bits == a
        return f"{self.arch}-w{w}a{a}" if uniform else f"{self.arch}-custom"

    def to_dict(self) -> dict:
        return {"arch": self.arch, "weight_bits": list(self.weight_bits),
                "act_bits": list(self.act_bits), "in_bits": self.in_bits}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return validate(cls(d["arch"], tuple(d["weight_bits"]), tuple(d["act_bits"]), int(d["in_bits"])))


def known_models() -> list[str]:
    return [f"{arch}-{p}" for arch in MLP_HIDDEN for p in PRECISIONS]


def parse_model_name(name: str) -> ModelSpec:
    """``tfc-w2a2`` -> ModelSpec with 2-bit weights and activations everywhere."""
    m = _NAME.match(name)
    if not m or m["arch"] not in MLP_HIDDEN:
        raise ConfigError(f"unknown model '{name}'; known models: {', '.join(known_models())}")
    w, a = int(m["w"]), int(m["a"])
    n_layers = len(MLP_HIDDEN[m["arch"]]) + 1
    return validate(ModelSpec(m["arch"], (w,) * n_layers, (a,) * (n_layers - 1), a))


def validate(spec: ModelSpec) -> ModelSpec:
    if spec.arch not in MLP_HIDDEN:
        raise ConfigError(f"unknown architecture '{spec.arch}'; known: {', '.join(MLP_HIDDEN)}")
    n_layers = len(MLP_HIDDEN[spec.arch]) + 1
    if len(spec.weight_bits) != n_layers or len(spec.act_bits) != n_layers - 1:
        raise ConfigError(f"{spec.arch} needs {n_layers} weight bit widths and {n_layers - 1} "
                          f"activation bit widths, got {len(spec.weight_bits)} and {len(spec.act_bits)}")
    for b in (*spec.weight_bits, *spec.act_bits, spec.in_bits):
        if not 1 <= b <= 8:
            raise ConfigError(f"bit width {b} is out of range; use 1 (binary) to 8")
    return spec


class PositiveScale(nn.Module):
    """y = exp(log_scale) * x: a learned scalar that keeps the argmax of x."""

    def __init__(self, init: float = 0.1):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(float(init)).log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp()


class QuantMLP(nn.Module):
    """Quantised MLP over raw pixels: (N, C, H, W) in [0, pixel_max] -> (N, classes) logits."""

    def __init__(self, spec: ModelSpec, in_features: int, num_classes: int, pixel_max: int):
        super().__init__()
        self.spec = spec
        self.register_buffer("pixel_scale", torch.tensor(2.0 / pixel_max))
        self.features = nn.ModuleList([QuantIdentity(act_quant=ActQuant, bit_width=spec.in_bits),
                                       nn.Dropout(DROPOUT)])
        widths = (in_features, *MLP_HIDDEN[spec.arch])
        for i, out_features in enumerate(widths[1:]):
            self.features.extend([
                QuantLinear(widths[i], out_features, bias=False,
                            weight_quant=WeightQuant, weight_bit_width=spec.weight_bits[i]),
                nn.BatchNorm1d(out_features),
                QuantIdentity(act_quant=ActQuant, bit_width=spec.act_bits[i]),
                nn.Dropout(DROPOUT),
            ])
        self.features.append(QuantLinear(widths[-1], num_classes, bias=False,
                                          weight_quant=WeightQuant, weight_bit_width=spec.weight_bits[-1]))
        self.features.append(PositiveScale())
        for m in self.modules():
            if isinstance(m, QuantLinear):
                nn.init.uniform_(m.weight.data, -1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1) * self.pixel_scale - 1.0
        for module in self.features:
            x = module(x)
        return x

    def clip_weights(self) -> None:
        """Keep float weights in the quantisers' range, as Brevitas' bnn_pynq trainer does."""
        for m in self.features:
            if isinstance(m, QuantLinear):
                m.weight.data.clamp_(-1.0, 1.0)


def build_model(spec: ModelSpec, image_shape: tuple[int, int, int], num_classes: int,
                pixel_max: int) -> QuantMLP:
    in_features = image_shape[0] * image_shape[1] * image_shape[2]
    return QuantMLP(spec, in_features, num_classes, pixel_max)
