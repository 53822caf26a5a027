"""The quantised weight layers of a model, and their integer weights: what the techniques prune,
cluster or factorise, and what the storage accounting counts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class IntWeights:
    """One layer's weights as its quantiser makes them: ``ints * scale`` (bipolar: ints are +-1)."""

    name: str  # module name in the model, e.g. "features.2"
    ints: np.ndarray  # (out, in) or (out, in, kh, kw) int64
    scale: float
    bits: int

    @property
    def levels(self) -> np.ndarray:
        """All integers the quantiser can produce: +-1 for 1 bit, else -(2^(b-1)-1) .. 2^(b-1)-1 (narrow range)."""
        if self.bits == 1:
            return np.array([-1, 1])
        top = 2 ** (self.bits - 1) - 1
        return np.arange(-top, top + 1)


def weight_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The quantised weight layers (QuantLinear, QuantConv2d) of ``model`` in forward order."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "quant_weight") and hasattr(m, "weight")]


@torch.no_grad()
def int_weights(name: str, module: torch.nn.Module) -> IntWeights:
    """The integers and per-tensor scale ``module``'s weight quantiser makes of its float weights."""
    q = module.quant_weight()
    if q.scale.numel() != 1:
        raise ValueError(f"layer {name} has per-channel scales; the compression techniques need one per tensor")
    scale = float(q.scale.reshape(-1)[0])
    ints = torch.round(q.value / scale).to(torch.int64).numpy()
    return IntWeights(name, ints, scale, int(q.bit_width))


def model_int_weights(model: torch.nn.Module) -> list[IntWeights]:
    return [int_weights(name, m) for name, m in weight_layers(model)]


def module_bits(spec) -> list[int]:
    """Weight bit width of each quantised weight layer a spec builds, in order (a factorised layer's two
    halves both have its bits)."""
    ranks = spec.ranks or (None,) * len(spec.weight_bits)
    return [b for b, r in zip(spec.weight_bits, ranks) for _ in range(1 if r is None else 2)]


def per_layer(value, n: int, option: str, technique: str) -> tuple:
    """One value for all ``n`` weight layers, or a list of ``n``; anything else is a ConfigError naming ``option``."""
    from host.errors import ConfigError

    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(f"{technique}: option '{option}' has {len(value)} entries, but the model has {n} "
                              f"weight layers; give one value for all or one per layer")
        return tuple(value)
    return (value,) * n
