"""Quantisation-aware training with Brevitas: models, datasets, compression, QONNX export.

Importing ``qat`` is light: torch and brevitas are imported by the submodules that need them.
"""
