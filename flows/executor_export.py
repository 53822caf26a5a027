"""Export a folded dataflow partition to the board-side executor's files (host.executor).

``export_executor(model, out_dir)`` writes ``executor.json`` (layers in
dataflow order: kind, name, datatypes, shapes, folding, attributes) and
``executor.npz`` (integer weights and thresholds, each in the smallest
integer dtype that holds it). Layers are recognised by FINN's generic op
class (``MVAU_hls`` is an ``MVAU``), so HLS and RTL variants export alike.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from flows.errors import ModelError
from host.executor import FORMAT, JSON_NAME, NPZ_NAME


def export_executor(model, out_dir: Path, host_input: dict | None = None) -> dict:
    """Write ``out_dir/executor.json`` and ``out_dir/executor.npz`` for ``model``
    (a folded FINN dataflow partition, a chain of HW layers); returns a summary.
    ``host_input``: the input quantiser the host runs first (`input_quantiser_dict`), if any.
    ModelError, naming the node and its op, for a node the executor cannot run."""
    out_dir = Path(out_dir)
    _check_chain(model)
    layers, arrays = [], {}
    for node in model.graph.node:
        spec, own = _export_node(model, node)
        spec["arrays"] = {key: f"{node.name}.{key}" for key in own}
        arrays.update({f"{node.name}.{key}": value for key, value in own.items()})
        layers.append(spec)
    meta = {"format": FORMAT,
            "input": _port(model, model.graph.input[0].name),
            "output": _port(model, model.graph.output[0].name),
            "layers": layers}
    if host_input is not None:
        meta["host_input"] = host_input
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / JSON_NAME).write_text(json.dumps(meta, indent=1))
    np.savez_compressed(out_dir / NPZ_NAME, **arrays)
    return {"format": FORMAT, "dir": str(out_dir), "layers": [spec["kind"] for spec in layers],
            "bytes": sum((out_dir / f).stat().st_size for f in (JSON_NAME, NPZ_NAME))}


def _exporters():
    """(FINN generic op class, exporter) pairs; imported here so the module loads without finn."""
    from finn.custom_op.fpgadataflow.convolutioninputgenerator import ConvolutionInputGenerator
    from finn.custom_op.fpgadataflow.fmpadding import FMPadding
    from finn.custom_op.fpgadataflow.labelselect import LabelSelect
    from finn.custom_op.fpgadataflow.matrixvectoractivation import MVAU
    from finn.custom_op.fpgadataflow.pool import Pool
    from finn.custom_op.fpgadataflow.thresholding import Thresholding

    return [(MVAU, _mvau), (Thresholding, _thresholding), (LabelSelect, _label_select),
            (ConvolutionInputGenerator, _sliding_window), (FMPadding, _padding), (Pool, _pool)]


def _export_node(model, node) -> tuple[dict, dict]:
    from qonnx.custom_op.registry import getCustomOp

    try:
        inst = getCustomOp(node)
    except Exception:  # qonnx raises a bare Exception for an op it does not know
        inst = None
    for cls, export in _exporters():
        if inst is not None and isinstance(inst, cls):
            attrs, arrays = export(model, node, inst)
            return _common(model, node, inst, cls.__name__) | {"attrs": attrs}, arrays
    known = ", ".join(cls.__name__ for cls, _ in _exporters())
    raise ModelError(f"node '{node.name}' is a {node.op_type}, which the board executor cannot run; "
                     f"it runs {known} (and their _hls/_rtl variants)")


def _common(model, node, inst, kind: str) -> dict:
    names = inst.get_nodeattr_types()
    return {"kind": kind, "name": node.name, "op_type": node.op_type,
            "input_datatype": _datatype(model, node.input[0], node),
            "output_datatype": _datatype(model, node.output[0], node),
            "input_shape": _shape(model, node.input[0], node),
            "output_shape": _shape(model, node.output[0], node),
            "folding": {k: int(inst.get_nodeattr(k)) for k in ("PE", "SIMD") if k in names}}


def _port(model, tensor: str) -> dict:
    return {"name": tensor, "datatype": _datatype(model, tensor, None), "shape": _shape(model, tensor, None)}


def _datatype(model, tensor: str, node) -> str:
    dt = model.get_tensor_datatype(tensor)
    if not dt.is_integer():
        raise ModelError(f"{_where(node)}tensor {tensor} is {dt.name}; the board executor runs integer "
                         "datatypes only")
    return dt.name


def _shape(model, tensor: str, node) -> list[int]:
    """Per-image shape: the tensor's shape without its batch axis of 1."""
    shape = [int(d) for d in model.get_tensor_shape(tensor)]
    if not shape or shape[0] != 1:
        raise ModelError(f"{_where(node)}tensor {tensor} has shape {shape}; expected a batch axis of 1")
    return shape[1:]


def _where(node) -> str:
    return f"node '{node.name}' ({node.op_type}): " if node is not None else ""


def _check_chain(model) -> None:
    """The executor runs a chain: each node takes the previous node's output."""
    nodes = model.graph.node
    if not nodes:
        raise ModelError("the dataflow model has no nodes")
    current = model.graph.input[0].name
    for node in nodes:
        if node.input[0] != current:
            raise ModelError(f"node '{node.name}' ({node.op_type}) does not take the previous layer's output "
                             f"{current}; the board executor runs a chain of layers")
        current = node.output[0]
    if current != model.graph.output[0].name:
        raise ModelError(f"the last node's output {current} is not the graph output")


# -- per kind: (attributes, arrays) ---------------------------------------------------------


def _mvau(model, node, inst):
    attrs = {k: int(inst.get_nodeattr(k)) for k in ("MW", "MH", "binaryXnorMode", "noActivation", "ActVal")}
    weights = _integer_initializer(model, node, 1, "weights")
    if weights.shape != (attrs["MW"], attrs["MH"]):
        raise ModelError(f"{_where(node)}weights have shape {weights.shape}, expected (MW, MH)")
    arrays = {"weights": weights}
    if not attrs["noActivation"]:
        arrays["thresholds"] = _thresholds(model, node, 2)
    return attrs | {"weightDataType": inst.get_nodeattr("weightDataType")}, arrays


def _thresholding(model, node, inst):
    return {"ActVal": int(inst.get_nodeattr("ActVal"))}, {"thresholds": _thresholds(model, node, 1)}


def input_quantiser_dict(model, node, raw_datatype: str) -> dict:
    """host.executor.InputQuantiser's JSON for a host-side input MultiThreshold (MoveInputThresholdsToHost:
    out_scale 1 and out_bias ActVal, or a BIPOLAR output with out_scale 2 and out_bias 2 * ActVal - 1)."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    datatype = _datatype(model, node.output[0], node)
    scale, bias = inst.get_nodeattr("out_scale"), inst.get_nodeattr("out_bias")
    act_val = (bias + 1) / 2 if datatype == "BIPOLAR" else bias
    if scale != (2.0 if datatype == "BIPOLAR" else 1.0) or act_val != int(act_val):
        raise ModelError(f"{_where(node)}out_scale {scale}, out_bias {bias}: not a Thresholding the host can run")
    return {"raw_datatype": raw_datatype, "datatype": datatype, "ActVal": int(act_val),
            "thresholds": _thresholds(model, node, 1).astype(np.int64).tolist()}


def _label_select(model, node, inst):
    return {"K": int(inst.get_nodeattr("K")), "Labels": int(inst.get_nodeattr("Labels"))}, {}


def _sliding_window(model, node, inst):
    keys = ("ConvKernelDim", "IFMChannels", "IFMDim", "OFMDim", "Stride", "Dilation")
    attrs = {k: [int(v) for v in inst.get_nodeattr(k)] if k != "IFMChannels" else int(inst.get_nodeattr(k))
             for k in keys}
    return attrs | {"depthwise": int(inst.get_nodeattr("depthwise"))}, {}


def _padding(model, node, inst):
    return {"Padding": [int(v) for v in inst.get_nodeattr("Padding")]}, {}


def _pool(model, node, inst):
    function = inst.get_nodeattr("Function")
    if function not in ("MaxPool", "AccPool", "QuantAvgPool"):
        raise ModelError(f"{_where(node)}Pool function {function} is not integer arithmetic; the board "
                         "executor runs MaxPool, AccPool and QuantAvgPool")
    return {"Function": function, "KernelSize": [int(v) for v in inst.get_nodeattr("KernelSize")],
            "Channels": int(inst.get_nodeattr("Channels"))}, {}


def _integer_initializer(model, node, index: int, what: str) -> np.ndarray:
    value = model.get_initializer(node.input[index]) if len(node.input) > index else None
    if value is None:
        raise ModelError(f"{_where(node)}{what} are not a constant initializer; the board executor needs them")
    if not np.array_equal(value, np.round(value)):
        raise ModelError(f"{_where(node)}{what} are not integers")
    return smallest_int(value)


def _thresholds(model, node, index: int) -> np.ndarray:
    """Thresholds as integers: for integer inputs ``x >= t`` equals ``x >= ceil(t)``."""
    value = model.get_initializer(node.input[index]) if len(node.input) > index else None
    if value is None:
        raise ModelError(f"{_where(node)}thresholds are not a constant initializer; the board executor needs them")
    value = np.asarray(value, dtype=np.float64)
    if not np.isfinite(value).all():
        raise ModelError(f"{_where(node)}thresholds are not finite")
    if value.ndim != 2:
        raise ModelError(f"{_where(node)}thresholds have shape {value.shape}, expected (channels, steps)")
    limit = float(np.iinfo(np.int64).max // 2)  # beyond any accumulator: clipping keeps every count
    return smallest_int(np.clip(np.ceil(value), -limit, limit))


def smallest_int(value: np.ndarray) -> np.ndarray:
    """Integer-valued ``value`` in the smallest numpy integer dtype that holds all of it."""
    value = np.asarray(value)
    lo, hi = (int(value.min()), int(value.max())) if value.size else (0, 0)
    for kind in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64"):
        info = np.iinfo(kind)
        if info.min <= lo and hi <= info.max:
            return value.astype(kind)
    raise ModelError(f"values in [{lo}, {hi}] do not fit int64")
