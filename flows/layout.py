"""The accelerator's input layout, one home for the guess both directions make.

A model takes (N, C, H, W) pixels. Its dataflow graph takes them flat (an MLP,
whose leading Reshape stays on the host) or channels-last (a CNN's partition,
whose NCHW->NHWC Transpose stays on the host). Where the graph records no data
layout, a per-image shape that is (H, W, C) and not also (C, H, W) means NHWC.
numpy only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def is_nhwc(shape: Sequence[int], image_shape: Sequence[int], layout: Sequence[str] | None = None) -> bool:
    """Whether per-image ``shape`` is channels-last for a model of ``image_shape`` (C, H, W):
    the recorded ``layout`` decides when given (["N", "H", "W", "C"]), else the shapes do."""
    if layout:
        return list(layout) == ["N", "H", "W", "C"]
    c, h, w = image_shape
    return tuple(shape) == (h, w, c) and (h, w, c) != (c, h, w)


def to_accelerator(images: np.ndarray, shape: Sequence[int], layout: Sequence[str] | None = None) -> np.ndarray:
    """(N, C, H, W) images as (N, *shape): transposed to NHWC when that is the layout, else reshaped."""
    if images.ndim == 4 and is_nhwc(shape, images.shape[1:], layout):
        images = images.transpose(0, 2, 3, 1)
    return images.reshape(len(images), *shape)


def to_model(images: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """The accelerator's inputs (flat, or NHWC for a CNN's partition) as the model's (N, C, H, W) pixels."""
    c, h, w = image_shape
    if images.ndim == 4 and is_nhwc(images.shape[1:], image_shape):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images.reshape(len(images), c, h, w)
