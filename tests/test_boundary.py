"""The verifier's one allowance: a float stage may differ from the integer hardware only on an
image where, at the first layer that differs, every differing level came from a value within
flows.boundary.BOUNDARY of a step from the rounding boundary it crossed, and none sat exactly on it.

Every situation is constructed: networks with fixed integer weights from bench/fuzz.py's generator
(no training), and thresholds or rounding modes changed by hand to make the case checked."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from flows.build import run_build
from flows.config import BuildConfig
from flows.errors import VerificationError
from flows.boundary import BOUNDARY, Decisions, TorchTaps, explain, graph_decisions
from flows.execute import StageOutput
from flows.verify import compare
from qat.quantizers import ActQuant
import test_build
from qat.export import export_qonnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import fuzz  # noqa: E402
from fuzz import NetSpec  # noqa: E402

SCALE = np.float32(1 / 7)  # 4-bit narrow signed in [-1, 1], as the zoo's W4A4 activations


def report(run, step: str, failed: bool = False) -> dict:
    if not failed:
        return test_build.report(run, step)
    return json.loads((run / f"{step}.failed" / "verify.json").read_text())


def two_quant_graph(n: int) -> ModelWrapper:
    """x -> Quant (the input quantiser) ; x + 0 -> Quant (a hidden one) -> y."""
    quant = dict(domain="qonnx.custom_op.general", signed=1, narrow=1, rounding_mode="ROUND")
    nodes = [helper.make_node("Quant", ["x", "scale", "zeropt", "bits"], ["q0"], **quant),
             helper.make_node("Add", ["x", "zero"], ["h"]),
             helper.make_node("Quant", ["h", "scale", "zeropt", "bits"], ["q1"], **quant),
             helper.make_node("Add", ["q0", "q1"], ["y"])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, 3])])
    model = ModelWrapper(qonnx_make_model(graph))
    for name, value in {"scale": SCALE, "zeropt": 0.0, "bits": 4.0, "zero": 0.0}.items():
        model.set_initializer(name, np.array(value, dtype=np.float32))
    from qonnx.transformation.infer_shapes import InferShapes

    return model.transform(InferShapes())


def inputs_at(distances: list[float]) -> np.ndarray:
    """Per image, one value at the given distance (in steps) above the 2.5 boundary; the others mid-level."""
    x = np.full((len(distances), 3), 1.0 * SCALE, dtype=np.float32)
    x[:, 1] = (np.float32(2.5) + np.array(distances, dtype=np.float32)) * SCALE
    return x


def test_graph_decisions_read_levels_and_margins_of_every_quantiser():
    x = inputs_at([0.25, 1e-4, -0.01])
    d = graph_decisions(two_quant_graph(len(x)), x, float_stage=True)
    assert len(d.counts) == len(d.margins) == 2  # input quantiser, hidden one
    for counts, margins in zip(d.counts, d.margins):
        np.testing.assert_array_equal(counts, [[8, 10, 8], [8, 10, 8], [8, 9, 8]])  # level + 7 (narrow 4-bit)
        np.testing.assert_allclose(margins, [[0.5, 0.25, 0.5], [0.5, 1e-4, 0.5], [0.5, 0.01, 0.5]], rtol=0.02)


def test_saturated_values_are_never_at_a_boundary():
    x = np.array([[1.0 * SCALE, 9.5 * SCALE, -20.0]], dtype=np.float32)  # mid-level, beyond +7.5, far below -7
    d = graph_decisions(two_quant_graph(1), x, float_stage=True)
    np.testing.assert_allclose(d.margins[1], [[0.5, np.inf, np.inf]], rtol=1e-5)
    np.testing.assert_array_equal(d.counts[1], [[8, 14, 0]])


def test_torch_taps_read_the_brevitas_levels_and_margins():
    model = torch.nn.Sequential(QuantIdentity(act_quant=ActQuant, bit_width=4),
                                QuantIdentity(act_quant=ActQuant, bit_width=4)).eval()
    x = torch.tensor(inputs_at([0.3, 2e-4]))
    with torch.no_grad(), TorchTaps(model) as taps:
        model(x)
        d = taps.decisions(np.array([1]))
    np.testing.assert_array_equal(d.counts[0], [[8, 10, 8]])
    np.testing.assert_allclose(d.margins[0], [[0.5, 2e-4, 0.5]], rtol=0.02)
    np.testing.assert_allclose(d.margins[1], [[0.5, 0.5, 0.5]], atol=1e-5)  # it sees whole levels


HARDWARE = Decisions([np.array([[3, 3]]), np.array([[5, 6]]), np.array([[1, 1]])])


@pytest.mark.parametrize("layer, margin, excused, reason", [
    (1, 0.5 * BOUNDARY, True, "at a rounding boundary"),
    (1, 2 * BOUNDARY, False, "far from any rounding boundary"),
    (1, 0.0, False, "exact tie"),  # distance 0: the model and the hardware must agree, never float noise
    (0, 0.0, False, "input quantiser"),  # even exactly on a tie: the flow makes it exact
    (None, 0.0, False, "the difference is in the last layer"),
])
def test_explain_excuses_only_a_flip_at_a_boundary(layer, margin, excused, reason):
    counts = [c.copy() for c in HARDWARE.counts]
    margins = [np.full((1, 2), 0.4) for _ in counts]
    if layer is not None:
        counts[layer][0, 1] += 1
        margins[layer][0, 1] = margin
        counts[2][0, 0] += 1  # downstream layers follow the first flip: not looked at
    verdict = explain(Decisions(counts, margins), HARDWARE)[0]
    assert verdict["excused"] is excused and reason in verdict["reason"]
    if layer is not None:
        assert verdict["layer"] == layer and verdict["levels_differing"] == 1


def stage(predictions, last_layer) -> StageOutput:
    return StageOutput(np.array(predictions), np.array(last_layer, dtype=np.float64))


def test_compare_counts_only_the_images_not_excused():
    ref = stage([0, 1, 2], [[5.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0]])
    out = stage([0, 0, 2], [[5.0, 1.0, 0.0], [7.0, 3.0, 1.0], [9.0, 1.0, 4.0]])  # images 1 and 2 differ
    explained = {1: {"excused": True, "reason": "at a rounding boundary"},
                 2: {"excused": False, "reason": "far from any rounding boundary"}}
    r = compare(ref, out, exact=False, labels=np.array([0, 1, 2]), explained=explained)
    assert r["at_rounding_boundary"] == 1
    assert (r["prediction_mismatches"], r["last_layer_mismatches"]) == (0, 1)
    assert [c["image"] for c in r["differing_images"]] == [1, 2]
    assert r["max_distance_from_reference"] == 8.0  # the excused image's 7 is left out


def test_a_float_stage_may_break_an_exact_tie_its_own_way():
    ref = stage([0, 2], [[2.0, 2.0, 0.0], [1.0, 0.0, 3.0]])  # image 0: classes 0 and 1 tie exactly
    out = stage([1, 1], [[2.0, 2.0 + 1e-6, 0.0], [1.0, 0.0, 3.0]])  # image 1: a real difference
    r = compare(ref, out, exact=False, labels=np.array([0, 2]))
    assert r["tied_predictions"] == 1 and r["prediction_mismatches"] == 1
    assert compare(ref, out, exact=True, labels=np.array([0, 2]))["prediction_mismatches"] == 2


def test_an_integer_stage_is_never_excused():
    r = compare(stage([0], [[5.0, 1.0]]), stage([0], [[5.0, 2.0]]), exact=True, labels=np.array([0]))
    assert r["last_layer_mismatches"] == 1 and r["at_rounding_boundary"] == 0
    verdict = explain(Decisions([np.array([[1]]), np.array([[2]])]), Decisions([np.array([[1]]), np.array([[3]])]))[0]
    assert not verdict["excused"] and verdict["layer"] == 1 and verdict["reason"].startswith("an integer stage")


def build_net(spec, out) -> "Path":
    """A bench/fuzz.py network (fixed integer weights, no training) built through verify."""
    from qat.data import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    net = fuzz.build_module(spec, load_dataset("digits").train.images[:256])
    export_qonnx(net, fuzz.IMAGE, out / "net.onnx")
    run_build(BuildConfig(onnx=out / "net.onnx", data="digits", out=out / "run", to_step="verify"))
    return out / "run"


def rerun_verify(run) -> None:
    """Verify again a (copied) run whose earlier steps' models the test changed."""
    onnx = json.loads((run / "config.json").read_text())["identity"]["onnx"]
    run_build(BuildConfig(onnx=Path(onnx), data="digits", out=run, from_step="verify", to_step="verify"))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """BatchNorm between the layers: float stages compute non-dyadic values, nothing sits on a tie."""
    return build_net(NetSpec(8101, "mlp", (24, 16), (3, 4, 3), (4, 4), in_bits=4, batchnorm=True),
                     tmp_path_factory.mktemp("noisy"))


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """No BatchNorm, power-of-two scales: hidden values sit exactly on .5 ties (bench/fuzz.py)."""
    return build_net(NetSpec(8102, "mlp", (31,), (2, 3), (3,), in_bits=3, batchnorm=False),
                     tmp_path_factory.mktemp("tied"))


def hidden_threshold_inputs(run, layer: int = 1):
    """(FINN float graph, its hidden MultiThreshold, the values that node reads on the test images)."""
    from flows.execute import full_context, to_graph_input
    from qat.data import load_dataset

    convert = run / "convert" / "model.onnx"
    model = ModelWrapper(str(convert))
    node = [n for n in model.graph.node if n.op_type == "MultiThreshold"][layer]
    images = load_dataset("digits").test.images
    batched, ctx = full_context(model, to_graph_input(model, images))
    return model, node, ctx[node.input[0]], convert


def test_a_float_flip_within_float_error_of_a_boundary_is_excused_and_reported(noisy, tmp_path):
    """Construct the float-noise case: move one hidden threshold of the FINN float graph to 1e-5 of a
    step above the nearest value an image has above it. That value now falls one level lower, by a
    margin of float32 error: excused, counted and listed, and the integer stages stay exact."""
    run = tmp_path / "run"
    shutil.copytree(noisy, run)
    model, node, x, path = hidden_threshold_inputs(run)
    t = model.get_initializer(node.input[1]).copy()
    j = t.shape[1] // 2
    step = float(np.diff(t[0]).mean())
    nearest = float(x[x >= t[0, j]].min())
    t[:, j] = np.float32(nearest + 1e-5 * step)
    model.set_initializer(node.input[1], t)
    model.save(str(path))
    rerun_verify(run)
    v = report(run, "verify")
    finn = v["stages"]["finn"]
    flipped = int((x == np.float32(nearest)).reshape(len(x), -1).any(axis=1).sum())
    assert v["passed"] and finn["at_rounding_boundary"] >= 1
    assert finn["at_rounding_boundary"] == len(finn["differing_images"]) <= flipped
    assert all(c["excused"] and c["layer"] == 1 and 0 < c["largest_margin_steps"] < BOUNDARY
               for c in finn["differing_images"])
    assert all(v["stages"][s]["at_rounding_boundary"] == 0 for s in ("qonnx", "streamlined", "dataflow"))
    assert "rounding boundary" in v["summary"]


def test_an_exact_tie_resolved_differently_is_never_excused(tied, tmp_path):
    """Make QONNX's hidden quantiser round ties half up: on every exact tie it now parts from the
    hardware (which rounds them half to even, as the model did) by distance 0: never excused."""
    run = tmp_path / "run"
    shutil.copytree(tied, run)
    assert report(tied, "verify")["stages"]["qonnx"]["ties"]["images_on_hidden_tie"] > 0
    cleanup = run / "cleanup" / "model.onnx"
    model = ModelWrapper(str(cleanup))
    hidden = [n for n in model.graph.node if n.op_type == "Quant" and model.get_initializer(n.input[0]) is None][1]
    next(a for a in hidden.attribute if a.name == "rounding_mode").s = b"HALF_UP"
    model.save(str(cleanup))
    with pytest.raises(VerificationError, match="qonnx: .* differ from the integer dataflow graph"):
        rerun_verify(run)
    qonnx = report(run, "verify", failed=True)["stages"]["qonnx"]
    assert qonnx["at_rounding_boundary"] == 0 and qonnx["ties"]["resolved_otherwise"] > 0
    assert qonnx["differing_images"] and all(
        not c["excused"] and c["exact_ties"] > 0 and "exact tie" in c["reason"] for c in qonnx["differing_images"])


def test_the_report_names_the_layer_where_a_wrong_offset_starts(tmp_path):
    """A binary (XNOR) layer with a 6-bit output, its MVAU's level-0 value set one too low (what FINN's
    own conversion does): the float stages first differ a layer later, the integer stage shows where."""
    run = build_net(NetSpec(8103, "mlp", (24, 13), (1, 2, 2), (6, 2), in_bits=1, batchnorm=True), tmp_path)
    fold = run / "fold" / "model.onnx"
    model = ModelWrapper(str(fold))
    from qonnx.custom_op.registry import getCustomOp

    xnor = next(n for n in model.graph.node if n.op_type.startswith("MVAU") and getCustomOp(n).get_nodeattr("binaryXnorMode"))
    inst = getCustomOp(xnor)
    assert inst.get_nodeattr("ActVal") == -31  # INT6 narrow, as the model: the flow keeps the activation's offset
    inst.set_nodeattr("ActVal", -32)
    model.save(str(fold))
    with pytest.raises(VerificationError, match=f"differences start at activation layer 1, hardware node {xnor.name}"):
        rerun_verify(run)
    v = report(run, "verify", failed=True)
    assert v["differences_start"] == {"stage": "streamlined", "layer": 1, "hardware_node": xnor.name}


@pytest.mark.parametrize("levels, budget", [(slice(None), None), (slice(7, 8), None), (slice(None), 0)],
                         ids=["many", "few", "too-many-to-analyse"])
def test_a_wrong_threshold_is_not_excused(noisy, tmp_path, monkeypatch, levels, budget):
    """Move hidden thresholds of the FINN float graph by a fraction of a step: a real bug, caught
    whether it changes many images or a few (each far from a boundary), or too many to analyse."""
    if budget is not None:
        monkeypatch.setattr("flows.verify.ANALYSIS_BYTES", budget)
    run = tmp_path / "run"
    shutil.copytree(noisy, run)
    convert = run / "convert" / "model.onnx"
    model = ModelWrapper(str(convert))
    node = [n for n in model.graph.node if n.op_type == "MultiThreshold"][1]
    t = model.get_initializer(node.input[1]).copy()
    t[:, levels] += 0.3 * np.diff(t[0]).mean()  # all thresholds, or the one in the middle
    model.set_initializer(node.input[1], t)
    model.save(str(convert))
    with pytest.raises(VerificationError, match="finn: .* differ from the integer dataflow graph"):
        rerun_verify(run)
    finn = report(run, "verify", failed=True)["stages"]["finn"]
    cases = finn.get("differing_images", [])
    assert finn["last_layer_mismatches"] > 0 and finn["at_rounding_boundary"] < finn["last_layer_mismatches"]
    if budget is None:
        assert sum(c["reason"].startswith("far from any rounding boundary") for c in cases) > len(cases) / 2
    else:
        assert not cases and "too many differing" in finn["not_analysed"]
