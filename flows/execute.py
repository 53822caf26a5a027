"""Run a QONNX/FINN graph on a whole test split, in batches, and tap its last layer.

FINN's graphs are built for batch 1 and its executor runs one node at a time in
numpy; running a batched copy (see ``SetBatchSize``) gives the same arithmetic
a few hundred times faster than image-by-image execution.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from flows.layout import to_accelerator
from flows.transforms import FPGADATAFLOW, MakeHWLayersGeneric, SetBatchSize

MATMUL_OPS = ("MatMul", "Gemm", "XnorPopcountMatMul", "MVAU", "MVAU_hls", "MVAU_rtl")
CHUNK = 2500  # most images per batched execution
CHUNK_BYTES = 2 << 30  # and at most this much activation memory per batch (a CNN's windows are large)


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


ChunkCallback = Callable[[int, StageOutput, ModelWrapper, dict], None]  # (first image, its outputs, graph, tensors)


def run_graph(model: ModelWrapper, images: np.ndarray, scale: float = 1.0,
              on_chunk: ChunkCallback | None = None) -> StageOutput:
    """Execute ``model`` on ``images`` (batch axis first, matching the graph input's
    per-image shape). ``scale`` divides the last layer's accumulator back to integers
    for graphs whose weights and activations still carry their float scales.
    ``on_chunk`` sees every batched execution with all its tensors (float results
    depend on the batch they were computed in, so this is where to look at them)."""
    model = executable(model)
    decision = is_decision(model)
    tapped = model.graph.output[0].name if decision else last_matmul(model).output[0]
    k = None if decision else _popcount_width(model, last_matmul(model))
    parts, cache = [], {}
    step = chunk_size(model)
    for start in range(0, len(images), step):
        chunk = images[start:start + step]
        if len(chunk) not in cache:
            cache[len(chunk)] = ModelWrapper(copy.deepcopy(model.model)).transform(SetBatchSize(len(chunk)))
        batched = cache[len(chunk)]
        ctx = execute_batch(batched, chunk)
        tap = ctx[tapped].reshape(len(chunk), -1).astype(np.float64)
        part = StageOutput(_predictions(ctx[batched.graph.output[0].name].reshape(len(chunk), -1), decision),
                           (2 * tap - k) if k is not None else tap / scale)
        if on_chunk is not None:
            on_chunk(start, part, batched, ctx)
        parts.append(part)
    return StageOutput(np.concatenate([p.predictions for p in parts]), np.concatenate([p.last_layer for p in parts]))


def executable(model: ModelWrapper) -> ModelWrapper:
    """A copy FINN's Python execution can run (specialised HW nodes back to their generic op)."""
    return ModelWrapper(copy.deepcopy(model.model)).transform(MakeHWLayersGeneric())


def execute_batch(batched: ModelWrapper, images: np.ndarray) -> dict:
    """Every tensor of ``batched`` (a copy with the batch size of ``images``) for ``images``."""
    import qonnx.core.onnx_exec as oxe

    iname = batched.graph.input[0].name
    x = np.ascontiguousarray(images, dtype=np.float32).reshape(batched.get_tensor_shape(iname))
    return oxe.execute_onnx(batched, {iname: x}, return_full_exec_context=True)


def full_context(model: ModelWrapper, images: np.ndarray) -> tuple[ModelWrapper, dict]:
    """(the executed batched copy, every tensor) of ``model`` run on a few ``images`` at once."""
    batched = executable(model).transform(SetBatchSize(len(images)))
    return batched, execute_batch(batched, images)


def chunk_size(model: ModelWrapper) -> int:
    """Images per batched run: the execution keeps every intermediate tensor, so bound their sum
    (float32, with room for the temporaries a node makes) by CHUNK_BYTES."""
    weights = {init.name for init in model.graph.initializer}
    tensors = [t.name for t in (*model.graph.input, *model.graph.value_info, *model.graph.output)
               if t.name not in weights]
    per_image = sum(math.prod(model.get_tensor_shape(t)[1:]) for t in tensors if model.get_tensor_shape(t))
    return int(max(1, min(CHUNK, CHUNK_BYTES // (4 * 4 * max(per_image, 1)))))


def to_graph_input(model: ModelWrapper, images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) images laid out as ``model``'s input, batch axis first.

    Driven by the input tensor's data layout: a graph taking NHWC (a CNN's dataflow
    partition, whose NCHW->NHWC Transpose stays on the host) gets the images
    transposed; any other graph gets them reshaped (an MLP's flat input).
    """
    iname = model.graph.input[0].name
    return to_accelerator(images, model.get_tensor_shape(iname)[1:], model.get_tensor_layout(iname))


def _predictions(out: np.ndarray, decision: bool = False) -> np.ndarray:
    """Graph output -> class index: a top-1 index column, argmax of logits, or for a binary
    decision (one value) 1 where it is positive (bipolar +1, binary 1, a positive score)."""
    if decision:
        return (out[:, 0] > 0).astype(np.int64)
    return out[:, 0].astype(np.int64) if out.shape[1] == 1 else out.argmax(1).astype(np.int64)


HEAD_OPS = ("TopK", "LabelSelect", "LabelSelect_hls", "LabelSelect_rtl")


def is_decision(model: ModelWrapper) -> bool:
    """Whether the graph ends in one value per example that is the decision itself (no top-1
    head): FINN's binary classifiers with a bipolar output. The verifier then compares that
    output, not the last matrix layer's accumulators (the hardware folds the output threshold
    into that layer)."""
    out = model.graph.output[0].name
    producer = model.find_producer(out)
    return math.prod(model.get_tensor_shape(out)[1:]) == 1 and (producer is None or producer.op_type not in HEAD_OPS)


def last_layer_scale(model: ModelWrapper) -> float:
    """The float scale of the last matrix layer's output: input scale times weight scale.

    Dividing that layer's output by it gives its integer accumulator. QONNX graphs
    carry the scales in Quant nodes; after ConvertQONNXtoFINN they sit in scalar
    Muls before the layer (activations) or in integer weights (scale moved after).
    """
    if is_decision(model):
        return tensor_scale(model, model.graph.output[0].name)
    mm = last_matmul(model)
    return tensor_scale(model, mm.input[0]) * tensor_scale(model, mm.input[1])


def tensor_scale(model: ModelWrapper, tensor: str) -> float:
    """Scale s with tensor = s * (integer tensor), found by walking back through the graph."""
    init = model.get_initializer(tensor)
    if init is not None:
        if np.array_equal(init, np.round(init)):
            return 1.0
        raise ValueError(f"initializer {tensor} is not integer and carries no known scale")
    node = model.find_producer(tensor)
    if node is None:
        raise ValueError(f"{tensor} is a graph input with no known scale")
    if node.op_type in ("Quant", "BipolarQuant"):
        return _scalar(model, node.input[1], node.name)
    if node.op_type == "Mul":
        const = [i for i in node.input if model.get_initializer(i) is not None]
        data = [i for i in node.input if model.get_initializer(i) is None]
        if len(const) == 1 and len(data) == 1:
            return _scalar(model, const[0], node.name) * tensor_scale(model, data[0])
    if node.op_type == "MultiThreshold":
        return 1.0
    if node.op_type in ("Reshape", "Flatten", "Transpose", "MaxPool", "MaxPoolNHWC"):  # max of s * ints, s > 0
        return tensor_scale(model, node.input[0])
    if node.op_type in ("Add", "Sub") and model.get_initializer(node.input[1]) is not None:
        scale = tensor_scale(model, node.input[0])
        offset = model.get_initializer(node.input[1]) / scale
        if np.allclose(offset, np.round(offset), atol=1e-6):
            return scale
    raise ValueError(f"cannot tell the scale of {tensor} (made by {node.op_type} {node.name})")


def _scalar(model: ModelWrapper, tensor: str, where: str) -> float:
    value = model.get_initializer(tensor)
    if value is None or np.asarray(value).size != 1:
        raise ValueError(f"{where} has no per-tensor scale")
    return float(np.asarray(value).reshape(()))
