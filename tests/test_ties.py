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
