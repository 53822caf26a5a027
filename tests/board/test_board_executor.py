"""host.executor in the board environment (Python 3.10, numpy 1.21, no finn):
a real TFC-W2A2 design (tests/fixtures/executor_tfc_w2a2, regenerate.py there)
against FINN's outputs for every layer, recorded on the build machine.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from host.errors import DeployVersionError, IOSpecError
from host.executor import Executor

DESIGN = Path(__file__).resolve().parent.parent / "fixtures" / "executor_tfc_w2a2"


@pytest.fixture(scope="module")
def executor():
    return Executor.load(DESIGN)


@pytest.fixture(scope="module")
def vectors():
    with np.load(DESIGN / "vectors.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_every_layer_matches_finn(executor, vectors):
    out, trace = executor.run(vectors["inputs"], return_layers=True)
    assert len(trace) == len(executor.layers) == 6
    for i, layer in enumerate(trace):
        assert np.array_equal(layer.output.reshape(len(out), -1), vectors[f"layer{i}"]), layer.name
    assert np.array_equal(out, vectors[f"layer{len(trace) - 1}"])


def test_predictions_and_dtypes(executor, vectors):
    out = executor.run(vectors["inputs"])
    assert out.shape == (len(vectors["inputs"]), 1) and out.dtype == np.uint8
    assert np.array_equal(out[:, 0], vectors["layer5"][:, 0])


def test_batches_are_independent(executor, vectors):
    x = vectors["inputs"]
    whole = executor.run(x)
    one_by_one = np.concatenate([executor.run(x[i:i + 1]) for i in range(len(x))])
    assert np.array_equal(whole, one_by_one)


def test_integer_valued_floats_are_accepted(executor, vectors):
    x = vectors["inputs"]
    assert np.array_equal(executor.run(x.astype(np.float32)), executor.run(x))


@pytest.mark.parametrize("bad", ["shape", "range", "fraction"])
def test_bad_input_is_refused(executor, vectors, bad):
    x = vectors["inputs"][:4]
    wrong = {"shape": x[:, :10], "range": x.astype(np.int16) - 1, "fraction": x + 0.5}[bad]
    with pytest.raises(IOSpecError):
        executor.run(wrong)


@pytest.mark.parametrize("bad, words", [
    ("strings", ["dtype <U", "numeric array"]),
    ("inf", ["value inf at index (0, 0)", "quantise"]),
    ("nan", ["value nan at index (0, 0)"]),
], ids=["strings", "inf", "nan"])
def test_non_numbers_are_refused_by_name(executor, vectors, bad, words):
    x = vectors["inputs"][:4]
    if bad == "strings":
        wrong = x.astype(str)
    else:
        wrong = x.astype(np.float64)
        wrong[0, 0] = {"inf": np.inf, "nan": np.nan}[bad]
    with pytest.raises(IOSpecError) as err:
        executor.run(wrong)
    message = str(err.value)
    assert all(w in message for w in words) and "9223372036854775808" not in message, message


def test_truncated_weights_file_is_one_error(tmp_path):
    from host.executor import ExecutorFileError

    shutil.copytree(DESIGN, tmp_path / "ex")
    npz = tmp_path / "ex" / "executor.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(ExecutorFileError, match="damaged or truncated.*re-export"):
        Executor.load(tmp_path / "ex")


def test_other_format_is_refused(tmp_path):
    shutil.copytree(DESIGN, tmp_path / "ex")
    path = tmp_path / "ex" / "executor.json"
    meta = json.loads(path.read_text())
    meta["format"] = "qnn-flows-executor/0"
    path.write_text(json.dumps(meta))
    with pytest.raises(DeployVersionError, match="qnn-flows-executor/1"):
        Executor.load(tmp_path / "ex")


def test_board_environment_imports_no_build_tools():
    assert not {"torch", "finn", "qonnx", "onnx"} & set(sys.modules)


def test_executor_datatypes_come_from_the_one_parser():
    from host.executor import ExecutorFileError, bitwidth, int_range

    assert int_range("INT64") == (-(1 << 63), (1 << 63) - 1)
    assert int_range("UINT64") == (0, (1 << 64) - 1)
    assert (int_range("BIPOLAR"), bitwidth("BIPOLAR"), bitwidth("UINT40")) == ((-1, 1), 1, 40)
    for name in ("FIXED<8,4>", "INT65", "FLOAT32"):
        with pytest.raises(ExecutorFileError, match="not an integer datatype the executor runs"):
            int_range(name)
