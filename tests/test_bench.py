"""``flows bench``: targets built from one model, checked before timed, and its outputs."""
import itertools
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from flows import baselines, bench
from flows.baselines import TARGETS, export_onnx, float_model, to_model_layout
from flows.errors import ConfigError
from host import executor, timing
from host.deploy import load_package
from host.timing import BenchConfig, Target, run_benchmark
from qat.models import build_model, parse_model_name
from qat.train import load_checkpoint
from tests.deploy_fixture import small_build

FAST = dict(batches=(1, 8), repeats=2)
GPU_TARGETS = ("gpu-torch-fp32", "gpu-torch-fp16")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return small_build(tmp_path_factory)


def shifted(package, wrong: int) -> Target:
    """A target that gets the first ``wrong`` images wrong (expected + 1)."""
    index = {x.tobytes(): i for i, x in enumerate(package.inputs)}

    def run(images):
        return np.array([package.expected[index[x.tobytes()]] + (index[x.tobytes()] < wrong) for x in images])

    return run


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    package = load_package(run_dir / "deploy")
    wrong = Target("wrong-answers", "measured on a test double", shifted(package, 3))
    out = tmp_path_factory.mktemp("bench")
    return bench.run(run_dir / "deploy", out=out, extra_targets=[wrong], **FAST)


def by_name(report) -> dict:
    return {r["name"]: r for r in report["results"]}


def test_at_least_four_targets_have_numbers(report):
    ok = [r for r in report["results"] if r["status"] == "ok"]
    assert {"cpu-torch-float", "cpu-brevitas", "cpu-onnxruntime", "numpy-executor", "fpga-sim"} <= {r["name"] for r in ok}
    for r in ok:
        assert r["accuracy"]["mismatches"] == 0 and r["accuracy"]["images"] == 450
        assert 0 < r["latency_s"]["p50"] <= r["latency_s"]["p99"]
        assert [t["batch"] for t in r["throughput"]] == [1, 8] and r["best_images_per_second"] > 0
    accuracies = {r["accuracy"]["accuracy"] for r in ok}
    assert len(accuracies) == 1  # every target computes the same predictions


def test_wrong_answers_fail_with_the_count_and_no_time(report):
    r = by_name(report)["wrong-answers"]
    assert r["status"] == "failed" and r["accuracy"]["mismatches"] == 3 and "3 of 450" in r["reason"]
    assert not {"latency_s", "throughput", "best_images_per_second"} & set(r)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_gpu_targets_skip_with_the_reason(report):
    for name in GPU_TARGETS:
        r = by_name(report)[name]
        assert r["status"] == "skipped" and "CUDA is not available" in r["reason"]


def test_fpga_is_modelled_off_board(report):
    results = by_name(report)
    assert results["fpga"]["status"] == "skipped" and "pynq" in results["fpga"]["reason"]
    sim = results["fpga-sim"]
    assert sim["label"] == "modelled" and sim["layers"][0]["name"] == "DMA in"
    assert sim["latency_s"]["p50"] == sim["latency_s"]["p99"]  # the model, not a clock


def test_per_layer_times_where_the_target_gives_them(report):
    results = by_name(report)
    for name in ("numpy-executor", "cpu-brevitas", "cpu-torch-float", "fpga-sim"):
        layers = results[name]["layers"]
        assert layers and all(layer["seconds_per_image"] >= 0 for layer in layers)
    assert "QuantLinear" in " ".join(layer["name"] for layer in results["cpu-brevitas"]["layers"])


COLD, TIMED = (40, 20), (1, 4, 3, 5, 2)  # fake cost of each run of a profile series: slow warm-ups, then timed
MEDIAN, MINIMUM = 3, 1  # of TIMED
PROFILE = BenchConfig(batches=(1,), repeats=len(TIMED), warmup=len(COLD), layer_batch=64)
TICK = 2.0 ** -20  # the fake clock's unit, about a microsecond: a power of two keeps every sum and division exact


class FakeClock:
    """``time.perf_counter`` standing still except while a `charging` layer runs.

    A layer of weight w advances it by w ticks a call, and by ``w * (COLD + TIMED)[k]`` ticks on its
    k-th call at the profile's batch size (no other measurement uses it), round and round: `layer_profile` times two series
    (the per-layer runs, then the whole runs) of ``warmup + repeats`` calls each."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def charging(self, weight: int, fn: Callable) -> Callable:
        """``fn(x, ...)``, advancing the clock by its cost at the batch size ``len(x)``."""
        costs, profile_calls = COLD + TIMED, itertools.count()

        def call(x, *args, **kwargs):
            cost = costs[next(profile_calls) % len(costs)] if len(x) == PROFILE.layer_batch else 1
            self.now += weight * cost * TICK
            return fn(x, *args, **kwargs)

        return call


class ChargedLayer:
    """An executor layer (its name and kind) whose call is ``call``."""

    def __init__(self, layer, call: Callable) -> None:
        self.layer, self.call = layer, call

    def __getattr__(self, name: str):
        return getattr(self.layer, name)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.call(x)


@pytest.fixture
def fake_clock(monkeypatch) -> FakeClock:
    """One FakeClock for every clock the benchmark reads: the harness (host.timing) and the
    per-layer timers of the executor (host.executor) and of torch models (flows.baselines),
    each of which calls ``time.perf_counter``."""
    clock = FakeClock()
    for module in (timing, executor, baselines):
        monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    return clock


def test_layer_times_add_up_to_the_whole_run(run_dir, fake_clock):
    """Per-layer times are measured as whole runs are (warm-up, then the per-layer median and minimum of
    ``repeats`` runs), so a sequential target's layers add up to its whole run. The clock moves only
    while a layer runs (layer i of a target costs i ticks a call, times the run's cost), so the figures
    are exact: the warm-ups left out, medians and minima per layer, stages in order, and the whole run
    (its input conversion and argmax free here) equal to the layers' sum."""
    package = load_package(run_dir / "deploy")
    ex = executor.load(run_dir / "deploy" / "executor")
    ex.layers = [ChargedLayer(layer, fake_clock.charging(i, layer)) for i, layer in enumerate(ex.layers, 1)]
    ckpt = load_checkpoint(run_dir / "train" / "checkpoint.pt")
    model = float_model(ckpt.model())
    leaves = [m for m in model.modules() if not any(m.children())]
    for i, m in enumerate(leaves, 1):
        m.forward = fake_clock.charging(i, m.forward)
    targets = [timing.executor_target("numpy-executor", ex, "measured here"),
               baselines.torch_target("cpu-torch-float", model, ckpt.data.image_shape, "cpu", "measured here")]
    layer_counts = {"numpy-executor": len(ex.layers), "cpu-torch-float": len(leaves)}
    n = PROFILE.layer_batch
    for r in run_benchmark(targets, package, PROFILE):
        assert r["status"] == "ok" and r["layers_combine"] == "sum", r
        assert r["layers_batch"] == n and r["layers_runs"] == PROFILE.repeats
        weights = range(1, layer_counts[r["name"]] + 1)
        assert [l["seconds_per_image"] for l in r["layers"]] == [i * MEDIAN * TICK / n for i in weights]
        assert [l["min_seconds_per_image"] for l in r["layers"]] == [i * MINIMUM * TICK / n for i in weights]
        whole = sum(weights) * TICK / n
        assert r["layers_sum_seconds_per_image"] == r["whole_run_seconds_per_image"] == MEDIAN * whole
        assert r["layers_sum_min_seconds_per_image"] == r["whole_run_min_seconds_per_image"] == MINIMUM * whole
        stages = [l["stage"] for l in r["layers"]]
        assert stages == sorted(stages) and stages[-1] == 4  # TFC: four matrix layers


def test_modelled_pipeline_layers_are_not_summed(report):
    sim = by_name(report)["fpga-sim"]
    slowest = max(l["seconds_per_image"] for l in sim["layers"])
    assert sim["layers_combine"] == "slowest" and sim["whole_run_seconds_per_image"] >= slowest


def test_outputs_are_written(report):
    paths = report["paths"]
    for key in ("json", "markdown", "latency_vs_batch", "layers", "accuracy_vs_throughput"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    data = json.loads(paths["json"].read_text())
    assert data["environment"]["cores"] >= 1 and data["environment"]["packages"]["numpy"]
    assert [t["name"] for t in data["targets"]][:len(TARGETS)] == list(TARGETS)
    md = paths["markdown"].read_text()
    assert "| fpga-sim | modelled |" in md and "measured on" in md and "failed: 3 of 450" in md


def test_approximate_target_is_timed_with_its_agreement(run_dir):
    package = load_package(run_dir / "deploy")
    cfg = BenchConfig(batches=(4,), repeats=1, warmup=0)
    close = Target("fp16-like", "measured here", shifted(package, 1), approximate=True)
    far = Target("fp16-far", "measured here", shifted(package, 40), approximate=True)
    ok, failed = run_benchmark([close, far], package, cfg)
    assert ok["status"] == "ok" and ok["accuracy"]["agree"] == 449 and ok["latency_s"]["samples"] == 5
    assert failed["status"] == "failed" and "latency_s" not in failed


def test_answers_that_go_wrong_while_timed_fail_the_target(run_dir):
    package = load_package(run_dir / "deploy")
    right, calls = shifted(package, 0), []

    def degrading(images):  # right for the accuracy pass (two chunks), wrong afterwards
        calls.append(len(images))
        return right(images) + (len(calls) > 2)

    (r,) = run_benchmark([Target("degrading", "measured here", degrading)], package, BenchConfig((4,), 1, 0))
    assert r["status"] == "failed" and "timed runs" in r["reason"] and "throughput" not in r


def test_a_crashing_target_is_reported_and_the_others_still_run(run_dir):
    package = load_package(run_dir / "deploy")

    def crash(images):
        raise RuntimeError("device lost")

    good = Target("echo", "measured here", shifted(package, 0))
    results = run_benchmark([Target("crash", "measured here", crash), good], package, BenchConfig((1,), 1, 0))
    assert results[0]["status"] == "error" and "device lost" in results[0]["reason"]
    assert results[1]["status"] == "ok"


def untrained(model: str, image_shape=(1, 8, 8), pixel_max: int = 16):
    """A zoo model with random weights; BatchNorm means moved off zero, where binary
    activations of a 64-wide layer would sit exactly on the sign's threshold."""
    torch.manual_seed(0)
    m = build_model(parse_model_name(model), image_shape, 10, pixel_max).eval()
    with torch.no_grad():
        for bn in (l for l in m.modules() if isinstance(l, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))):
            bn.running_mean.uniform_(-2, 2).add_(0.5)
    return m


@pytest.mark.parametrize("model, shape, n", [("tfc-w1a1", (1, 8, 8), 256), ("tfc-w2a2", (1, 8, 8), 256),
                                             ("tfc-w4a4", (1, 8, 8), 256), ("cnv-w1a1", (3, 32, 32), 8),
                                             ("cnv-w2a2", (3, 32, 32), 8)],
                         ids=["tfc-w1a1", "tfc-w2a2", "tfc-w4a4", "cnv-w1a1", "cnv-w2a2"])
def test_float_model_predicts_what_brevitas_predicts(model, shape, n):
    pixel_max = 16 if shape[0] == 1 else 255
    m = untrained(model, shape, pixel_max)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, pixel_max + 1, (n, *shape)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(float_model(m)(x), m(x))


def test_onnx_export_uses_qcdq_unless_binary(tmp_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    for model, how in (("tfc-w2a2", "QCDQ"), ("tfc-w1a1", "float-equivalent")):
        spec, m = parse_model_name(model), untrained(model)
        ckpt = types.SimpleNamespace(spec=spec, data=types.SimpleNamespace(image_shape=(1, 8, 8)),
                                     model=lambda m=m: m)
        path, note = export_onnx(ckpt, tmp_path / f"{model}.onnx")
        assert how in note
        x = np.random.default_rng(1).integers(0, 17, (64, 1, 8, 8)).astype(np.float32)
        y = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        with torch.no_grad():
            assert np.array_equal(y.argmax(1), m(torch.from_numpy(x)).argmax(1).numpy())


def test_package_layouts_become_nchw():
    nchw = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert np.array_equal(to_model_layout(nchw.transpose(0, 2, 3, 1), (3, 4, 5)), nchw)  # a CNN's NHWC
    assert np.array_equal(to_model_layout(nchw.reshape(2, -1), (3, 4, 5)), nchw)  # an MLP's flat input


def test_batch_and_target_lists_are_checked():
    assert bench.parse_batches("16, 1,16") == (1, 16)
    for bad in ("1,x", "0"):
        with pytest.raises(ConfigError, match="--batch"):
            bench.parse_batches(bad)
    with pytest.raises(ConfigError, match="unknown target.*tpu"):
        bench.parse_targets("numpy-executor,tpu")


def flows_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_prints_the_table(run_dir, tmp_path):
    res = flows_cli("bench", run_dir / "deploy", "--targets", "numpy-executor,fpga-sim,gpu-torch-fp16",
                    "--batch", "1,4", "--repeats", "2", "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    assert "numpy-executor" in res.stdout and "modelled" in res.stdout and (tmp_path / "bench.md").is_file()


def test_cli_errors_are_one_line(run_dir, tmp_path):
    res = flows_cli("bench", run_dir / "deploy", "--targets", "tpu")
    assert res.returncode == 2 and res.stderr.strip().startswith("error: ") and "unknown target 'tpu'" in res.stderr
    bad = tmp_path / "deploy"
    bad.mkdir()
    (bad / "deploy.json").write_text(json.dumps({"format": "qnn-flows-deploy/0"}))
    res = flows_cli("bench", bad)
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 9 and len(errors) == 1 and "format" in errors[0] and "Traceback" not in res.stderr


def test_a_new_target_is_one_registered_function(run_dir, monkeypatch):
    """A target added with @target is accepted by name, built from the package, listed by describe(),
    and skipped with the reason when it needs a checkpoint and there is none; a name is registered once."""
    from flows import baselines

    monkeypatch.setattr(baselines, "TARGETS", dict(baselines.TARGETS))
    package = load_package(run_dir / "deploy")

    @baselines.target("cpu-first-label")
    def first_label(name, ctx):
        """always the first expected label"""
        return Target(name, ctx.machine, lambda images: np.full(len(images), ctx.package.expected[0]))

    @baselines.target("needs-a-model", needs_checkpoint=True)
    def needs_model(name, ctx):
        """never built without a checkpoint"""
        raise AssertionError("built without a checkpoint")

    built = baselines.make_targets(["cpu-first-label", "needs-a-model"], package, None, "measured here")
    assert [t.name for t in built] == ["cpu-first-label", "needs-a-model"]
    assert built[0].run(package.inputs[:3]).tolist() == [package.expected[0]] * 3 and built[0].label == "measured here"
    assert built[1].skip and "no checkpoint" in built[1].skip
    assert "cpu-first-label: always the first expected label" in baselines.describe()
    with pytest.raises(ConfigError, match="registered twice"):
        baselines.target("cpu-first-label")(first_label)
    with pytest.raises(ConfigError, match="unknown target"):
        baselines.check_names(["cpu-first-labels"])
