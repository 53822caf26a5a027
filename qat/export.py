"""Export a trained Brevitas model to QONNX."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch


def export_qonnx(model: torch.nn.Module, image_shape: tuple[int, int, int], path: Path) -> Path:
    """Write ``model`` as QONNX with a batch-1 raw-pixel input of ``image_shape``; returns ``path``."""
    from brevitas.export import export_qonnx as _export

    model = model.cpu().eval()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        _export(model, input_t=torch.zeros(1, *image_shape), export_path=str(path))
    return path
