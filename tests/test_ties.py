"""Inputs exactly on rounding ties: QONNX rounds half to even, FINN thresholds count x >= t.

Each case is a small QONNX graph, raw pixel p in 0..255 -> (p - 128) / 16 -> Quant(b bits,
power-of-two scale s) -> MatMul, chosen so that many pixels sit exactly on a .5 tie in
float32. FINN's own conversion disagrees on those pixels; the flow's fix must agree on all.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from flows.transforms import SetBatchSize, SetExactInputThresholds, input_quant_counts

N_IN, N_OUT = 16, 4
# (bits, scale, signed, narrow): every scale makes ties on the grid (p - 128) / 16
CASES = {"int2-narrow": (2, 1.0, 1, 1), "int3": (3, 0.5, 1, 0), "int4": (4, 0.25, 1, 0),
         "uint4": (4, 0.25, 0, 0), "int8": (8, 0.125, 1, 0)}


def quant_graph(bits: int, scale: float, signed: int, narrow: int) -> ModelWrapper:
    rng = np.random.default_rng(bits)
    nodes = [helper.make_node("Add", ["x", "offset"], ["centred"]),
             helper.make_node("Mul", ["centred", "pixel_scale"], ["scaled"]),
             helper.make_node("Quant", ["scaled", "scale", "zeropt", "bitwidth"], ["q"],
                              domain="qonnx.custom_op.general", signed=signed, narrow=narrow, rounding_mode="ROUND"),
             helper.make_node("MatMul", ["q", "w"], ["y"])]
    graph = helper.make_graph(nodes, "ties", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N_IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N_OUT])])
    model = ModelWrapper(qonnx_make_model(graph))
    for name, value in {"offset": -128.0, "pixel_scale": 1 / 16, "scale": scale, "zeropt": 0.0,
                        "bitwidth": float(bits)}.items():
        model.set_initializer(name, np.array(value, dtype=np.float32))
    model.set_initializer("w", rng.integers(-3, 4, size=(N_IN, N_OUT)).astype(np.float32))
    model.set_tensor_datatype("x", DataType["UINT8"])
    return tidy(model)


def tidy(model: ModelWrapper) -> ModelWrapper:
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    return model.transform(InferShapes()).transform(InferDataTypes())


def run(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    import qonnx.core.onnx_exec as oxe

    batched = model.transform(SetBatchSize(len(x)))
    return oxe.execute_onnx(batched, {batched.graph.input[0].name: x})[batched.graph.output[0].name]


def inputs() -> np.ndarray:
    """Every pixel value as a constant image, then random images of tie-heavy pixels."""
    every = np.repeat(np.arange(256, dtype=np.float32)[:, None], N_IN, axis=1)
    rng = np.random.default_rng(0)
    mixed = rng.choice(np.arange(0, 256, 2), size=(200, N_IN)).astype(np.float32)
    return np.concatenate([every, mixed])


def to_finn(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    return tidy(model.transform(ConvertQONNXtoFINN()))


def streamline(model: ModelWrapper) -> ModelWrapper:
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    return tidy(model.transform(Streamline()).transform(RoundAndClipThresholds()))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_reference_counts_are_half_to_even(case):
    bits, scale, signed, narrow = CASES[case]
    counts = input_quant_counts(quant_graph(*CASES[case]), 255)
    lo = (-(2 ** (bits - 1)) + narrow) if signed else 0
    hi = (2 ** (bits - 1) - 1) if signed else 2 ** bits - 1
    x = (np.arange(256, dtype=np.float32) - 128) / 16 / np.float32(scale)
    assert np.array_equal(counts, np.clip(np.round(x), lo, hi) - lo)  # np.round: half to even
    assert np.any(x == np.floor(x) + 0.5), "the case must contain exact ties"


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_finn_conversion_alone_disagrees_on_ties(case):
    qonnx_model = quant_graph(*CASES[case])
    x = inputs()
    assert not np.array_equal(run(to_finn(qonnx_model), x), run(qonnx_model, x))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_exact_thresholds_agree_on_every_input(case):
    qonnx_model = quant_graph(*CASES[case])
    x = inputs()
    reference = run(qonnx_model, x)
    counts = input_quant_counts(qonnx_model, 255)
    finn_model = to_finn(qonnx_model).transform(SetExactInputThresholds(counts))
    assert np.array_equal(run(finn_model, x), reference)
    streamlined = streamline(finn_model).transform(SetExactInputThresholds(counts))
    assert {n.op_type for n in streamlined.graph.node} <= {"MultiThreshold", "MatMul", "Mul", "Add"}
    assert np.array_equal(run(streamlined, x), reference)


# --- hidden ties: an integer accumulator exactly on a .5 boundary -------------------------------------
#
# x (integers, -8..7) -> input Quant (INT8, scale 1: exact) -> MatMul (integer weights) -> Mul(1/2)
# -> Quant(bits, scale 1) -> MatMul. The hidden Quant sees acc / 2: every odd accumulator is an exact
# tie, which QONNX rounds half to even and FINN's thresholds (x >= t) always round up.

HIDDEN_IN, HIDDEN = 12, 6
HIDDEN_CASES = {"int3-narrow": (3, 1), "int4": (4, 0), "int2-narrow": (2, 1)}


def hidden_tie_graph(bits: int, narrow: int) -> ModelWrapper:
    rng = np.random.default_rng(bits * 10 + narrow)
    quant = dict(domain="qonnx.custom_op.general", signed=1, rounding_mode="ROUND")
    nodes = [helper.make_node("Quant", ["x", "one", "zero", "eight"], ["xq"], narrow=0, **quant),
             helper.make_node("MatMul", ["xq", "w1"], ["acc"]),
             helper.make_node("Mul", ["acc", "half"], ["h"]),
             helper.make_node("Quant", ["h", "one", "zero", "bits"], ["a"], narrow=narrow, **quant),
             helper.make_node("MatMul", ["a", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "hidden", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HIDDEN_IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N_OUT])])
    model = ModelWrapper(qonnx_make_model(graph))
    for name, value in {"one": 1.0, "zero": 0.0, "eight": 8.0, "half": 0.5, "bits": float(bits)}.items():
        model.set_initializer(name, np.array(value, dtype=np.float32))
    model.set_initializer("w1", rng.integers(-1, 2, size=(HIDDEN_IN, HIDDEN)).astype(np.float32))
    model.set_initializer("w2", rng.integers(-3, 4, size=(HIDDEN, N_OUT)).astype(np.float32))
    model.set_tensor_datatype("x", DataType["INT8"])
    model.set_tensor_datatype("w1", DataType["INT2"])  # integer weights, as FINN's conversion marks them
    model.set_tensor_datatype("w2", DataType["INT3"])
    return tidy(model)


def hidden_inputs() -> np.ndarray:
    return np.random.default_rng(1).integers(-4, 5, size=(300, HIDDEN_IN)).astype(np.float32)


def hidden_values(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    import qonnx.core.onnx_exec as oxe

    batched = model.transform(SetBatchSize(len(x)))
    return oxe.execute_onnx(batched, {"x": x}, return_full_exec_context=True)["h"]


def streamline_hidden(model: ModelWrapper, resolve: bool) -> ModelWrapper:
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

    from flows.transforms import ResolveThresholdTies, activation_quantisers

    quantisers = activation_quantisers(model)
    finn = to_finn(model)
    streamlined = tidy(finn.transform(Streamline()))
    if resolve:
        streamlined = streamlined.transform(ResolveThresholdTies(quantisers))
    return tidy(streamlined.transform(RoundAndClipThresholds()))


@pytest.mark.parametrize("case", HIDDEN_CASES, ids=list(HIDDEN_CASES))
def test_hidden_ties_are_constructed(case):
    h = hidden_values(hidden_tie_graph(*HIDDEN_CASES[case]), hidden_inputs())
    assert (h - np.floor(h) == 0.5).sum() > 100  # many values exactly on a .5 tie


@pytest.mark.parametrize("case", HIDDEN_CASES, ids=list(HIDDEN_CASES))
def test_finn_thresholds_round_hidden_ties_up(case):
    model, x = hidden_tie_graph(*HIDDEN_CASES[case]), hidden_inputs()
    assert not np.array_equal(run(to_finn(model), x), run(model, x))
    assert not np.array_equal(run(streamline_hidden(model, resolve=False), x), run(model, x))


@pytest.mark.parametrize("case", HIDDEN_CASES, ids=list(HIDDEN_CASES))
def test_flow_thresholds_resolve_hidden_ties_half_to_even(case):
    """Float graph (convert step) and integer graph (streamline step) both agree with QONNX on every tie."""
    from flows.transforms import SetExactActivationThresholds, activation_quantisers

    model, x = hidden_tie_graph(*HIDDEN_CASES[case]), hidden_inputs()
    reference = run(model, x)
    finn = to_finn(model).transform(SetExactActivationThresholds(activation_quantisers(model)))
    assert np.array_equal(run(finn, x), reference)
    streamlined = streamline_hidden(model, resolve=True)
    assert {n.op_type for n in streamlined.graph.node} <= {"MultiThreshold", "MatMul", "Mul", "Add"}
    assert np.array_equal(run(streamlined, x), reference)


def test_exact_activation_thresholds_match_quant_on_every_float_near_a_boundary():
    """Non-power-of-two scale (1/31, INT6 narrow): the threshold is the first float32 that Quant lifts."""
    from flows.transforms import ActQuantiser, _smallest_reaching

    q = ActQuantiser(False, scale=float(np.float32(1 / 31)), bits=6, signed=True, narrow=True)
    for level in (-30, -1, 0, 1, 17, 31):
        t = _smallest_reaching(q, level)
        assert q.levels(t) >= level > q.levels(np.nextafter(t, np.float32(-np.inf)))
