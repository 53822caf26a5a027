"""Fine-grained (unstructured) magnitude pruning, gradual, with masks kept through fine-tuning.

Each weight layer keeps its largest-magnitude weights and zeroes the rest, the pruned
fraction rising on Zhu and Gupta's cubic schedule (arXiv 1710.01878; Distiller's
Automated Gradual Pruner) while the model fine-tunes: at pruning event j of n,
s_j = s_final * (1 - (1 - j/n)^3). After every optimiser step the masks are applied
again (TrainHooks.after_step), so a pruned weight stays exactly 0 and the checkpoint
stores the zeros. A float 0 quantises to integer 0 under the zoo's narrow-range
symmetric quantisers (zero point 0); a 1-bit (bipolar) weight is +-1 and cannot be 0,
so sparsity on a 1-bit layer is refused.

FPGA effect: none. FINN's matrix units (MVAU) are dense: a zero weight still occupies
its place in the weight memory and its multiply-accumulate slot, so cycles and
resources do not change. The gain is storage (qat.compress.storage: CSR, bitmask) and,
at high sparsity, sparse CPU kernels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from host.errors import ConfigError
from qat.compress.base import CompressContext, Technique, register
from qat.compress.weights import model_int_weights, module_bits, per_layer, weight_layers

if TYPE_CHECKING:
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo

FPGA_NOTE = ("none: FINN's matrix units are dense; pruned weights still occupy weight memory and "
             "multiply-accumulate slots, so cycles and LUT/BRAM do not change (storage and sparse CPU kernels gain)")


def cubic_sparsity(final: float, event: int, events: int) -> float:
    """Zhu and Gupta's schedule: the sparsity after pruning event ``event`` (1..events), from 0 to ``final``."""
    return final * (1.0 - (1.0 - event / events) ** 3)


def magnitude_mask(weight: torch.Tensor, mask: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A mask keeping the largest-magnitude weights so that floor(sparsity * numel) are pruned; weights
    already masked stay pruned (they rank below every kept weight)."""
    k = int(sparsity * weight.numel())
    score = torch.where(mask, weight.abs(), torch.full_like(weight, -1.0)).reshape(-1)
    new = torch.ones(weight.numel(), dtype=torch.bool)
    new[torch.argsort(score, stable=True)[:k]] = False
    return new.reshape(weight.shape) & mask


@dataclass
class MaskKeeper:
    """The after-step hook: prune on the schedule's events, then re-apply every layer's mask."""

    masks: dict[str, torch.Tensor]  # layer name -> bool mask (True = kept)
    targets: dict[str, float]  # layer name -> final sparsity
    events: int
    interval: int  # optimiser steps between pruning events
    inner: object = None  # the run's own after_step, called first

    def __call__(self, model: torch.nn.Module, step: int) -> None:
        if self.inner is not None:
            self.inner(model, step)
        layers = dict(weight_layers(model))
        event = step // self.interval if step % self.interval == 0 else 0
        with torch.no_grad():
            for name, mask in self.masks.items():
                w = layers[name].weight
                if 1 <= event <= self.events and self.targets[name] > 0:
                    target = cubic_sparsity(self.targets[name], event, self.events)
                    mask = self.masks[name] = magnitude_mask(w.detach().cpu(), mask, target)
                w.mul_(mask.to(w.device, w.dtype))


def layer_sparsity(ckpt: "Checkpoint") -> list[dict]:
    """Per weight layer: parameters, zero float weights (the masks) and zero quantised integers."""
    model = ckpt.model()
    rows = []
    for (name, m), q in zip(weight_layers(model), model_int_weights(model)):
        n = m.weight.numel()
        zeros, int_zeros = int((m.weight == 0).sum()), int((q.ints == 0).sum())
        rows.append({"layer": name, "shape": list(m.weight.shape), "bits": q.bits, "params": n,
                     "zero_weights": zeros, "zero_ints": int_zeros, "sparsity": round(int_zeros / n, 6)})
    return rows


@register
@dataclass(frozen=True)
class UnstructuredPrune(Technique):
    """Options: ``sparsity`` (fraction of weights set to 0, in [0, 1): one for every weight layer or a list,
    one per quantised weight layer, the two halves of a factorised layer counting as two); ``events``
    (pruning events of the cubic schedule; 1 = one-shot); ``ramp`` (fraction of the fine-tuning steps
    over which the sparsity rises; 0 = prune at the first step)."""

    name = "unstructured"
    fpga_effect = "none"

    sparsity: float | tuple[float, ...] = 0.5
    events: int = 10
    ramp: float = 0.5

    def __post_init__(self):
        if isinstance(self.sparsity, list):
            object.__setattr__(self, "sparsity", tuple(self.sparsity))

    def targets(self, spec: "ModelSpec") -> tuple[float, ...]:
        return per_layer(self.sparsity, len(module_bits(spec)), "sparsity", self.name)

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        for i, (s, bits) in enumerate(zip(self.targets(spec), module_bits(spec))):
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
                raise ConfigError(f"{self.name}: option 'sparsity' must be in [0, 1), got {s!r} for layer {i}")
            if s > 0 and bits == 1:
                raise ConfigError(f"{self.name}: option 'sparsity' is {s} for layer {i}, which has 1-bit (bipolar) "
                                  "weights: a +-1 weight cannot be 0; give 0 for that layer or use 2+ weight bits")
        if isinstance(self.events, bool) or not isinstance(self.events, int) or self.events < 1:
            raise ConfigError(f"{self.name}: option 'events' must be a positive integer, got {self.events!r}")
        if not 0 <= self.ramp <= 1:
            raise ConfigError(f"{self.name}: option 'ramp' must be in [0, 1], got {self.ramp!r}")

    def keeper(self, ckpt: "Checkpoint", steps: int, inner=None) -> MaskKeeper:
        """The after-step hook for fine-tuning ``ckpt`` for ``steps`` optimiser steps; masks start from its zeros."""
        layers = weight_layers(ckpt.model())
        masks = {name: m.weight.detach() != 0 for name, m in layers}
        targets = dict(zip((name for name, _ in layers), self.targets(ckpt.spec)))
        interval = max(1, int(self.ramp * steps) // self.events)
        return MaskKeeper(masks, targets, self.events, interval, inner)

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        from qat.train import train

        self.check(ckpt.spec, ckpt.data)
        steps = ctx.train.epochs * -(-len(ctx.ds.train.labels) // ctx.train.batch_size)
        keeper = self.keeper(ckpt, steps, ctx.hooks.after_step)
        if keeper.interval * self.events > steps:
            raise ConfigError(f"{self.name}: {self.events} pruning 'events' need at least {self.events} optimiser "
                              f"steps of fine-tuning, the run has {steps}; fewer events or more epochs")
        hooks = dataclasses.replace(ctx.hooks, after_step=keeper)
        return train(ckpt.spec, ctx.ds, ctx.train, progress=ctx.progress, hooks=hooks, init_state=ckpt.state_dict)

    def report(self, ckpt: "Checkpoint") -> dict:
        rows = layer_sparsity(ckpt)
        params, zeros = sum(r["params"] for r in rows), sum(r["zero_ints"] for r in rows)
        return {"layers": rows, "params": params, "zeros": zeros, "sparsity": round(zeros / params, 6),
                "fpga_effect": FPGA_NOTE}
