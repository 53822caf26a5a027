"""Bit-exact verification: the whole test split through every stage of the flow.

Stages: PyTorch (Brevitas) -> QONNX -> FINN graph -> streamlined -> folded
dataflow partition. Each must give the same prediction and the same integer
accumulators of the last layer as the first stage, on every image.
"""
from __future__ import annotations

import time

import numpy as np

from flows.execute import StageOutput, last_layer_scale, run_graph, to_graph_input

# (stage name, build step whose model.onnx it runs, True if its last layer carries float scales)
GRAPH_STAGES = [("qonnx", "cleanup", True), ("finn", "convert", True),
                ("streamlined", "streamline", False), ("dataflow", "fold", False)]


def pytorch_stage(ckpt, images: np.ndarray, scale: float) -> StageOutput:
    """The Brevitas model itself; its last QuantLinear's output divided back to integers."""
    import torch

    from qat.train import as_tensor

    model = ckpt.model()
    captured = []
    last_linear = [m for m in model.modules() if type(m).__name__ == "QuantLinear"][-1]
    hook = last_linear.register_forward_hook(lambda m, i, o: captured.append(o.detach().double()))
    with torch.no_grad():
        logits = torch.cat([model(as_tensor(images[i:i + 4096])) for i in range(0, len(images), 4096)])
    hook.remove()
    return StageOutput(logits.argmax(1).numpy().astype(np.int64), torch.cat(captured).numpy() / scale)


def compare(ref_predictions: np.ndarray, ref_ints: np.ndarray, out: StageOutput, exact: bool,
            labels: np.ndarray) -> dict:
    """One stage against the references: predictions must be identical; the last layer must
    equal the integer hardware's accumulators exactly (integer stages) or within float32
    rounding of them (stages that still compute with float scales)."""
    tolerance = 0.0 if exact else integer_tolerance(out.last_layer)
    distance = np.abs(out.last_layer - ref_ints)
    return {"accuracy": float((out.predictions == labels).mean()),
            "prediction_mismatches": int((out.predictions != ref_predictions).sum()),
            "last_layer_mismatches": int((distance > tolerance).any(axis=1).sum()),
            "max_distance_from_reference": float(distance.max()), "tolerance": tolerance,
            "arithmetic": "integer" if exact else "float32"}


def integer_tolerance(values: np.ndarray) -> float:
    """How far a float stage's accumulator may sit from the exact integer through float32 rounding.

    Float stages compute acc * scale in float32 and are divided back: about 2^-24 relative
    error per operation, so allow 16 ulps of the largest magnitude (2^-20), and at least 1e-3.
    """
    return float(max(1e-3, np.abs(values).max() * 2.0 ** -20))


def verify_stages(build) -> tuple[dict, dict[str, StageOutput]]:
    images, labels = build.dataset.test.images, build.dataset.test.labels
    scale = last_layer_scale(build.model("cleanup"))  # the PyTorch stage shares QONNX's scales
    outputs, seconds, exact = {}, {}, {}
    ckpt = build.checkpoint()
    if ckpt is not None:
        outputs["pytorch"], seconds["pytorch"] = _timed(pytorch_stage, ckpt, images, scale)
        exact["pytorch"] = False
    for name, step, scaled in GRAPH_STAGES:
        model = build.model(step)
        x = to_graph_input(model, images)
        outputs[name], seconds[name] = _timed(run_graph, model, x, last_layer_scale(model) if scaled else 1.0)
        exact[name] = not scaled
    ref_name = next(iter(outputs))  # predictions: the first stage (PyTorch when there is a checkpoint)
    ref_ints = np.round(outputs["dataflow"].last_layer)  # last layer: the integer hardware, exact
    stages = {name: {**compare(outputs[ref_name].predictions, ref_ints, out, exact[name], labels),
                     "seconds": seconds[name]} for name, out in outputs.items()}
    bad = [n for n, r in stages.items() if r["prediction_mismatches"] or r["last_layer_mismatches"]]
    worst = max((r["max_distance_from_reference"] for r in stages.values() if r["arithmetic"] == "float32"),
                default=0.0)
    summary = (f"bit-exact on all {len(labels)} {build.dataset.name} test images across {len(stages)} stages "
               f"({', '.join(stages)}): identical predictions and last-layer integers "
               f"(float stages within {worst:.2g} of them)" if not bad else
               "verification failed: " + "; ".join(
                   f"{n}: {stages[n]['prediction_mismatches']} predictions differ from {ref_name} and "
                   f"{stages[n]['last_layer_mismatches']} last-layer outputs from the integer dataflow graph"
                   for n in bad))
    report = {"kind": "simulated", "passed": not bad, "reference": ref_name, "images": int(len(labels)),
              "dataset": build.dataset.name, "stages": stages, "summary": summary}
    return report, outputs


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 3)
