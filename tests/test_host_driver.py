"""Accelerator and IOSpec with in-process backends (no pynq needed).

PynqBackend's DMA protocol is tested against a fake PYNQ device in
tests/board/test_board_driver.py, in the board env (pynq needs numpy<2).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host.driver import Accelerator, Backend, IOSpec, PynqBackend
from host.errors import BitfileError, HostError, IOSpecError

HAS_PYNQ = importlib.util.find_spec("pynq") is not None

MLP = {  # an MNIST MLP: 784 UINT8 pixels in, 10 INT16 scores out
    "input": {"datatype": "UINT8", "normal_shape": [1, 784], "folded_shape": [1, 49, 16]},
    "output": {"datatype": "INT16", "normal_shape": [1, 10], "folded_shape": [1, 1, 10]},
}


def same_port_spec(datatype, normal=(1, 24), folded=(1, 3, 8)):
    port = {"datatype": datatype, "normal_shape": list(normal), "folded_shape": list(folded)}
    return IOSpec.from_dict({"input": port, "output": dict(port)})


class BytesBackend(Backend):
    """Applies a function to the packed bytes; input and output ports must
    pack to the same shape."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def run(self, ibuf, n):
        self.calls.append((ibuf.shape, n))
        return self.fn(ibuf[:n])


def negate_int8(ibuf):
    return (-ibuf.view(np.int8)).view(np.uint8)


# -- IOSpec -------------------------------------------------------------------


def test_spec_round_trips_through_json():
    spec = IOSpec.from_dict(MLP)
    assert spec.input.packed_shape == (1, 49, 16) and spec.output.packed_shape == (1, 1, 20)
    again = IOSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_spec_loads_from_file(tmp_path):
    path = tmp_path / "io_spec.json"
    path.write_text(json.dumps(MLP))
    assert IOSpec.load(path) == IOSpec.from_dict(MLP)
    with pytest.raises(IOSpecError, match="cannot read IO spec"):
        IOSpec.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "path, message",
    [
        (("output",), "lacks the key 'output'"),
        (("input", "datatype"), "lacks input.datatype"),
        (("input", "normal_shape"), "lacks input.normal_shape"),
        (("output", "folded_shape"), "lacks output.folded_shape"),
    ],
    ids=["output", "input.datatype", "input.normal_shape", "output.folded_shape"],
)
def test_missing_key_is_named(path, message):
    raw = json.loads(json.dumps(MLP))
    parent = raw if len(path) == 1 else raw[path[0]]
    del parent[path[-1]]
    with pytest.raises(IOSpecError, match=message):
        IOSpec.from_dict(raw)


@pytest.mark.parametrize(
    "port, field, value, message",
    [
        ("input", "datatype", "UINT99", r"input\.datatype: unknown datatype 'UINT99'"),
        ("output", "datatype", "TERNARY", r"output\.datatype: unknown datatype"),
        ("input", "normal_shape", [2, 784], r"input\.normal_shape .* batch dim 1"),
        ("input", "folded_shape", [1, 49, "x"], r"input\.folded_shape .* not a list of ints"),
        ("input", "folded_shape", [1, 48, 16], r"input: normal shape .* different element counts"),
        ("output", "packed_shape", [1, 1, 10], r"output\.packed_shape .* packs to \[1, 1, 20\]"),
    ],
)
def test_bad_values_are_named(port, field, value, message):
    raw = json.loads(json.dumps(MLP))
    raw[port][field] = value
    with pytest.raises(IOSpecError, match=message):
        IOSpec.from_dict(raw)


# -- Accelerator ----------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["BIPOLAR", "UINT2", "INT4", "UINT8", "INT16"])
def test_identity_backend_round_trips(datatype):
    spec = same_port_spec(datatype)
    dt = spec.input.dtype
    rng = np.random.default_rng(0)
    if dt.is_bipolar:
        x = rng.choice([-1, 1], size=(6, 24))
    else:
        x = rng.integers(dt.min, dt.max, size=(6, 24), endpoint=True)
    backend = BytesBackend(lambda b: b.copy())
    y = Accelerator(spec, backend).execute(x)
    assert y.shape == (6, 24) and y.dtype == dt.value_dtype
    np.testing.assert_array_equal(y, x)
    assert backend.calls == [((6,) + spec.input.packed_shape[1:], 6)]


def test_negating_backend_over_bytes():
    acc = Accelerator(same_port_spec("INT8"), BytesBackend(negate_int8))
    x = np.random.default_rng(1).integers(-127, 128, size=(5, 24))
    np.testing.assert_array_equal(acc.execute(x), -x)
    assert acc.label == "modelled"


def test_output_shape_follows_the_output_spec():
    class TenScores(Backend):  # writes score j = j for every image
        def run(self, ibuf, n):
            scores = np.tile(np.arange(10, dtype="<i2"), (n, 1, 1))
            return scores.view(np.uint8)

    y = Accelerator(IOSpec.from_dict(MLP), TenScores()).execute(np.zeros((3, 784), dtype=np.uint8))
    assert y.shape == (3, 10) and y.dtype == np.int16
    np.testing.assert_array_equal(y, np.tile(np.arange(10), (3, 1)))


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((2, 783)), r"input has shape \(2, 783\) but the accelerator takes \(N, 784\)"),
        (np.zeros(784), r"input has shape \(784,\)"),
        (np.zeros((0, 784)), "input batch is empty"),
        (
            np.full((2, 784), 0.5),
            r"input value 0.5 at index \(0, 0\) is not representable in UINT8",
        ),
        (np.full((2, 784), "a"), "input has dtype <U1"),
        (np.full((2, 784), 256), r"input value 256 at index \(0, 0\) is outside UINT8 \[0, 255\]"),
        (np.full((2, 784), -1), "outside UINT8"),
    ],
    ids=["short", "unbatched", "empty", "fractional", "strings", "too-big", "negative"],
)
def test_bad_input_is_rejected(x, message):
    acc = Accelerator(IOSpec.from_dict(MLP), BytesBackend(lambda b: b))
    with pytest.raises(IOSpecError, match=message):
        acc.execute(x)


def test_backend_returning_the_wrong_bytes_is_caught():
    acc = Accelerator(IOSpec.from_dict(MLP), BytesBackend(lambda b: b))  # echoes 49x16 bytes
    with pytest.raises(IOSpecError, match=r"packed buffer is uint8 \(2, 49, 16\)"):
        acc.execute(np.zeros((2, 784), dtype=np.uint8))


# -- PynqBackend without pynq -----------------------------------------------------


def test_missing_bitfile_is_named(tmp_path):
    with pytest.raises(BitfileError, match=r"bitfile not found: .*accel\.bit"):
        PynqBackend(tmp_path / "accel.bit", clock_mhz=100.0)


def test_missing_hwh_is_named(tmp_path):
    (tmp_path / "accel.bit").write_bytes(b"")
    with pytest.raises(BitfileError, match=r"\.hwh beside the bitfile not found: .*accel\.hwh"):
        PynqBackend(tmp_path / "accel.bit", clock_mhz=100.0)


@pytest.mark.skipif(HAS_PYNQ, reason="pynq is importable here; tests/board covers PynqBackend")
def test_pynq_backend_without_pynq_says_so(tmp_path):
    for suffix in (".bit", ".hwh"):
        (tmp_path / f"accel{suffix}").write_bytes(b"")
    with pytest.raises(HostError, match="pynq is not importable"):
        PynqBackend(tmp_path / "accel.bit", clock_mhz=100.0)


def test_host_imports_stay_light():
    code = (
        "import sys, host.driver, host.packing, host.datatypes, host.errors\n"
        "heavy = {'finn', 'qonnx', 'pynq', 'torch', 'brevitas', 'onnx', 'onnxruntime'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_nonpositive_clock_is_rejected(tmp_path):
    with pytest.raises(HostError, match="clock_mhz=0 .* must both be > 0"):
        PynqBackend(tmp_path / "accel.bit", clock_mhz=0)
