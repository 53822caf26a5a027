"""Benchmark targets on a deploy package's test vectors: accuracy first, then time.

A `Target` maps a batch of input images (the accelerator's integer inputs,
``(N, *input_shape)`` uint8) to top-1 predictions ``(N,)``. `run_benchmark`
checks every target's predictions against the package's verified expected
outputs before timing it: a target that disagrees on any image is reported
*failed*, with the count, and never timed (an `approximate` target, such as
fp16 on a GPU, is timed while it agrees on at least `MIN_AGREEMENT` of them,
and its agreement is reported beside its time). The predictions of every
timed run are checked as well, outside the clock. Then:

- batch-1 latency: p50/p90/p99 over ``5 * repeats`` single-image calls;
- throughput: for each batch size, the median of ``repeats`` timed calls;
- per-layer time, where the target can give it, at batch ``layer_batch``: each layer timed
  inside whole runs, as whole runs are timed (warm-up, then the per-layer median of
  ``repeats`` runs), beside the whole run timed the same way without the per-layer clocks,
  so that the layers of a sequential target (CPU, GPU) add up to its whole run
  (``layers_sum_seconds_per_image`` vs ``whole_run_seconds_per_image``; what lies between
  layers, such as input conversion, is in the whole run only). Timing a layer alone on its
  recorded input is no substitute: with its data and weights hot in cache a Brevitas layer
  ran 3-9x faster than inside the model. The modelled accelerator's layers come from the
  performance model; they run as a pipeline, so the slowest one, not their sum, sets its rate.

Each call is timed by wall clock, or by the target's own `clock` where it has
one (the modelled accelerator); a target's ``label`` says which ("measured on
<machine>" or "modelled"). A time budget per target and batch size bounds
every measurement, so slow targets take fewer samples rather than hang.

The timing harness only: the deploy package is read by host.deploy, the
results are recorded by host.results (environment, bench.json, bench.md) and
drawn by host.plots. Used by the board's notebook and by ``flows bench``.

numpy and the standard library only.
"""


from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from host.deploy import Package
from host.driver import Accelerator
from host.errors import HostError
from host.sim import SimBackend

MIN_AGREEMENT = 0.99  # an approximate target is timed only above this agreement
LATENCY_PER_REPEAT = 5  # batch-1 samples per repeat
BUDGET_S = 3.0  # most seconds spent timing one target at one batch size
LAYER_BATCH = 256  # batch size of the per-layer profile
MATRIX_KINDS = ("MVAU", "VVAU")  # dataflow layer kinds that start a stage of the per-layer plot

Predict = Callable[[np.ndarray], np.ndarray]


# -- targets -------------------------------------------------------------------------


LayerTimes = Callable[[np.ndarray], list[tuple[str, bool, float]]]  # batch -> (layer, matrix?, seconds), one run


@dataclass
class Target:
    """Something that predicts: ``run(images (N, *input_shape) uint8) -> (N,) top-1``."""

    name: str
    label: str  # "measured on <machine>" or "modelled"
    run: Predict | None
    clock: Callable[[], float] | None = None  # seconds of the last run when not wall time
    layer_times: LayerTimes | None = None  # one run of a batch, each layer's seconds (matrix: MVAU, Linear, Conv)
    approximate: bool = False  # may disagree with the expected outputs (see MIN_AGREEMENT)
    skip: str | None = None  # why it cannot run here
    note: str = ""  # how it was built, for the report


def skipped(name: str, reason: str) -> Target:
    return Target(name, "-", None, skip=reason)


def accelerator_target(name: str, accel: Accelerator, label: str | None = None) -> Target:
    """The accelerator through host.driver: modelled time with a SimBackend, wall time otherwise."""
    backend = accel.backend

    def run(images: np.ndarray) -> np.ndarray:
        return accel.execute(images).reshape(len(images))

    if isinstance(backend, SimBackend):
        model = backend.model
        def layers(batch: np.ndarray) -> list[tuple[str, bool, float]]:
            kinds = {layer.name: layer.kind for layer in model.layers}
            return [(n, kinds.get(n, "").startswith(MATRIX_KINDS), t * len(batch)) for n, t in model.layer_seconds()]

        return Target(name, "modelled", run, clock=lambda: backend.last_modelled_seconds, layer_times=layers,
                      note=f"outputs: numpy executor; time: perf model, II {model.ii_cycles:.1f} cycles "
                           f"({model.binding}) at {model.clock_mhz:g} MHz + {model.overhead_s * 1e6:.0f} us/batch")
    return Target(name, label or backend.label, run,
                  note="PYNQ, zynq-iodma shell; wall time incl. packing (and the host input quantiser, if any)")


def executor_target(name: str, executor, label: str) -> Target:
    """host.executor on this CPU: what the board's ARM runs without the FPGA."""

    def run(images: np.ndarray) -> np.ndarray:
        return executor.run(images.reshape(len(images), *executor.input_shape)).reshape(len(images))

    def layers(images: np.ndarray) -> list[tuple[str, bool, float]]:
        _, trace = executor.run(images.reshape(len(images), *executor.input_shape), return_layers=True)
        return [(t.name, t.kind.startswith(MATRIX_KINDS), t.seconds) for t in trace]

    return Target(name, label, run, layer_times=layers, note="numpy, integer-exact, batched")


# -- measuring -----------------------------------------------------------------------


@dataclass
class BenchConfig:
    batches: Sequence[int] = (1, 16, 256, 1024, 10000)
    repeats: int = 20
    warmup: int = 2
    budget_s: float = BUDGET_S
    layer_batch: int = LAYER_BATCH

    def __post_init__(self) -> None:
        if (not self.batches or min(self.batches) < 1 or self.repeats < 1 or self.warmup < 0 or self.layer_batch < 1
                or not math.isfinite(self.budget_s) or self.budget_s <= 0):
            raise HostError(f"bad benchmark settings {self}: batches and repeats must be >= 1, budget > 0")


def run_benchmark(targets: Sequence[Target], package: Package, cfg: BenchConfig | None = None,
                  progress: Callable[[str], None] | None = None) -> list[dict]:
    """One result dict per target, in order (see the module docstring)."""
    cfg = cfg or BenchConfig()
    results = []
    for target in targets:
        if progress:
            progress(target.name)
        results.append(bench_target(target, package, cfg))
    return results


def bench_target(target: Target, package: Package, cfg: BenchConfig) -> dict:
    result = {"name": target.name, "label": target.label, "note": target.note, "approximate": target.approximate}
    if target.skip or target.run is None:
        return result | {"status": "skipped", "reason": target.skip or "no run function"}
    try:
        check = accuracy(target, package)
        result["accuracy"] = check
        if check["mismatches"] and not (target.approximate and check["agreement"] >= MIN_AGREEMENT):
            return result | {"status": "failed",
                             "reason": f"{check['mismatches']} of {check['images']} predictions differ from the "
                                       "expected outputs; not timed"}
        guard = Guard(target, package)
        timing = {"latency_s": latency(guard, package.inputs, cfg),
                  "throughput": [throughput(guard, package.inputs, b, cfg) for b in cfg.batches]}
        if guard.wrong:
            return result | {"status": "failed", "reason": f"{guard.wrong} predictions of timed runs differed "
                                                           "from the expected outputs; not timed"}
        result.update(timing)
        best = max(result["throughput"], key=lambda t: t["images_per_second"])
        result["best_images_per_second"], result["best_batch"] = best["images_per_second"], best["batch"]
        if target.layer_times:
            result.update(layer_profile(target, tile(package.inputs, cfg.layer_batch), cfg))
    except Exception as err:  # one target's crash is reported in its row; the others still run
        return result | {"status": "error", "reason": f"{type(err).__name__}: {err}"}
    return result | {"status": "ok"}


def layer_profile(target: Target, batch: np.ndarray, cfg: BenchConfig) -> dict:
    """Per-layer seconds per image on ``batch`` (median and minimum over runs, with each layer's stage),
    and the whole run beside them, timed the same way without the per-layer clocks.

    A sequential target's layers add up to its whole run (``layers_combine``: "sum"), less what lies
    between them. Medians on a shared machine carry preemptions, which a long whole run catches more
    often than its short layers; the minima (noise only ever adds time) compare the two without it.
    A modelled pipeline's layers overlap ("slowest": the slowest sets the rate)."""
    n = len(batch)
    runs = []
    timed_runs(lambda: runs.append(target.layer_times(batch)), cfg)
    runs = runs[len(runs) - min(len(runs), cfg.repeats):]  # the timed runs, not the warm-up
    layers, stage = [], 0
    for i, (name, matrix, _) in enumerate(runs[0]):
        stage += bool(matrix)
        samples = [r[i][2] / n for r in runs]
        layers.append({"name": name, "matrix": bool(matrix), "stage": stage,
                       "seconds_per_image": float(np.median(samples)), "min_seconds_per_image": float(min(samples))})
    if target.clock:
        target.run(batch)
        whole, combine = [float(target.clock())], "slowest"
    else:
        whole, combine = timed_runs(lambda: target.run(batch), cfg), "sum"
    return {"layers": layers, "layers_batch": n, "layers_combine": combine, "layers_runs": len(runs),
            "layers_sum_seconds_per_image": sum(l["seconds_per_image"] for l in layers),
            "whole_run_seconds_per_image": float(np.median(whole)) / n,
            "layers_sum_min_seconds_per_image": sum(l["min_seconds_per_image"] for l in layers),
            "whole_run_min_seconds_per_image": min(whole) / n}


def timed_runs(fn: Callable[[], object], cfg: BenchConfig) -> list[float]:
    """Wall times of ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed ones
    (fewer when they outlast ``budget_s``), as `throughput` times whole batches."""
    deadline = time.perf_counter() + cfg.budget_s
    for _ in range(cfg.warmup):
        fn()
        if time.perf_counter() > deadline:
            break
    times, deadline = [], time.perf_counter() + cfg.budget_s
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return times


def accuracy(target: Target, package: Package, chunk: int = 256) -> dict:
    """Predictions on every test vector vs the expected outputs and the labels."""
    inputs = package.inputs
    preds = np.concatenate([_predict(target, inputs[i:i + chunk], package) for i in range(0, len(inputs), chunk)])
    n = len(inputs)
    agree = int((preds == package.expected).sum())
    correct = int((preds == package.labels).sum()) if package.labelled else None
    return {"images": n, "correct": correct, "accuracy": correct / n if package.labelled else None, "agree": agree,
            "agreement": agree / n, "mismatches": n - agree}


class Guard:
    """A target's run, timed (wall clock or its own clock), its predictions checked outside the clock."""

    def __init__(self, target: Target, package: Package):
        self.target, self.package = target, package
        self.wrong = 0  # mismatching predictions seen while timing (exact targets only)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.target.run(x)

    def timed(self, x: np.ndarray, expected: np.ndarray) -> float:
        start = time.perf_counter()
        y = self.target.run(x)
        wall = time.perf_counter() - start
        if not self.target.approximate:
            self.wrong += int((self.package.to_predictions(y, len(x)) != expected).sum())
        return float(self.target.clock()) if self.target.clock else wall


def latency(guard: Guard, inputs: np.ndarray, cfg: BenchConfig) -> dict:
    """Batch-1 latency percentiles over single images, cycling through the inputs."""
    for i in range(cfg.warmup):
        guard.run(inputs[i % len(inputs)][None])
    samples, deadline = [], time.perf_counter() + cfg.budget_s
    for i in range(cfg.repeats * LATENCY_PER_REPEAT):
        k = i % len(inputs)
        samples.append(guard.timed(inputs[k][None], guard.package.expected[k:k + 1]))
        if time.perf_counter() > deadline:
            break
    s = np.array(samples)
    return {"p50": float(np.percentile(s, 50)), "p90": float(np.percentile(s, 90)),
            "p99": float(np.percentile(s, 99)), "mean": float(s.mean()), "samples": len(s)}


def throughput(guard: Guard, inputs: np.ndarray, batch: int, cfg: BenchConfig) -> dict:
    """Median time of one batch of ``batch`` images (the test vectors, tiled)."""
    x, expected = tile(inputs, batch), tile(guard.package.expected, batch)
    deadline = time.perf_counter() + cfg.budget_s
    for _ in range(cfg.warmup):
        guard.run(x)
        if time.perf_counter() > deadline:
            break
    times, deadline = [], time.perf_counter() + cfg.budget_s
    for _ in range(cfg.repeats):
        times.append(guard.timed(x, expected))
        if time.perf_counter() > deadline:
            break
    median = float(np.median(times))
    return {"batch": batch, "seconds_median": median, "seconds_min": float(min(times)), "runs": len(times),
            "images_per_second": batch / median}


def tile(inputs: np.ndarray, n: int) -> np.ndarray:
    """n images: the inputs repeated as often as needed."""
    return np.ascontiguousarray(np.take(inputs, np.arange(n) % len(inputs), axis=0))


def _predict(target: Target, x: np.ndarray, package: Package) -> np.ndarray:
    y = np.asarray(target.run(x))
    if y.size != len(x):
        raise HostError(f"target {target.name} returned {y.shape} for {len(x)} images; expected one label each")
    return package.to_predictions(y, len(x))
