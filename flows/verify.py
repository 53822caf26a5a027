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


def compare(ref: StageOutput, out: StageOutput, labels: np.ndarray) -> dict:
    ints = np.round(out.last_layer)
    return {"accuracy": float((out.predictions == labels).mean()),
            "prediction_mismatches": int((out.predictions != ref.predictions).sum()),
            "last_layer_mismatches": int((ints != np.round(ref.last_layer)).any(axis=1).sum()),
            "max_distance_from_integer": float(np.abs(out.last_layer - ints).max())}


def verify_stages(build) -> dict:
    images, labels = build.dataset.test.images, build.dataset.test.labels
    scale = last_layer_scale(build.model("cleanup"))  # the PyTorch stage shares QONNX's scales
    outputs, seconds = {}, {}
    ckpt = build.checkpoint()
    if ckpt is not None:
        outputs["pytorch"], seconds["pytorch"] = _timed(pytorch_stage, ckpt, images, scale)
    for name, step, scaled in GRAPH_STAGES:
        model = build.model(step)
        x = to_graph_input(model, images)
        outputs[name], seconds[name] = _timed(run_graph, model, x, last_layer_scale(model) if scaled else 1.0)
    ref_name = next(iter(outputs))
    stages = {name: {**compare(outputs[ref_name], out, labels), "seconds": seconds[name]}
              for name, out in outputs.items()}
    bad = [n for n, r in stages.items() if r["prediction_mismatches"] or r["last_layer_mismatches"]
           or r["max_distance_from_integer"] > 1e-3]
    summary = (f"bit-exact on all {len(labels)} {build.dataset.name} test images across "
               f"{len(stages)} stages ({', '.join(stages)})" if not bad else
               "verification failed: " + "; ".join(
                   f"{n}: {stages[n]['prediction_mismatches']} predictions and {stages[n]['last_layer_mismatches']} "
                   f"last-layer outputs differ from {ref_name}" for n in bad))
    report = {"kind": "simulated", "passed": not bad, "reference": ref_name, "images": int(len(labels)),
              "dataset": build.dataset.name, "stages": stages, "summary": summary}
    return report, outputs


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - start, 3)
