"""Low-rank factorisation of fully connected layers: truncated SVD into two layers, then fine-tuning.

A layer W (m x n) of rank r becomes QuantLinear(n -> r), BatchNorm, an 8-bit activation
quantiser, QuantLinear(r -> m) (qat.models: the spec's ``ranks`` carry it, so the
checkpoint rebuilds), initialised from W ~ U_r S_r V_r^T: the first half sqrt(S_r) V_r^T,
the second U_r sqrt(S_r), each scaled into the weight quantiser's [-1, 1], with the
scales moved into the batch-norm between them (calibrated on training images) and into
the next layer's batch-norm or output scale. Weights: r(m + n) instead of mn.

FPGA effect: shape. FINN builds the two halves as two matrix units (MVAU) with the
8-bit activation between them: fewer weights (when r(m + n) < mn) and fewer
multiply-accumulates, but one more layer in the pipeline: more latency, and its
cycles depend on the folding (the report's estimate says which layer binds).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from brevitas.nn import QuantLinear

from host.errors import ConfigError
from qat.compress.base import CompressContext, Technique, register
from qat.compress.weights import per_layer

if TYPE_CHECKING:
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo

CALIBRATION_IMAGES = 1024


def factorise(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncated SVD: (A (rank, n), B (m, rank)) with B @ A the best rank-``rank`` approximation of
    ``weight`` (m, n); exact (up to float rounding) at rank = min(m, n)."""
    u, s, vt = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vt[:rank]).float(), (u[:, :rank] * root[None, :]).float()


def layer_dims(spec: "ModelSpec", data: "DatasetInfo") -> list[tuple[int, int]]:
    """(inputs, outputs) of each weight layer of an MLP spec."""
    dims = (int(np.prod(data.image_shape)), *spec.layer_widths, data.num_classes)
    return list(zip(dims[:-1], dims[1:]))


@register
@dataclass(frozen=True)
class LowRank(Technique):
    """Options: ``ranks`` (one per weight layer of the MLP, null keeps a layer whole; or one rank for every
    layer it fits)."""

    name = "lowrank"
    fpga_effect = "shape"

    ranks: int | tuple[int | None, ...] = 64

    def __post_init__(self):
        if isinstance(self.ranks, list):
            object.__setattr__(self, "ranks", tuple(self.ranks))

    def layer_ranks(self, spec: "ModelSpec") -> tuple[int | None, ...]:
        return per_layer(self.ranks, len(spec.weight_bits), "ranks", self.name)

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        if spec.arch == "cnv":
            raise ConfigError(f"{self.name}: option 'ranks' factorises fully connected MLPs; {spec.arch} is not one")
        if spec.factorised:
            raise ConfigError(f"{self.name}: the model is factorised already (ranks {list(spec.ranks)})")
        for i, (r, (n, m)) in enumerate(zip(self.layer_ranks(spec), layer_dims(spec, data))):
            if r is None:
                continue
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ConfigError(f"{self.name}: option 'ranks' must hold positive integers or null, got {r!r}")
            if r > min(n, m):
                raise ConfigError(f"{self.name}: option 'ranks' is {r} for layer {i} ({n} -> {m}), larger than the "
                                  f"layer; a rank is at most {min(n, m)}")

    def factorised_spec(self, spec: "ModelSpec") -> "ModelSpec":
        from qat.models import validate

        return validate(dataclasses.replace(spec, ranks=self.layer_ranks(spec)))

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        from qat.train import train

        self.check(ckpt.spec, ckpt.data)
        state = self.initial_state(ckpt, ctx.ds.train.images[:CALIBRATION_IMAGES])
        return train(self.factorised_spec(ckpt.spec), ctx.ds, ctx.train, progress=ctx.progress, hooks=ctx.hooks,
                     init_state=state)

    @torch.no_grad()
    def initial_state(self, ckpt: "Checkpoint", images: np.ndarray) -> dict:
        """The factorised model's state: untouched modules copied, factorised layers from the SVD."""
        from qat.models import build_model
        from qat.train import as_tensor

        old = ckpt.model()
        spec = self.factorised_spec(ckpt.spec)
        new = build_model(spec, ckpt.data.image_shape, ckpt.data.num_classes, ckpt.data.pixel_max).eval()
        inputs = _layer_inputs(old, as_tensor(images))
        ranks = iter(spec.ranks)
        src, dst = list(old.features), list(new.features)
        j, carry = 0, 1.0  # carry: the factor the next batch-norm or output scale must undo
        for i, module in enumerate(src):
            if isinstance(module, QuantLinear):
                rank = next(ranks)
                if rank is not None:
                    carry = _init_halves(module.quant_weight().value, rank, inputs[i], dst[j], dst[j + 1], dst[j + 3])
                    j += 4
                    continue
                dst[j].load_state_dict(module.state_dict())
            else:
                dst[j].load_state_dict(module.state_dict())
                if carry != 1.0 and isinstance(module, torch.nn.BatchNorm1d):
                    dst[j].running_mean.mul_(carry)
                    dst[j].running_var.mul_(carry ** 2)
                    carry = 1.0
                elif carry != 1.0 and hasattr(dst[j], "log_scale"):
                    dst[j].log_scale.sub_(float(np.log(carry)))
                    carry = 1.0
            j += 1
        return {k: v.clone() for k, v in new.state_dict().items()}

    def report(self, ckpt: "Checkpoint") -> dict:
        spec = ckpt.spec
        rows = []
        for i, (r, (n, m)) in enumerate(zip(spec.ranks or (None,) * len(spec.weight_bits),
                                            layer_dims(spec, ckpt.data))):
            if r is not None:
                rows.append({"layer": i, "shape": [m, n], "rank": r, "weights_dense": m * n,
                             "weights_factorised": r * (m + n), "smaller": r * (m + n) < m * n})
        return {"layers": rows, "fpga_effect": "shape: two matrix units per factorised layer (fewer weights and "
                "multiply-accumulates when r(m+n) < mn; one more layer of pipeline latency; see the estimate)"}


def _layer_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The input of every QuantLinear of ``model.features`` for images ``x`` (eval mode), by index."""
    seen: dict[int, torch.Tensor] = {}
    h = x.reshape(x.shape[0], -1) * model.pixel_scale - 1.0
    for i, module in enumerate(model.features):
        if isinstance(module, QuantLinear):
            seen[i] = h
        h = module(h)
        h = h.value if hasattr(h, "value") else h
    return seen


def _init_halves(weight: torch.Tensor, rank: int, x: torch.Tensor, first, norm, second) -> float:
    """Set ``first`` (n -> r), ``norm`` (BatchNorm over r) and ``second`` (r -> m) so that together they
    compute ``weight`` x / returned factor, every weight in [-1, 1] and the r values in the 8-bit
    quantiser's [-1, 1] range on the calibration inputs ``x``."""
    a, b = factorise(weight, rank)
    alpha = float(a.abs().max())
    a = a / alpha
    b = b * alpha
    h = x @ a.T  # (N, r): what the first half computes
    span = h.abs().amax(0).clamp_min(1e-3)  # per rank channel
    norm.running_mean.zero_()
    norm.running_var.copy_(span ** 2 - norm.eps)
    norm.weight.fill_(1.0)
    norm.bias.zero_()
    b = b * span[None, :]
    beta = float(b.abs().max())
    first.weight.copy_(a)
    second.weight.copy_(b / beta)
    return 1.0 / beta
