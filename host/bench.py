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

Also here, for the board's notebook and for ``flows bench``: loading a deploy
package, opening its accelerator (PYNQ on a board, else the simulator), the
environment record, the Markdown table and the plots (matplotlib, imported
only by `save_plots`).

numpy and the standard library only.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from host.driver import Accelerator, IOSpec, PynqBackend
from host.errors import HostError
from host.files import read_npz
from host.sim import SimBackend, read_deploy_meta

MIN_AGREEMENT = 0.99  # an approximate target is timed only above this agreement
LATENCY_PER_REPEAT = 5  # batch-1 samples per repeat
BUDGET_S = 3.0  # most seconds spent timing one target at one batch size
LAYER_BATCH = 256  # batch size of the per-layer profile
MATRIX_KINDS = ("MVAU", "VVAU")  # dataflow layer kinds that start a stage of the per-layer plot

Predict = Callable[[np.ndarray], np.ndarray]


# -- the deploy package --------------------------------------------------------------


@dataclass
class Package:
    """A deploy package: its metadata, IO spec and test vectors."""

    dir: Path
    meta: dict
    spec: IOSpec
    inputs: np.ndarray  # (N, *input_shape) uint8, as the accelerator takes them
    labels: np.ndarray  # (N,) dataset labels
    expected: np.ndarray  # (N,) verified top-1 outputs of the design

    @property
    def bitfile(self) -> Path | None:
        name = self.meta.get("bitfile")
        return self.dir / name if name else None

    @property
    def clock_mhz(self) -> float:
        return float(self.meta.get("clock_mhz", 100.0))

    @property
    def labelled(self) -> bool:
        """False where the build had no data: the inputs are random and accuracy means nothing."""
        return bool(self.meta.get("labelled", True))

    def to_predictions(self, y: np.ndarray, n: int) -> np.ndarray:
        """A target's (n, ...) outputs as (n,) class indices: a one-value decision output
        (deploy.json "prediction": "positive", e.g. bipolar -1/+1) is class 1 where positive."""
        y = np.asarray(y).reshape(n)
        return (y > 0).astype(np.int64) if self.meta.get("prediction") == "positive" else y.astype(np.int64)


def load_package(deploy_dir: str | os.PathLike) -> Package:
    """Read deploy.json (format checked first: DeployVersionError), io_spec.json and test_vectors.npz."""
    deploy_dir = Path(deploy_dir)
    meta = read_deploy_meta(deploy_dir)
    spec = IOSpec.load(deploy_dir / "io_spec.json")
    path = deploy_dir / "test_vectors.npz"
    arrays = read_npz(path, ("inputs", "labels", "expected"), HostError, "copy the package again")
    inputs, labels, expected = arrays["inputs"], arrays["labels"], arrays["expected"]
    n = len(inputs)
    if labels.size != n or expected.size != n:
        raise HostError(f"{path} holds {n} inputs but {labels.size} labels and {expected.size} expected outputs; "
                        "copy the package again (or write one label and one expected output per input)")
    return Package(deploy_dir, meta, spec, inputs, labels.reshape(n), expected.reshape(n))


def on_board(package: Package) -> str | None:
    """None when the package can run on a PYNQ board here, else why not."""
    if importlib.util.find_spec("pynq") is None:
        return "pynq is not importable (not a PYNQ board)"
    if package.bitfile is None or not package.bitfile.is_file():
        return "the package has no bitfile (built without Vivado)"
    return None


def open_accelerator(package: Package, backend: str = "auto") -> Accelerator:
    """The package's accelerator: 'pynq' (the board), 'sim' (executor + perf model) or 'auto'
    (the board where `on_board` allows it, else the simulator)."""
    if backend not in ("auto", "pynq", "sim"):
        raise HostError(f"backend {backend!r} is not one of auto, pynq, sim")
    if backend == "pynq" or (backend == "auto" and on_board(package) is None):
        bit = package.bitfile or package.dir / "accelerator.bit"
        return Accelerator(package.spec, PynqBackend(bit, package.clock_mhz, board=package.meta.get("board")))
    return Accelerator(package.spec, SimBackend.from_deploy(package.dir))


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


# -- the environment -----------------------------------------------------------------


PACKAGES = ("numpy", "torch", "onnxruntime", "brevitas", "qonnx", "finn-plus", "pynq")


def environment() -> dict:
    """What the numbers were measured on (no package is imported to learn its version)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "cpu_max_mhz": _cpu_mhz(), "load_average":
            os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "machine": platform.machine(), "system": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "packages": versions, "board": os.environ.get("BOARD"),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def machine_label(env: dict) -> str:
    """'measured on <cpu> (<n> cores)' (or on the named board)."""
    where = f"{env['board']}, " if env.get("board") else ""
    return f"measured on {where}{env['cpu_model']} ({env['cores']} cores)"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in lines:
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_mhz() -> float | None:
    """The CPU's maximum clock (cpufreq), else what /proc/cpuinfo reports now."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    except (OSError, ValueError):
        pass
    return None


# -- reporting -----------------------------------------------------------------------


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if r >= scale:
            return f"{r / scale:.3g}{unit} img/s"
    return f"{r:.3g} img/s"


def summary_rows(results: Sequence[dict]) -> list[dict]:
    """Per target: target, label, batch-1 p50, best throughput, accuracy, status (strings)."""
    rows = []
    for r in results:
        acc = r.get("accuracy")
        acc_text = "-" if not acc else "unknown (no data)" if acc["accuracy"] is None else f"{100 * acc['accuracy']:.2f}%"
        if acc and r.get("approximate"):
            acc_text += f" ({100 * acc['agreement']:.1f}% agree)"
        ok = r["status"] == "ok"
        best = fmt_rate(r["best_images_per_second"]) + f" (batch {r['best_batch']})" if ok else "-"
        rows.append({"target": r["name"], "label": r["label"], "latency_p50": fmt_seconds(r["latency_s"]["p50"])
                     if ok else "-", "best_throughput": best, "accuracy": acc_text, "status": r["status"],
                     "reason": r.get("reason", "")})
    return rows


ROW_TITLES = {"target": "target", "label": "label", "latency_p50": "batch-1 p50 latency",
              "best_throughput": "best throughput", "accuracy": "accuracy", "status": "status"}


def markdown(results: Sequence[dict], env: dict, title: str) -> str:
    """A short comparison table with the machine it was measured on."""
    pk = env["packages"]
    lines = [f"# {title}", "",
             f"{machine_label(env)}, {env['machine']}; Python {env['python']}, numpy {env['numpy']}"
             + "".join(f", {n} {pk[n]}" for n in ("torch", "onnxruntime") if pk.get(n))
             + (f"; torch/onnxruntime on {env['threads']} thread(s)" if env.get("threads") else "")
             + (f"; load average {env['load_average']:.1f} at the start" if env.get("load_average") is not None else "")
             + f"; {env['date']}.",
             "Rows labelled *modelled* are the performance model's (host/perf_model.py), not measurements.", "",
             "| " + " | ".join(ROW_TITLES.values()) + " |", "|" + "---|" * len(ROW_TITLES)]
    for row in summary_rows(results):
        row["status"] += f": {row['reason']}" if row["reason"] else ""
        lines.append("| " + " | ".join(str(row[k]).replace("|", "/") for k in ROW_TITLES) + " |")
    notes = [f"- **{r['name']}**: {r['note']}" for r in results if r.get("note")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_results(results: Sequence[dict], env: dict, out_dir: str | os.PathLike, title: str,
                  extra: dict | None = None, plots: bool = True) -> dict[str, Path]:
    """bench.json, bench.md and (with ``plots``) the plots under out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    paths["json"].write_text(json.dumps({"title": title, "environment": env, **(extra or {}),
                                         "targets": list(results)}, indent=1))
    paths["markdown"].write_text(markdown(results, env, title))
    if plots:
        paths.update(save_plots(results, out))
    return paths


def save_plots(results: Sequence[dict], out_dir: str | os.PathLike) -> dict[str, Path]:
    """latency_vs_batch.png, layers.png, accuracy_vs_throughput.png (matplotlib, Agg)."""
    try:
        import matplotlib
    except ImportError:
        raise HostError("matplotlib is not installed: pip install matplotlib, or pass plots=False") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    ok = [r for r in results if r["status"] == "ok"]
    paths = {}
    for name, draw in (("latency_vs_batch", _plot_latency), ("layers", _plot_layers),
                       ("accuracy_vs_throughput", _plot_accuracy)):
        fig = draw(plt, ok)
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return paths


def _style(r: dict) -> dict:
    return {"linestyle": "--" if r["label"] == "modelled" else "-", "marker": "o"}


def _plot_latency(plt, results):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        t = r["throughput"]
        ax.plot([p["batch"] for p in t], [p["seconds_median"] for p in t], label=f"{r['name']} ({r['label']})",
                **_style(r))
    ax.set(xscale="log", yscale="log", xlabel="batch size (images)", ylabel="time per batch (s, median)",
           title="Time per batch vs batch size")
    ax.grid(True, which="both", alpha=0.3)
    if results:
        ax.legend(fontsize=7)
    return fig


def stage_seconds(result: dict) -> dict[int, float]:
    """A target's seconds per image per stage (0: before the first matrix layer; k: matrix layer k
    and the layers after it up to the next), the unit the per-layer plot compares across targets."""
    stages: dict[int, float] = {}
    for layer in result.get("layers") or ():
        stages[layer["stage"]] = stages.get(layer["stage"], 0.0) + layer["seconds_per_image"]
    return stages


def _plot_layers(plt, results):
    """Grouped bars: per stage (layer by layer), one bar per target, on one log axis."""
    with_layers = [r for r in results if r.get("layers")]
    per_target = [stage_seconds(r) for r in with_layers]
    stages = sorted({k for st in per_target for k in st})
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(stages) + 3), 4.5))
    width = 0.8 / max(1, len(with_layers))
    for i, (r, st) in enumerate(zip(with_layers, per_target)):
        xs = [j + (i - (len(with_layers) - 1) / 2) * width for j, k in enumerate(stages) if k in st]
        ax.bar(xs, [1e6 * st[k] for k in stages if k in st], width, hatch="//" if r["label"] == "modelled" else None,
               label=f"{r['name']} ({r['label']})")
    ax.set_xticks(range(len(stages)), ["input" if k == 0 else f"matrix layer {k}" for k in stages], fontsize=8)
    batch = with_layers[0]["layers_batch"] if with_layers else "-"
    ax.set(yscale="log", ylabel="us per image (median)",
           title=f"Time per layer, batch {batch} (a stage: a matrix layer and what follows it; hatched: modelled)")
    ax.title.set_fontsize(9)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if with_layers:
        ax.legend(fontsize=7)
    else:
        ax.set_title("no target gave per-layer times")
    fig.tight_layout()
    return fig


def _plot_accuracy(plt, results):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    results = [r for r in results if r["accuracy"]["accuracy"] is not None]  # no data: accuracy unknown
    for i, r in enumerate(sorted(results, key=lambda r: r["best_images_per_second"])):
        x, y = r["best_images_per_second"], 100 * r["accuracy"]["accuracy"]
        ax.scatter([x], [y], marker="s" if r["label"] == "modelled" else "o")
        ax.annotate(r["name"], (x, y), fontsize=7, xytext=(4, 4 + 9 * (i % 3)), textcoords="offset points")
    ax.set(xscale="log", xlabel="best throughput (images/s)", ylabel="accuracy on the test vectors (%)",
           title="Accuracy vs throughput (squares: modelled)")
    ax.grid(True, alpha=0.3)
    return fig
