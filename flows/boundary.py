"""Explain a float stage's disagreement with the integer hardware, decision by decision.

Stages that still compute in float (Brevitas, QONNX, FINN's graph before
streamlining) choose each activation level by rounding ``x / scale`` or by
comparing ``x`` with float thresholds. With non-power-of-two scales (1/7, 1/127)
``x`` is itself a float32 result, and two correct float evaluations of a network
may land an ulp apart on either side of a boundary: one level apart, then many
units apart in the last layer. The integer stages have no such freedom.

So the verifier excuses a float stage's image only when, at the first layer where
that stage's levels differ from the integer hardware's, every differing level came
from a value within ``BOUNDARY`` of a step from the boundary it crossed, and none
sat exactly on it: a value exactly on a .5 tie (distance 0) is a case the model and
the hardware must resolve alike (the flow's thresholds round ties half to even, as
the model does), never float noise. A differing input quantiser is never excused:
its inputs are integer pixels and the flow makes its thresholds exact
(``SetExactInputThresholds``). An integer stage is never excused; its explanation
names the first layer whose emitted values differ from the hardware's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOUNDARY = 1e-3  # quantiser steps; the largest seen in the zoo on MNIST is 1.8e-4 (bench/results/zoo_*.md)
ANALYSIS_BYTES = 1 << 29  # at most this much kept of differing images' decisions (CNV: ~0.9 MB an image)


@dataclass
class Decisions:
    """One stage's activation levels on a few images, layer by layer (input quantiser first).

    ``counts[k]``: (n, elements) the number of thresholds passed (0 .. 2^bits - 1), NCHW order.
    ``margins[k]``: same shape, distance in steps from the nearest boundary (float stages), else None.
    """

    counts: list[np.ndarray]
    margins: list[np.ndarray] | None = None
    names: list[str] | None = None  # the quantiser nodes, for blame

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.counts, *(self.margins or [])))

    def compact(self) -> "Decisions":
        """Levels as int16 (they are < 2^15), margins as float32: what is kept per image."""
        return Decisions([c.astype(np.int16) for c in self.counts],
                         None if self.margins is None else [m.astype(np.float32) for m in self.margins], self.names)

    def rows(self, index: np.ndarray) -> "Decisions":
        return Decisions([c[index] for c in self.counts],
                         None if self.margins is None else [m[index] for m in self.margins], self.names)

    @staticmethod
    def stack(parts: list["Decisions"]) -> "Decisions":
        margins = None if parts[0].margins is None else [np.concatenate(m) for m in zip(*(p.margins for p in parts))]
        return Decisions([np.concatenate(c) for c in zip(*(p.counts for p in parts))], margins, parts[0].names)


def explain(stage: Decisions, hardware: Decisions) -> list[dict]:
    """Per image: is its difference from the hardware a float rounding at a boundary?"""
    if len(stage.counts) != len(hardware.counts):
        return [{"excused": False, "reason": "layers do not line up"}] * len(stage.counts[0])
    return [_explain_image(stage, hardware, i) for i in range(len(stage.counts[0]))]


def _explain_image(stage: Decisions, hardware: Decisions, i: int) -> dict:
    for layer, (ours, theirs) in enumerate(zip(stage.counts, hardware.counts)):
        flipped = np.nonzero(ours[i] != theirs[i])[0]
        if len(flipped) == 0:
            continue
        where = {"layer": layer, "levels_differing": len(flipped)}
        if hardware.names:
            where["hardware_node"] = hardware.names[layer]
        if stage.margins is None:
            return {"excused": False, **where, "reason": f"an integer stage: its values differ from the hardware's "
                                                        f"from layer {layer}" + _node(hardware, layer)}
        margin = stage.margins[layer][i, flipped]
        worst = float(margin.max())
        if layer == 0:
            reason = "input quantiser"
        elif (margin == 0).any():
            reason = "an exact tie (distance 0) resolved differently from the hardware"
        elif worst < BOUNDARY:
            reason = "at a rounding boundary"
        else:
            reason = "far from any rounding boundary" + _node(hardware, layer)
        return {"excused": reason == "at a rounding boundary", **where, "largest_margin_steps": worst,
                "exact_ties": int((margin == 0).sum()), "reason": reason}
    return {"excused": False, "reason": "every activation level agrees; the difference is in the last layer"}


def _node(hardware: Decisions, layer: int) -> str:
    return f" (hardware node {hardware.names[layer]})" if hardware.names else ""


def tie_rows(stage: Decisions) -> tuple[np.ndarray, np.ndarray]:
    """(a hidden quantiser's input sits exactly on a boundary, the input quantiser's does) per image."""
    n = len(stage.counts[0])
    hidden, inputs = np.zeros(n, bool), np.zeros(n, bool)
    for layer, margin in enumerate(stage.margins or []):
        on = (margin == 0).any(axis=1)
        if layer == 0:
            inputs |= on
        else:
            hidden |= on
    return hidden, inputs


def tie_resolutions(stage: Decisions, hardware: Decisions) -> dict:
    """Over the hidden values sitting exactly on a tie: how many the hardware resolved to the stage's level."""
    values = same = 0
    for layer in range(1, min(len(stage.counts), len(hardware.counts))):
        on = stage.margins[layer] == 0
        values += int(on.sum())
        same += int((on & (stage.counts[layer] == hardware.counts[layer])).sum())
    return {"values": values, "resolved_as_hardware": same, "resolved_otherwise": values - same}


# --- decisions of a QONNX/FINN graph ------------------------------------------------------------

def graph_decisions(model, images: np.ndarray, float_stage: bool, values: bool = False) -> Decisions:
    """Execute ``model`` on ``images`` and read every activation quantiser's levels (and margins)."""
    from flows.execute import full_context

    batched, ctx = full_context(model, images)
    return context_decisions(batched, ctx, np.arange(len(images)), float_stage, values)


def context_decisions(batched, ctx: dict, rows: np.ndarray, float_stage: bool, values: bool = False) -> Decisions:
    """The decisions of images ``rows`` of an executed batched graph (``ctx``: all its tensors).
    ``values``: multi-bit activations as the integers they emit (integer stages: an offset error shows
    where it starts) rather than the number of thresholds passed."""
    nodes = [node for node in batched.graph.node if _is_activation(batched, node)]

    def per_image(node, read):
        """``read`` on just the ``rows`` images of the node's input and output (not the whole batch)."""
        rows_only = {**ctx, node.input[0]: ctx[node.input[0]][rows], node.output[0]: ctx[node.output[0]][rows]}
        return _nchw(batched, node.output[0], read(batched, node, rows_only)).reshape(len(rows), -1)

    read = _emitted if values else _counts
    counts = [per_image(node, read) for node in nodes]
    names = [node.name for node in nodes]
    if not float_stage:
        return Decisions(counts, None, names)
    return Decisions(counts, [per_image(node, _margins) for node in nodes], names)


def _emitted(model, node, ctx: dict) -> np.ndarray:
    """The integer a multi-bit activation of an integer graph emits (a 1-bit one: 0/1, whatever its encoding)."""
    if model.get_tensor_datatype(node.output[0]).bitwidth() == 1:
        return _counts(model, node, ctx)
    return np.round(ctx[node.output[0]]).astype(np.int64)


def _is_activation(model, node) -> bool:
    from qonnx.custom_op.registry import getCustomOp

    from hw.folding import generic_op

    if node.op_type in ("Quant", "BipolarQuant"):
        return model.get_initializer(node.input[0]) is None  # weight quantisers read initializers
    if node.op_type in ("MultiThreshold", "Thresholding"):
        return True
    return generic_op(node.op_type) in ("MVAU", "VVAU") and getCustomOp(node).get_nodeattr("noActivation") == 0


def _counts(model, node, ctx: dict) -> np.ndarray:
    from qonnx.custom_op.general.intquant import min_int
    from qonnx.custom_op.registry import getCustomOp

    y = ctx[node.output[0]].astype(np.float64)
    if node.op_type == "BipolarQuant":
        return (y > 0).astype(np.int64)
    if node.op_type == "Quant":
        inst = getCustomOp(node)
        scale, zeropt, bits = (ctx[node.input[k]] for k in (1, 2, 3))
        lowest = min_int(inst.get_nodeattr("signed"), inst.get_nodeattr("narrow"), int(bits))
        return np.round(y / scale + zeropt).astype(np.int64) - lowest
    inst = getCustomOp(node)
    if node.op_type == "MultiThreshold":
        return np.round((y - inst.get_nodeattr("out_bias")) / inst.get_nodeattr("out_scale")).astype(np.int64)
    if inst.get_nodeattr("outputDataType") == "BIPOLAR":
        return np.round((y + 1) / 2).astype(np.int64)
    return np.round(y - inst.get_nodeattr("ActVal")).astype(np.int64)


def _margins(model, node, ctx: dict) -> np.ndarray:
    from qonnx.custom_op.general.intquant import max_int, min_int
    from qonnx.custom_op.registry import getCustomOp

    x = ctx[node.input[0]]
    if node.op_type == "MultiThreshold":
        return _threshold_margins(x, ctx[node.input[1]], getCustomOp(node).get_nodeattr("data_layout"))
    if node.op_type == "BipolarQuant":
        return np.abs(x / ctx[node.input[1]]).astype(np.float64)
    if node.op_type != "Quant":
        raise ValueError(f"{node.op_type} {node.name} is not a float quantiser")
    inst = getCustomOp(node)
    bits = int(ctx[node.input[3]])
    signed, narrow = inst.get_nodeattr("signed"), inst.get_nodeattr("narrow")
    t = (x / ctx[node.input[1]] + ctx[node.input[2]]).astype(np.float64)  # float32, as QONNX computes it
    return round_margins(t, min_int(signed, narrow, bits), max_int(signed, narrow, bits))


def round_margins(t: np.ndarray, lowest: float, highest: float) -> np.ndarray:
    """Values about to be rounded to integers in [lowest, highest]: their distance from the
    nearest .5 boundary that can change the result (saturated values: inf)."""
    d = np.abs(t - np.floor(t) - 0.5)
    d[(t < lowest - 0.5) | (t > highest + 0.5)] = np.inf
    return d


def _threshold_margins(x: np.ndarray, thresholds: np.ndarray, layout: str) -> np.ndarray:
    """Distance of each input from its channel's nearest threshold, in threshold steps.

    The flow's hidden thresholds are the first float32 values QONNX's ``Quant`` lifts to the next
    level (SetExactActivationThresholds), so the rounding boundary lies between a threshold and
    the float below it: a value equal to a threshold is within that half ulp of the boundary, not
    on a .5 tie (the ``Quant`` stages say where the ties are). Its margin is that half ulp."""
    axis = layout.index("C") if thresholds.shape[0] > 1 else x.ndim - 1
    moved = np.moveaxis(x.astype(np.float64), axis, -1)
    out = np.empty_like(moved)
    rows = thresholds.astype(np.float64)
    for c in range(moved.shape[-1]):
        row = rows[c if len(rows) > 1 else 0]
        step = float(np.diff(row).mean()) if len(row) > 1 else 1.0  # a bipolar quantiser's scale is 1
        values = moved[..., c]
        nearest = np.abs(values[..., None] - row).min(axis=-1) if len(row) <= 16 else _nearest(values, row)
        if len(row) > 1:
            half_ulp = np.spacing(np.abs(values).astype(np.float32)).astype(np.float64) / 2
            nearest = np.where(nearest == 0, half_ulp, nearest)
        out[..., c] = nearest / step
    return np.moveaxis(out, -1, axis)


def _nearest(values: np.ndarray, row: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(row, values), 1, len(row) - 1)
    return np.minimum(np.abs(values - row[pos - 1]), np.abs(values - row[pos]))


def _nchw(model, tensor: str, a: np.ndarray) -> np.ndarray:
    """Channels-last 4-D tensors of a dataflow graph -> NCHW, to line up with the float stages."""
    layout = model.get_tensor_layout(tensor)
    if a.ndim == 4 and layout is not None and list(layout) == ["N", "H", "W", "C"]:
        return a.transpose(0, 3, 1, 2)
    return a


# --- decisions of the Brevitas model --------------------------------------------------------------

class TorchTaps:
    """Hooks on a Brevitas model's QuantIdentity quantisers (input quantiser first) that keep
    what they saw in the last forward pass; ``decisions(rows)`` reads those images' levels."""

    def __init__(self, model):
        from brevitas.nn import QuantIdentity

        self.quantisers = [m for m in model.modules() if isinstance(m, QuantIdentity)]
        self.seen: dict[int, tuple] = {}
        self.hooks = []

    def __enter__(self) -> "TorchTaps":
        self.hooks = [q.register_forward_hook(lambda m, args, out, k=k: self.seen.__setitem__(k, (m, args[0], out)))
                      for k, q in enumerate(self.quantisers)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.hooks:
            h.remove()
        self.seen.clear()

    def decisions(self, rows: np.ndarray) -> Decisions:
        import torch

        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        levels = [_torch_levels(m, x[index], y[index]) for m, x, y in (self.seen[k] for k in range(len(self.quantisers)))]
        return Decisions([c.reshape(len(rows), -1) for c, _ in levels], [m.reshape(len(rows), -1) for _, m in levels])


def _torch_levels(module, x, y) -> tuple[np.ndarray, np.ndarray]:
    quant = module.act_quant
    scale, bits = quant.scale().detach(), int(quant.bit_width())
    t, levels = (x / scale).double().numpy(), (y / scale).double().numpy()
    if bits == 1:
        return (levels > 0).astype(np.int64), np.abs(t)
    top = 2 ** (bits - 1) - 1  # signed, as every zoo quantiser
    lowest = -top if quant.is_narrow_range else -top - 1
    return np.round(levels).astype(np.int64) - lowest, round_margins(t, lowest, top)
