"""TFC-W1A1 through the whole flow on the real MNIST test set (needs --datasets DIR)."""
import json

from flows.build import run_build
from flows.config import BuildConfig, TrainOptions


def test_tfc_w1a1_bit_exact_on_all_10000_mnist_test_images(datasets_dir, tmp_path):
    out = tmp_path / "run"
    run_build(BuildConfig(model="tfc-w1a1", data="mnist", data_dir=datasets_dir / "mnist", out=out,
                          to_step="verify", train=TrainOptions(epochs=2)))
    v = json.loads((out / "verify" / "report.json").read_text())
    assert v["passed"] and v["images"] == 10000 and v["dataset"] == "mnist"
    assert set(v["stages"]) == {"pytorch", "qonnx", "finn", "streamlined", "dataflow"}
    assert all(s["prediction_mismatches"] == 0 and s["last_layer_mismatches"] == 0 for s in v["stages"].values())
    assert v["stages"]["dataflow"]["accuracy"] > 0.85
    est = json.loads((out / "estimate" / "report.json").read_text())
    assert est["io_in_cycles"] == 98 and est["binding"] == "I/O (input DMA)"
