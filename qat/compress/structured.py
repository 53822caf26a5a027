"""Structured pruning that shrinks layers: whole neurons (MLP) and output channels (CNV) removed.

A pruned layer is a smaller matrix: the layer loses output rows, its BatchNorm the same
entries, and the next weight layer the input columns that read them. The pruned model is
a ``ModelSpec`` with smaller ``widths``, so its checkpoint rebuilds from the spec and
``flows build --checkpoint`` maps it to smaller FINN matrix units (fewer cycles, LUTs, BRAM).

- Criterion: the L1 or L2 norm of each neuron's (channel's) float weights; the smallest go.
- Schedule: ``oneshot`` removes them at once, then fine-tunes; ``agp`` is Zhu and Gupta's
  gradual schedule as Intel Distiller's Automated Gradual Pruner: during fine-tuning the
  pruned share grows as ``s_t = s_f (1 - (1 - t / T)^3)`` in ``steps`` jumps over the first
  ``AGP_SPAN`` of the optimiser steps, applied as masks after every step
  (TrainHooks.after_step: the next layer's columns reading a pruned neuron are zeroed, so it
  no longer contributes); the masked neurons are removed physically at the end, which
  changes no output (tested).
- Width rule: the kept width is ``round(width * (1 - ratio))`` rounded down to a multiple
  of ``multiple`` (default 8), at least ``multiple``; a layer narrower than ``multiple``
  keeps its rounded width. FINN folds a layer with PE dividing its rows and SIMD dividing
  its columns: a multiple of 8 keeps 1, 2, 4, 8 and the multiple's other divisors available.

Physical removal uses Torch-Pruning (torch-pruning 1.6.1): its dependency graph traces
through Brevitas' QuantLinear/QuantConv2d (they subclass nn.Linear/nn.Conv2d and their
quantisers are elementwise ops on the weight), and removes a layer's output rows, its
BatchNorm entries and the next layer's input columns together (checked on TFC, LeNet and
CNV: the pruned model loads into ``build_model`` of the smaller spec and computes what the
masked model computed).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from host.errors import ConfigError, require_package
from qat.compress.base import CompressContext, Technique, register

if TYPE_CHECKING:
    from qat.models import ModelSpec
    from qat.train import Checkpoint, DatasetInfo

AGP_SPAN = 0.75  # share of the fine-tuning's optimiser steps over which AGP reaches the final ratio
CRITERIA = ("l1", "l2")
SCHEDULES = ("oneshot", "agp")


@register
@dataclass(frozen=True)
class StructuredPrune(Technique):
    """Remove the smallest-norm neurons/channels of every hidden layer (``ratio``: one for all, or one per layer)."""

    name: ClassVar[str] = "prune"
    fpga_effect: ClassVar[str] = "shape"

    ratio: float | tuple[float, ...] = 0.5  # share of each hidden layer's neurons/channels removed, in [0, 1)
    criterion: str = "l2"  # l1 or l2 norm of each neuron's weights
    schedule: str = "oneshot"  # oneshot, or agp (gradual, masks during fine-tuning)
    steps: int = 10  # AGP: pruning jumps
    multiple: int = 8  # kept widths are multiples of this (folding divisors)

    def __post_init__(self):
        if isinstance(self.ratio, list):
            object.__setattr__(self, "ratio", tuple(self.ratio))

    def ratios(self, n: int) -> tuple[float, ...]:
        return self.ratio if isinstance(self.ratio, tuple) else (self.ratio,) * n

    def check(self, spec: "ModelSpec", data: "DatasetInfo") -> None:
        require_package("torch_pruning", "install the compress extra: pip install 'qnn-flows[compress]'")
        widths = spec.layer_widths
        ratios = self.ratio if isinstance(self.ratio, tuple) else (self.ratio,)
        if isinstance(self.ratio, tuple) and len(self.ratio) != len(widths):
            raise ConfigError(f"prune: option 'ratio' needs one ratio for all layers or {len(widths)} (one per "
                              f"hidden layer of {spec.arch}, widths {list(widths)}), got {len(self.ratio)}")
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
                raise ConfigError(f"prune: option 'ratio' must be in [0, 1) (the share of neurons removed), got {r!r}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"prune: option 'criterion' is {self.criterion!r}; use one of {', '.join(CRITERIA)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"prune: option 'schedule' is {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.steps < 1 or self.multiple < 1:
            raise ConfigError(f"prune: options 'steps' and 'multiple' must be >= 1, got {self.steps}, {self.multiple}")
        self.kept_widths(spec)

    def kept_widths(self, spec: "ModelSpec") -> tuple[int, ...]:
        """The widths after pruning (the rule in the module docstring); a width reaching zero is an error."""
        kept = []
        for i, (w, r) in enumerate(zip(spec.layer_widths, self.ratios(len(spec.layer_widths)))):
            k = round(w * (1 - r))
            if k < 1:
                raise ConfigError(f"prune: option 'ratio' {r} leaves layer {i} (width {w}) with no neuron; "
                                  f"use a ratio below {1 - 0.5 / w:.4f} for it")
            kept.append(min(w, max(self.multiple, k - k % self.multiple)) if w >= self.multiple else k)
        return tuple(kept)

    def planned_spec(self, spec: "ModelSpec") -> "ModelSpec":
        return dataclasses.replace(spec, widths=self.kept_widths(spec))

    def apply(self, ckpt: "Checkpoint", ctx: CompressContext) -> "Checkpoint":
        from qat.train import train

        kept = self.kept_widths(ckpt.spec)
        if self.schedule == "oneshot":
            model = ckpt.model()
            masks = [lowest(layer_scores(layer, self.criterion), w - k)
                     for layer, w, k in zip(prunable(model), ckpt.spec.layer_widths, kept)]
            spec, state = remove(model, ckpt.spec, ckpt.data.image_shape, masks)
            return train(spec, ctx.ds, ctx.train, progress=ctx.progress, hooks=ctx.hooks, init_state=state)
        steps = ctx.train.epochs * -(-len(ctx.ds.train.labels) // ctx.train.batch_size)
        masker = AgpMasker(ckpt.spec.layer_widths, kept, self.criterion, self.steps, steps)
        hooks = dataclasses.replace(ctx.hooks, after_step=masker)
        tuned = train(ckpt.spec, ctx.ds, ctx.train, progress=ctx.progress, hooks=hooks, init_state=ckpt.state_dict)
        model = tuned.model()
        spec, state = remove(model, tuned.spec, tuned.data.image_shape, masker.masks(model))
        result = dataclasses.replace(tuned, spec=spec, state_dict=state)
        result.metrics = {**tuned.metrics, "test_accuracy": _accuracy(result, ctx)}
        return result

    def report(self, ckpt: "Checkpoint") -> dict:
        return {"widths": list(ckpt.spec.layer_widths), "criterion": self.criterion, "schedule": self.schedule}


def _accuracy(ckpt, ctx) -> float:
    from qat.train import accuracy

    return accuracy(ckpt.model(), ctx.ds.test.images, ctx.ds.test.labels)


def prunable(model) -> list[torch.nn.Module]:
    """The weight layers whose outputs are the spec's ``widths`` (all but the classifier), in order."""
    from brevitas.nn import QuantConv2d, QuantLinear

    return [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))][:-1]


def layer_scores(layer, criterion: str) -> torch.Tensor:
    """One norm per output neuron/channel of ``layer``'s float weights."""
    w = layer.weight.detach().flatten(1)
    return w.abs().sum(1) if criterion == "l1" else w.pow(2).sum(1).sqrt()


def lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` smallest scores (ties by index, so the choice is deterministic)."""
    return sorted(torch.argsort(scores, stable=True)[:n].tolist()) if n > 0 else []


def agp_share(step: int, total: int, span: float = AGP_SPAN, jumps: int = 10) -> float:
    """Zhu and Gupta's cubic schedule as a share of the final pruning, 0 -> 1, in ``jumps`` equal
    steps of time over the first ``span`` of ``total`` optimiser steps: 1 - (1 - t/T)^3."""
    end = max(1, math.floor(total * span))
    t = min(step, end)
    t = math.floor(t * jumps / end) * end / jumps  # prune only at the jumps (Distiller's frequency)
    return 1.0 - (1.0 - t / end) ** 3


class AgpMasker:
    """TrainHooks.after_step for gradual pruning: after each optimiser step, mask the lowest-norm
    neurons of every layer, as many as the AGP share of the final count, by zeroing their rows and
    the next layer's columns that read them."""

    def __init__(self, widths, kept, criterion: str, jumps: int, total_steps: int):
        self.widths, self.kept, self.criterion = tuple(widths), tuple(kept), criterion
        self.jumps, self.total = jumps, total_steps

    def counts(self, step: int) -> list[int]:
        share = agp_share(step, self.total, jumps=self.jumps)
        return [round((w - k) * share) for w, k in zip(self.widths, self.kept)]

    def __call__(self, model, step: int) -> None:
        layers = prunable(model) + [_classifier(model)]
        with torch.no_grad():
            for i, n in enumerate(self.counts(step)):
                _mask(layers[i], layers[i + 1], lowest(layer_scores(layers[i], self.criterion), n))

    def masks(self, model) -> list[list[int]]:
        """The final pruned indices: the (then zero-row) lowest-norm neurons, final counts."""
        return [lowest(layer_scores(layer, self.criterion), w - k)
                for layer, w, k in zip(prunable(model), self.widths, self.kept)]


def _classifier(model):
    from brevitas.nn import QuantConv2d, QuantLinear

    return [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))][-1]


def _mask(layer, consumer, idxs: list[int]) -> None:
    """Zero ``layer``'s rows ``idxs`` and the columns of ``consumer`` that read them."""
    if not idxs:
        return
    layer.weight[idxs] = 0
    group = consumer.weight.shape[1] // layer.weight.shape[0]  # conv -> linear: each channel's pixels
    cols = torch.tensor([c * group + j for c in idxs for j in range(group)])
    consumer.weight[:, cols] = 0


def remove(model, spec: "ModelSpec", image_shape, removed: list[list[int]]) -> tuple["ModelSpec", dict]:
    """Physically remove neurons/channels ``removed[i]`` of layer i (Torch-Pruning); returns the smaller
    spec and a state dict that loads into ``build_model`` of it."""
    import torch_pruning as tp
    from brevitas.nn import QuantConv2d

    from qat.models import build_model

    model = model.cpu().eval()
    with warnings.catch_warnings():  # "will prune the last non-singleton dimension" of PositiveScale's scalar: none
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *image_shape))
    for layer, idxs in zip(prunable(model), removed):
        if idxs:
            fn = tp.prune_conv_out_channels if isinstance(layer, QuantConv2d) else tp.prune_linear_out_channels
            graph.get_pruning_group(layer, fn, idxs=idxs).prune()
    widths = tuple(layer.weight.shape[0] for layer in prunable(model))
    new_spec = dataclasses.replace(spec, widths=widths)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # the pixel scale is a buffer of the state dict, so any pixel_max rebuilds the same model here
    fresh = build_model(new_spec, image_shape, _classifier(model).weight.shape[0], pixel_max=255)
    fresh.load_state_dict(state, strict=True)  # raises when Torch-Pruning left a shape behind
    return new_spec, state
