"""FINN folding-config files as finn-examples publishes them, applied to our TFC-W1A1 and CNV-W1A1.

The files (tests/fixtures/finn_examples/, source in SOURCE.md) name FINN's nodes
(``Thresholding_hls_0``, six ``ConvolutionInputGenerator_hls_*``); our designs have
``Thresholding_rtl_0`` and eight window generators (six for convolutions, two feeding
the pools). Every attribute must be applied where the node has it and reported where
it does not; nodes the file does not name get the default rule, with a report line.
"""
import copy
import json
from pathlib import Path

import numpy as np
import pytest

import qat.data
from flows.build import Build, run_build
from flows.config import BuildConfig, TrainOptions
from flows.errors import ConfigError
from hw.folding_file import apply_folding_file
from synthetic import synthetic_cifar

FIXTURES = Path(__file__).parent / "fixtures" / "finn_examples"
TFC_FILE, CNV_FILE = FIXTURES / "tfc-w1a1_folding_config.json", FIXTURES / "cnv-w1a1_folding_config.json"


def synthetic_mnist(*_args, **_kwargs) -> qat.data.Dataset:
    """MNIST-shaped random images: the folding does not depend on the pixels."""
    rng = np.random.default_rng(0)

    def split(n):
        return qat.data.Split(rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8),
                              rng.integers(0, 10, n).astype(np.int64))

    return qat.data.Dataset("mnist", split(128), split(32), 255, 10)


def built(tmp_path_factory, model: str, data: str, dataset) -> BuildConfig:
    out = tmp_path_factory.mktemp(model) / "run"
    cfg = BuildConfig(model=model, data=data, data_dir=out.parent, out=out, board="pynq-z1", to_step="specialize",
                      train=TrainOptions(epochs=1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qat.data, "load_dataset", lambda *a, **k: dataset)
        run_build(cfg)
    return cfg


@pytest.fixture(scope="module")
def tfc(tmp_path_factory):
    return built(tmp_path_factory, "tfc-w1a1", "mnist", synthetic_mnist())


def fold_with(cfg: BuildConfig, folding: Path, run: Path, dataset) -> dict:
    import shutil

    shutil.copytree(cfg.run_dir, run)
    resumed = BuildConfig(model=cfg.model, data=cfg.data, data_dir=cfg.data_dir, out=run, board=cfg.board,
                          folding=folding, from_step="fold", to_step="estimate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qat.data, "load_dataset", lambda *a, **k: dataset)
        run_build(resumed)
    return json.loads((run / "fold" / "report.json").read_text())


def test_finn_examples_tfc_file_applies(tfc, tmp_path):
    report = fold_with(tfc, TFC_FILE, tmp_path / "run", synthetic_mnist())
    lines = report["folding_file_report"]
    text = "\n".join(lines)
    assert "Thresholding_rtl_0: PE=49 from Thresholding_hls_0 (matched by kind and index)" in text
    # Thresholding_rtl has no ram_style: reported, not an AttributeError
    assert any(l.startswith("Thresholding_rtl_0: ram_style='distributed'") and "not applied" in l for l in lines)
    assert "MVAU_hls_0: PE=16, SIMD=49, ram_style=block from MVAU_hls_0" in text
    folding = json.loads((tmp_path / "run" / "fold" / "folding.json").read_text())
    assert folding["MVAU_hls_3"]["PE"] == 10 and folding["MVAU_hls_0"]["ram_style"] == "block"
    est = json.loads((tmp_path / "run" / "estimate" / "report.json").read_text())
    # finn-examples' folding: 64 cycles per MVAU, so FINN's 1.56M 'ideal'; the 784-byte input DMA binds
    assert est["compute_cycles"] == 64 and est["io_in_cycles"] == 98


def test_unnamed_nodes_get_the_default_rule_and_a_line(tfc, tmp_path):
    raw = json.loads(TFC_FILE.read_text())
    del raw["Thresholding_hls_0"]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(raw))
    lines = fold_with(tfc, path, tmp_path / "run", synthetic_mnist())["folding_file_report"]
    assert any(l.startswith("Thresholding_rtl_0: not named in the file; default rule: PE=") for l in lines), lines


@pytest.mark.parametrize("entry, words", [
    ({"MVAU_hls_0": {"PE": 4.0}}, ["MVAU_hls_0.PE = 4.0", "not an integer"]),
    ({"MVAU_hls_0": {"ram_style": "foo"}}, ["MVAU_hls_0.ram_style", '"foo"', '"block"']),
    ({"MVAU_hls_0": {"resType": "fpga"}}, ["resType", '"dsp"']),
], ids=["float-pe", "ram-style", "res-type"])
def test_bad_values_are_refused_before_the_first_step(tmp_path, entry, words):
    path = tmp_path / "f.json"
    path.write_text(json.dumps(entry))
    with pytest.raises(ConfigError) as err:
        run_build(BuildConfig(model="tfc-w1a1", out=tmp_path / "run", folding=path))
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not (tmp_path / "run" / "train").exists()  # nothing ran


@pytest.mark.parametrize("entry, words", [
    ({"MVAU_hls_0": {"PE": 3}}, ["MVAU_hls_0", "illegal", "PE in [1, 2, 4, 8, 16, 32, 64]"]),
    ({"MVAU_hls_1": {"MH": 32}}, ["MVAU_hls_1", "MH defines the layer"]),
    ({"MVAU_hls_1": {"PEE": 1}}, ["MVAU_hls_1", "unknown attribute 'PEE'", "PE, SIMD, ram_style"]),
    ({"MVAU_hls_7": {"PE": 1}}, ["1 MVAU node(s) (MVAU_hls_7)", "has 4", "MVAU_hls_0 (MVAU MH=64 MW=784",
                                 "SIMD in [1, 2, 4, 7, 8, 14, 16, 28, 49, 56, 98, 112, 196, 392, 784]"]),
    ({"Pool_hls_0": {"PE": 1}}, ["Pool_hls_0", "matches no node"]),
], ids=["illegal-pe", "structural", "unknown-attr", "ambiguous", "no-such-kind"])
def test_bad_entries_name_node_attribute_and_legal_values(tfc, entry, words):
    model = Build(tfc).model("specialize")
    with pytest.raises(ConfigError) as err:
        apply_folding_file(copy.deepcopy(model), entry, {}, "f.json")
    assert all(w in str(err.value) for w in words), str(err.value)


def test_a_resumed_fold_checks_the_file_before_the_step(tfc, tmp_path):
    import shutil

    path = tmp_path / "f.json"
    path.write_text(json.dumps({"MVAU_hls_0": {"PE": 3}}))
    run = tmp_path / "run"
    shutil.copytree(tfc.run_dir, run)
    with pytest.raises(ConfigError, match="illegal"):
        run_build(BuildConfig(model="tfc-w1a1", data="mnist", data_dir=run.parent, out=run, board="pynq-z1",
                              folding=path, from_step="fold"))
    assert not (run / "fold.failed").exists() and not (run / "fold").exists()


@pytest.mark.slow
def test_finn_examples_cnv_file_applies(tmp_path_factory, tmp_path):
    ds = synthetic_cifar(n_train=64, n_test=16)
    cfg = built(tmp_path_factory, "cnv-w1a1", "cifar10", ds)
    lines = fold_with(cfg, CNV_FILE, tmp_path / "run", ds)["folding_file_report"]
    text = "\n".join(lines)
    # the file's six window generators are our six convolution windows, in order
    for k in range(6):
        assert f"from ConvolutionInputGenerator_hls_{k} (matched by kind and order)" in text
    # our pools' windows and the pools are not in the file: the default rule, tied
    assert sum("not named in the file; default rule" in l for l in lines) == 4
    folding = json.loads((tmp_path / "run" / "fold" / "folding.json").read_text())
    mvaus = [folding[f"MVAU_hls_{k}"] for k in range(9)]
    assert [m["PE"] for m in mvaus] == [16, 32, 16, 16, 4, 1, 1, 1, 5]
    assert all(m["resType"] == "lut" for m in mvaus)
