"""host.sim.SimBackend behind host.driver.Accelerator, the deploy package it reads, and bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from host import executor
from host.deploy import load_package, open_accelerator
from host.driver import Accelerator, IOSpec
from host.errors import BitfileError, DeployVersionError, HostError, IOSpecError
from host.perf_model import PerfModel
from host.sim import DEPLOY_FORMAT, SimBackend

REPO = Path(__file__).resolve().parent.parent


def test_accelerator_with_sim_backend_gives_the_verified_outputs(deploy):
    package = load_package(deploy)
    backend = SimBackend.from_deploy(deploy)
    accel = Accelerator(IOSpec.load(deploy / "io_spec.json"), backend)
    y = accel.execute(package.inputs)
    assert y.shape == (len(package.inputs), *accel.spec.output.normal_shape[1:])
    assert np.array_equal(y.reshape(-1), package.expected)
    assert accel.label == backend.label == "modelled"
    model = PerfModel.from_deploy(deploy)
    assert backend.last_modelled_seconds == pytest.approx(model.batch_seconds(len(y)))
    accel.execute(package.inputs[:1])
    assert backend.last_modelled_seconds == pytest.approx(model.latency_s)
    assert backend.batches == 2


def test_backend_moves_packed_bytes_like_the_board(deploy):
    accel = open_accelerator(load_package(deploy), "sim")
    spec, n = accel.spec, 5
    ibuf = np.zeros((n + 2, *spec.input.packed_shape[1:]), np.uint8)  # a larger buffer: only n images run
    obuf = accel.backend.run(ibuf, n)
    assert obuf.dtype == np.uint8 and obuf.shape == (n, *spec.output.packed_shape[1:])
    with pytest.raises(IOSpecError, match="input buffer"):
        accel.backend.run(ibuf.astype(np.int16), n)


def test_sim_equals_the_executor(deploy):
    package = load_package(deploy)
    ex = executor.load(deploy / "executor")
    direct = ex.run(package.inputs.reshape(len(package.inputs), *ex.input_shape)).reshape(-1)
    assert np.array_equal(open_accelerator(package, "sim").execute(package.inputs).reshape(-1), direct)


@pytest.mark.parametrize("bad, message", [
    (lambda x: x[:, :-1], "input has shape"),
    (lambda x: x.reshape(len(x), 8, -1), "input has shape"),
    (lambda x: x[:0], "empty"),
    (lambda x: x.astype(np.float32) + 0.5, "not representable"),
    (lambda x: x.astype(np.int16) - 1, "outside UINT8"),
    (lambda x: x.astype(np.int16) + 300, "outside UINT8"),
    (lambda x: x.astype(str), "dtype"),
], ids=["short", "3d", "empty", "fractions", "negative", "too-big", "strings"])
def test_bad_input_is_refused_with_one_clear_line(deploy, bad, message):
    package = load_package(deploy)
    accel = open_accelerator(package, "sim")
    with pytest.raises(IOSpecError, match=message) as err:
        accel.execute(bad(package.inputs[:4]))
    assert "\n" not in str(err.value)


def test_spec_that_does_not_match_the_executor_is_refused(deploy):
    raw = json.loads((deploy / "io_spec.json").read_text())
    raw["input"].update(normal_shape=[1, 32], folded_shape=[1, 4, 8])
    with pytest.raises(IOSpecError, match="executor"):
        Accelerator(IOSpec.from_dict(raw), SimBackend.from_deploy(deploy))


def test_incompatible_deploy_version_names_both_formats(copy_of):
    d = copy_of()
    meta = json.loads((d / "deploy.json").read_text())
    (d / "deploy.json").write_text(json.dumps(meta | {"format": "qnn-flows-deploy/0"}))
    for load in (load_package, SimBackend.from_deploy):
        with pytest.raises(DeployVersionError, match="qnn-flows-deploy/0.*qnn-flows-deploy/1"):
            load(d)


def test_missing_or_garbled_package_files(copy_of, tmp_path):
    with pytest.raises(HostError, match="deploy.json not found"):
        load_package(tmp_path / "nowhere")
    d = copy_of()
    (d / "deploy.json").write_text("{not json")
    with pytest.raises(HostError, match="not readable JSON"):
        load_package(d)


def test_missing_bitfile_is_named(deploy):
    with pytest.raises(BitfileError, match="accelerator.bit"):
        open_accelerator(load_package(deploy), "pynq")


def test_package_carries_host_code_and_notebook(deploy):
    meta = json.loads((deploy / "deploy.json").read_text())
    assert meta["format"] == DEPLOY_FORMAT and meta["host"] == "host/" and meta["notebook"] == "benchmark.ipynb"
    for src in (REPO / "host").glob("*.py"):
        assert (deploy / "host" / src.name).read_bytes() == src.read_bytes()
    nb = json.loads((deploy / "benchmark.ipynb").read_text())
    assert meta["model"] in "".join(nb["cells"][0]["source"]) and nb["nbformat"] == 4


def test_package_format_is_the_one_host_reads():
    from flows.package import PACKAGE_FORMAT

    assert PACKAGE_FORMAT == DEPLOY_FORMAT


def test_host_benchmark_modules_import_numpy_only():
    code = ("import sys, host.deploy, host.timing, host.results, host.plots, host.sim, host.perf_model; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    heavy = set(out.stdout.split()) & {"torch", "finn", "brevitas", "qonnx", "onnx", "onnxruntime", "pynq",
                                       "matplotlib", "flows", "qat"}
    assert not heavy, heavy
