"""Bring your own model: `flows build --onnx` with the model's own data, or none, any input datatype.

The main case is FINN's cybersecurity-tutorial style MLP (examples/mlp600.py): 600 bipolar
inputs, W2A2, 64-64-64, one bipolar output, no input quantiser, trained here on data made
by a rule. Smaller hand-made QONNX graphs (tests/qonnx_graphs.py) cover other datatypes.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.build import run_build
from flows.config import BuildConfig
from flows.errors import ConfigError, DatasetError, ModelError
from qonnx_graphs import mlp


def report(run: Path, step: str, name: str = "report.json") -> dict:
    return json.loads((run / step / name).read_text())


def flows_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def mlp600(tmp_path_factory) -> tuple[Path, Path]:
    """(model.onnx, data.npz): the tutorial-style MLP trained briefly on its rule-made data
    (about 30 s: training and Brevitas' export; the tests using it are marked slow)."""
    import torch

    from examples import mlp600 as example

    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mlp600")
    data = example.make_data(n_train=2000, n_test=300)
    np.savez(out / "data.npz", **data)
    model = example.train(example.build_mlp(), data, epochs=5)
    return example.export_model(model, out / "mlp600.onnx"), out / "data.npz"


@pytest.fixture(scope="module")
def mlp600_run(mlp600, tmp_path_factory) -> Path:
    onnx, data = mlp600
    out = tmp_path_factory.mktemp("run") / "run"
    run_build(BuildConfig(board="pynq-z1", onnx=onnx, data_file=data, out=out))
    return out


@pytest.mark.slow
def test_tutorial_mlp_verifies_on_its_own_data(mlp600_run):
    v = report(mlp600_run, "verify")
    assert v["passed"] and v["images"] == 300 and v["dataset"] == "data.npz"
    assert list(v["stages"]) == ["qonnx", "finn", "streamlined", "dataflow"]  # no PyTorch model in an --onnx
    accuracies = {s["accuracy"] for s in v["stages"].values()}
    assert len(accuracies) == 1 and accuracies.pop() > 0.75  # the rule is learnable; chance is ~0.5
    convert = report(mlp600_run, "convert")
    assert convert["input_quantiser"] is None and convert["input_datatype"] == "BIPOLAR"


@pytest.mark.slow
def test_one_bit_input_is_one_bit_on_the_wire(mlp600_run):
    from host.driver import IOSpec

    est = report(mlp600_run, "estimate")
    assert est["in_bytes"] == 75 and est["out_bytes"] == 1  # 600 bipolar inputs; one bipolar output
    assert est["io_in_cycles"] == 10  # 75 bytes over the 8-byte AXI port
    spec = IOSpec.load(mlp600_run / "deploy" / "io_spec.json")
    assert spec.input.datatype == "BIPOLAR" and np.prod(spec.input.packed_shape) == 75
    vectors = np.load(mlp600_run / "deploy" / "test_vectors.npz")
    assert vectors["inputs"].dtype == np.int8 and set(np.unique(vectors["inputs"])) == {-1, 1}


@pytest.mark.slow
def test_bench_on_the_package_runs_the_real_input(mlp600_run, tmp_path):
    from flows import bench

    result = bench.run(mlp600_run / "deploy", ["numpy-executor", "fpga-sim", "cpu-brevitas"], (1, 16), 1,
                       tmp_path / "bench")
    rows = {r["name"]: r for r in result["results"]}
    accuracy = report(mlp600_run, "verify")["stages"]["dataflow"]["accuracy"]
    for name in ("numpy-executor", "fpga-sim"):
        assert rows[name]["status"] == "ok", rows[name]
        assert rows[name]["accuracy"]["accuracy"] == pytest.approx(accuracy)
    assert rows["cpu-brevitas"]["status"] == "skipped"


@pytest.mark.slow
def test_no_data_estimate_then_bench_the_run(mlp600, tmp_path):
    from flows import bench

    onnx, _ = mlp600
    run = tmp_path / "run"
    run_build(BuildConfig(board="pynq-z1", onnx=onnx, out=run, to_step="estimate"))
    assert report(run, "cleanup")["data"].startswith("none")
    result = bench.run(run, ["numpy-executor", "fpga-sim"], (1, 8), 1)
    rows = {r["name"]: r for r in result["results"]}
    assert all(r["status"] == "ok" and r["accuracy"]["accuracy"] is None for r in rows.values()), rows
    meta = json.loads((run / "bench" / "package" / "deploy.json").read_text())
    assert meta["labelled"] is False and "did not run" in meta["expected"]


@pytest.fixture(scope="module")
def bipolar600(tmp_path_factory) -> Path:
    """A hand-made model shaped as the tutorial's: 600 bipolar inputs, one bipolar output."""
    return mlp(tmp_path_factory.mktemp("b600") / "b600.onnx", "BIPOLAR", features=600, classes=1)


def test_600_bipolar_inputs_are_75_bytes_without_data(bipolar600, tmp_path):
    run = tmp_path / "run"
    run_build(BuildConfig(board="pynq-z1", onnx=bipolar600, out=run, to_step="estimate"))
    est = report(run, "estimate")
    assert est["in_bytes"] == 75 and est["io_in_cycles"] == 10 and est["out_bytes"] == 1
    assert report(run, "cleanup")["data"].startswith("none")


@pytest.mark.parametrize("datatype, quantiser, in_bytes", [("INT4", False, 8), ("UINT8", True, 16)],
                         ids=["int4-declared", "uint8-quantised"])
def test_input_datatypes_verify_on_random_inputs(tmp_path, datatype, quantiser, in_bytes):
    onnx = mlp(tmp_path / "m.onnx", datatype, input_quant=quantiser)
    run = tmp_path / "run"
    run_build(BuildConfig(onnx=onnx, out=run, to_step="verify"))
    v = report(run, "verify")
    assert v["passed"] and v["accuracy"].startswith("accuracy unknown")
    # every input value appears (constant rows), then the edges and random rows
    assert v["images"] == (16 if datatype == "INT4" else 256) + 2 + 128
    assert report(run, "estimate")["in_bytes"] == in_bytes  # 16 inputs of 4 or 8 bits
    convert = report(run, "convert")
    assert (convert["input_quantiser"] is not None) == quantiser
    if quantiser:
        assert convert["input_levels"] == 8  # a 3-bit quantiser over 0..255 / 4: every level met


@pytest.mark.slow
def test_binary_decision_model(tmp_path):
    onnx = mlp(tmp_path / "m.onnx", "BINARY", classes=1)
    run = tmp_path / "run"
    run_build(BuildConfig(onnx=onnx, out=run))
    assert report(run, "verify")["passed"] and report(run, "estimate")["in_bytes"] == 2
    assert json.loads((run / "deploy" / "deploy.json").read_text())["prediction"] == "positive"


def test_undeclared_input_needs_a_datatype(tmp_path):
    onnx = mlp(tmp_path / "m.onnx", None)
    with pytest.raises(ModelError, match="no integer datatype annotation.*--input-datatype"):
        run_build(BuildConfig(onnx=onnx, out=tmp_path / "a", to_step="cleanup"))
    run_build(BuildConfig(onnx=onnx, out=tmp_path / "b", to_step="cleanup", input_datatype="uint4"))
    assert report(tmp_path / "b", "cleanup")["input_datatype"] == "UINT4"
    with pytest.raises(ConfigError, match="declares its input x INT4"):
        run_build(BuildConfig(onnx=mlp(tmp_path / "d.onnx", "INT4"), out=tmp_path / "c", to_step="cleanup",
                              input_datatype="UINT4"))


# -- the model's own data: layout and checks ---------------------------------------------------


def bad_data(tmp_path: Path, kind: str) -> Path:
    rng = np.random.default_rng(0)
    x = rng.choice(np.array([-1, 1], np.int8), (10, 600))
    y = rng.integers(0, 2, 10)
    if kind == "shape":
        np.savez(tmp_path / "d.npz", x_test=x[:, :599], y_test=y)
    elif kind == "zero":
        x[3, 7] = 0
        np.savez(tmp_path / "d.npz", x_test=x, y_test=y)
    elif kind == "no-labels":
        np.savez(tmp_path / "d.npz", x_test=x)
    elif kind == "train-alone":
        np.savez(tmp_path / "d.npz", x_test=x, y_test=y, x_train=x)
    elif kind == "labels":
        np.savez(tmp_path / "d.npz", x_test=x, y_test=y[:9])
    elif kind == "suffix":
        (tmp_path / "d.txt").write_text("1,2\n")
        return tmp_path / "d.txt"
    return tmp_path / "d.npz"


@pytest.mark.parametrize("kind, words", [
    ("shape", ["d.npz", "x_test", "(10, 599)", "(N, 600)"]),
    ("zero", ["d.npz", "x_test", "(3, 7)", "BIPOLAR", "-1 or +1", "map 0 to -1"]),
    ("no-labels", ["d.npz", "needs x_test and y_test"]),
    ("train-alone", ["d.npz", "x_train and y_train go together"]),
    ("labels", ["d.npz", "y_test", "(10,)"]),
    ("suffix", ["d.txt", "not .npz, .npy or .csv"]),
])
def test_own_data_is_checked_before_the_first_step(bipolar600, tmp_path, kind, words):
    onnx = bipolar600
    with pytest.raises(DatasetError) as err:
        run_build(BuildConfig(onnx=onnx, data_file=bad_data(tmp_path, kind), out=tmp_path / "run"))
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not (tmp_path / "run" / "export").exists()


def test_own_data_error_on_the_command_line(bipolar600, tmp_path):
    onnx = bipolar600
    result = flows_cli("build", "--onnx", onnx, "--data-file", bad_data(tmp_path, "zero"), "--out", tmp_path / "r")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 3 and len(errors) == 1 and "x_test" in errors[0], result.stderr


def test_csv_and_npy_tables_label_last(tmp_path):
    from qat.data import load_own_data

    rows = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 1, 0]])
    (tmp_path / "t.csv").write_text("f0,f1,f2,label\n" + "\n".join(",".join(map(str, r)) for r in rows))
    np.save(tmp_path / "t.npy", rows)
    for name in ("t.csv", "t.npy"):
        ds = load_own_data(tmp_path / name, (3,), 0, 1, "BINARY")
        assert np.array_equal(ds.test.images, rows[:, :3]) and np.array_equal(ds.test.labels, rows[:, 3])
        assert len(ds.train) == 0


def test_data_file_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--data-file is a --onnx model's own data"):
        BuildConfig(data_file=tmp_path / "d.npz")
    with pytest.raises(ConfigError, match="--data or --data-file"):
        BuildConfig(onnx=tmp_path / "m.onnx", data="digits", data_file=tmp_path / "d.npz")
    with pytest.raises(ConfigError, match="must be an integer datatype"):
        BuildConfig(onnx=tmp_path / "m.onnx", input_datatype="FIXED<8,4>")


def test_batch_size_leaves_weight_tensors_alone():
    """A weight quantiser's (1, K) output is not an activation: batching it broke onnxruntime
    ('Got invalid dimensions for input') for one-output models."""
    from flows.transforms import SetBatchSize
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model = ModelWrapper(str(mlp(Path(tmp) / "m.onnx", "INT4", hidden=1))).transform(InferShapes())
    assert model.get_tensor_shape("w1_q") == [1, 4]  # (hidden=1, classes): batch-like, but a weight
    batched = model.transform(SetBatchSize(5))
    assert batched.get_tensor_shape("w1_q") == [1, 4] and batched.get_tensor_shape("y") == [5, 4]
    assert batched.get_tensor_shape("h0") == [5, 1]
