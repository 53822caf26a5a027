"""Small hand-made QONNX MLPs for input-datatype tests (no Brevitas, no training).

``mlp(path, input_datatype, features, classes, input_quant)``: input (1, features) declared
``input_datatype`` -> [optional input quantiser: Mul(1/4) then a 3-bit signed Quant] ->
MatMul with 2-bit weights -> 2-bit unsigned activation Quant -> MatMul (2-bit weights) ->
``classes`` outputs (one output: a bipolar decision through BipolarQuant). Weights are random
but fixed by ``seed``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def mlp(path: Path, input_datatype: str | None, features: int = 16, hidden: int = 8, classes: int = 4,
        input_quant: bool = False, seed: int = 0) -> Path:
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    rng = np.random.default_rng(seed)
    inits, nodes = {}, []

    def const(name, value):
        inits[name] = np.asarray(value, dtype=np.float32)
        return name

    def quant(x, out, bits, signed, scale=1.0, narrow=0):
        nodes.append(helper.make_node("Quant", [x, const(f"{out}_s", scale), const(f"{out}_z", 0.0),
                                                const(f"{out}_b", float(bits))], [out],
                                      domain="qonnx.custom_op.general", signed=int(signed), narrow=narrow,
                                      rounding_mode="ROUND"))
        return out

    x = "x"
    if input_quant:
        nodes.append(helper.make_node("Mul", [x, const("in_scale", 0.25)], ["x_scaled"]))
        x = quant("x_scaled", "x_q", 3, True, scale=1.0)
    w0 = quant(const("w0", rng.integers(-1, 2, (features, hidden))), "w0_q", 2, True, narrow=1)
    nodes.append(helper.make_node("MatMul", [x, w0], ["h0"]))
    a0 = quant("h0", "a0", 2, False, scale=1.0)
    w1 = quant(const("w1", rng.integers(-1, 2, (hidden, classes))), "w1_q", 2, True, narrow=1)
    out = "y"
    if classes == 1:
        nodes.append(helper.make_node("MatMul", [a0, w1], ["acc"]))
        nodes.append(helper.make_node("BipolarQuant", ["acc", const("bq_s", 1.0)], [out],
                                      domain="qonnx.custom_op.general"))
    else:
        nodes.append(helper.make_node("MatMul", [a0, w1], [out]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, classes])],
                              [helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.flatten()) for k, v in inits.items()])
    model = ModelWrapper(qonnx_make_model(graph, producer_name="qnn-flows-tests"))
    if input_datatype:
        model.set_tensor_datatype("x", DataType[input_datatype])
    model.save(str(path))
    return Path(path)
