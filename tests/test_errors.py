"""Bad input, one line each: every case builds the broken input and checks the line and the exit code
(2 option/config, 3 dataset, 4 model/ONNX, 5 missing tool, 7 verification, 9 host/driver, 130 Ctrl-C)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flows.errors import ConfigError, RunInterrupted
from tests.test_build import one_error_line, write_onnx

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "checkpoints" / "tfc-w1a1_mnist.pt"


def flows_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def fails_with(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The one error line of ``result``, after checking its exit code and that it names ``words``."""
    assert result.returncode == code, result.stderr
    line = one_error_line(result.stderr)
    assert all(w in line for w in words), line
    return line


def no_step_ran(run: Path) -> bool:
    return not run.exists() or not [p for p in run.iterdir() if p.is_dir()]


# -- deploy packages ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["test_vectors.npz", "executor/executor.npz"])
def test_truncated_npz_in_a_package(copy_of, name):
    package = copy_of()
    path = package / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fails_with(flows_cli("bench", package, "--targets", "numpy-executor", "--batch", "1", "--repeats", "1"),
               9, "damaged or truncated", name.split("/")[-1])


def test_labels_and_inputs_of_different_counts(copy_of):
    package = copy_of()
    path = package / "test_vectors.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["labels"] = arrays["labels"][:-1]
    np.savez(path, **arrays)
    n = len(arrays["inputs"])
    fails_with(flows_cli("bench", package, "--targets", "numpy-executor"), 9, f"{n} inputs but {n - 1} labels")


def test_bench_exit_code_when_no_target_was_measured(copy_of, tmp_path):
    package = copy_of()
    fails_with(flows_cli("bench", package, "--targets", "fpga", "--out", tmp_path / "b1"), 5,
               "no target was measured", "1 skipped")
    path = package / "test_vectors.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["expected"] = (arrays["expected"] + 1) % 10  # every verified output wrong: every target disagrees
    np.savez(path, **arrays)
    fails_with(flows_cli("bench", package, "--targets", "numpy-executor,fpga-sim", "--batch", "1",
                         "--repeats", "1", "--out", tmp_path / "b2"), 7, "2 failed")
    assert (tmp_path / "b2" / "bench.md").is_file()  # the table is written before the exit


# -- checkpoints -------------------------------------------------------------------------------


def edited_checkpoint(tmp_path, edit) -> Path:
    blob = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    edit(blob)
    path = tmp_path / "edited.pt"
    torch.save(blob, path)
    return path


def test_eval_checkpoint_without_its_data_record(tmp_path):
    path = edited_checkpoint(tmp_path, lambda blob: blob.pop("data"))
    fails_with(flows_cli("eval", path), 4, "lacks its 'data' record")


def test_checkpoint_whose_spec_disagrees_with_its_weights(tmp_path):
    from qat.models import parse_model_name

    path = edited_checkpoint(tmp_path, lambda blob: blob.update(spec=parse_model_name("lfc-w1a1").to_dict()))
    fails_with(flows_cli("eval", path), 4, "weights do not fit its model spec lfc-w1a1", "first:")
    run = tmp_path / "run"
    fails_with(flows_cli("build", "--checkpoint", path, "--out", run), 4, "weights do not fit")
    assert no_step_ran(run)  # refused before the first step, not in export


@pytest.mark.parametrize("option", ["--checkpoint", "--onnx"])
def test_directory_given_as_a_file(tmp_path, option):
    fails_with(flows_cli("build", option, tmp_path, "--out", tmp_path / "run"), 4, "is a directory")


# -- ONNX files --------------------------------------------------------------------------------


def two_input_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper
    from qonnx.util.basic import qonnx_make_model

    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], domain="qonnx.custom_op.general",
                              signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Add", ["q", "x2"], ["y"])]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("s", 1.0), ("z", 0.0), ("b", 8.0))]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 64]) for n in ("x", "x2")]
    graph = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              inits)
    onnx.save(qonnx_make_model(graph), str(path))
    return path


def dynamic_batch_onnx(path: Path) -> Path:
    import onnx

    write_onnx(path, "Relu")
    model = onnx.load(str(path))
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    dim.dim_param = "batch"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind, words", [
    ("two-inputs", ["2 graph inputs (x, x2)", "single-input"]),
    ("empty", ["is empty (0 bytes)"]),
    ("dynamic-batch", ["('batch', 1, 8, 8)", "dynamic", "fixed shape"]),
])
def test_onnx_refused_before_the_first_step(tmp_path, kind, words):
    path = tmp_path / "model.onnx"
    {"two-inputs": two_input_onnx, "empty": lambda p: p.write_bytes(b""), "dynamic-batch": dynamic_batch_onnx}[kind](path)
    run = tmp_path / "run"
    line = fails_with(flows_cli("build", "--onnx", path, "--out", run), 4, *words)
    assert "not a quantised" not in line and "(0," not in line
    assert no_step_ran(run)


# -- the run folder ----------------------------------------------------------------------------


def test_corrupt_config_json_in_an_existing_out(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"identity": {"model": ')
    fails_with(flows_cli("build", "--out", run), 2, "config.json is damaged", "another --out")


def test_second_build_into_a_locked_run_folder_stops_and_deletes_nothing(tmp_path):
    from flows.preflight import run_lock

    run = tmp_path / "run"
    run.mkdir()
    work = run / "train.partial"  # what the running build is writing
    work.mkdir()
    (work / "log.txt").write_text("training")
    with run_lock(run):  # this process plays the build that got there first
        fails_with(flows_cli("build", "--out", run), 2, "in use by another build",
                          f"pid {os.getpid()}", "another --out")
    assert (work / "log.txt").read_text() == "training" and not (run / "config.json").exists()


# -- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["train", "--lr", "nan"], ["--lr must be a finite number, got nan"]),
    (["train", "--lr", "inf"], ["--lr must be a finite number, got inf"]),
    (["train", "--dropout", "nan"], ["--dropout"]),
    (["build", "--target-fps", "nan"], ["--target-fps must be a finite number"]),
    (["build", "--target-fps", "inf"], ["--target-fps must be a finite number"]),
    (["build", "--target-fps", "-5"], ["--target-fps must be positive"]),
], ids=["lr-nan", "lr-inf", "dropout-nan", "fps-nan", "fps-inf", "fps-negative"])
def test_nan_and_inf_options_are_refused(tmp_path, args, words):
    fails_with(flows_cli(*args, "--out", tmp_path / "out"), 2, *words)


def test_nan_in_configs_is_refused():
    from flows.config import BuildConfig, TrainOptions
    from qat.train import TrainConfig

    for make in (lambda: TrainConfig(lr=float("nan")), lambda: TrainConfig(dropout=float("nan")),
                 lambda: TrainOptions(lr=float("inf")), lambda: BuildConfig(target_fps=float("nan"))):
        with pytest.raises(ConfigError, match="finite"):
            make()


# -- boards ------------------------------------------------------------------------------------


def own_board(tmp_path, **changes) -> Path:
    data = yaml.safe_load((REPO / "boards" / "zcu104.yaml").read_text())
    data.update({"name": "my-board", **changes})
    path = tmp_path / "my-board.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_own_board_file_is_read_and_names_the_run(tmp_path):
    from boards import load_board
    from flows.config import BuildConfig

    path = own_board(tmp_path, clock_mhz=150)
    board = load_board(str(path))
    assert board.name == "my-board" and board.clock_mhz == 150.0 and board.part == "xczu7ev-ffvc1156-2-e"
    assert BuildConfig(board=str(path)).run_name == "tfc-w1a1_my-board"


@pytest.mark.parametrize("changes, words", [
    ({"clock_mhz": float("nan")}, ["clock_mhz must be a finite number"]),
    ({"luts": "many"}, ["luts must be an integer"]),
    ({"axi_width_bits": 48}, ["axi_width_bits must be one of"]),
    ({"shell": "vitis"}, ["shell must be one of zynq-iodma"]),
    ({"name": "other"}, ["names itself 'other'"]),
    ({"part": ""}, ["part must be a non-empty string"]),
    ({"finn_board": "ZedBoardX"}, ["finn_board 'ZedBoardX' is not a board FINN builds for", "ZCU104"]),
    ({"part": "xc7z020clg400-1"}, ["is not FINN's part for ZCU104"]),
], ids=["clock-nan", "luts-type", "axi-width", "shell", "name", "part", "finn-board", "part-vs-finn"])
def test_own_board_file_is_validated_field_by_field(tmp_path, changes, words):
    path = own_board(tmp_path, **changes)
    run = tmp_path / "run"
    line = fails_with(flows_cli("build", "--board", path, "--out", run), 2, *words)
    assert str(path) in line or "board my-board" in line
    assert no_step_ran(run)


def test_missing_board_file(tmp_path):
    fails_with(flows_cli("build", "--board", tmp_path / "none.yaml", "--out", tmp_path / "run"), 2, "not found")


# -- Ctrl-C ------------------------------------------------------------------------------------


def test_interrupted_step_is_removed_and_the_message_says_where_to_resume(tmp_path):
    from flows.pipeline import Step, run_steps

    def first(build, out):
        (out / "result.txt").write_text("done")
        return {}

    def second(build, out):
        (out / "half.txt").write_text("half")
        raise KeyboardInterrupt

    steps = [Step("first", first), Step("second", second)]
    build = type("B", (), {"run_dir": tmp_path})()
    with pytest.raises(RunInterrupted, match="step 'second'.*--from second") as err:
        run_steps(build, steps, steps)
    assert err.value.exit_code == 130
    assert (tmp_path / "first" / "result.txt").read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first"]


def test_ctrl_c_during_a_build_prints_one_line_and_exits_130(tmp_path):
    run = tmp_path / "run"
    # Ctrl-C as a terminal delivers it: a test run started in the background of a non-interactive
    # shell (nohup ... &) inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "build", "--out", str(run), "--epochs", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []  # until the first epoch line: the training loop is running
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch "):
            break
    assert (run / "train.partial").is_dir(), "".join(seen)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    line = one_error_line(stderr)
    assert "interrupted during step 'train'" in line and "--from train" in line
    assert not (run / "train.partial").exists() and (run / "config.json").is_file()


# -- missing tools (exit 5) --------------------------------------------------------------------


@pytest.mark.parametrize("module, args, words", [
    ("finn", ["build"], ["'finn' is not installed", "pip install --no-deps finn-plus==1.6.1"]),
    ("optuna", ["search"], ["'optuna' is not installed", "qnn-flows[search]"]),
    ("torch_pruning", ["compress", "--model", "tfc-w1a1", "--prune", "0.5"], ["'torch_pruning' is not installed",
                                                                             "qnn-flows[compress]"]),
], ids=["finn-plus", "optuna", "torch-pruning"])
def test_a_missing_package_is_a_missing_tool(tmp_path, module, args, words):
    hide = f"import sys; sys.modules[{module!r}] = None; from flows.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", hide, *args, "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    fails_with(result, 5, *words)
    assert no_step_ran(tmp_path / "run")
