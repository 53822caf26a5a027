"""bench/zoo_sweep.py: one table of fit, estimates and verification for zoo models."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import zoo_sweep  # noqa: E402


def test_sweep_builds_verifies_and_tabulates(tmp_path):
    code = zoo_sweep.main(["--models", "tfc-w1a1,lfc-w4a4", "--epochs", "1", "--work", str(tmp_path / "runs"),
                           "--out", str(tmp_path)])
    assert code == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "zoo_pynq-z2_digits.json").read_text())["rows"]}
    assert rows["tfc-w1a1"]["fits"] and rows["tfc-w1a1"]["verified"] and rows["tfc-w1a1"]["images"] == 450
    assert not rows["lfc-w4a4"]["fits"] and rows["lfc-w4a4"]["verified"]  # too big, still verified
    table = (tmp_path / "zoo_pynq-z2_digits.md").read_text()
    tfc_row = f"| tfc-w1a1 | yes | {rows['tfc-w1a1']['cycles_per_image']:,.1f} |"  # the modelled interval
    assert tfc_row in table and "| lfc-w4a4 | no |" in table
    again = zoo_sweep.main(["--models", "tfc-w1a1", "--no-build", "--work", str(tmp_path / "runs"),
                            "--out", str(tmp_path / "again")])
    assert again == 0 and tfc_row in (tmp_path / "again" / "zoo_pynq-z2_digits.md").read_text()
