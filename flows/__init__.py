"""The ``flows`` command and the build pipeline (QONNX -> FINN -> folded dataflow -> package)."""
