"""`flows build` for every model of the zoo, through estimates and verification, with the default folding rule.

MLPs train for one epoch on the bundled digits; CNV (which needs 32x32 images) on the
synthetic CIFAR-shaped set of tests/synthetic.py (marked slow).
"""
import json

import pytest

import qat.data
from flows.build import run_build
from flows.config import BuildConfig, TrainOptions
from flows.errors import FitError
from qat.models import known_models
from synthetic import synthetic_cifar

SLOW_ARCHS = ("cnv",)  # CNV is covered by tests/test_cnv.py in the default run
# weights beyond the board's BRAM even folded to the limit: the build says so (and goes on if asked)
TOO_BIG_FOR_PYNQ_Z2 = {"lfc-w4a4", "lfc-w8a8", "cnv-w4a4", "cnv-w8a8"}


def zoo_params():
    for name in known_models():
        marks = [pytest.mark.slow] if name.split("-")[0] in SLOW_ARCHS else []
        yield pytest.param(name, marks=marks, id=name)


def report(run, step: str, name: str = "report.json") -> dict:
    return json.loads((run / step / name).read_text())


@pytest.mark.parametrize("name", zoo_params())
def test_zoo_model_builds_and_verifies(name, tmp_path, monkeypatch):
    data = "digits"
    if name.startswith("cnv"):
        ds = synthetic_cifar(n_train=64, n_test=16)
        monkeypatch.setattr(qat.data, "load_dataset", lambda *args, **kwargs: ds)
        data = "cifar10"
    out = tmp_path / "run"
    cfg = dict(model=name, data=data, data_dir=tmp_path if data != "digits" else None, out=out,
               to_step="verify", train=TrainOptions(epochs=1))
    if name in TOO_BIG_FOR_PYNQ_Z2:
        with pytest.raises(FitError, match="does not fit pynq-z2 at any folding.*Mbit of weights"):
            run_build(BuildConfig(**cfg))
        assert not (out / "fold.failed" / "folding_that_fits.json").exists()
        run_build(BuildConfig(**cfg, from_step="fold", allow_overflow=True))  # goes on, saying so
        assert "at any folding" in report(out, "fold")["warning"] and not report(out, "estimate")["fits"]
        assert_verified(out)
        return
    run_build(BuildConfig(**cfg))
    fold = report(out, "fold")
    assert fold["rule"].startswith("default") and fold["target_cycles"] >= 1
    folding = report(out, "fold", "folding.json")
    assert len(folding) > 1 and all(v.get("PE") or v.get("SIMD") for k, v in folding.items() if k != "Defaults")
    est = report(out, "estimate")
    assert est["kind"] == "estimated" and est["fits"] and est["fps"] > 0 and est["layers"]
    assert est["compute_cycles"] <= max(fold["target_cycles"], est["io_in_cycles"], est["io_out_cycles"])
    assert_verified(out)


def assert_verified(out) -> None:
    """Every stage agrees with the integer dataflow graph (float stages: boundary cases excused, and listed)."""
    v = report(out, "verify")
    assert v["passed"] and v["reference"] == "dataflow" and list(v["stages"])[-1] == "dataflow"
    for stage in v["stages"].values():
        assert stage["prediction_mismatches"] == 0 and stage["last_layer_mismatches"] == 0
        assert stage["at_rounding_boundary"] == len([c for c in stage.get("differing_images", []) if c["excused"]])
    assert all(v["stages"][s]["at_rounding_boundary"] == 0 for s in ("streamlined", "dataflow"))
