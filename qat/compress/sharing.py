"""Deep Compression's weight sharing (Han, Mao, Dally, arXiv 1510.00149, sec. 3).

Per weight layer, the nonzero weights are clustered by k-means into 2^bits shared
values (centroids initialised linearly between the smallest and largest weight, as
the paper found best), the centroids snapped to the layer's quantiser grid (the
Brevitas quantiser re-quantises every weight to ``k * scale`` anyway), and then the
centroids are fine-tuned with the cluster assignment fixed: each centroid's gradient
is the sum of the gradients of the weights that share it. Zeros (pruned weights) stay
zeros. The indices are entropy-coded in qat.compress.storage (``shared_huffman``).

FPGA effect: storage. FINN's matrix unit holds every weight at its weight datatype's
width; it has no codebook lookup. FINN's MinimizeWeightBitWidth narrows that width
only by the weights' range (min/max), not by how many distinct values there are:
the report says per layer whether the shared values' range fits a narrower integer
type than the weight bits (then FINN's weight memory could shrink) or not.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from host.errors import ConfigError
from qat.compress.base import CompressContext, Technique, register
from qat.compress.weights import IntWeights, int_weights, module_bits, per_layer, weight_layers

if TYPE_CHECKING:
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo

KMEANS_ITERATIONS = 50


def kmeans_1d(values: np.ndarray, k: int, iterations: int = KMEANS_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means of 1-D ``values`` into at most ``k`` clusters, centroids initialised linearly between
    min and max; returns (centroids (k',), label of each value). Empty clusters are dropped."""
    centroids = np.linspace(values.min(), values.max(), k) if k > 1 else np.array([values.mean()])
    for _ in range(iterations):
        labels = np.abs(values[:, None] - centroids[None, :]).argmin(1)
        sums = np.bincount(labels, values, minlength=len(centroids))
        counts = np.bincount(labels, minlength=len(centroids))
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(new, centroids):
            break
        centroids = new
    labels = np.abs(values[:, None] - centroids[None, :]).argmin(1)
    used = np.unique(labels)
    return centroids[used], np.searchsorted(used, labels)


def snap_to_grid(centroids: np.ndarray, labels: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids in integer units moved to the nearest level of the quantiser's grid; merged duplicates
    relabelled. Returns (distinct integer centroids, labels into them)."""
    snapped = levels[np.abs(centroids[:, None] - levels[None, :]).argmin(1)]
    distinct, inverse = np.unique(snapped, return_inverse=True)
    return distinct, inverse[labels]


@dataclass
class Sharing:
    """One layer's fixed assignment: flat positions of its nonzero weights, their cluster, the centroids."""

    positions: torch.Tensor  # (nnz,) int64
    labels: torch.Tensor  # (nnz,) int64
    centroids: torch.Tensor  # (k,) float, in weight units (integer * scale)


def cluster_layer(q: "IntWeights", bits: int) -> Sharing:
    """k-means of the layer's nonzero quantised weights into 2^bits values on the quantiser's grid."""
    flat = q.ints.reshape(-1)
    positions = np.flatnonzero(flat)
    centroids, labels = kmeans_1d(flat[positions].astype(np.float64), 2 ** bits)
    ints, labels = snap_to_grid(centroids, labels, q.levels)
    return Sharing(torch.from_numpy(positions), torch.from_numpy(labels.astype(np.int64)),
                   torch.from_numpy(ints * q.scale).float())


def shared_weight(shape, sharing: Sharing) -> torch.Tensor:
    flat = torch.zeros(int(np.prod(shape)), dtype=sharing.centroids.dtype, device=sharing.centroids.device)
    flat[sharing.positions.to(flat.device)] = sharing.centroids[sharing.labels.to(flat.device)]
    return flat.reshape(shape)


class SharedAdam(torch.optim.Adam):
    """Adam over the model's parameters, except that each shared layer's weight is replaced by its centroids:
    a centroid's gradient is the sum of its weights' gradients, and after each step the weights are rewritten
    from the centroids (zeros stay zero)."""

    def __init__(self, params: list, lr: float, shared: dict[int, Sharing]):
        self.shared = [(params[i], s, torch.nn.Parameter(s.centroids.clone().to(params[i].device)))
                       for i, s in shared.items()]
        super().__init__([*params, *(c for _, _, c in self.shared)], lr=lr)

    @torch.no_grad()
    def step(self, closure=None):
        for weight, s, centroids in self.shared:
            if weight.grad is None:
                continue
            g = weight.grad.reshape(-1)[s.positions.to(weight.device)]
            centroids.grad = torch.zeros_like(centroids).index_add_(0, s.labels.to(weight.device), g)
            weight.grad = None  # Adam skips the weight itself
        loss = super().step(closure)
        for weight, s, centroids in self.shared:
            centroids.clamp_(-1.0, 1.0)
            weight.copy_(shared_weight(weight.shape, Sharing(s.positions, s.labels, centroids)))
        return loss


def finn_weight_bits(ints: np.ndarray) -> int:
    """The width FINN's MinimizeWeightBitWidth gives weights of this range (its rule, signed)."""
    from qonnx.core.datatype import DataType

    lo, hi = int(ints.min()), int(ints.max())
    return DataType.get_smallest_possible(lo if abs(lo) > hi else -hi - 1).bitwidth()


@register
@dataclass(frozen=True)
class WeightSharing(Technique):
    """Options: ``bits`` (k-means into 2^bits shared values per layer, at most the layer's weight bits: one for
    all or a list, one per weight layer)."""

    name = "share"
    fpga_effect = "storage"

    bits: int | tuple[int, ...] = 4

    def __post_init__(self):
        if isinstance(self.bits, list):
            object.__setattr__(self, "bits", tuple(self.bits))

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        layer_bits = module_bits(spec)
        for i, (b, wb) in enumerate(zip(per_layer(self.bits, len(layer_bits), "bits", self.name), layer_bits)):
            if isinstance(b, bool) or not isinstance(b, int) or b < 1:
                raise ConfigError(f"{self.name}: option 'bits' must be a positive integer, got {b!r} for layer {i}")
            if b > wb:
                raise ConfigError(f"{self.name}: option 'bits' is {b} for layer {i}, above its {wb} weight bits: "
                                  f"2^{b} shared values cannot be told apart on a {wb}-bit grid; use at most {wb}")

    def cluster(self, ckpt: "Checkpoint") -> dict[str, Sharing]:
        """Each layer's assignment and grid centroids, from ``ckpt``'s quantised weights."""
        model = ckpt.model()
        layers = weight_layers(model)
        bits = per_layer(self.bits, len(layers), "bits", self.name)
        return {name: cluster_layer(int_weights(name, m), b) for (name, m), b in zip(layers, bits)}

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        from qat.models import build_model
        from qat.train import train

        self.check(ckpt.spec, ckpt.data)
        sharings = self.cluster(ckpt)
        state = dict(ckpt.state_dict)
        for name, s in sharings.items():
            state[f"{name}.weight"] = shared_weight(state[f"{name}.weight"].shape, s)
        probe = build_model(ckpt.spec, ckpt.data.image_shape, ckpt.data.num_classes, ckpt.data.pixel_max)
        index = {id(p): i for i, p in enumerate(probe.parameters())}
        shared = {index[id(m.weight)]: sharings[name] for name, m in weight_layers(probe)}
        hooks = dataclasses.replace(ctx.hooks, optimizer=lambda params, lr: SharedAdam(params, lr, shared))
        tuned = train(ckpt.spec, ctx.ds, ctx.train, progress=ctx.progress, hooks=hooks, init_state=state)
        return snap_checkpoint(tuned, sharings)

    def report(self, ckpt: "Checkpoint") -> dict:
        rows = []
        for name, m in weight_layers(ckpt.model()):
            q = int_weights(name, m)
            values = np.unique(q.ints[q.ints != 0])
            finn = finn_weight_bits(q.ints) if q.bits > 1 else 1
            rows.append({"layer": name, "weight_bits": q.bits, "shared_values": len(values),
                         "int_range": [int(q.ints.min()), int(q.ints.max())], "finn_narrowed_bits": finn,
                         "finn_effect": (f"FINN could narrow the weight memory to {finn} bits (MinimizeWeightBitWidth, "
                                         "by range)" if finn < q.bits else
                                         f"storage only: the shared values span the {q.bits}-bit range, FINN keeps "
                                         f"INT{q.bits} weights")})
        return {"layers": rows, "fpga_effect": "storage, unless a layer's shared values fit a narrower integer "
                "range (then FINN's MinimizeWeightBitWidth narrows that layer's weight memory): see layers"}


def snap_checkpoint(ckpt: "Checkpoint", sharings: dict[str, Sharing]) -> "Checkpoint":
    """Move the fine-tuned centroids (read back from the weights) to the quantiser grid: the weights become
    exactly the values the quantiser made of them, so the model computes the same."""
    model = ckpt.model()
    state = dict(ckpt.state_dict)
    for name, m in weight_layers(model):
        q, s = int_weights(name, m), sharings[name]
        flat = q.ints.reshape(-1)
        per_weight = flat[s.positions.numpy()]
        ints = np.zeros(len(s.centroids), dtype=np.int64)
        ints[s.labels.numpy()] = per_weight  # every weight of a cluster has its centroid's value
        state[f"{name}.weight"] = shared_weight(m.weight.shape, Sharing(s.positions, s.labels,
                                                                        torch.from_numpy(ints * q.scale).float()))
    return dataclasses.replace(ckpt, state_dict=state)
