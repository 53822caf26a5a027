"""Bit-exact verification: the whole test split through every stage of the flow.

Stages: PyTorch (Brevitas) -> QONNX -> FINN graph -> streamlined -> folded
dataflow partition. The reference is the folded dataflow graph: the integer
arithmetic of the hardware. On every image each stage must give the same
prediction and the same integer accumulators of the last layer: exactly for
integer stages, within float32 rounding for float ones. A float stage's image
may differ only where it rounded a value at a rounding boundary (flows.boundary);
every such image is listed in the report.
"""
from __future__ import annotations

import functools
import time

import numpy as np

from flows.boundary import (ANALYSIS_BYTES, Decisions, TorchTaps, context_decisions, explain, graph_decisions,
                            tie_resolutions, tie_rows)
from flows.execute import StageOutput, last_layer_scale, run_graph, to_graph_input

# (stage name, build step whose model.onnx it runs, True if its last layer carries float scales)
GRAPH_STAGES = [("qonnx", "cleanup", True), ("finn", "convert", True),
                ("streamlined", "streamline", False), ("dataflow", "fold", False)]


TORCH_CHUNK = 256  # images per Brevitas forward pass (its quantisers' inputs are kept for one pass)


def pytorch_stage(ckpt, images: np.ndarray, scale: float, recorder: "Recorder | None" = None) -> StageOutput:
    """The Brevitas model itself; its last QuantLinear's output divided back to integers."""
    import torch

    from qat.train import as_tensor

    model = ckpt.model()
    captured = []
    last_linear = [m for m in model.modules() if type(m).__name__ == "QuantLinear"][-1]
    hook = last_linear.register_forward_hook(lambda m, i, o: captured.append(o.detach().double()))
    parts = []
    try:
        with torch.no_grad(), TorchTaps(model) as taps:
            for start in range(0, len(images), TORCH_CHUNK):
                logits = model(as_tensor(images[start:start + TORCH_CHUNK]))
                parts.append(StageOutput(logits.argmax(1).numpy().astype(np.int64), captured.pop().numpy() / scale))
                if recorder is not None:
                    recorder.keep(start, parts[-1], taps.decisions)
    finally:
        hook.remove()
    return StageOutput(np.concatenate([p.predictions for p in parts]), np.concatenate([p.last_layer for p in parts]))


class Recorder:
    """Keeps a stage's activation decisions on the images where it differs from the hardware, and
    (float stages) on those where a value sits exactly on a rounding boundary, read from the very
    batch the stage computed them in (float results depend on the batch shape, so re-running an
    image alone may not reproduce them)."""

    def __init__(self, ref: StageOutput, float_stage: bool = True):
        self.ref, self.float_stage = ref, float_stage
        self.images, self.differs, self.parts, self.bytes, self.too_many = [], [], [], 0, False
        self.input_ties = 0

    def keep(self, start: int, part: StageOutput, decisions_of) -> None:
        n = len(part.predictions)
        ref = StageOutput(self.ref.predictions[start:start + n], self.ref.last_layer[start:start + n])
        wrong_prediction, wrong_layer, _, _ = differing(ref, part, exact=not self.float_stage)
        differs = wrong_prediction | wrong_layer
        if self.too_many:
            return
        if self.float_stage:  # every image's margins, to find the exact ties
            everything = decisions_of(np.arange(n))
            on_tie, on_input_tie = tie_rows(everything)
            self.input_ties += int(on_input_tie.sum())
            rows = np.nonzero(differs | on_tie)[0]
            decisions = everything.rows(rows).compact() if len(rows) else None
        else:
            rows = np.nonzero(differs)[0]
            decisions = decisions_of(rows).compact() if len(rows) else None
        if decisions is None:
            return
        self.bytes += decisions.nbytes
        self.too_many = self.bytes > ANALYSIS_BYTES  # then nothing is excused: the stage fails, saying why
        if not self.too_many:
            self.images.extend(int(start + r) for r in rows)
            self.differs.extend(bool(differs[r]) for r in rows)
            self.parts.append(decisions)

    def on_graph_chunk(self, start: int, part: StageOutput, batched, ctx: dict) -> None:
        self.keep(start, part, lambda rows: context_decisions(batched, ctx, rows, float_stage=self.float_stage,
                                                              values=not self.float_stage))

    def explained(self, hardware_model, images: np.ndarray,
                  hardware_decisions) -> tuple[dict[int, dict], dict | None]:
        """flows.boundary's verdict per differing image (none when too many to analyse), and for a
        float stage how the hardware resolved the values that sat exactly on a tie;
        ``hardware_decisions(model, images, values)`` gives the hardware's decisions."""
        if not self.images or self.too_many:
            return {}, self._ties(None, None) if self.float_stage and not self.too_many else None
        index = np.array(self.images)
        hardware = hardware_decisions(hardware_model, images[index], not self.float_stage)
        stage = Decisions.stack(self.parts)
        differs = np.array(self.differs)
        verdicts = explain(stage.rows(np.nonzero(differs)[0]), hardware.rows(np.nonzero(differs)[0])) \
            if differs.any() else []
        explained = dict(zip(index[differs].tolist(), verdicts))
        return explained, self._ties(stage, hardware) if self.float_stage else None

    def _ties(self, stage: Decisions | None, hardware: Decisions | None) -> dict:
        """verify.json's account of exact ties in this stage."""
        report = {"images_on_input_tie": self.input_ties, "images_on_hidden_tie": 0, "values": 0,
                  "resolved_as_hardware": 0, "resolved_otherwise": 0, "excused": 0,
                  "rule": "the model rounds half to even; the flow's thresholds resolve each tie the same way "
                          "(input quantiser: exact per pixel value); an exact tie is never excused"}
        if stage is not None and len(stage.counts) == len(hardware.counts):
            on_tie, _ = tie_rows(stage)
            report["images_on_hidden_tie"] = int(on_tie.sum())
            report.update(tie_resolutions(stage, hardware))
        return report


def hardware_decisions(build, hardware_model, images: np.ndarray, values: bool) -> Decisions:
    """The hardware's activation decisions on ``images`` as the host and the accelerator make them: with
    a host input quantiser, its levels first (the stages' input quantiser lines up with it), then the
    dataflow graph's on the host-quantised inputs."""
    dec = graph_decisions(hardware_model, build.hardware_input(hardware_model, images), float_stage=False,
                          values=values)
    q = build.input_quantiser()
    if q is None:
        return dec
    raw = to_graph_input(hardware_model, images).astype(np.int64)
    emitted = values and q.datatype not in ("BIPOLAR", "BINARY")  # as flows.boundary._emitted reads a layer
    first = q(raw) if emitted else q.layer.thresholds(raw)
    first = first.transpose(0, 3, 1, 2) if first.ndim == 4 else first  # NHWC -> NCHW, as the stages
    return Decisions([first.reshape(len(images), -1).astype(np.int64), *dec.counts], None,
                     ["host input quantiser", *(dec.names or [])])


def differing(ref: StageOutput, out: StageOutput, exact: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(prediction differs, last layer differs, distance) per image against the hardware ``ref``,
    and the last layer's tolerance.

    A float stage's prediction that differs only by taking another class tied with the
    hardware's on the exact integers of the last layer is a tie, not a difference: which
    tied class wins depends on float rounding (the hardware takes the lowest index).
    """
    ints = np.round(ref.last_layer)
    distance = np.abs(out.last_layer - ints)
    tolerance = 0.0 if exact else integer_tolerance(out.last_layer)
    wrong_prediction = out.predictions != ref.predictions
    if not exact and ints.shape[1] > 1:  # a one-value decision has no ties between classes
        rows = np.arange(len(ints))
        wrong_prediction &= ints[rows, out.predictions] != ints[rows, ref.predictions]
    return wrong_prediction, (distance > tolerance).any(axis=1), distance, tolerance


def compare(ref: StageOutput, out: StageOutput, exact: bool, labels: np.ndarray,
            explained: dict[int, dict] | None = None) -> dict:
    """One stage against the integer hardware: identical predictions; last-layer accumulators
    equal exactly (integer stages) or within float32 rounding (float stages). ``explained``
    maps differing images to flows.boundary's verdict; the excused ones are not counted."""
    wrong_prediction, wrong_layer, distance, tolerance = differing(ref, out, exact)
    explained = explained or {}
    excused = np.zeros(len(distance), bool)
    excused[[i for i, e in explained.items() if e["excused"]]] = True
    kept = ~excused
    report = {"accuracy": float((out.predictions == labels).mean()),
              "prediction_mismatches": int((wrong_prediction & kept).sum()),
              "last_layer_mismatches": int((wrong_layer & kept).sum()),
              "max_distance_from_reference": float(distance[kept].max(initial=0.0)),
              "tolerance": tolerance,
              "arithmetic": "integer" if exact else "float32", "at_rounding_boundary": int(excused.sum()),
              "tied_predictions": int(((out.predictions != ref.predictions) & ~wrong_prediction).sum())}
    if explained:
        report["differing_images"] = [{"image": i, "prediction_differs": bool(wrong_prediction[i]),
                                       "last_layer_distance": float(distance[i].max()), **e}
                                      for i, e in sorted(explained.items())]
    return report


def integer_tolerance(values: np.ndarray) -> float:
    """How far a float stage's accumulator may sit from the exact integer through float32 rounding.

    Float stages compute a K-term dot product with float scales and are divided back; the
    error grows with K and with the largest magnitude, so allow 64 ulps of the largest
    magnitude (2^-18 of it), and at least 1e-3.
    """
    return float(max(1e-3, np.abs(values).max() * 2.0 ** -18))


def verify_stages(build) -> tuple[dict, dict[str, StageOutput]]:
    images, labels = build.dataset.test.images, build.dataset.test.labels
    outputs, seconds, exact = {}, {}, {}
    hardware_model = build.model("fold")
    # the hardware takes what the host streams: raw pixels, or their host-quantised values (--input-quant host)
    ref, seconds["dataflow"] = _timed(run_graph, hardware_model, build.hardware_input(hardware_model, images))
    recorders = {}
    ckpt = build.checkpoint()
    if ckpt is not None:
        scale = last_layer_scale(build.model("cleanup"))  # the PyTorch stage shares QONNX's scales
        recorders["pytorch"] = Recorder(ref)
        outputs["pytorch"], seconds["pytorch"] = _timed(pytorch_stage, ckpt, images, scale, recorders["pytorch"])
        exact["pytorch"] = False
    for name, step, scaled in GRAPH_STAGES:
        if name == "dataflow":
            outputs[name], exact[name] = ref, True
            continue
        model = build.model(step)
        recorders[name] = Recorder(ref, float_stage=scaled)
        outputs[name], seconds[name] = _timed(run_graph, model, to_graph_input(model, images),
                                              last_layer_scale(model) if scaled else 1.0,
                                              recorders[name].on_graph_chunk)
        exact[name] = not scaled
    stages = {}
    for name, out in outputs.items():
        explained, ties = (recorders[name].explained(
            hardware_model, images, functools.partial(hardware_decisions, build))
            if recorders.get(name) else ({}, None))
        stages[name] = {**compare(ref, out, exact[name], labels, explained), "seconds": seconds[name]}
        if ties is not None:
            stages[name]["ties"] = ties
        if recorders.get(name) and recorders[name].too_many:
            stages[name]["not_analysed"] = (f"too many differing or tied images to analyse within "
                                            f"{ANALYSIS_BYTES >> 20} MB; none excused")
    host_input = check_host_input(build)
    report = {"kind": "simulated", "passed": not _failed(stages) and host_input.get("mismatches", 0) == 0,
              "reference": "dataflow", "host_input": host_input,
              "images": int(len(labels)), "dataset": build.dataset.name, "stages": stages,
              "differences_start": differences_start(stages),
              "summary": summarise(stages, len(labels), build.dataset.name, host_input)}
    if host_input.get("where") == "host" and not host_input["mismatches"]:
        report["summary"] += (f"; the host's input quantiser ({host_input['quantiser']}) equals the graph's on all "
                              f"{host_input['values']} raw values x channels, and the dataflow stage took its outputs")
    if not build.dataset.labelled:
        for stage in stages.values():
            stage["accuracy"] = None
        report["accuracy"] = UNLABELLED
        report["summary"] += f"; {UNLABELLED}"
    return report, outputs


def check_host_input(build) -> dict:
    """With --input-quant host: the host's input quantiser (host.executor.InputQuantiser, what the
    driver and executor run) against the streamlined graph's input MultiThreshold it replaces
    (QONNX's execution), on every raw input value for every channel, thresholds included. The
    later stages then see it only through the images; this checks it on every value."""
    from qonnx.custom_op.general.multithreshold import multithreshold
    from qonnx.custom_op.registry import getCustomOp

    from flows.transforms import first_threshold_node

    q = build.input_quantiser()
    if q is None:
        return {"where": "fpga" if build.cfg.input_quant == "fpga" else "host: none to move"}
    model = build.model("streamline")
    node = first_threshold_node(model)
    thresholds = model.get_initializer(node.input[1])  # (C or 1, steps)
    inst = getCustomOp(node)
    values = build.input_values().astype(np.float32)  # every raw value, ascending
    channels = max(len(thresholds), len(q.thresholds))
    x = np.repeat(values[:, None], channels, axis=1)  # (P, C): every value on every channel
    graph = multithreshold(x, thresholds, inst.get_nodeattr("out_scale"), inst.get_nodeattr("out_bias"))
    host = q(x.astype(np.int64)).astype(np.float64)
    bad = np.argwhere(graph != host)
    report = {"where": "host", "quantiser": f"{q.raw_datatype} -> {q.datatype}", "values": int(x.size),
              "mismatches": len(bad), "against": f"streamlined graph node {node.name} (MultiThreshold)"}
    if len(bad):
        v, c = bad[0]
        report["first_mismatch"] = {"value": float(values[v]), "channel": int(c), "graph": float(graph[v, c]),
                                    "host": float(host[v, c])}
    return report


UNLABELLED = ("accuracy unknown: no data was given, so the stages were compared on random inputs over the "
              "input datatype's whole range (every value, the edges, and random rows)")


def _failed(stages: dict) -> list[str]:
    return [n for n, r in stages.items() if r["prediction_mismatches"] or r["last_layer_mismatches"]]


def summarise(stages: dict, images: int, dataset: str, host_input: dict | None = None) -> str:
    bad = _failed(stages)
    if not bad and host_input and host_input.get("mismatches"):
        return (f"verification failed: the host input quantiser differs from the graph's on "
                f"{host_input['mismatches']} of {host_input['values']} input values ({host_input['first_mismatch']})")
    if bad:
        start = differences_start(stages)
        where = (f" (differences start at activation layer {start['layer']}, hardware node {start['hardware_node']}, "
                 f"as the {start['stage']} stage shows)" if start else "")
        return f"verification failed{where}: " + "; ".join(
            f"{n}: {stages[n]['prediction_mismatches']} predictions and {stages[n]['last_layer_mismatches']} "
            f"last-layer outputs differ from the integer dataflow graph{_blame(stages[n])}" for n in bad)
    worst = max((r["max_distance_from_reference"] for r in stages.values() if r["arithmetic"] == "float32"),
                default=0.0)
    text = (f"bit-exact on all {images} {dataset} test images across {len(stages)} stages ({', '.join(stages)}): "
            f"identical predictions and last-layer integers (float stages within {worst:.2g} of them)")
    tied = max((r["ties"]["images_on_hidden_tie"] for r in stages.values() if r.get("ties")), default=0)
    if tied:
        text += (f"; {tied} image(s) had a hidden value exactly on a .5 tie, each resolved as the model rounds "
                 "(half to even; counts per stage in verify.json)")
    boundary = {n: r["at_rounding_boundary"] for n, r in stages.items() if r["at_rounding_boundary"]}
    if boundary:
        text += (", except where a float stage rounded a value at a rounding boundary, within float32 error "
                 f"({', '.join(f'{n}: {k} image(s)' for n, k in boundary.items())}; listed in verify.json); "
                 "the integer stages agree exactly")
    return text


def differences_start(stages: dict) -> dict | None:
    """The earliest activation layer at which any stage's unexcused images first differ from the hardware."""
    firsts = [{"stage": n, "layer": c["layer"], "hardware_node": c.get("hardware_node")}
              for n, r in stages.items() for c in r.get("differing_images", []) if not c["excused"] and "layer" in c]
    return min(firsts, key=lambda f: f["layer"]) if firsts else None


def _blame(stage: dict) -> str:
    """Where the differences start: the first differing layer most of the stage's unexcused images name."""
    from collections import Counter

    places = Counter((c["layer"], c.get("hardware_node")) for c in stage.get("differing_images", [])
                     if not c["excused"] and "layer" in c)
    if not places:
        return ""
    (layer, node), count = places.most_common(1)[0]
    return f" (from activation layer {layer}" + (f", hardware node {node}" if node else "") + f", {count} image(s))"


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 3)
