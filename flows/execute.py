"""Run a QONNX/FINN graph on a whole test split, in batches, and tap its last layer.

FINN's graphs are built for batch 1 and its executor runs one node at a time in
numpy; running a batched copy (see ``SetBatchSize``) gives the same arithmetic
a few hundred times faster than image-by-image execution.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flows.transforms import FPGADATAFLOW, MakeHWLayersGeneric, SetBatchSize

MATMUL_OPS = ("MatMul", "Gemm", "XnorPopcountMatMul", "MVAU", "MVAU_hls", "MVAU_rtl")
CHUNK = 2500  # images per batched execution: bounds memory for wide layers


@dataclass
class StageOutput:
    """What one stage computes for a split."""

    predictions: np.ndarray  # (N,) int64 class index
    last_layer: np.ndarray  # (N, classes) float64: last layer's accumulator (integers when exact)


def last_matmul(model: ModelWrapper):
    nodes = [n for n in model.graph.node if n.op_type in MATMUL_OPS]
    if not nodes:
        raise ValueError("graph has no matrix layer")
    return nodes[-1]


def _popcount_width(model: ModelWrapper, node) -> int | None:
    """For XNOR-popcount layers, the dot-product length K (dot = 2*popcount - K); else None."""
    if node.op_type == "XnorPopcountMatMul":
        return model.get_tensor_shape(node.input[1])[0]
    if node.domain.startswith(FPGADATAFLOW) and getCustomOp(node).get_nodeattr("binaryXnorMode"):
        return getCustomOp(node).get_nodeattr("MW")
    return None


def run_graph(model: ModelWrapper, images: np.ndarray, scale: float = 1.0) -> StageOutput:
    """Execute ``model`` on ``images`` (batch axis first, matching the graph input's
    per-image shape). ``scale`` divides the last layer's accumulator back to integers
    for graphs whose weights and activations still carry their float scales."""
    import qonnx.core.onnx_exec as oxe

    model = ModelWrapper(copy.deepcopy(model.model)).transform(MakeHWLayersGeneric())
    mm = last_matmul(model)
    k = _popcount_width(model, mm)
    outs, taps, cache = [], [], {}
    for start in range(0, len(images), CHUNK):
        chunk = np.ascontiguousarray(images[start:start + CHUNK], dtype=np.float32)
        if len(chunk) not in cache:
            cache[len(chunk)] = ModelWrapper(copy.deepcopy(model.model)).transform(SetBatchSize(len(chunk)))
        batched = cache[len(chunk)]
        ctx = oxe.execute_onnx(batched, {batched.graph.input[0].name: chunk.reshape(batched.get_tensor_shape(batched.graph.input[0].name))},
                               return_full_exec_context=True)
        outs.append(ctx[batched.graph.output[0].name].reshape(len(chunk), -1))
        taps.append(ctx[mm.output[0]].reshape(len(chunk), -1).astype(np.float64))
    out, tap = np.concatenate(outs), np.concatenate(taps)
    tap = (2 * tap - k) if k is not None else tap / scale
    return StageOutput(_predictions(out), tap)


def _predictions(out: np.ndarray) -> np.ndarray:
    """Graph output -> class index: a top-1 index column, or argmax of logits."""
    return out[:, 0].astype(np.int64) if out.shape[1] == 1 else out.argmax(1).astype(np.int64)


def last_layer_scale(qonnx_model: ModelWrapper) -> float:
    """Product of the weight and input scales of the last matrix layer of a QONNX graph.

    Dividing that layer's float output by it gives its integer accumulator.
    """
    mm = last_matmul(qonnx_model)
    scale = 1.0
    for tensor in mm.input[:2]:
        producer = qonnx_model.find_producer(tensor)
        if producer is None or producer.op_type not in ("Quant", "BipolarQuant"):
            raise ValueError(f"input {tensor} of {mm.name} is not quantised")
        s = qonnx_model.get_initializer(producer.input[1])
        if s is None or np.asarray(s).size != 1:
            raise ValueError(f"{producer.name} has no per-tensor scale")
        scale *= float(np.asarray(s).reshape(()))
    return scale
