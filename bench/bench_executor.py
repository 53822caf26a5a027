"""Images/s of the numpy executor against FINN's Python execution and batched PyTorch.

One run, one folded design, the same test images for every row:
  finn-single    FINN's execute_onnx, one image at a time (as FINN users run it)
  finn-batched   FINN's execution of a batched copy of the graph (flows.execute.run_graph)
  executor-single  host.executor, one image at a time
  executor       host.executor, the whole split as one batch (and with BLAS's thread pool)
  pytorch        the Brevitas model's batched forward on the CPU (torch's threads, and 1 thread)
Every timed run's outputs are checked against the executor's (predictions;
FINN rows also the last layer's integers): a wrong answer is never reported
as a time. Medians over repeated runs after a warm-up. Results merge into
<out>/executor.json (keyed by model and data) and <out>/executor.md.

    python bench/bench_executor.py --model tfc-w1a1 --data mnist \\
        --data-dir /work/shared/datasets/mnist --epochs 1
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tfc-w1a1", help="zoo model (tfc-w1a1, tfc-w1a2, tfc-w2a2, tfc-w4a4)")
    p.add_argument("--data", default="digits", choices=["digits", "mnist"])
    p.add_argument("--data-dir", type=Path, default=None, help="folder holding the dataset's files (mnist)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results folder (executor.json, executor.md)")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="build directory (default build/bench_<model>_<data>); built unless it holds a package")
    p.add_argument("--epochs", type=int, default=40, help="training epochs when the design must be built")
    p.add_argument("--finn-images", type=int, default=300, help="images for the one-at-a-time rows")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per fast row (median reported)")
    p.add_argument("--finn-repeats", type=int, default=3, help="timed runs per FINN row")
    return p.parse_args(argv)


def ensure_build(args) -> Path:
    """The run directory, built (or completed) when it has no executor package yet."""
    from flows.build import run_build
    from flows.config import BuildConfig, TrainOptions

    run = args.run_dir or Path("build") / f"bench_{args.model}_{args.data}"
    if not (run / "deploy" / "executor" / "executor.json").is_file():
        run_build(BuildConfig(model=args.model, data=args.data, data_dir=args.data_dir, out=run,
                              train=TrainOptions(epochs=args.epochs)))
    return run


def timed(fn, check, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` calls; ``check`` sees every output."""
    for _ in range(warmup):
        check(fn())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
        check(out)
    return seconds


def require_equal(what: str, got: np.ndarray, want: np.ndarray) -> None:
    if not np.array_equal(got, want):
        bad = int((np.asarray(got) != np.asarray(want)).reshape(len(want), -1).any(axis=1).sum())
        sys.exit(f"bench aborted: {what} differs from the executor on {bad} of {len(want)} images; "
                 "no time is reported for a wrong answer")


class Design:
    """The folded graph, its executor, its Brevitas model and the test images."""

    def __init__(self, run: Path, data: str, data_dir: Path | None):
        from qonnx.core.modelwrapper import ModelWrapper

        from flows.transforms import MakeHWLayersGeneric
        from host.executor import Executor, read_files
        from qat.data import load_dataset
        from qat.train import load_checkpoint

        self.model = ModelWrapper(str(run / "fold" / "model.onnx"))
        self.generic = ModelWrapper(copy.deepcopy(self.model.model)).transform(MakeHWLayersGeneric())
        meta, self.arrays = read_files(run / "deploy" / "executor")
        self.executor = Executor(meta, self.arrays)
        self.torch_model = load_checkpoint(run / "train" / "checkpoint.pt").model()
        self.images = load_dataset(data, data_dir).test.images  # (N, C, H, W) uint8
        self.x = self.images.reshape(len(self.images), *self.executor.input_shape)
        out, trace = self.executor.run(self.x, return_layers=True)
        self.predictions = out[:, 0].astype(np.int64)
        self.last = [i for i, t in enumerate(trace) if t.kind == "MVAU"][-1]
        self.last_values = trace[self.last].output.astype(np.int64)  # the last MVAU's integers


def bench_rows(d: Design, args) -> list[dict]:
    rows = [row_finn_single(d, args), row_finn_batched(d, args), row_executor_single(d, args),
            row_executor(d, args), row_executor(d, args, blas_threads=True), row_pytorch(d, args),
            row_pytorch(d, args, threads=1)]
    return rows


def row(name: str, what: str, images: int, seconds: list[float]) -> dict:
    median = statistics.median(seconds)
    return {"name": name, "what": what, "images": images, "repeats": len(seconds),
            "median_s": round(median, 6), "min_s": round(min(seconds), 6),
            "images_per_s": round(images / median, 1)}


def row_finn_single(d: Design, args) -> dict:
    import qonnx.core.onnx_exec as oxe

    n = min(args.finn_images, len(d.x))
    iname, oname = d.generic.graph.input[0].name, d.generic.graph.output[0].name
    shape = d.generic.get_tensor_shape(iname)

    def run():
        return np.array([oxe.execute_onnx(d.generic, {iname: d.x[i].astype(np.float32).reshape(shape)})[oname]
                         .reshape(-1)[0] for i in range(n)]).astype(np.int64)

    seconds = timed(run, lambda out: require_equal("FINN execute_onnx (one image)", out, d.predictions[:n]),
                    args.finn_repeats)
    return row("finn-single", "FINN execute_onnx, one image at a time (batch-1 graph)", n, seconds)


def row_finn_batched(d: Design, args) -> dict:
    from flows.execute import run_graph

    def check(out):
        require_equal("FINN batched execution (predictions)", out.predictions, d.predictions)
        require_equal("FINN batched execution (last layer)", _finn_last_as_executor(d, out.last_layer), d.last_values)

    seconds = timed(lambda: run_graph(d.model, d.x), check, args.finn_repeats)
    return row("finn-batched", "FINN execution of a batched graph copy (flows.execute.run_graph)", len(d.x), seconds)


def _finn_last_as_executor(d: Design, last_layer: np.ndarray) -> np.ndarray:
    """run_graph reports an XNOR layer as the dot product 2 * popcount - MW; the executor as the popcount."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(d.model.graph.node[d.last])
    values = np.round(last_layer).astype(np.int64)
    return (values + inst.get_nodeattr("MW")) // 2 if inst.get_nodeattr("binaryXnorMode") else values


def row_executor_single(d: Design, args) -> dict:
    n = min(args.finn_images, len(d.x))

    def run():
        return np.concatenate([d.executor.run(d.x[i:i + 1]) for i in range(n)])[:, 0]

    seconds = timed(run, lambda out: require_equal("executor (one image)", out, d.predictions[:n]), args.repeats)
    return row("executor-single", "host.executor, one image at a time", n, seconds)


def row_executor(d: Design, args, blas_threads: bool = False) -> dict:
    from host.executor import Executor

    ex = Executor(d.executor.meta, d.arrays, blas_threads=blas_threads)
    seconds = timed(lambda: ex.run(d.x)[:, 0],
                    lambda out: require_equal("executor", out, d.predictions), args.repeats, warmup=2)
    if blas_threads:
        return row("executor-blas-threads", "host.executor, one batch, BLAS thread pool for large products",
                   len(d.x), seconds)
    return row("executor", "host.executor, the whole split as one batch (single-thread BLAS blocks)",
               len(d.x), seconds)


def row_pytorch(d: Design, args, threads: int | None = None) -> dict:
    """The Brevitas model's batched forward, with torch's default threads or ``threads``."""
    import torch

    from qat.train import as_tensor

    x = as_tensor(d.images)
    default = torch.get_num_threads()

    def run():
        with torch.no_grad():
            return d.torch_model(x).argmax(1).numpy()

    torch.set_num_threads(threads or default)
    try:
        seconds = timed(run, lambda out: require_equal("PyTorch (Brevitas) forward", out, d.predictions),
                        args.repeats, warmup=2)
    finally:
        torch.set_num_threads(default)
    name = "pytorch" if threads is None else f"pytorch-{threads}thread"
    count = threads or default
    return row(name, f"Brevitas model, batched forward on the CPU ({count} thread{'s' * (count > 1)})", len(d.x),
               seconds)


def layer_profile(d: Design, repeats: int) -> list[dict]:
    """Median wall time of each executor layer over ``repeats`` batched runs."""
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        _, trace = d.executor.run(d.x, return_layers=True)
        for t in trace:
            times.setdefault(t.name, []).append(t.seconds)
    kinds = {layer.name: layer.kind for layer in d.executor.layers}
    return [{"name": name, "kind": kinds[name], "median_ms": round(1e3 * statistics.median(s), 3)}
            for name, s in times.items()]


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
            "torch": torch.__version__, "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}


def ratios(rows: list[dict]) -> dict:
    rate = {r["name"]: r["images_per_s"] for r in rows}
    pytorch = max(rate["pytorch"], rate["pytorch-1thread"])  # the faster of the two
    return {"executor/finn-single": round(rate["executor"] / rate["finn-single"], 1),
            "executor/finn-batched": round(rate["executor"] / rate["finn-batched"], 1),
            "executor/pytorch (faster row)": round(rate["executor"] / pytorch, 2),
            "executor-single/finn-single": round(rate["executor-single"] / rate["finn-single"], 1)}


def write_results(out: Path, key: str, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "executor.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = result
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (out / "executor.md").write_text(markdown(results))


def markdown(results: dict) -> str:
    from host.results import markdown_table

    lines = ["# Numpy executor against FINN and PyTorch", "",
             "Written by `bench/bench_executor.py`. Medians of repeated runs after a warm-up; every run's "
             "outputs checked equal to the executor's. Shared, noisy machine: see the load average.", ""]
    for key, r in sorted(results.items()):
        m = r["machine"]
        lines += [f"## {key}", "",
                  f"{r['images']} {r['data']} test images; {m['cpus']} CPUs ({m['processor']}), "
                  f"load average at start {m['load_average_at_start']}; Python {m['python']}, "
                  f"numpy {m['numpy']}, torch {m['torch']}.", ""]
        lines += markdown_table(["row", "what", "images", "median ms", "images/s"], [
            [row["name"], row["what"], row["images"], f"{1e3 * row['median_s']:.4g}", f"{row['images_per_s']:,.0f}"]
            for row in r["rows"]], align="llrrr")
        lines += ["", "Ratios: " + ", ".join(f"{k} = {v}x" for k, v in r["ratios"].items()), "",
                  "Executor layers (median ms for the whole batch): "
                  + ", ".join(f"{layer['name']} {layer['median_ms']}" for layer in r["layers"]), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.data != "digits" and args.data_dir is None:
        sys.exit(f"--data {args.data} needs --data-dir DIR")
    run = ensure_build(args)
    at_start = machine()
    d = Design(run, args.data, args.data_dir)
    rows = bench_rows(d, args)
    result = {"model": args.model, "data": args.data, "images": len(d.x), "run_dir": str(run),
              "machine": at_start, "rows": rows, "ratios": ratios(rows),
              "layers": layer_profile(d, args.repeats),
              "checked": "every timed run's predictions equal the executor's; FINN batched also the last "
                         "MVAU's integers"}
    write_results(args.out, f"{args.model}_{args.data}", result)
    for r in rows:
        print(f"{r['name']:22s} {r['images']:6d} images  {1e3 * r['median_s']:10.4g} ms  "
              f"{r['images_per_s']:12,.0f} images/s")
    print("ratios:", result["ratios"])


if __name__ == "__main__":
    main()
