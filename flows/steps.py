"""The built-in build steps. Each is ``step_x(build, out) -> report``, writes only under ``out``,
and is registered by ``@build_step`` under its name without ``step_``; the default build runs
them in the order they are defined here (``DEFAULT_STEPS``).

``build`` (flows.build.Build) gives the config, the board, the dataset and the
outputs of earlier steps.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from flows.errors import FitError, ModelError, StepError, VerificationError
from flows.pipeline import register_step

DEFAULT_STEPS: list[str] = []  # the default build, in order: the @build_step functions below

# ops a QONNX model may contain for this flow (MLPs and CNV-style CNNs); anything else is named and refused
SUPPORTED_QONNX_OPS = {"Quant", "BipolarQuant", "Gemm", "MatMul", "BatchNormalization", "Mul", "Add",
                       "Sub", "Div", "Reshape", "Flatten", "Relu", "Identity", "Conv", "MaxPool"}
CONV_OPS = ("Conv", "MaxPool")  # their presence switches on the convolution lowering in the steps below
CONV_STREAMLINED = ("Transpose", "Im2Col", "MaxPoolNHWC")  # what lowering leaves for the HW conversion


def build_step(fn):
    """Register ``fn`` (flows.pipeline.register_step) as the next step of the default build."""
    register_step(fn)
    DEFAULT_STEPS.append(fn.__name__.removeprefix("step_"))
    return fn


@build_step
def step_train(build, out: Path) -> dict:
    """Train the model (or take --checkpoint) and save ``checkpoint.pt``; an existing one is reused."""
    if build.cfg.onnx:
        return {"skipped": "model given as --onnx"}
    from qat.train import load_checkpoint, train

    target = out / "checkpoint.pt"
    previous = build.dir("train") / "checkpoint.pt"
    if build.cfg.checkpoint:
        source_path, source = Path(build.cfg.checkpoint), f"--checkpoint {build.cfg.checkpoint}"
        ckpt = build.given_checkpoint  # read once, by the preflight
    elif previous.is_file():
        source_path = previous
        source = f"reused {previous} (delete it, or use another --out, to train anew)"
        ckpt = load_checkpoint(previous)
    else:
        ckpt = train(build.spec, build.dataset, build.cfg.train)
        build.check_checkpoint_matches_data(ckpt)
        ckpt.save(target)
        return {"source": "trained", "model": ckpt.spec.name, "dataset": ckpt.data.name, **ckpt.metrics}
    build.check_checkpoint_matches_data(ckpt)
    shutil.copyfile(source_path, target)  # byte for byte: a checkpoint is never rewritten
    return {"source": source, "model": ckpt.spec.name, "dataset": ckpt.data.name, **ckpt.metrics}


@build_step
def step_export(build, out: Path) -> dict:
    """Export the checkpoint to QONNX (or validate and copy --onnx)."""
    target = out / "model.onnx"
    if build.cfg.onnx:
        check_onnx_file(Path(build.cfg.onnx))
        shutil.copyfile(build.cfg.onnx, target)
        return {"source": str(build.cfg.onnx)}
    from qat.export import export_qonnx

    export_qonnx(build.checkpoint().model(), build.dataset.image_shape, target)
    return {"source": "brevitas.export.export_qonnx"}


def check_onnx_file(path: Path):
    """The model (onnx.ModelProto) at ``path``; ModelError unless it is a readable QONNX model with
    one graph input of fixed shape and one output (the flow runs it before the first step, and again
    in step_export)."""
    import onnx

    if path.is_dir():
        raise ModelError(f"--onnx {path} is a directory; give the .onnx file itself")
    if not path.is_file():
        raise ModelError(f"ONNX file {path} not found")
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty (0 bytes); export the model again with brevitas.export.export_qonnx")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf and onnx raise several kinds for a damaged file
        raise ModelError(f"{path} is not a readable ONNX file ({type(exc).__name__}); "
                         "export it with brevitas.export.export_qonnx") from exc
    if not model.graph.node:
        raise ModelError(f"{path} holds no graph nodes: it is not an ONNX model (or is truncated); "
                         "export it with brevitas.export.export_qonnx")
    if len(model.graph.output) != 1:
        raise ModelError(f"{path} has {len(model.graph.output)} outputs; a FINN accelerator has one input and "
                         "one output stream")
    if not any(n.op_type in ("Quant", "BipolarQuant") for n in model.graph.node):
        raise ModelError(f"{path} has no QONNX Quant nodes: it is not a quantised (QONNX) model; "
                         "export it with brevitas.export.export_qonnx")
    _check_onnx_input(path, model)
    return model


def _check_onnx_input(path: Path, model) -> None:
    """One graph input that carries data (data_inputs), every dimension fixed: FINN builds for one
    image stream."""
    used = set(data_inputs(model.graph))
    inputs = [i for i in model.graph.input if i.name in used]
    if len(inputs) != 1:
        raise ModelError(f"{path} has {len(inputs)} graph inputs ({', '.join(i.name for i in inputs) or 'none'}); "
                         "the flow builds single-input models: export with the image as the only input")
    dims = inputs[0].type.tensor_type.shape.dim
    shown = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
    if any(not d.HasField("dim_value") or d.dim_value < 1 for d in dims):
        raise ModelError(f"{path}: input '{inputs[0].name}' has shape {shown} with dynamic dimensions; "
                         "export with a fixed shape, batch 1 (e.g. (1, 1, 28, 28)), no dynamic_axes")


def data_inputs(graph) -> list[str]:
    """The graph inputs that carry data: not initializers, and used by a node (a Brevitas export
    with a QuantTensor input leaves unused scale/zero-point/bit-width inputs behind)."""
    inits = {i.name for i in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    return [i.name for i in graph.input if i.name not in inits and i.name in used]


@build_step
def step_cleanup(build, out: Path) -> dict:
    """QONNX cleanup; mark the input as the integer image the DMA streams; refuse unsupported ops."""
    from qonnx.core.datatype import DataType
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(build.model("export"))
    for node in model.graph.node:
        if node.op_type not in SUPPORTED_QONNX_OPS:
            raise ModelError(f"unsupported layer: node '{node.name}' is a {node.op_type}; this flow "
                             f"handles networks built from {', '.join(sorted(SUPPORTED_QONNX_OPS))}")
    build.check_input_shape(model)
    model.set_tensor_datatype(model.graph.input[0].name, DataType[build.input_datatype])
    model.save(str(out / "model.onnx"))
    return {"nodes": [n.op_type for n in model.graph.node], "input_datatype": build.input_datatype,
            "data": build.dataset.name if build.dataset.labelled else "none: random inputs, accuracy unknown"}


@build_step
def step_convert(build, out: Path) -> dict:
    """QONNX -> FINN (MultiThreshold activations), every quantiser made exact on ties. An input
    quantiser over the integer input is tabulated over every input value; without one (FINN's
    tutorials: the input declared BIPOLAR/BINARY/INTn goes straight into the first layer) the
    declared datatype stands. Hidden quantisers are exact on every float32 value (QONNX's own
    rounding, half to even)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    from flows.transforms import (FactorOutBipolarScale, SetExactActivationThresholds, SetExactInputThresholds,
                                  activation_quantisers, input_quant_counts, input_quantiser)

    qonnx_model = build.model("cleanup")
    quant = input_quantiser(qonnx_model)
    model = _tidy(qonnx_model.transform(FactorOutBipolarScale()).transform(ConvertQONNXtoFINN()))
    report = {"input_datatype": build.input_datatype}
    if quant is not None:
        values = build.input_values()
        counts = input_quant_counts(qonnx_model, values)
        np.save(out / "input_counts.npy", counts)
        np.save(out / "input_values.npy", values)
        model = model.transform(SetExactInputThresholds(counts, values))
        report.update(input_quantiser=quant.name, input_levels=int(counts.max()) + 1)
    else:
        report["input_quantiser"] = None
    model = model.transform(SetExactActivationThresholds(activation_quantisers(qonnx_model)))
    model.save(str(out / "model.onnx"))
    return {"nodes": [n.op_type for n in model.graph.node], **report}


def exact_input_thresholds(build):
    """The convert step's tie-exact input rewrite, to re-apply after later rewrites; None when the
    graph has no input quantiser."""
    from flows.transforms import SetExactInputThresholds

    counts = build.dir("convert") / "input_counts.npy"
    if not counts.is_file():
        return None
    values = build.dir("convert") / "input_values.npy"
    return SetExactInputThresholds(np.load(counts), np.load(values) if values.is_file() else None)


def _tidy(model):
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (GiveReadableTensorNames, GiveUniqueNodeNames,
                                              RemoveStaticGraphInputs)
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(), GiveReadableTensorNames(),
              InferDataTypes(), RemoveStaticGraphInputs()):
        model = model.transform(t)
    return model


@build_step
def step_streamline(build, out: Path) -> dict:
    """FINN streamlining to an integer graph: thresholds, integer MatMuls, XNOR-popcount, TopK.

    Exact ties on an integer accumulator are resolved as the model rounds (ResolveThresholdTies)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.insert_topk import InsertTopK

    from flows.transforms import (MoveChannelwiseAffinePastMaxPool, MoveReshapeBeforeThresholds,
                                  ResolveThresholdTies, activation_quantisers)

    quantisers = activation_quantisers(build.model("cleanup"))
    model = build.model("convert")
    if single_output(model) is None:  # a classifier: top-1 on the hardware (a 1-wide decision needs none)
        model = model.transform(InsertTopK(k=1))
    conv = has_conv(model)
    # thresholds are rounded to integers before the XNOR rewrite maps t to (t + K) / 2: done after it,
    # a float32 threshold just above an integer (t = 3e-6, K = 2304) rounds to the integer itself
    # ties are resolved while the thresholds are still the float images of the model's .5 boundaries
    for t in (Streamline(), *((MoveChannelwiseAffinePastMaxPool(), Streamline(), *_conv_lowering()) if conv else ()),
              MoveReshapeBeforeThresholds(),
              ResolveThresholdTies(quantisers),
              RoundAndClipThresholds(), ConvertBipolarMatMulToXnorPopcount(), absorb.AbsorbAddIntoMultiThreshold(),
              absorb.AbsorbMulIntoMultiThreshold(), RoundAndClipThresholds(), absorb.AbsorbScalarMulAddIntoTopK(),
              InferDataLayouts(), RemoveUnusedTensors(), Streamline()):
        model = model.transform(t)
    model = _tidy(model)
    exact = exact_input_thresholds(build)
    if exact is not None:
        model = model.transform(exact)
    allowed = ("Reshape", "MultiThreshold", "MatMul", "XnorPopcountMatMul", "TopK") + (CONV_STREAMLINED if conv else ())
    leftover = [n for n in model.graph.node if n.op_type not in allowed]
    if leftover:
        n = leftover[0]
        raise StepError("streamline", f"{n.op_type} did not streamline into thresholds or integer "
                        "matrix layers; FINN cannot map it to hardware", node=n.name)
    model.save(str(out / "model.onnx"))
    return {"nodes": [n.op_type for n in model.graph.node]}


def single_output(model):
    """The graph output's name when it holds one value per example (a binary decision: its sign
    is the prediction), else None (class scores, reduced by top-1)."""
    import math

    name = model.graph.output[0].name
    return name if math.prod(model.get_tensor_shape(name)[1:]) == 1 else None


def has_conv(model) -> bool:
    """Whether the graph holds convolutions or pools (before or after lowering)."""
    return any(n.op_type in CONV_OPS + CONV_STREAMLINED for n in model.graph.node)


def _conv_lowering() -> tuple:
    """FINN's CNV sequence: convolutions to Im2Col + MatMul, pools to NHWC, layout transposes
    pushed through the thresholds so that they cancel. The second MakeMaxPoolNHWC takes a pool
    that follows an activation (conv -> act -> maxpool -> flatten -> linear, LeNet's head): only
    once the transpose has moved past the thresholds does it sit right before the pool."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    return (LowerConvsToMatMul(), MakeMaxPoolNHWC(), absorb.AbsorbTransposeIntoMultiThreshold(), MakeMaxPoolNHWC(),
            absorb.AbsorbTransposeIntoMultiThreshold())


def _conv_hw() -> tuple:
    """FINN's CNV HW conversion: pools to sliding window + Pool, Im2Col to ConvolutionInputGenerator,
    the flatten before the first linear layer removed, and transpose pairs cancelled."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from qonnx.transformation.infer_data_layouts import InferDataLayouts

    return (InferPool(), InferConvInpGen(), RemoveCNVtoFCFlatten(), absorb.AbsorbConsecutiveTransposes(),
            InferDataLayouts())


@build_step
def step_hw_layers(build, out: Path) -> dict:
    """Map streamlined nodes to FINN HW layers (MVAU, Thresholding, LabelSelect; with convolutions
    also ConvolutionInputGenerator and Pool). With --input-quant host the input Thresholding
    goes back to the host (MoveInputThresholdsToHost), its thresholds in input_quantiser.json."""
    from finn.transformation.fpgadataflow.convert_to_hw.label_select import InferLabelSelectLayer
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import \
        InferQuantizedMatrixVectorActivation
    from qonnx.transformation.general import GiveUniqueNodeNames

    from flows.transforms import InferBinaryMVAUWithOffset, InferBipolarThresholdingLayer

    model = build.model("streamline")
    for t in (InferBinaryMVAUWithOffset(), InferQuantizedMatrixVectorActivation(),
              InferLabelSelectLayer(), InferBipolarThresholdingLayer(), *(_conv_hw() if has_conv(model) else ()),
              GiveUniqueNodeNames()):
        model = model.transform(t)
    model, report = _input_quant_on_host(model, out) if build.cfg.input_quant == "host" else (model, {"input_quant": "fpga"})
    # a leading Reshape (MLPs) or NCHW->NHWC Transpose (CNNs) stays on the host, as does a host input quantiser
    host = ("Reshape", "Transpose") + (("MultiThreshold",) if report.get("input_quantiser") else ())
    not_hw = [n for n in model.graph.node if n.op_type not in host
              and not n.domain.startswith("finn.custom_op.fpgadataflow")]
    if not_hw:
        raise StepError("hw_layers", f"no FINN HW layer for {not_hw[0].op_type}", node=not_hw[0].name)
    model.save(str(out / "model.onnx"))
    return {"nodes": [n.op_type for n in model.graph.node], **report}


INPUT_QUANTISER_JSON = "input_quantiser.json"  # in the hw_layers step's folder (Build.input_quantiser)


def _input_quant_on_host(model, out: Path) -> tuple:
    """--input-quant host: move the input Thresholding off the accelerator (MoveInputThresholdsToHost)
    and record its thresholds as host.executor.InputQuantiser's JSON; (the model, the report)."""
    from flows.executor_export import input_quantiser_dict
    from flows.transforms import MoveInputThresholdsToHost, first_hw_node

    before = first_hw_node(model)
    raw = model.get_tensor_datatype(model.graph.input[0].name).name
    model = model.transform(MoveInputThresholdsToHost())
    node = first_hw_node(model)
    if node is None or node.op_type != "MultiThreshold":
        return model, {"input_quant": "host", "input_quantiser": None,
                "note": f"the first HW layer is a {before.op_type if before else 'none'}, not an input "
                        f"Thresholding: nothing to move; the accelerator takes {raw} as it is"}
    q = input_quantiser_dict(model, node, raw)
    (out / INPUT_QUANTISER_JSON).write_text(json.dumps(q, indent=1))
    return model, {"input_quant": "host", "input_quantiser": f"{node.name}: {q['raw_datatype']} -> {q['datatype']}, "
                                                      f"{len(q['thresholds'][0])} thresholds"}


@build_step
def step_partition(build, out: Path) -> dict:
    """Split off the dataflow partition (what goes on the FPGA) from the host-side nodes."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import CreateDataflowPartition
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parent = build.model("hw_layers").transform(CreateDataflowPartition(partition_model_dir=str(out / "partitions")))
    sdp = [n for n in parent.graph.node if n.op_type == "StreamingDataflowPartition"]
    if len(sdp) != 1:
        raise StepError("partition", f"expected one dataflow partition, found {len(sdp)}")
    model = ModelWrapper(getCustomOp(sdp[0]).get_nodeattr("model"))
    parent.save(str(out / "parent.onnx"))
    model.save(str(out / "model.onnx"))
    host_nodes = [n.op_type for n in parent.graph.node if n.op_type != "StreamingDataflowPartition"]
    return {"host_nodes": host_nodes, "fpga_nodes": [n.op_type for n in model.graph.node]}


@build_step
def step_specialize(build, out: Path) -> dict:
    """Choose HLS or RTL implementations for the board's part."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    model = build.model("partition").transform(SpecializeLayers(build.board.part))
    model.save(str(out / "model.onnx"))
    return {"part": build.board.part, "nodes": [n.op_type for n in model.graph.node]}


@build_step
def step_fold(build, out: Path) -> dict:
    """Fold every layer (default rule, --target-fps, or --folding FILE) and check the fit."""
    from hw import folding as fold
    from hw.estimates import estimate
    from hw.folding_rule import choose, misfit

    model = build.model("specialize")
    chosen = choose(model, build.board, build.cfg.folding, build.cfg.target_fps)
    fold.apply_folding(model, chosen["folding"])
    (out / "folding.json").write_text(json.dumps(fold.current_folding(model), indent=2))
    model.save(str(out / "model.onnx"))
    est = estimate(model, build.board)
    report = {"rule": chosen["rule"], "target_cycles": chosen["target_cycles"], "fits": est.fits,
              "folding_file": str(build.dir("fold") / "folding.json")}
    if "file_report" in chosen:  # --folding FILE: what was applied, matched, defaulted or not applied
        report["folding_file_report"] = chosen["file_report"]
        (out / "folding_report.txt").write_text("\n".join(chosen["file_report"]) + "\n")
    if not est.fits:
        message, fitting = misfit(model, est, build.board, f"{build.dir('fold')}.failed/folding_that_fits.json")
        if fitting is not None:  # None: no folding fits this board
            (out / "folding_that_fits.json").write_text(json.dumps(fitting, indent=2))
        (out / "report.json").write_text(json.dumps(report, indent=2))
        if not build.cfg.allow_overflow:
            raise FitError(message)
        report["warning"] = message
    return report


@build_step
def step_estimate(build, out: Path) -> dict:
    """Per-layer cycles and resources, totals against the board, throughput and latency (estimates)."""
    from hw.estimates import estimate

    report = estimate(build.model("fold"), build.board).to_dict()
    (out / "estimates.json").write_text(json.dumps(report, indent=2))
    return report


@build_step
def step_verify(build, out: Path) -> dict:
    """Run the whole test split through every stage; require identical predictions and last-layer integers."""
    from flows.verify import verify_stages

    report, outputs = verify_stages(build)
    np.savez_compressed(out / "outputs.npz", **{f"{name}_{field}": getattr(o, field) for name, o in outputs.items()
                                                for field in ("predictions", "last_layer")})
    (out / "verify.json").write_text(json.dumps(report, indent=2))
    if not report["passed"]:
        raise VerificationError(report["summary"])
    return report


@build_step
def step_bitfile(build, out: Path) -> dict:
    """With Vivado and Vitis HLS: FINN's own steps to a bitfile. Without: skip, saying why."""
    from flows.vendor import run_vendor_flow

    return run_vendor_flow(build, out)


@build_step
def step_package(build, out: Path) -> dict:
    """Write build/<run>/deploy/ (made in this step's folder, moved there once complete): model,
    IO spec, test vectors, bitfile when there is one, reports."""
    from flows.package import write_package

    return write_package(build, out)
