"""Fuzz the flow's equivalence with seeded random quantised networks.

Each network is a Brevitas module built from a random ``NetSpec`` (MLPs with awkward widths,
small CNNs with conv -> (act) -> maxpool -> flatten -> linear heads, per-layer bits 1..8,
with and without BatchNorm), exported to QONNX and built by the flow's Python API
(``flows.build.run_build``) through ``verify`` on the bundled 8x8 digits (450 test images).
Then three independent executions are compared with the hardware's integers (FINN's
Python execution of the folded dataflow graph, which ``verify`` already compares with
QONNX, FINN's graph and the streamlined graph):
- the Brevitas module itself (predictions and last-layer integers),
- the board-side numpy executor (host/executor.py, via flows/executor_export.py).

Ties by construction: without BatchNorm every scale is a power of two and each hidden
quantiser's scale is 2^k (k >= 1) times its accumulator's, so x / scale = acc / 2^k and
every accumulator that is an odd multiple of 2^(k-1) sits exactly on a .5 tie. The input
quantiser reads p / 16 - 1/2 on a power-of-two grid, so odd pixels sit on ties too.

    python bench/fuzz.py --n 200 --seed 0 --out /tmp/fuzz --results bench/results/fuzz
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

AWKWARD_WIDTHS = (3, 5, 7, 10, 13, 17, 24, 31, 33, 47, 64, 70)
IMAGE = (1, 8, 8)
CLASSES = 10


@dataclass(frozen=True)
class NetSpec:
    """One random network. ``widths``: MLP hidden widths, or CNN (conv channels..., hidden linear widths...).
    ``weight_bits`` one per weight layer, ``act_bits`` one per hidden activation, in order."""

    seed: int
    kind: str  # "mlp" or "cnn"
    widths: tuple[int, ...]
    weight_bits: tuple[int, ...]
    act_bits: tuple[int, ...]
    in_bits: int
    batchnorm: bool
    convs: int = 0  # CNN: number of 3x3 convolutions (the rest of ``widths`` are linear layers)
    act_before_pool: bool = True  # CNN: conv -> act -> maxpool, else conv -> maxpool -> act

    @property
    def name(self) -> str:
        return f"{self.kind}{self.seed:04d}"


def random_spec(seed: int) -> NetSpec:
    """A network drawn from ``seed`` alone: every third a CNN, the rest MLPs."""
    rng = np.random.default_rng(seed)
    bits = lambda n: tuple(int(b) for b in rng.integers(1, 9, size=n))  # noqa: E731
    if seed % 3 == 2:
        convs = int(rng.integers(1, 3))
        linears = int(rng.integers(0, 2))
        widths = tuple(int(rng.choice((2, 3, 4, 6, 8))) for _ in range(convs)) + \
            tuple(int(rng.choice(AWKWARD_WIDTHS)) for _ in range(linears))
        return NetSpec(seed, "cnn", widths, bits(convs + linears + 1), bits(convs + linears), int(rng.integers(1, 9)),
                       bool(rng.integers(0, 2)), convs, bool(rng.integers(0, 4) > 0))
    hidden = int(rng.integers(1, 4))
    return NetSpec(seed, "mlp", tuple(int(rng.choice(AWKWARD_WIDTHS)) for _ in range(hidden)), bits(hidden + 1),
                   bits(hidden), int(rng.integers(1, 9)), bool(rng.integers(0, 2)))


# --- the Brevitas module ------------------------------------------------------------------------

def _int_max(bits: int) -> int:
    return max(1, 2 ** (bits - 1) - 1)


def act_quantiser(bits: int, scale: float):
    """A QuantIdentity with a signed narrow range and exactly ``scale`` (a power of two here)."""
    from brevitas.nn import QuantIdentity

    from qat.quantizers import ActQuant

    top = scale * _int_max(bits)
    return QuantIdentity(act_quant=ActQuant, bit_width=bits, max_val=top, min_val=-top)


def _weight_layer(kind: str, n_in: int, n_out: int, bits: int, scale: float, rng):
    """A QuantLinear/QuantConv2d whose quantised weights are random integers times ``scale``."""
    import torch
    from brevitas.nn import QuantConv2d, QuantLinear

    from qat.quantizers import WeightQuant

    const = scale * _int_max(bits)
    if kind == "conv":
        layer = QuantConv2d(n_in, n_out, 3, bias=False, weight_quant=WeightQuant, weight_bit_width=bits,
                            weight_scaling_const=const)
    else:
        layer = QuantLinear(n_in, n_out, bias=False, weight_quant=WeightQuant, weight_bit_width=bits,
                            weight_scaling_const=const)
    shape = layer.weight.shape
    ints = rng.choice((-1, 1), size=shape) if bits == 1 else rng.integers(-_int_max(bits), _int_max(bits) + 1, size=shape)
    layer.weight.data = torch.tensor(ints * scale, dtype=torch.float32)
    return layer


def build_module(spec: NetSpec, calibration: np.ndarray):
    """The network of ``spec``: raw pixels (N, 1, 8, 8), 0..16 -> logits. Hidden quantiser scales are
    set from ``calibration`` images so that levels are used (powers of two, ties by construction)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(spec.seed + 1_000_003)
    torch.manual_seed(spec.seed)
    net = FuzzNet(spec)
    s_in = 2.0 ** -min(3, math.ceil(math.log2(2 * _int_max(spec.in_bits))))
    net.input_quant = act_quantiser(spec.in_bits, s_in)
    kinds = ["conv"] * spec.convs + ["linear"] * (len(spec.widths) - spec.convs) + ["linear"]
    outs = (*spec.widths, CLASSES)
    channels, side = IMAGE[0], IMAGE[1]
    n_in = int(np.prod(IMAGE))
    x = torch.tensor(calibration, dtype=torch.float32)
    with torch.no_grad():
        h = net.input_quant(net.prescale(x))
        for i, (kind, n_out) in enumerate(zip(kinds, outs)):
            w_scale = 2.0 ** -int(rng.integers(0, 4))
            if kind == "conv":
                layer = _weight_layer("conv", channels, n_out, spec.weight_bits[i], w_scale, rng)
            else:
                if i == spec.convs:
                    h = h.flatten(1)
                    n_in = channels * side * side if spec.convs else n_in
                layer = _weight_layer("linear", n_in, n_out, spec.weight_bits[i], w_scale, rng)
            net.weights.append(layer)
            h = layer(h)
            if i == len(outs) - 1:
                break
            block = nn.ModuleList()
            if spec.batchnorm:
                bn = (nn.BatchNorm2d if kind == "conv" else nn.BatchNorm1d)(n_out)
                bn.eval()
                bn.running_mean.copy_(torch.tensor(rng.normal(0, 1, n_out) * float(h.std()), dtype=torch.float32))
                bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, n_out) * float(h.var() + 1e-6), dtype=torch.float32))
                bn.weight.copy_(torch.tensor(rng.uniform(0.2, 1.5, n_out), dtype=torch.float32))
                bn.bias.copy_(torch.tensor(rng.normal(0, 0.5, n_out), dtype=torch.float32))
                block.append(bn)
                h = bn(h)
            pooled = kind == "conv" and i == spec.convs - 1  # one 2x2 max pool, after the last convolution
            pool_first = pooled and not spec.act_before_pool
            if pool_first:
                block.append(nn.MaxPool2d(2))
                h = block[-1](h)
            spread = float(h.abs().mean()) + 1e-9
            levels = _int_max(spec.act_bits[i])
            if spec.batchnorm:  # float values anyway: a power-of-two scale that uses the levels
                scale = 2.0 ** round(math.log2(spread / levels))
            else:  # 2^k accumulator units per level, k >= 1: odd multiples of 2^(k-1) are exact ties
                acc_scale = _scale_of(net, i)
                scale = acc_scale * 2.0 ** max(1, round(math.log2(max(spread / acc_scale / levels, 1.0))))
            act = act_quantiser(spec.act_bits[i], scale)
            block.append(act)
            h = act(h)
            if pooled and spec.act_before_pool:
                block.append(nn.MaxPool2d(2))
                h = block[-1](h)
            net.blocks.append(block)
            if kind == "conv":
                channels, side = n_out, (side - 2) // (2 if pooled else 1)
            n_in = n_out
    return net.eval()


def _act_of(net, i: int):
    """The activation quantiser feeding weight layer i (the input quantiser for layer 0)."""
    return net.input_quant if i == 0 else next(m for m in net.blocks[i - 1] if hasattr(m, "act_quant"))


def _scale_of(net, i: int) -> float:
    """The float scale of layer i's accumulator: its input quantiser's scale times its weights'."""
    return float(_act_of(net, i).act_quant.scale()) * float(net.weights[i].quant_weight().scale.flatten()[0])


def _make_net_class():
    from torch import nn

    class _FuzzNet(nn.Module):
        """input quantiser -> [weight layer -> (BN) -> act (-> pool)]* -> weight layer -> logits."""

        def __init__(self, spec: NetSpec):
            super().__init__()
            self.spec = spec
            self.input_quant = None
            self.weights = nn.ModuleList()
            self.blocks = nn.ModuleList()

        @staticmethod
        def prescale(x):
            return x * (1.0 / 16) - 0.5

        def forward(self, x):
            h = self.input_quant(self.prescale(x.reshape(x.shape[0], *IMAGE)))
            for i, layer in enumerate(self.weights):
                if i == self.spec.convs:
                    h = h.flatten(1)
                h = layer(h)
                if i < len(self.blocks):
                    for m in self.blocks[i]:
                        h = m(h)
            return h

    return _FuzzNet


def FuzzNet(spec: NetSpec):  # noqa: N802 (a class made on first use: torch loads only when fuzzing)
    return _make_net_class()(spec)


# --- one network through the flow ---------------------------------------------------------------

def torch_outputs(net, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(predictions, last-layer integers, images with a hidden quantiser's input exactly on a .5 tie,
    images with the input quantiser's input on one), read from the Brevitas module itself."""
    import torch

    seen = []
    quants = [m for m in net.modules() if hasattr(m, "act_quant")]
    hooks = [q.register_forward_hook(lambda m, a, o: seen.append((m, a[0]))) for q in quants]
    try:
        with torch.no_grad():
            logits = net(torch.tensor(images, dtype=torch.float32)).double()
    finally:
        for h in hooks:
            h.remove()
    hidden, inputs = np.zeros(len(images), bool), np.zeros(len(images), bool)
    for m, x in seen:
        bits = int(m.act_quant.bit_width())
        if bits == 1:
            continue
        t = (x / m.act_quant.scale()).double().numpy().reshape(len(images), -1)
        on = ((t - np.floor(t) == 0.5) & (np.abs(t) < _int_max(bits) + 0.5)).any(axis=1)
        if m is net.input_quant:
            inputs |= on
        else:
            hidden |= on
    scale = _scale_of(net, len(net.weights) - 1)
    return logits.argmax(1).numpy(), (logits.numpy() / scale), int(hidden.sum()), int(inputs.sum())


def run_one(spec: NetSpec, work: Path, dataset) -> dict:
    """Build ``spec`` through verify and compare model, FINN's execution and the executor."""
    from flows.build import run_build
    from flows.config import BuildConfig
    from flows.errors import ConfigError, ModelError, VerificationError
    from qat.export import export_qonnx

    result = {"name": spec.name, "spec": asdict(spec)}
    start = time.perf_counter()
    try:
        net = build_module(spec, dataset.train.images[:256])
        work.mkdir(parents=True, exist_ok=True)
        onnx_path = work / f"{spec.name}.onnx"
        export_qonnx(net, IMAGE, onnx_path)
        run_dir = work / spec.name
        try:
            run_build(BuildConfig(onnx=onnx_path, data="digits", out=run_dir, to_step="verify"))
        except VerificationError:
            pass  # verify.json says what differed; counted below
        except (ConfigError, ModelError) as exc:
            result.update(status="refused", error=str(exc))
            return result
        report = json.loads((run_dir / "verify" / "verify.json").read_text())
        result.update(_compare(net, run_dir, dataset, report))
    except Exception as exc:  # a crash is a finding: record it and go on
        result.update(status="crashed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc(limit=-4))
    finally:
        result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _compare(net, run_dir: Path, dataset, report: dict) -> dict:
    from qonnx.core.modelwrapper import ModelWrapper

    from flows.execute import to_graph_input
    from flows.executor_export import export_executor
    from host.executor import Executor

    images = dataset.test.images
    outputs = np.load(run_dir / "verify" / "outputs.npz")
    hw_pred, hw_last = outputs["dataflow_predictions"], np.round(outputs["dataflow_last_layer"])
    pred, last, tied, input_ties = torch_outputs(net, images)
    model_diff = (pred != hw_pred) & (hw_last[np.arange(len(pred)), pred] != hw_last[np.arange(len(pred)), hw_pred])
    model_diff |= np.abs(last - hw_last).max(axis=1) > 1e-6 * np.abs(hw_last).max(initial=1.0)
    fold = ModelWrapper(str(run_dir / "fold" / "model.onnx"))
    export_executor(fold, run_dir / "executor")
    ex = Executor.load(run_dir / "executor").run(to_graph_input(fold, images).astype(np.int64))
    ex_pred = ex.reshape(len(images), -1)[:, 0] if ex.reshape(len(images), -1).shape[1] == 1 else ex.argmax(1)
    excused = sum(s.get("at_rounding_boundary", 0) for s in report["stages"].values())
    cases = [c for s in report["stages"].values() for c in s.get("differing_images", [])]
    # the module computes in float32 as QONNX does: where verify excused QONNX's image as float noise at a
    # boundary (never an exact tie), the module may differ on it too; anywhere else a difference fails
    noise = {c["image"] for c in report["stages"]["qonnx"].get("differing_images", [])
             if c["excused"] and not c.get("exact_ties")}
    model_excused = np.zeros(len(images), bool)
    model_excused[sorted(noise)] = True
    model_excused &= model_diff
    model_diff &= ~model_excused
    ties = report["stages"]["qonnx"].get("ties", {})
    ok = report["passed"] and not model_diff.any() and np.array_equal(ex_pred, hw_pred)
    return {"status": "passed" if ok else "failed", "verify_passed": report["passed"],
            "verify_summary": report["summary"], "model_differs": int(model_diff.sum()),
            "executor_differs": int((ex_pred != hw_pred).sum()), "images": int(len(images)),
            "images_on_tie": tied, "images_on_input_tie": input_ties,
            "qonnx_images_on_hidden_tie": ties.get("images_on_hidden_tie", 0),
            "tie_values": ties.get("values", 0), "ties_resolved_as_hardware": ties.get("resolved_as_hardware", 0),
            "ties_resolved_otherwise": ties.get("resolved_otherwise", 0),
            "excused_float": int(excused), "model_excused_float": int(model_excused.sum()),
            "excused_ties": sum(bool(c.get("exact_ties")) and c["excused"] for c in cases)}


def summarise(results: list[dict]) -> dict:
    count = lambda status: sum(r["status"] == status for r in results)  # noqa: E731
    built = [r for r in results if r["status"] in ("passed", "failed")]
    return {"networks": len(results), "passed": count("passed"), "failed": count("failed"),
            "crashed": count("crashed"), "refused": count("refused"),
            "mlp": sum(r["spec"]["kind"] == "mlp" for r in results), "cnn": sum(r["spec"]["kind"] == "cnn" for r in results),
            "with_batchnorm": sum(r["spec"]["batchnorm"] for r in results),
            "images_on_tie": sum(r["images_on_tie"] for r in built),
            "networks_with_ties": sum(r["images_on_tie"] > 0 for r in built),
            "images_on_input_tie": sum(r["images_on_input_tie"] for r in built),
            "tie_values": sum(r["tie_values"] for r in built),
            "ties_resolved_as_hardware": sum(r["ties_resolved_as_hardware"] for r in built),
            "ties_resolved_otherwise": sum(r["ties_resolved_otherwise"] for r in built),
            "excused_float": sum(r["excused_float"] for r in built),
            "model_excused_float": sum(r["model_excused_float"] for r in built),
            "excused_ties": sum(r["excused_ties"] for r in built),
            "model_differs": sum(r["model_differs"] for r in built),
            "executor_differs": sum(r["executor_differs"] for r in built)}


def write_results(results: list[dict], args, stem: Path, seconds: float) -> dict:
    from host.results import markdown_table

    summary = summarise(results)
    meta = {"kind": "simulated", "command": args.command or " ".join(["python", "bench/fuzz.py", *sys.argv[1:]]),
            "commit": getattr(args, "commit", None) or _commit(),
            "dataset": "digits (bundled 8x8, 450 test images per network)", "host": platform.node(),
            "threads": 1, "seconds": round(seconds, 1), "summary": summary, "networks": results}
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str))
    lines = [f"# Fuzz: {summary['networks']} random quantised networks through verify",
             "", f"Command: `{meta['command']}` (commit {meta['commit']}; {meta['seconds']:.0f} s of wall time summed "
             "over the runs, 1 thread each, on 2 shared cores; simulated: FINN's Python execution, the numpy "
             "executor and the Brevitas model on the bundled digits test split, 8x8, 450 images per network).",
             "", "Excused images are float noise only: a value within 1e-3 of a step of a rounding boundary and "
             "never on it (BatchNorm networks); an exact .5 tie is never excused.", ""]
    lines += markdown_table(["networks", "MLP", "CNN", "with BN", "passed", "failed", "crashed", "refused"],
                            [[summary[k] for k in ("networks", "mlp", "cnn", "with_batchnorm", "passed", "failed",
                                                   "crashed", "refused")]]) + [""]
    lines += markdown_table(
        ["images with a hidden value on an exact .5 tie (model)", "networks with such images", "tied values (QONNX)",
         "resolved as the hardware", "resolved otherwise", "images with an input tie",
         "excused: float noise (verify; Brevitas)", "excused: exact ties", "model differs", "executor differs"],
        [[summary["images_on_tie"], summary["networks_with_ties"], summary["tie_values"],
          summary["ties_resolved_as_hardware"], summary["ties_resolved_otherwise"], summary["images_on_input_tie"],
          f"{summary['excused_float']}; {summary['model_excused_float']}", summary["excused_ties"],
          summary["model_differs"], summary["executor_differs"]]]) + [""]
    rerun = [r for r in results if r.get("replaces")]
    if rerun:
        lines += [f"Rerun after a fix (commit {rerun[0]['commit']}; the rest at {meta['commit']}): " + ", ".join(
            f"{r['name']} ({r['replaces']['status']} at {r['replaces']['commit']}: {(r['replaces']['error'] or '')[:90]}"
            f" -> {r['status']})" for r in rerun), ""]
    bad = [r for r in results if r["status"] != "passed"]
    if bad:
        lines += markdown_table(["network", "status", "what"], [
            [r["name"], r["status"], (r.get("error") or r.get("verify_summary", ""))[:200]] for r in bad])
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return summary


def _commit() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    return done.stdout.strip() or "unknown"


def merge(parts: list[Path], stem: Path, command: str) -> dict:
    """One summary from several runs' JSON files (seed ranges run in parallel). A network in a later
    file replaces the same network of an earlier one (a rerun after a fix); each keeps its commit."""
    by_name, commits, seconds = {}, [], 0.0
    for part in parts:
        path, _, commit = str(part).partition("@")  # PATH@COMMIT: the commit the run's code was at
        run = json.loads(Path(path).read_text())
        commits.append(commit or run.get("commit"))
        seconds += run["seconds"]
        for r in run["networks"]:
            r = {**r, "commit": commits[-1]}
            if r["name"] in by_name:
                r["replaces"] = {k: by_name[r["name"]].get(k) for k in ("status", "error", "commit")}
            by_name[r["name"]] = r
    results = sorted(by_name.values(), key=lambda r: r["spec"]["seed"])
    return write_results(results, argparse.Namespace(command=command, commit=commits[0]), stem, seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="networks")
    parser.add_argument("--seed", type=int, default=0, help="first network seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="exactly these seeds (instead of --n/--seed)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fuzz"), help="scratch build folders")
    parser.add_argument("--results", type=Path, default=None, help="write STEM.json and STEM.md")
    parser.add_argument("--keep", action="store_true", help="keep each network's build folder")
    parser.add_argument("--merge", nargs="+", help="merge these result JSONs (PATH or PATH@COMMIT) into --results")
    parser.add_argument("--command", default=None, help="the command line to record (with --merge)")
    args = parser.parse_args(argv)
    if args.merge:
        print(json.dumps(merge(args.merge, args.results, args.command or "")))
        return 0
    import torch

    from qat.data import load_dataset

    torch.set_num_threads(1)
    dataset = load_dataset("digits")
    args.out.mkdir(parents=True, exist_ok=True)
    results, start = [], time.perf_counter()
    for seed in args.seeds or range(args.seed, args.seed + args.n):
        r = run_one(random_spec(seed), args.out, dataset)
        results.append(r)
        print(f"{r['name']}: {r['status']} ({r['seconds']} s, images on a hidden tie {r.get('images_on_tie', '-')}, "
              f"tied values {r.get('tie_values', '-')}, resolved otherwise {r.get('ties_resolved_otherwise', '-')}) "
              f"{r.get('error', '')[:160]}", flush=True)
        if not args.keep and r["status"] == "passed":
            shutil.rmtree(args.out / r["name"], ignore_errors=True)
        if args.results:
            write_results(results, args, args.results, time.perf_counter() - start)
    summary = summarise(results)
    print(json.dumps(summary))
    return 0 if summary["failed"] == summary["crashed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
