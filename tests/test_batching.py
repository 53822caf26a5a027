"""Batched execution of FINN graphs computes what batch-1 execution computes, image by image."""
import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

import qonnx.core.onnx_exec as oxe
from flows.execute import to_graph_input
from flows.transforms import SetBatchSize


def im2col_graph(h, w, c, k, stride, dilation, pad):
    node = helper.make_node("Im2Col", ["x"], ["y"], domain="qonnx.custom_op.general", stride=[stride, stride],
                            kernel_size=[k, k], dilations=[dilation, dilation], pad_amount=pad,
                            input_shape=f"(1,{h},{w},{c})")
    oh = (h + pad[0] + pad[2] - dilation * (k - 1) - 1) // stride + 1
    ow = (w + pad[1] + pad[3] - dilation * (k - 1) - 1) // stride + 1
    graph = helper.make_graph([node], "im2col", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, c])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, oh, ow, k * k * c])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("x", DataType["INT8"])
    return model


@pytest.mark.parametrize("h, w, c, k, stride, dilation, pad", [
    (8, 8, 3, 3, 1, 1, [0, 0, 0, 0]), (9, 7, 2, 2, 2, 1, [0, 0, 0, 0]),
    (10, 10, 4, 3, 2, 2, [1, 1, 1, 1]), (6, 6, 5, 2, 2, 1, [0, 1, 1, 0])])
def test_batched_im2col_equals_qonnx_image_by_image(h, w, c, k, stride, dilation, pad):
    model = im2col_graph(h, w, c, k, stride, dilation, pad)
    x = np.random.default_rng(0).integers(-8, 8, size=(5, h, w, c)).astype(np.float32)
    single = np.concatenate([oxe.execute_onnx(model, {"x": x[i:i + 1]})["y"] for i in range(5)])
    batched = model.transform(SetBatchSize(5))
    assert batched.graph.node[0].domain == "flows.batched_ops"
    assert np.array_equal(oxe.execute_onnx(batched, {"x": x})["y"], single)


def test_graph_input_layout_drives_the_transpose():
    images = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)  # (N, C, H, W)
    nhwc = im2col_graph(4, 5, 3, 1, 1, 1, [0, 0, 0, 0])
    nhwc.set_tensor_layout("x", ["N", "H", "W", "C"])
    assert np.array_equal(to_graph_input(nhwc, images), images.transpose(0, 2, 3, 1))
    flat = ModelWrapper(qonnx_make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 60])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 60])])))
    assert np.array_equal(to_graph_input(flat, images), images.reshape(2, 60))
