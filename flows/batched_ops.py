"""A qonnx custom-op domain (this module's name) with batch-safe versions of ops whose
qonnx/FINN Python execution is only correct for batch 1.

qonnx's ``Im2Col.execute_node`` interleaves the images of a batch (its reshape puts
the batch axis last), and FINN's ``ConvolutionInputGenerator`` executes through it.
``SetBatchSize`` (flows.transforms) moves those nodes into this domain, so a
batched copy of a convolutional graph computes, image by image, what the batch-1
graph computes. qonnx finds the classes through the ``custom_op`` dict.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from qonnx.custom_op.general.im2col import Im2Col

DOMAIN = __name__


class BatchIm2Col(Im2Col):
    """qonnx ``Im2Col`` (same attributes and output layout) for any batch size.

    (N, H, W, C) -> (N, OH, OW, KH * KW * C), window elements ordered (kh, kw, c).
    """

    def execute_node(self, context, graph):
        node = self.onnx_node
        x = context[node.input[0]]  # (N, H, W, C)
        k_h, k_w = self.get_nodeattr("kernel_size")
        s_h, s_w = self.get_nodeattr("stride")
        d_h, d_w = self.get_nodeattr("dilations")
        top, left, bottom, right = self.get_nodeattr("pad_amount")
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=self.get_nodeattr("pad_value"))
        span_h, span_w = d_h * (k_h - 1) + 1, d_w * (k_w - 1) + 1
        win = sliding_window_view(x, (span_h, span_w), axis=(1, 2))  # (N, H', W', C, span_h, span_w)
        win = win[:, ::s_h, ::s_w, :, ::d_h, ::d_w]  # (N, OH, OW, C, KH, KW)
        n, oh, ow, c = win.shape[:4]
        context[node.output[0]] = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n, oh, ow, k_h * k_w * c)


custom_op = {"Im2Col": BatchIm2Col}
