"""CNV through the whole flow, on a small CIFAR-shaped set (CIFAR-10's files are not on every machine).

The build is the real ``--data cifar10`` path with ``qat.data.load_dataset`` answering
from tests/synthetic.py.
"""
import json

import numpy as np
import pytest

import qat.data
from flows.build import run_build
from flows.config import BuildConfig, TrainOptions
from flows.errors import ConfigError
from synthetic import synthetic_cifar

DS = synthetic_cifar(n_train=256, n_test=64)


def report(run, step: str, name: str = "report.json") -> dict:
    return json.loads((run / step / name).read_text())


@pytest.fixture(scope="module")
def cnv_run(tmp_path_factory):
    """cnv-w1a1 trained for one epoch and built through the package step for pynq-z2."""
    out = tmp_path_factory.mktemp("cnv") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qat.data, "load_dataset", lambda *args, **kwargs: DS)
        run_build(BuildConfig(model="cnv-w1a1", data="cifar10", data_dir=out.parent, out=out,
                              train=TrainOptions(epochs=1)))
    return out


def test_cnv_lowers_to_finn_conv_layers(cnv_run):
    nodes = report(cnv_run, "hw_layers")["nodes"]
    counts = {op: nodes.count(op) for op in set(nodes)}
    # FINN's own bnn-pynq CNV test expects exactly these
    assert counts == {"Transpose": 1, "Thresholding": 1, "ConvolutionInputGenerator": 8, "MVAU": 9, "Pool": 2,
                      "LabelSelect": 1}
    assert report(cnv_run, "partition")["host_nodes"] == ["Transpose"]  # NCHW -> NHWC stays on the host


def test_cnv_verifies_bit_exactly_through_every_stage(cnv_run):
    v = report(cnv_run, "verify")
    assert v["passed"], v["summary"]
    assert v["images"] == 64 and v["dataset"] == "cifar10"
    assert list(v["stages"]) == ["pytorch", "qonnx", "finn", "streamlined", "dataflow"]
    for stage in v["stages"].values():
        assert stage["prediction_mismatches"] == 0 and stage["last_layer_mismatches"] == 0


def test_cnv_folding_and_estimates_on_pynq_z2(cnv_run):
    fold = report(cnv_run, "fold")
    assert fold["rule"].startswith("default") and fold["target_cycles"] >= 384
    folding = report(cnv_run, "fold", "folding.json")
    windows = [n for n in folding if n.startswith("ConvolutionInputGenerator")]
    assert len(windows) == 8 and all("SIMD" in folding[n] for n in windows)
    # the window generators feeding the pools run at the pools' PE
    assert folding["ConvolutionInputGenerator_rtl_2"]["SIMD"] == folding["Pool_hls_0"]["PE"]
    assert folding["ConvolutionInputGenerator_rtl_5"]["SIMD"] == folding["Pool_hls_1"]["PE"]
    est = report(cnv_run, "estimate")
    assert est["fits"] and est["board"] == "pynq-z2" and est["fps"] > 0
    assert est["compute_cycles"] <= fold["target_cycles"]  # FINN estimate units
    assert est["total"]["BRAM_18K"] <= est["capacity"]["BRAM_18K"] == 280


def test_cnv_package_holds_nhwc_test_vectors(cnv_run):
    spec = json.loads((cnv_run / "deploy" / "io_spec.json").read_text())
    assert spec["input"]["shape"] == [1, 32, 32, 3] and spec["input"]["datatype"] == "UINT8"
    vectors = np.load(cnv_run / "deploy" / "test_vectors.npz")
    assert np.array_equal(vectors["inputs"], DS.test.images.transpose(0, 2, 3, 1))
    outputs = np.load(cnv_run / "verify" / "outputs.npz")
    assert np.array_equal(vectors["expected"], outputs["pytorch_predictions"])


def test_depthwise_window_must_match_its_pool(cnv_run, tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.folding import apply_folding

    model = ModelWrapper(str(cnv_run / "fold" / "model.onnx"))
    with pytest.raises(ConfigError, match="SIMD must equal that PE"):
        apply_folding(model, {"Pool_hls_0": {"PE": 1}, "ConvolutionInputGenerator_rtl_2": {"SIMD": 2}})


@pytest.mark.slow
def test_cnv_build_from_cifar_files_on_the_command_line(tmp_path):
    """`flows build --model cnv-w1a1 --data cifar10 --data-dir DIR` with CIFAR-10-format files."""
    import subprocess
    import sys

    from synthetic import write_cifar_batches

    write_cifar_batches(synthetic_cifar(n_train=100, n_test=20, seed=1), tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "build", "--model", "cnv-w1a1", "--board", "pynq-z2",
                           "--data", "cifar10", "--data-dir", str(tmp_path / "data"), "--no-verify-checksums",
                           "--epochs", "1", "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    v = report(tmp_path / "run", "verify")
    assert v["passed"] and v["images"] == 20 and v["dataset"] == "cifar10"
    assert report(tmp_path / "run", "estimate")["fits"]
