"""`flows build` end to end on the bundled digits, and what it does with bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.build import run_build
from flows.config import BuildConfig

PRECISIONS = ["tfc-w1a1", "tfc-w1a2", "tfc-w2a2", "tfc-w4a4"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build each precision once (default training), on demand."""
    runs = {}

    def get(model: str) -> Path:
        if model not in runs:
            out = tmp_path_factory.mktemp(model) / "run"
            run_build(BuildConfig(model=model, out=out))
            runs[model] = out
        return runs[model]

    return get


def flows_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def one_error_line(stderr: str) -> str:
    """The single 'error:' line of a failed command (progress lines may precede it)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert stderr.strip().endswith(errors[0])
    return errors[0]


def report(run: Path, step: str) -> dict:
    return json.loads((run / step / "report.json").read_text())


@pytest.mark.parametrize("model", PRECISIONS, ids=[m.split("-")[1] for m in PRECISIONS])
def test_build_verifies_bit_exactly_on_full_digits_test_split(built, model):
    v = report(built(model), "verify")
    assert v["passed"] and v["images"] == 450 and v["dataset"] == "digits"
    assert list(v["stages"]) == ["pytorch", "qonnx", "finn", "streamlined", "dataflow"]
    for stage in v["stages"].values():
        assert stage["prediction_mismatches"] == 0 and stage["last_layer_mismatches"] == 0
        assert stage["accuracy"] == v["stages"]["pytorch"]["accuracy"] > 0.8


@pytest.mark.parametrize("model", PRECISIONS, ids=[m.split("-")[1] for m in PRECISIONS])
def test_estimates_fit_the_board_and_name_the_bound(built, model):
    e = report(built(model), "estimate")
    assert e["kind"] == "estimated" and e["fits"] and e["board"] == "pynq-z2"
    assert e["in_bytes"] == 64 and e["io_in_cycles"] == 8  # 64 UINT8 pixels over a 64-bit port
    compute = e["compute_cycles"] + e["layer_depth_cycles"]  # the slowest layer's real interval
    assert e["cycles_per_image"] == pytest.approx(max(compute, e["dma_in_cycles"], e["dma_out_cycles"]))
    assert e["dma_in_cycles"] == pytest.approx(e["io_in_cycles"] / e["dma_efficiency"])
    assert e["fps"] == pytest.approx(100e6 / e["cycles_per_image"])
    assert e["binding"].startswith("I/O") == (compute <= e["dma_in_cycles"])
    assert e["ii_why"].startswith("II = ") and e["latency_why"].startswith("batch-1 fabric latency")
    assert {l["op_type"] for l in e["layers"]} >= {"MVAU_hls", "LabelSelect_hls"}
    assert all(e["total"][r] <= e["capacity"][r] for r in ("LUT", "BRAM_18K", "DSP"))


def test_package_holds_what_the_board_needs(built):
    run = built("tfc-w2a2")
    deploy = run / "deploy"
    assert {p.name for p in deploy.iterdir()} >= {"dataflow.onnx", "io_spec.json", "test_vectors.npz",
                                                  "deploy.json", "report.json", "report.md"}
    meta = json.loads((deploy / "deploy.json").read_text())
    assert meta["bitfile"] is None and meta["board"] == "pynq-z2" and meta["test_vectors"] == 450
    spec = json.loads((deploy / "io_spec.json").read_text())
    assert spec["input"] == {"datatype": "UINT8", "shape": [1, 64], "normal_shape": [1, 64],
                             "folded_shape": spec["input"]["folded_shape"]}
    assert np.prod(spec["input"]["folded_shape"]) == 64 and spec["output"]["datatype"] == "UINT8"
    vectors = np.load(deploy / "test_vectors.npz")
    assert vectors["inputs"].shape == (450, 64) and vectors["inputs"].dtype == np.uint8
    accuracy = (vectors["expected"] == vectors["labels"]).mean()
    assert accuracy == report(run, "verify")["stages"]["dataflow"]["accuracy"]
    assert report(run, "bitfile")["bitfile"] is None and "vivado" in report(run, "bitfile")["reason"]
    assert "Verification" in (deploy / "report.md").read_text()


def test_edited_folding_round_trips_through_resume(built, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(built("tfc-w1a1"), run)
    folding = json.loads((run / "fold" / "folding.json").read_text())
    folding["MVAU_hls_1"].update(PE=1, SIMD=1)
    edited = tmp_path / "folding.json"
    edited.write_text(json.dumps(folding))
    checkpoint = (run / "train" / "checkpoint.pt").read_bytes()
    run_build(BuildConfig(model="tfc-w1a1", out=run, folding=edited, from_step="fold", to_step="estimate"))
    layers = {l["name"]: l for l in report(run, "estimate")["layers"]}
    assert layers["MVAU_hls_1"]["folding"]["PE"] == 1 and layers["MVAU_hls_1"]["cycles"] == 64 * 64
    assert report(run, "estimate")["binding"] == "compute (MVAU_hls_1)"
    assert (run / "train" / "checkpoint.pt").read_bytes() == checkpoint


def test_rebuild_reuses_checkpoint_and_never_overwrites_it(built, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(built("tfc-w1a1"), run)
    before = (run / "train" / "checkpoint.pt").read_bytes()
    run_build(BuildConfig(model="tfc-w1a1", out=run, to_step="train"))
    assert report(run, "train")["source"].startswith("reused")
    assert (run / "train" / "checkpoint.pt").read_bytes() == before


def test_target_fps_that_cannot_fit_fails_with_advice(built, tmp_path):
    from flows.errors import FitError

    run = tmp_path / "run"
    shutil.copytree(built("tfc-w4a4"), run)
    fold_before = (run / "fold" / "model.onnx").read_bytes()
    with pytest.raises(FitError) as err:
        run_build(BuildConfig(model="tfc-w4a4", out=run, target_fps=100e6, from_step="fold", to_step="fold"))
    message = str(err.value)
    assert "does not fit pynq-z2" in message and "MVAU_hls" in message and "--target-fps" in message
    assert (run / "fold" / "model.onnx").read_bytes() == fold_before  # earlier artefacts intact
    fitting = run / "fold.failed" / "folding_that_fits.json"
    assert str(fitting) in message
    run_build(BuildConfig(model="tfc-w4a4", out=run, folding=fitting, from_step="fold", to_step="estimate"))
    assert report(run, "estimate")["fits"]
    run_build(BuildConfig(model="tfc-w4a4", out=run, target_fps=100e6, allow_overflow=True,
                          from_step="fold", to_step="estimate"))
    assert not report(run, "estimate")["fits"]


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("args, code, words", [
    (["--board", "zedboard"], 2, ["unknown board 'zedboard'", "pynq-z2"]),
    (["--model", "tfc-w3a9x"], 2, ["unknown model", "tfc-w1a1"]),
    (["--data", "mnist", "--data-dir", "/nonexistent/mnist"], 3, ["/nonexistent/mnist"]),
    (["--data", "mnist"], 2, ["--data-dir"]),
    (["--from", "nosuchstep"], 2, ["unknown step", "verify"]),
], ids=["board", "model", "dataset-dir", "dataset-no-dir", "step"])
def test_bad_options_give_one_line_and_exit_code(tmp_path, args, code, words):
    result = flows_cli("build", "--out", tmp_path / "run", *args)
    assert result.returncode == code, result.stderr
    line = one_error_line(result.stderr)
    assert all(w in line for w in words), line


def test_debug_shows_the_traceback(tmp_path):
    result = flows_cli("--debug", "build", "--target-fps", "-5", "--out", tmp_path / "run")
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = flows_cli("build", "--out", blocker / "run")
    assert result.returncode == 2 and "cannot write to output directory" in result.stderr


def test_resume_needs_earlier_steps(tmp_path):
    result = flows_cli("build", "--out", tmp_path / "run", "--from", "verify")
    assert result.returncode == 2 and "has not finished" in result.stderr


def test_other_model_in_same_run_dir_is_refused(built, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(built("tfc-w1a1"), run)
    result = flows_cli("build", "--model", "tfc-w2a2", "--out", run)
    assert result.returncode == 2 and "holds another build" in result.stderr


def write_onnx(path: Path, op: str) -> Path:
    """A QONNX-looking graph: Quant -> <op>, to test refusals."""
    from onnx import TensorProto, helper
    from qonnx.util.basic import qonnx_make_model
    import onnx

    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node(op, ["q"], ["y"])]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("s", 1.0), ("z", 0.0), ("b", 8.0))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])], inits)
    onnx.save(qonnx_make_model(graph), str(path))
    return path


@pytest.mark.parametrize("kind, code, words", [
    ("corrupt", 4, ["not a readable ONNX file"]),
    ("plain-onnx", 4, ["no QONNX Quant nodes"]),
    ("unsupported", 4, ["unsupported layer", "Sigmoid"]),
    ("missing", 4, ["not found"]),
])
def test_bad_onnx_files(tmp_path, kind, code, words):
    path = tmp_path / "model.onnx"
    if kind == "corrupt":
        path.write_bytes(b"\x08\x07garbage" * 10)
    elif kind == "plain-onnx":
        from onnx import TensorProto, helper
        import onnx

        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
        onnx.save(helper.make_model(graph), str(path))
    elif kind == "unsupported":
        write_onnx(path, "Sigmoid")
    result = flows_cli("build", "--onnx", path, "--out", tmp_path / "run")
    assert result.returncode == code, result.stderr
    assert all(w in result.stderr for w in words), result.stderr
    assert one_error_line(result.stderr)


def test_bad_onnx_leaves_earlier_steps_intact(tmp_path):
    path = write_onnx(tmp_path / "model.onnx", "Sigmoid")
    run = tmp_path / "run"
    assert flows_cli("build", "--onnx", path, "--out", run).returncode == 4
    assert (run / "export" / "model.onnx").is_file()  # export finished before cleanup refused
    assert (run / "cleanup.failed").is_dir() and not (run / "cleanup").exists()


def test_build_from_checkpoint_uses_its_model(built, tmp_path):
    checkpoint = built("tfc-w2a2") / "train" / "checkpoint.pt"
    run = tmp_path / "run"
    run_build(BuildConfig(checkpoint=checkpoint, out=run, to_step="export"))
    assert report(run, "train")["model"] == "tfc-w2a2"
    assert (run / "train" / "checkpoint.pt").read_bytes() == checkpoint.read_bytes()
    result = flows_cli("build", "--checkpoint", checkpoint, "--model", "tfc-w1a1", "--out", tmp_path / "other")
    assert result.returncode == 2 and "not --model tfc-w1a1" in one_error_line(result.stderr)
