"""Graph rewrites the flow adds to QONNX/FINN, with QONNX's contract:
``apply(model) -> (model, changed)``.
"""
from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation

FPGADATAFLOW = "finn.custom_op.fpgadataflow"
THRESHOLD_OPS = ("MultiThreshold", "Thresholding", "Thresholding_hls", "Thresholding_rtl")


class SetBatchSize(Transformation):
    """Give a batch-1 graph a batch of ``n`` (FINN's graphs are built for batch 1).

    Changes only shapes: the leading dimension of every activation tensor (global
    input/output and value_info; initializers keep theirs), Reshape targets, and the
    batch attributes of HW layers (``numInputVectors``, ``BatchSize``). The arithmetic
    is untouched, so a batched copy computes exactly what the original does, image by
    image. Shapes are set directly rather than re-inferred: several FINN layers
    (ConvolutionInputGenerator, Im2Col) infer batch-1 shapes whatever the input.
    Their Python execution is batch-1 only too, so they become the batch-safe
    ``Im2Col`` of flows.batched_ops (the same arithmetic: FINN's window generator
    executes as qonnx's Im2Col).
    """

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def apply(self, model: ModelWrapper):
        activations = _downstream_of_input(model)  # not weights, nor a weight quantiser's (1, K) output
        for tensor in (*model.graph.input, *model.graph.output, *model.graph.value_info):
            dims = tensor.type.tensor_type.shape.dim
            if tensor.name in activations and len(dims) and dims[0].dim_value == 1:
                dims[0].dim_value = self.n
        for node in model.graph.node:
            if node.op_type == "Reshape" and model.get_initializer(node.input[1]) is not None:
                shape = model.get_initializer(node.input[1]).copy()
                shape[0] = self.n
                model.set_initializer(node.input[1], shape)
            elif node.domain.startswith(FPGADATAFLOW):
                _set_batch_attrs(getCustomOp(node), self.n)
        for node in model.graph.node:
            window = _batch_safe_window(node)
            if window is not None:
                node.CopyFrom(window)
        return model, False


def _downstream_of_input(model: ModelWrapper) -> set[str]:
    """Names of the graph input and every tensor computed from it (the batched ones)."""
    reached = {model.graph.input[0].name}
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(i in reached for i in node.input):
            reached.update(node.output)
    return reached


def _batch_safe_window(node):
    """The batch-safe Im2Col for an Im2Col or ConvolutionInputGenerator node, else None."""
    from onnx import helper

    from flows.batched_ops import DOMAIN
    from hw.folding import generic_op

    if node.op_type == "Im2Col" and node.domain != DOMAIN:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    elif node.domain.startswith(FPGADATAFLOW) and generic_op(node.op_type) == "ConvolutionInputGenerator":
        inst = getCustomOp(node)
        h, w = inst.get_nodeattr("IFMDim")
        attrs = {"stride": inst.get_nodeattr("Stride"), "kernel_size": inst.get_nodeattr("ConvKernelDim"),
                 "dilations": inst.get_nodeattr("Dilation"),
                 "input_shape": f"(1,{h},{w},{inst.get_nodeattr('IFMChannels')})"}
    else:
        return None
    return helper.make_node("Im2Col", list(node.input), list(node.output), name=node.name, domain=DOMAIN, **attrs)


def _set_batch_attrs(inst, n: int) -> None:
    types = inst.get_nodeattr_types()
    if "numInputVectors" in types:
        vectors = inst.get_nodeattr("numInputVectors")
        inst.set_nodeattr("numInputVectors", [n, *list(vectors)[1:]] if isinstance(vectors, (list, tuple)) else n)
    if "BatchSize" in types:
        inst.set_nodeattr("BatchSize", n)


class MakeHWLayersGeneric(Transformation):
    """Turn ``*_hls``/``*_rtl`` nodes back into the generic HW op with the same attributes.

    After SpecializeLayers FINN has no Python execution for the specialised nodes;
    the generic op executes the same arithmetic with the same folding attributes.
    """

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            for suffix in ("_hls", "_rtl"):
                if node.op_type.endswith(suffix) and node.domain.startswith(FPGADATAFLOW):
                    node.op_type = node.op_type[: -len(suffix)]
                    node.domain = FPGADATAFLOW
        return model, False


def first_threshold_node(model: ModelWrapper):
    """The first thresholding node on the data path (the input quantiser), or None."""
    for node in model.graph.node:
        if node.op_type in THRESHOLD_OPS:
            return node
    return None


class SetExactInputThresholds(Transformation):
    """Make the input quantiser bit-exact with QONNX on every possible integer input.

    QONNX ``Quant`` rounds half to even; FINN's thresholds count ``x >= t``, so an
    input that lands exactly on a .5 tie quantises differently (FIELD-NOTES). The
    graph input is integer (an image's 0..pixel_max, or any integer input datatype),
    so the quantiser is a function of the input values: ``counts[p]`` is the number
    of thresholds QONNX's own execution passes for the p-th input value. This rewrite evaluates the graph up to
    the first thresholding node for every ``p`` and sets threshold ``j`` to the
    value that node sees for the smallest ``p`` with ``counts[p] > j``, which is
    exact by construction, whatever scaling precedes the node.
    """

    def __init__(self, counts: np.ndarray, values: np.ndarray | None = None):
        super().__init__()
        self.counts = np.asarray(counts, dtype=np.int64)  # (P,): one per input value
        # the input values, ascending (default 0..P-1: a UINT image's pixels)
        self.values = np.arange(len(self.counts)) if values is None else np.asarray(values)

    def apply(self, model: ModelWrapper):
        node = first_threshold_node(model)
        if node is None:
            return model, False
        seen = _values_seen_by(model, node.input[0], self.values)  # (P,)
        thresholds = model.get_initializer(node.input[1])  # (C or 1, steps)
        steps = thresholds.shape[-1]
        exact = np.array([_smallest_passing(seen, self.counts, j) for j in range(steps)], dtype=np.float32)
        model.set_initializer(node.input[1], np.broadcast_to(exact, thresholds.shape).copy())
        return model, False


def _smallest_passing(seen: np.ndarray, counts: np.ndarray, j: int) -> float:
    """Threshold j: the input value at the first pixel whose count exceeds j (or above all)."""
    hits = np.nonzero(counts > j)[0]
    return float(seen[hits[0]]) if len(hits) else float(seen[-1]) + 1.0


def _values_seen_by(model: ModelWrapper, tensor: str, inputs: np.ndarray) -> np.ndarray:
    """The value of ``tensor`` when every input element equals p, for each p in ``inputs``."""
    import qonnx.core.onnx_exec as oxe

    inputs = np.asarray(inputs, dtype=np.float64)
    producer = model.find_producer(tensor)  # run only up to it: the rest of a CNN is costly
    if producer is None:  # the graph input itself
        return inputs
    n_values = len(inputs)
    batched = _copy(model).transform(SetBatchSize(n_values))
    iname = batched.graph.input[0].name
    shape = batched.get_tensor_shape(iname)
    images = np.broadcast_to(inputs.astype(np.float32).reshape(-1, *[1] * (len(shape) - 1)), shape)
    ctx = oxe.execute_onnx(batched, {iname: np.ascontiguousarray(images)}, return_full_exec_context=True,
                           end_node=batched.find_producer(tensor))
    values = ctx[tensor].reshape(n_values, -1)
    if not np.all(values == values[:, :1]):
        raise ValueError(f"tensor {tensor} is not an elementwise function of the graph input, so the input "
                         "quantiser cannot be tabulated over the input values")
    return values[:, 0]


def _copy(model: ModelWrapper) -> ModelWrapper:
    import copy

    return ModelWrapper(copy.deepcopy(model.model))


# ops that keep a tensor an elementwise function of the graph input (with constant other operands)
ELEMENTWISE_OPS = ("Mul", "Add", "Sub", "Div", "Reshape", "Flatten", "Identity", "Transpose")


def input_quantiser(qonnx_model: ModelWrapper):
    """The Quant/BipolarQuant that quantises the graph input itself, or None.

    It is the first quantiser reached from the input through elementwise ops with constant
    operands (scaling, shifting, reshaping). A graph whose input goes straight into a matrix
    layer (FINN's tutorials: the input is declared BIPOLAR or BINARY) has none.
    """
    tensor = qonnx_model.graph.input[0].name
    while True:
        consumers = qonnx_model.find_consumers(tensor)
        if len(consumers) != 1:
            return None
        node = consumers[0]
        if node.op_type in ("Quant", "BipolarQuant"):
            return node
        constants = [i for i in node.input[1:] if i and qonnx_model.get_initializer(i) is not None]
        if node.op_type not in ELEMENTWISE_OPS or len(constants) != len([i for i in node.input[1:] if i]):
            return None
        tensor = node.output[0]


def input_quant_counts(qonnx_model: ModelWrapper, inputs: "np.ndarray | int") -> np.ndarray:
    """For each input value p in ``inputs`` (ascending; an int n means 0..n, an image's pixels),
    how many thresholds QONNX's input quantiser passes.

    Evaluated by QONNX's own execution of the graph (half-to-even rounding), so this
    is the reference the FINN thresholds must reproduce.
    """
    quant = input_quantiser(qonnx_model)
    if quant is None:
        raise ValueError("the graph has no input quantiser")
    inputs = np.arange(int(inputs) + 1) if np.isscalar(inputs) else np.asarray(inputs)
    y = _values_seen_by(qonnx_model, quant.output[0], inputs).astype(np.float64)
    if quant.op_type == "BipolarQuant":
        return (y > 0).astype(np.int64)
    scale, zeropt, bits = (float(qonnx_model.get_initializer(quant.input[i])) for i in (1, 2, 3))
    attrs = {a.name: a.i for a in quant.attribute}
    lowest = -(2 ** (int(bits) - 1)) + attrs.get("narrow", 0) if attrs.get("signed", 1) else 0
    return (np.round(y / scale + zeropt) - lowest).astype(np.int64)
