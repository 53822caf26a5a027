"""Fixtures for the tests that run in the board environment
(scripts/setup-board-env.sh: Python 3.10, numpy 1.21, pynq 3.0.1).

Run from the repository root:  PYTHONPATH=. <boardenv>/bin/python -m pytest tests/board -q
"""

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def make_design(directory: Path, hwh_name: str, stem: str = "accel") -> Path:
    """A placeholder .bit with a fixture .hwh beside it; returns the .bit path.
    Only usable with download=False: the .bit holds no bitstream."""
    bit = directory / f"{stem}.bit"
    bit.write_bytes(b"placeholder, never downloaded")
    shutil.copy(FIXTURES / hwh_name, bit.with_suffix(".hwh"))
    return bit


@pytest.fixture
def iodma_bitfile(tmp_path: Path) -> Path:
    """FINN's zynq-iodma shell: zynq_ps, idma0, StreamingDataflowPartition_1, odma0."""
    return make_design(tmp_path, "finn_zynq_iodma.hwh")


@pytest.fixture
def plain_bitfile(tmp_path: Path) -> Path:
    """A design with no FINN IO DMAs."""
    return make_design(tmp_path, "no_iodma.hwh")
