"""The verifier's one allowance: a float stage may differ from the integer hardware only on an
image where, at the first layer that differs, every differing level came from a value within
flows.boundary.BOUNDARY of a step from the rounding boundary it crossed."""
import json
import shutil

import numpy as np
import pytest
import torch
from brevitas.nn import QuantIdentity
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from flows.build import STEP_NAMES, run_build
from flows.config import BuildConfig
from flows.errors import VerificationError
from flows.boundary import BOUNDARY, Decisions, TorchTaps, explain, graph_decisions
from flows.execute import StageOutput
from flows.verify import compare
from qat.quantizers import ActQuant
import test_build

SCALE = np.float32(1 / 7)  # 4-bit narrow signed in [-1, 1], as the zoo's W4A4 activations


def report(run, step: str, failed: bool = False) -> dict:
    if not failed:
        return test_build.report(run, step)
    return json.loads((run / f"{STEP_NAMES.index(step):02d}_{step}.failed" / "verify.json").read_text())


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
    assert explain(Decisions([np.array([[1]]), np.array([[2]])]), Decisions([np.array([[1]]), np.array([[3]])]))[0][
        "reason"] == "an integer stage"


@pytest.fixture(scope="module")
def w8a8(tmp_path_factory):
    """tfc-w8a8 on digits: its FINN float graph rounds one value 7.6e-6 of a step from a boundary."""
    out = tmp_path_factory.mktemp("w8a8") / "run"
    run_build(BuildConfig(model="tfc-w8a8", out=out, to_step="verify", allow_overflow=True))
    return out


def test_w8a8_passes_with_its_boundary_case_reported(w8a8):
    v = report(w8a8, "verify")
    assert v["passed"] and v["reference"] == "dataflow"
    for name in ("streamlined", "dataflow"):
        assert v["stages"][name]["at_rounding_boundary"] == 0 and v["stages"][name]["last_layer_mismatches"] == 0
    cases = [c for s in v["stages"].values() for c in s.get("differing_images", [])]
    assert cases and all(c["excused"] and c["layer"] > 0 and c["largest_margin_steps"] < BOUNDARY for c in cases)
    assert sum(s["at_rounding_boundary"] for s in v["stages"].values()) == len(cases)
    assert "rounding boundary" in v["summary"]


@pytest.mark.parametrize("levels, budget", [(slice(None), None), (slice(127, 128), None), (slice(None), 0)],
                         ids=["many", "few", "too-many-to-analyse"])
def test_a_wrong_threshold_is_not_excused(w8a8, tmp_path, monkeypatch, levels, budget):
    """Move hidden thresholds of the FINN float graph by a fraction of a step: a real bug, caught
    whether it changes many images or a few (each far from a boundary), or too many to analyse."""
    if budget is not None:
        monkeypatch.setattr("flows.verify.ANALYSIS_BYTES", budget)
    run = tmp_path / "run"
    shutil.copytree(w8a8, run)
    convert = run / f"{STEP_NAMES.index('convert'):02d}_convert" / "model.onnx"
    model = ModelWrapper(str(convert))
    node = [n for n in model.graph.node if n.op_type == "MultiThreshold"][1]
    t = model.get_initializer(node.input[1]).copy()
    t[:, levels] += 0.3 * np.diff(t[0]).mean()  # all thresholds, or the one in the middle
    model.set_initializer(node.input[1], t)
    model.save(str(convert))
    with pytest.raises(VerificationError, match="finn: .* differ from the integer dataflow graph"):
        run_build(BuildConfig(model="tfc-w8a8", out=run, from_step="verify", to_step="verify", allow_overflow=True))
    finn = report(run, "verify", failed=True)["stages"]["finn"]
    cases = finn.get("differing_images", [])
    assert finn["last_layer_mismatches"] > 0 and finn["at_rounding_boundary"] < finn["last_layer_mismatches"]
    if budget is None:
        assert sum(c["reason"] == "far from any rounding boundary" for c in cases) > len(cases) / 2
    else:
        assert not cases and "too many differing images" in finn["not_analysed"]
