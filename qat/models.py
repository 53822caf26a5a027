"""The model zoo: FINN-style quantised MLPs and CNV, named like ``tfc-w2a2`` or ``cnv-w1a1``.

MLP topologies follow Brevitas' bnn_pynq FC (``brevitas_examples/bnn_pynq/models/FC.py``):
input quantiser, then per hidden layer QuantLinear -> BatchNorm1d -> QuantIdentity,
then a final QuantLinear. CNV (qat.cnv) follows Brevitas' CNV. Two differences, both
for the flow's sake:
- the model takes raw pixels (0..pixel_max) and scales them itself, so the
  exported graph's input is the integer image the board's DMA streams;
- the final scale is a learned *positive* scalar (no bias), so argmax of the
  logits equals argmax of the last layer's integer accumulators and FINN can
  absorb it into the label-select layer.

Per-layer bit widths come from a model config (YAML or JSON), e.g.
``{arch: tfc, weight_bits: [8, 2, 2, 8], act_bits: [2, 2, 2], in_bits: 8}``;
per-layer widths (hidden neurons of an MLP; convolution channels then hidden
linear widths of CNV) optionally too, ``widths: [48, 64, 32]``: a pruned model
is a spec like any other. Without ``widths`` the architecture's own apply.
MLPs optionally carry per-layer ``ranks`` (one per weight layer, ``null`` = not factorised):
a layer of rank r is built as QuantLinear(n->r) -> BatchNorm1d -> an 8-bit activation
quantiser -> QuantLinear(r->m), two matrix units with an integer interface for FINN
(qat.compress.lowrank makes them by truncated SVD).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from brevitas.nn import QuantIdentity, QuantLinear
from torch import nn

from host.errors import ConfigError
from qat import cnv
from qat.layers import PositiveScale
from qat.quantizers import ActQuant, WeightQuant
from qat.zoo import ARCH_NAMES, MAX_BITS, PRECISIONS, zoo_names  # noqa: F401 - PRECISIONS: qat.models.PRECISIONS
from qat.zoo import NAME as _NAME
from qat.train_config import DROPOUT

# hidden layer widths per MLP architecture
MLP_HIDDEN: dict[str, tuple[int, ...]] = {
    "tfc": (64, 64, 64),
    "sfc": (256, 256, 256),
    "lfc": (1024, 1024, 1024),
    "lenet": (300, 100),
}


@dataclass(frozen=True)
class Arch:
    """What a model spec must give for one architecture."""

    weight_layers: int  # QuantLinear/QuantConv2d layers, each with its weight bit width
    act_layers: int  # hidden activation quantisers
    in_bits: int | None  # fixed input quantiser width of the named models; None: the activations'


ARCHS: dict[str, Arch] = {
    **{name: Arch(len(hidden) + 1, len(hidden), None) for name, hidden in MLP_HIDDEN.items()},
    "cnv": Arch(cnv.N_WEIGHT_LAYERS, cnv.N_ACT_LAYERS, cnv.IN_BITS),
}
assert tuple(ARCHS) == ARCH_NAMES, "qat.zoo names the architectures built here"
SPEC_FIELDS = ("arch", "weight_bits", "act_bits", "in_bits", "widths", "ranks")
RANK_ACT_BITS = 8  # activation quantiser between the two halves of a factorised layer


def default_widths(arch: str) -> tuple[int, ...]:
    """The architecture's own per-layer widths: MLP hidden layers; CNV's convolution channels, then its
    hidden linear widths."""
    if arch == "cnv":
        return (*(ch for ch, _ in cnv.CNV_OUT_CH_POOL), *cnv.CNV_FC)
    return MLP_HIDDEN[arch]


def default_in_bits(arch: str, act_bits: int) -> int:
    """Input quantiser width of the named model ``<arch>-w?a<act_bits>`` (Brevitas' choice)."""
    fixed = ARCHS[arch].in_bits
    return act_bits if fixed is None else fixed


@dataclass(frozen=True)
class ModelSpec:
    """What to build: architecture and bit widths, one entry per layer."""

    arch: str
    weight_bits: tuple[int, ...]  # one per QuantLinear/QuantConv2d
    act_bits: tuple[int, ...]  # one per hidden activation
    in_bits: int  # input quantiser
    widths: tuple[int, ...] | None = None  # one per hidden layer (default_widths); None: the architecture's
    ranks: tuple[int | None, ...] | None = None  # MLPs: one per weight layer, None = not factorised

    @property
    def layer_widths(self) -> tuple[int, ...]:
        """The widths this model is built with: ``widths`` or the architecture's own."""
        return self.widths if self.widths is not None else default_widths(self.arch)

    @property
    def factorised(self) -> bool:
        """Whether any layer is built as two low-rank halves."""
        return self.ranks is not None and any(r is not None for r in self.ranks)

    @property
    def name(self) -> str:
        w, a = self.weight_bits[0], self.act_bits[0]
        uniform = (set(self.weight_bits) == {w} and set(self.act_bits) == {a}
                   and self.in_bits == default_in_bits(self.arch, a)
                   and self.layer_widths == default_widths(self.arch) and not self.factorised)
        return f"{self.arch}-w{w}a{a}" if uniform else f"{self.arch}-custom"

    def to_dict(self) -> dict:
        """The spec as a plain dict; ``widths`` and ``ranks`` only when given, so zoo specs read as they
        always have."""
        d = {"arch": self.arch, "weight_bits": list(self.weight_bits),
             "act_bits": list(self.act_bits), "in_bits": self.in_bits}
        if self.widths is not None:
            d["widths"] = list(self.widths)
        if self.ranks is not None:
            d["ranks"] = list(self.ranks)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "model config") -> "ModelSpec":
        """Build and validate a spec; every error names the field. ``weight_bits``/``act_bits``
        may be one integer (the same for every layer); ``in_bits`` defaults to the named model's."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source} must be a mapping with fields {', '.join(SPEC_FIELDS)}, "
                              f"got {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in SPEC_FIELDS)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; fields are {', '.join(SPEC_FIELDS)}")
        missing = [f for f in SPEC_FIELDS[:3] if f not in d]
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}; e.g. "
                              "{arch: tfc, weight_bits: [8, 2, 2, 8], act_bits: [2, 2, 2], in_bits: 8}")
        arch = d["arch"]
        if not isinstance(arch, str) or arch not in ARCHS:
            raise ConfigError(f"{source}: field 'arch' is {arch!r}; known architectures: {', '.join(ARCHS)}")
        layers = ARCHS[arch]
        weight_bits = _bit_list(d["weight_bits"], layers.weight_layers, "weight_bits", arch, source)
        act_bits = _bit_list(d["act_bits"], layers.act_layers, "act_bits", arch, source)
        in_bits = d.get("in_bits")
        in_bits = default_in_bits(arch, act_bits[0]) if in_bits is None else _bits(in_bits, "in_bits", source)
        widths = d.get("widths")
        widths = None if widths is None else _width_list(widths, len(default_widths(arch)), arch, source)
        ranks = d.get("ranks")
        ranks = None if ranks is None else _rank_list(ranks, layers.weight_layers, arch, source)
        return validate(cls(arch, weight_bits, act_bits, in_bits, widths, ranks))


def _bits(value, field: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BITS:
        raise ConfigError(f"{source}: field '{field}' has {value!r}; bit widths are integers 1 (binary) to {MAX_BITS}")
    return value


def _bit_list(value, n: int, field: str, arch: str, source: str) -> tuple[int, ...]:
    """One bit width per layer, from a list of ``n`` or a single integer for all."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * n
    if not isinstance(value, (list, tuple)) or len(value) != n:
        got = f"{len(value)} entries" if isinstance(value, (list, tuple)) else repr(value)
        raise ConfigError(f"{source}: field '{field}' needs {n} bit widths for {arch} (one per layer) "
                          f"or one integer for all, got {got}")
    return tuple(_bits(v, field, source) for v in value)


def _width_list(value, n: int, arch: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
        raise ConfigError(f"{source}: field 'widths' needs {n} positive integers for {arch} (one per hidden "
                          f"layer, default {list(default_widths(arch))}), got {value!r}")
    return tuple(value)


def _rank_list(value, n: int, arch: str, source: str) -> tuple[int | None, ...]:
    if arch == "cnv":
        raise ConfigError(f"{source}: field 'ranks' (low-rank layers) is for MLPs only, not {arch}")
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in value):
        raise ConfigError(f"{source}: field 'ranks' needs {n} entries for {arch} (one per weight layer), each a "
                          f"positive rank or null for a layer kept whole, got {value!r}")
    return tuple(value)


def check_ranks(spec: "ModelSpec", in_features: int, num_classes: int) -> None:
    """Refuse a rank above min(inputs, outputs) of its layer (ConfigError naming 'ranks')."""
    if spec.ranks is None:
        return
    dims = (in_features, *spec.layer_widths, num_classes)
    for i, r in enumerate(spec.ranks):
        if r is not None and r > min(dims[i], dims[i + 1]):
            raise ConfigError(f"field 'ranks' entry {i} is {r}, larger than layer {i} ({dims[i]} -> {dims[i + 1]}); "
                              f"a rank is at most {min(dims[i], dims[i + 1])}")


def load_model_config(path: str | Path) -> ModelSpec:
    """Read a model config (YAML or JSON) into a validated spec."""
    from qat.config_file import read_yaml

    return ModelSpec.from_dict(read_yaml(path, "model config"), source=f"model config {path}")


def known_models() -> list[str]:
    return zoo_names()


def parse_model_name(name: str) -> ModelSpec:
    """``tfc-w2a2`` -> ModelSpec with 2-bit weights and activations everywhere."""
    m = _NAME.match(name)
    if not m or m["arch"] not in ARCHS:
        raise ConfigError(f"unknown model '{name}'; known models: {', '.join(known_models())}")
    w, a = int(m["w"]), int(m["a"])
    layers = ARCHS[m["arch"]]
    return validate(ModelSpec(m["arch"], (w,) * layers.weight_layers, (a,) * layers.act_layers,
                              default_in_bits(m["arch"], a)))


def validate(spec: ModelSpec) -> ModelSpec:
    if spec.arch not in ARCHS:
        raise ConfigError(f"unknown architecture '{spec.arch}'; known: {', '.join(ARCHS)}")
    layers = ARCHS[spec.arch]
    if len(spec.weight_bits) != layers.weight_layers or len(spec.act_bits) != layers.act_layers:
        raise ConfigError(f"{spec.arch} needs {layers.weight_layers} weight bit widths and {layers.act_layers} "
                          f"activation bit widths, got {len(spec.weight_bits)} and {len(spec.act_bits)}")
    for b in (*spec.weight_bits, *spec.act_bits, spec.in_bits):
        if not 1 <= b <= MAX_BITS:
            raise ConfigError(f"bit width {b} is out of range; use 1 (binary) to {MAX_BITS}")
    if spec.widths is not None and (len(spec.widths) != len(default_widths(spec.arch)) or min(spec.widths) < 1):
        raise ConfigError(f"{spec.arch} needs {len(default_widths(spec.arch))} positive widths, got {list(spec.widths)}")
    if spec.ranks is not None and (spec.arch == "cnv" or len(spec.ranks) != layers.weight_layers):
        raise ConfigError(f"field 'ranks' needs {layers.weight_layers} entries for an MLP, got {list(spec.ranks)}")
    return spec


class QuantMLP(nn.Module):
    """Quantised MLP over raw pixels: (N, C, H, W) in [0, pixel_max] -> (N, classes) logits."""

    def __init__(self, spec: ModelSpec, in_features: int, num_classes: int, pixel_max: int,
                 dropout: float = DROPOUT):
        super().__init__()
        self.spec = spec
        self.register_buffer("pixel_scale", torch.tensor(2.0 / pixel_max))
        self.features = nn.ModuleList([QuantIdentity(act_quant=ActQuant, bit_width=spec.in_bits),
                                       nn.Dropout(dropout)])
        check_ranks(spec, in_features, num_classes)
        ranks = spec.ranks or (None,) * len(spec.weight_bits)
        widths = (in_features, *spec.layer_widths)
        for i, out_features in enumerate(widths[1:]):
            self.features.extend([
                *_linear(widths[i], out_features, spec.weight_bits[i], ranks[i]),
                nn.BatchNorm1d(out_features),
                QuantIdentity(act_quant=ActQuant, bit_width=spec.act_bits[i]),
                nn.Dropout(dropout),
            ])
        self.features.extend(_linear(widths[-1], num_classes, spec.weight_bits[-1], ranks[-1]))
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


def _linear(n: int, m: int, bits: int, rank: int | None) -> list[nn.Module]:
    """One weight layer n -> m: a QuantLinear, or for a rank r its two halves n -> r -> m with BatchNorm
    and an 8-bit activation quantiser between them (what FINN builds as two matrix units)."""
    if rank is None:
        return [QuantLinear(n, m, bias=False, weight_quant=WeightQuant, weight_bit_width=bits)]
    return [QuantLinear(n, rank, bias=False, weight_quant=WeightQuant, weight_bit_width=bits),
            nn.BatchNorm1d(rank), QuantIdentity(act_quant=ActQuant, bit_width=RANK_ACT_BITS),
            QuantLinear(rank, m, bias=False, weight_quant=WeightQuant, weight_bit_width=bits)]


def build_model(spec: ModelSpec, image_shape: tuple[int, int, int], num_classes: int,
                pixel_max: int, dropout: float = DROPOUT) -> nn.Module:
    """The untrained model of ``spec`` for (C, H, W) images; CNV refuses images under 32x32.
    ``dropout`` (MLPs only, as in Brevitas; CNV has none) matters only in training."""
    if spec.arch == "cnv":
        model = cnv.QuantCNV(spec.weight_bits, spec.act_bits, spec.in_bits, image_shape, num_classes, pixel_max,
                             spec.layer_widths)
        model.spec = spec
        return model
    in_features = image_shape[0] * image_shape[1] * image_shape[2]
    return QuantMLP(spec, in_features, num_classes, pixel_max, dropout)
