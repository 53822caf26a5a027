"""Graph rewrites the flow adds to QONNX/FINN, with QONNX's contract:
``apply(model) -> (model, changed)``.
"""
from __future__ import annotations

from dataclasses import dataclass

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


# nodes that may stand between the graph input and the first HW layer (they stay on the host)
HOST_LAYOUT_OPS = ("Reshape", "Transpose", "Flatten")


def first_hw_node(model: ModelWrapper):
    """The first node past the host-side reshapes/transposes of the graph input, or None."""
    tensor = model.graph.input[0].name
    while True:
        consumers = model.find_consumers(tensor)
        if len(consumers) != 1:
            return None
        if consumers[0].op_type not in HOST_LAYOUT_OPS:
            return consumers[0]
        tensor = consumers[0].output[0]


class MoveInputThresholdsToHost(Transformation):
    """Take the input quantiser (a HW Thresholding layer on the raw graph input) off the accelerator.

    The node becomes a host-side MultiThreshold computing the same function (FINN's Thresholding:
    ``count + ActVal`` per channel on the last axis, ``2 * that - 1`` for a BIPOLAR output), so
    CreateDataflowPartition leaves it outside the dataflow partition, whose input is then the
    quantiser's narrow output (UINT2, BIPOLAR, ...) instead of the raw pixel. A graph whose first
    HW layer is not a Thresholding is left unchanged. Run after the HW conversion.
    """

    def apply(self, model: ModelWrapper):
        from onnx import helper

        from hw.folding import generic_op

        node = first_hw_node(model)
        if node is None or not node.domain.startswith(FPGADATAFLOW) or generic_op(node.op_type) != "Thresholding":
            return model, False
        inst = getCustomOp(node)
        odt, act_val = inst.get_output_datatype(), int(inst.get_nodeattr("ActVal"))
        bipolar = odt.name == "BIPOLAR"
        rank = len(model.get_tensor_shape(node.input[0]))
        host = helper.make_node("MultiThreshold", list(node.input[:2]), [node.output[0]], name=node.name,
                                domain="qonnx.custom_op.general", out_dtype=odt.name,
                                out_scale=2.0 if bipolar else 1.0,
                                out_bias=float(2 * act_val - 1 if bipolar else act_val),
                                data_layout={2: "NC", 3: "NWC", 4: "NHWC"}.get(rank, ""))  # channels last
        node.CopyFrom(host)
        model.set_tensor_datatype(node.output[0], odt)
        return model, False


class SetExactInputThresholds(Transformation):
    """Make the input quantiser bit-exact with QONNX on every possible integer input.

    QONNX ``Quant`` rounds half to even; FINN's thresholds count ``x >= t``, so an
    input that lands exactly on a .5 tie quantises differently (docs/equivalence.md). The
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


# --- hidden activations: the model's rounding, ties included ---------------------------------------

ROUND_HALF_EVEN = ("ROUND", "HALF_EVEN")


@dataclass(frozen=True)
class ActQuantiser:
    """A QONNX activation quantiser (``Quant`` or ``BipolarQuant``) as the thresholds must reproduce it."""

    bipolar: bool
    scale: float = 1.0
    zeropt: float = 0.0
    bits: int = 1
    signed: bool = True
    narrow: bool = False
    rounding: str = "ROUND"

    @property
    def lowest(self) -> int:
        from qonnx.custom_op.general.intquant import min_int

        return int(min_int(self.signed, self.narrow, self.bits))

    @property
    def highest(self) -> int:
        from qonnx.custom_op.general.intquant import max_int

        return int(max_int(self.signed, self.narrow, self.bits))

    def levels(self, x: np.ndarray) -> np.ndarray:
        """The integer level QONNX's ``Quant`` gives float32 ``x`` (its own code, so its own rounding)."""
        from qonnx.custom_op.general.intquant import int_quant

        x = np.asarray(x, dtype=np.float32)
        y = int_quant(x, np.float32(self.scale), np.float32(self.zeropt), np.float32(self.bits),
                      self.signed, self.narrow, self.rounding)
        return np.round(y / np.float32(self.scale) + np.float32(self.zeropt)).astype(np.int64)

    def tie_passes(self, step: int) -> bool | None:
        """Whether a value exactly on the tie below level ``lowest + step + 1`` rounds up to it
        (None: this rounding has no .5 ties, e.g. floor or ceil)."""
        level = self.lowest + step + 1
        mode = self.rounding.upper()
        if mode in ROUND_HALF_EVEN:
            return level % 2 == 0
        if mode == "HALF_UP":  # half away from zero
            return level >= 1
        if mode == "HALF_DOWN":  # half towards zero
            return level <= 0
        return None


def activation_quantisers(qonnx_model: ModelWrapper) -> list[ActQuantiser | None]:
    """The activation quantisers of a (cleaned-up) QONNX graph in graph order, input quantiser first;
    None for one whose scale is not per-tensor (its thresholds are left as FINN makes them)."""
    out = []
    for node in qonnx_model.graph.node:
        if node.op_type not in ("Quant", "BipolarQuant") or qonnx_model.get_initializer(node.input[0]) is not None:
            continue
        if node.op_type == "BipolarQuant":
            out.append(ActQuantiser(bipolar=True))
            continue
        params = [qonnx_model.get_initializer(node.input[i]) for i in (1, 2, 3)]
        if any(p is None or np.asarray(p).size != 1 for p in params):
            out.append(None)
            continue
        inst = getCustomOp(node)
        scale, zeropt, bits = (float(np.asarray(p).reshape(())) for p in params)
        out.append(ActQuantiser(False, scale, zeropt, int(bits), bool(inst.get_nodeattr("signed")),
                                bool(inst.get_nodeattr("narrow")), inst.get_nodeattr("rounding_mode")))
    return out


def threshold_nodes(model: ModelWrapper) -> list:
    """The MultiThreshold nodes of a FINN graph in graph order (the input quantiser first)."""
    return [n for n in model.graph.node if n.op_type == "MultiThreshold"]


def hidden_thresholds(model: ModelWrapper, quantisers: list[ActQuantiser | None]) -> list:
    """(hidden thresholding node, the model's quantiser it implements) pairs, in graph order: the
    input quantiser (first) and bipolar ones aside; none when the graphs do not line up (the
    rewrites then leave FINN's thresholds as they are)."""
    nodes = threshold_nodes(model)
    if len(nodes) != len(quantisers):
        return []
    return [(n, q) for n, q in list(zip(nodes, quantisers))[1:] if q is not None and not q.bipolar]


class SetExactActivationThresholds(Transformation):
    """Make each hidden MultiThreshold of the FINN graph count exactly what QONNX's ``Quant`` rounds to.

    ConvertQONNXtoFINN places threshold j at (lowest + j + 0.5) * scale and counts x >= t, so a
    value exactly on a .5 tie always goes up where ``Quant`` rounds half to even; with a
    non-power-of-two scale the float32 product may also sit an ulp off the true boundary.
    This rewrite moves each threshold to the smallest float32 x that ``Quant`` (its own
    code) puts at level lowest + j + 1: identical levels for every float32 input. The
    MultiThreshold's input is the tensor the ``Quant`` read, so this is exact by construction.
    The input quantiser (first) is left to SetExactInputThresholds.
    """

    def __init__(self, quantisers: list[ActQuantiser | None]):
        super().__init__()
        self.quantisers = quantisers

    def apply(self, model: ModelWrapper):
        for node, q in hidden_thresholds(model, self.quantisers):
            thresholds = model.get_initializer(node.input[1])
            if thresholds.shape[-1] != q.highest - q.lowest:
                continue
            exact = np.array([_smallest_reaching(q, q.lowest + j + 1) for j in range(thresholds.shape[-1])],
                             dtype=np.float32)
            model.set_initializer(node.input[1], np.broadcast_to(exact, thresholds.shape).copy())
        return model, False


def _smallest_reaching(q: ActQuantiser, level: int) -> np.float32:
    """The smallest float32 x with q.levels(x) >= level (searching ulp by ulp from the nominal boundary)."""
    x = np.float32((level - 0.5 - q.zeropt) * q.scale)
    while q.levels(x) >= level:
        x = np.nextafter(x, np.float32(-np.inf))
    while q.levels(x) < level:
        x = np.nextafter(x, np.float32(np.inf))
    return x


class ResolveThresholdTies(Transformation):
    """On the integer accumulator, resolve every exact tie as the model's quantiser does.

    After streamlining, a hidden MultiThreshold reads an integer accumulator and its
    thresholds are the model's .5 boundaries mapped into that domain, still float. A
    threshold that lands on an integer n (within float32 error of the mapping) is an
    accumulator value where the model sits exactly on a tie: ``x >= n`` would always round
    up. Round half to even rounds up only into an even level, so such a threshold becomes
    n (rounds up) or n + 1 (the tie stays below: the accumulator is an integer). Run it
    before RoundAndClipThresholds, which takes every other threshold to its ceiling.
    """

    def __init__(self, quantisers: list[ActQuantiser | None]):
        super().__init__()
        self.quantisers = quantisers

    def apply(self, model: ModelWrapper):
        for node, q in hidden_thresholds(model, self.quantisers):
            thresholds = model.get_initializer(node.input[1]).astype(np.float64)  # (C or 1, steps)
            if not model.get_tensor_datatype(node.input[0]).is_integer():
                continue
            nearest = np.round(thresholds)
            tolerance = 16 * np.spacing(np.maximum(np.abs(thresholds), 1.0).astype(np.float32)).astype(np.float64)
            ties = np.abs(thresholds - nearest) <= tolerance
            for j in range(thresholds.shape[-1]):
                up = q.tie_passes(j)
                if up is not None:
                    column = ties[:, j]
                    thresholds[column, j] = nearest[column, j] + (0 if up else 1)
            model.set_initializer(node.input[1], thresholds.astype(np.float32))
        return model, False


# --- binary layers --------------------------------------------------------------------------------

class InferBinaryMVAUWithOffset(Transformation):
    """FINN's InferBinaryMatrixVectorActivation, keeping the activation's own output offset.

    FINN's binary conversion sets a multi-bit output's ``ActVal`` (the value of level 0) to the
    output datatype's minimum, -32 for INT6, where the absorbed MultiThreshold's ``out_bias``
    says -31 (a narrow range): every output one level low. This runs FINN's conversion and
    then gives each new MVAU the ``out_bias`` of the MultiThreshold it absorbed.
    """

    def apply(self, model: ModelWrapper):
        from finn.transformation.fpgadataflow.convert_to_hw.binary_matrix_vector_activation import \
            InferBinaryMatrixVectorActivation

        offsets = {}
        for node in model.graph.node:
            consumer = model.find_consumer(node.output[0]) if node.op_type == "XnorPopcountMatMul" else None
            if consumer is not None and consumer.op_type == "MultiThreshold":
                inst = getCustomOp(consumer)
                if model.get_tensor_datatype(consumer.output[0]).bitwidth() > 1:
                    if inst.get_nodeattr("out_scale") != 1 or int(inst.get_nodeattr("out_bias")) != inst.get_nodeattr("out_bias"):
                        raise ValueError(f"{consumer.name}: a binary layer's multi-bit activation needs out_scale 1 "
                                         "and an integer out_bias")
                    offsets[consumer.output[0]] = int(inst.get_nodeattr("out_bias"))
        model = model.transform(InferBinaryMatrixVectorActivation())
        for node in model.graph.node:
            if node.op_type == "MVAU" and node.output[0] in offsets:
                getCustomOp(node).set_nodeattr("ActVal", offsets[node.output[0]])
        return model, False


class InferBipolarThresholdingLayer(Transformation):
    """FINN's InferThresholdingLayer, also for a bipolar activation (out_scale 2, out_bias -1).

    FINN maps a bipolar activation into the MVAU that computes it (XNOR layers) but a standalone
    bipolar MultiThreshold, such as a 1-bit input quantiser in front of multi-bit weights, fails
    with ``MultiThreshold out_scale must be 1 for HLS conversion``. FINN's Thresholding layer has
    a BIPOLAR output (it emits bits, 2 * bit - 1 in value) and its MVAU takes BIPOLAR inputs with
    integer weights (``Recast<Binary>``), as its MVAU conversion does for bipolar outputs: so the
    node is converted with out_scale 1, out_bias 0 and a BIPOLAR output, the same function.
    Run it after the MVAU conversions, in place of InferThresholdingLayer.
    """

    def apply(self, model: ModelWrapper):
        from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
        from qonnx.core.datatype import DataType

        for node in threshold_nodes(model):
            inst = getCustomOp(node)
            if (inst.get_nodeattr("out_scale"), inst.get_nodeattr("out_bias")) == (2.0, -1.0):
                if model.get_tensor_datatype(node.output[0]) != DataType["BIPOLAR"]:
                    raise ValueError(f"{node.name}: out_scale 2, out_bias -1 but its output is not BIPOLAR")
                inst.set_nodeattr("out_scale", 1.0)
                inst.set_nodeattr("out_bias", 0.0)
        return model.transform(InferThresholdingLayer()), False


class MoveReshapeBeforeThresholds(Transformation):
    """Swap ``MultiThreshold -> Reshape/Flatten`` into ``Reshape/Flatten -> MultiThreshold`` where the
    thresholds are per tensor (one row): an elementwise function commutes with a reshape.

    A model that quantises its (N, C, H, W) input before flattening it for a linear layer
    otherwise leaves the Reshape between the input Thresholding and the first matrix
    layer, where neither FINN's HW conversion nor the dataflow partition can take it.
    """

    def apply(self, model: ModelWrapper):
        for node in threshold_nodes(model):
            consumers = model.find_consumers(node.output[0])
            if len(consumers) != 1 or consumers[0].op_type not in ("Reshape", "Flatten"):
                continue
            if model.get_initializer(node.input[1]).shape[0] != 1:
                continue
            reshape = consumers[0]
            x, y, out = node.input[0], node.output[0], reshape.output[0]
            dtype = model.get_tensor_datatype(y)
            reshape.input[0], reshape.output[0] = x, y  # reshape the raw tensor into y ...
            node.input[0], node.output[0] = y, out  # ... and threshold it into the old output
            model.set_tensor_shape(y, model.get_tensor_shape(out))
            model.set_tensor_datatype(y, model.get_tensor_datatype(x))
            model.set_tensor_datatype(out, dtype)
            getCustomOp(node).set_nodeattr("data_layout", "")
            at = list(model.graph.node).index(node)
            model.graph.node.remove(reshape)
            model.graph.node.insert(at, reshape)  # keep the node list topologically sorted
            return model, True
        return model, False


class FactorOutBipolarScale(Transformation):
    """``BipolarQuant(x, s)`` -> ``Mul(BipolarQuant(x, 1), s)`` for a per-tensor activation scale s != 1.

    QONNX's BipolarQuant is ``where(x >= 0, 1, -1) * s``, so the rewrite is exact. FINN's
    conversion takes only bipolar activations of scale 1; the scalar Mul it leaves
    streamlines into the next layer's thresholds like any other scale.
    """

    def apply(self, model: ModelWrapper):
        from onnx import helper

        for node in model.graph.node:
            if node.op_type != "BipolarQuant" or model.get_initializer(node.input[0]) is not None:
                continue
            scale = model.get_initializer(node.input[1])
            if scale is None or np.asarray(scale).size != 1 or float(np.asarray(scale).reshape(())) == 1.0:
                continue
            out = node.output[0]
            raw = model.make_new_valueinfo_name()
            one = model.make_new_valueinfo_name()
            model.set_initializer(one, np.ones_like(np.asarray(scale, dtype=np.float32)))
            node.input[1], node.output[0] = one, raw
            model.set_tensor_shape(raw, model.get_tensor_shape(out))
            mul = helper.make_node("Mul", [raw, _scale_tensor(model, scale)], [out])
            model.graph.node.insert(list(model.graph.node).index(node) + 1, mul)
            return model, True
        return model, False


def _scale_tensor(model: ModelWrapper, scale) -> str:
    name = model.make_new_valueinfo_name()
    model.set_initializer(name, np.asarray(scale, dtype=np.float32))
    return name


class MoveChannelwiseAffinePastMaxPool(Transformation):
    """``Mul(c)``/``Add(b)`` (per channel or scalar, constant) in front of a MaxPool move past it.

    max(x + b) = max(x) + b, and max(c * x) = c * max(x) for c > 0, per channel. A BatchNorm
    between a convolution and a max pool (conv -> BN -> maxpool -> act) leaves such a Mul and
    Add in front of the pool, where FINN's streamlining (which moves only scalar scales past
    a pool) cannot absorb them into the thresholds after it. A negative scale does not commute
    with max: it is left, and the step names the node.
    """

    def apply(self, model: ModelWrapper):
        for pool in model.graph.node:
            if pool.op_type != "MaxPool":
                continue
            op = model.find_producer(pool.input[0])
            if op is None or op.op_type not in ("Mul", "Add") or len(model.find_consumers(op.output[0])) != 1:
                continue
            const = model.get_initializer(op.input[1])
            channels = model.get_tensor_shape(pool.input[0])[1]
            if const is None or not (const.size == 1 or (1,) * (4 - const.ndim) + const.shape == (1, channels, 1, 1)):
                continue  # only a scalar or a per-channel (NCHW) constant commutes with the pool
            if op.op_type == "Mul" and not (const > 0).all():
                continue
            x, y, z = op.input[0], op.output[0], pool.output[0]
            pool.input[0], pool.output[0] = x, y
            op.input[0], op.output[0] = y, z
            model.set_tensor_shape(y, model.get_tensor_shape(z))
            model.graph.node.remove(op)
            model.graph.node.insert(list(model.graph.node).index(pool) + 1, op)
            return model, True
        return model, False
