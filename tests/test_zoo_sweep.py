"""``flows sweep`` (flows/sweep.py) and bench/zoo_sweep.py: the zoo across boards in one table, resumable."""
import json
import sys
from pathlib import Path

import pytest

from flows.errors import ConfigError
from flows.sweep import SweepConfig, run_sweep, zoo_models

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import zoo_sweep  # noqa: E402


def test_sweep_estimates_each_board_and_resumes(tmp_path):
    cfg = SweepConfig(("tfc-w1a1",), ("pynq-z2", "ultra96-v2"), out=tmp_path / "sweep")
    seen = []
    result = run_sweep(cfg, on_row=lambda row, reused: seen.append((row["board"], reused)))
    assert seen == [("pynq-z2", False), ("ultra96-v2", False)]
    rows = {r["board"]: r for r in json.loads(result["paths"]["json"].read_text())["rows"]}
    assert rows["pynq-z2"]["fits"] and rows["ultra96-v2"]["fits"]
    assert "accuracy" not in rows["pynq-z2"]  # estimates only
    assert rows["pynq-z2"]["lut_share"] > rows["ultra96-v2"]["lut_share"]  # same design, the bigger board
    # the model was trained once: the second board's build took the first one's checkpoint
    config = json.loads((tmp_path / "sweep" / "runs" / "tfc-w1a1_ultra96-v2_digits" / "config.json").read_text())
    assert config["identity"]["checkpoint"].endswith("checkpoint.pt")
    table = result["paths"]["markdown"].read_text()
    assert f"| tfc-w1a1 | pynq-z2 | yes | {rows['pynq-z2']['cycles_per_image']:,.1f} |" in table
    assert "**estimated**" in table and "simulated" not in table

    seen.clear()
    run_sweep(cfg, on_row=lambda row, reused: seen.append((row["board"], reused)))  # resumed: nothing rebuilt
    assert seen == [("pynq-z2", True), ("ultra96-v2", True)]
    with pytest.raises(ConfigError, match="choose another --out"):
        run_sweep(SweepConfig(("tfc-w1a1",), out=tmp_path / "sweep", epochs=2))


@pytest.mark.parametrize("kwargs, message", [
    (dict(models=("tfx-w1a1",)), "unknown model 'tfx-w1a1'"),
    (dict(models=("tfc-w1a1",), boards=("pynq-z9",)), "unknown board 'pynq-z9'"),
    (dict(models=("tfc-w1a1",), data="mnist"), "needs --data-dir"),
    (dict(models=()), "at least one model")])
def test_sweep_config_is_checked_before_anything_runs(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SweepConfig(**kwargs, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_zoo_names_from_archs_and_precisions():
    assert zoo_models("tfc,lfc", "w1a1,w2a2") == ("tfc-w1a1", "tfc-w2a2", "lfc-w1a1", "lfc-w2a2")
    assert zoo_models("tfc", "w1a1", models="sfc-w2a2, lenet-w4a4") == ("sfc-w2a2", "lenet-w4a4")
    assert len(zoo_models()) == 20 and zoo_models()[0] == "tfc-w1a1"  # the MLPs at every zoo precision


def test_zoo_script_builds_verifies_and_tabulates(tmp_path):
    code = zoo_sweep.main(["--models", "tfc-w1a1,lfc-w4a4", "--epochs", "1", "--work", str(tmp_path / "runs"),
                           "--out", str(tmp_path)])
    assert code == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "zoo_pynq-z2_digits.json").read_text())["rows"]}
    assert rows["tfc-w1a1"]["fits"] and rows["tfc-w1a1"]["verified"] and rows["tfc-w1a1"]["images"] == 450
    assert not rows["lfc-w4a4"]["fits"] and rows["lfc-w4a4"]["verified"]  # too big, still verified
    table = (tmp_path / "zoo_pynq-z2_digits.md").read_text()
    tfc_row = f"| tfc-w1a1 | pynq-z2 | yes | {rows['tfc-w1a1']['cycles_per_image']:,.1f} |"  # the modelled interval
    assert tfc_row in table and "| lfc-w4a4 | pynq-z2 | no |" in table and "**simulated**" in table
    again = zoo_sweep.main(["--models", "tfc-w1a1", "--work", str(tmp_path / "runs"),
                            "--out", str(tmp_path / "again")])  # the row is reused, not rebuilt
    assert again == 0 and tfc_row in (tmp_path / "again" / "zoo_pynq-z2_digits.md").read_text()
