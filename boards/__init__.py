"""Board definitions as data: one YAML file per board, loaded into one typed object.

    >>> from boards import load_board
    >>> load_board("pynq-z2").part
    'xc7z020clg400-1'
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from flows.errors import ConfigError

BOARD_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Board:
    """A Zynq board as the flow sees it."""

    name: str  # CLI name, e.g. "pynq-z2"
    finn_board: str  # FINN's board name (finn.util.basic.pynq_part_map key)
    part: str  # FPGA part number
    clock_mhz: float  # fabric clock the accelerator is built for
    luts: int
    ffs: int
    bram36: int  # 36 Kb block RAMs
    uram: int  # UltraRAMs (0 on Zynq-7000)
    dsps: int
    axi_width_bits: int  # width of the HP port the IO DMAs use
    shell: str  # FINN shell flow: "zynq-iodma"

    @property
    def clock_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    @property
    def axi_bytes_per_cycle(self) -> int:
        return self.axi_width_bits // 8

    def capacity(self) -> dict[str, int]:
        """Resources in the keys the estimates use."""
        return {"LUT": self.luts, "FF": self.ffs, "BRAM_18K": 2 * self.bram36,
                "URAM": self.uram, "DSP": self.dsps}


def list_boards() -> list[str]:
    return sorted(p.stem for p in BOARD_DIR.glob("*.yaml"))


def load_board(name: str) -> Board:
    """Load ``boards/<name>.yaml``; an unknown name lists the known ones."""
    path = BOARD_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown board '{name}'; known boards: {', '.join(list_boards())}")
    import yaml

    data = yaml.safe_load(path.read_text())
    expected = {f.name for f in fields(Board)}
    if set(data) != expected:
        raise ConfigError(f"board file {path} has fields {sorted(data)}, expected {sorted(expected)}")
    board = Board(**data)
    if board.name != name:
        raise ConfigError(f"board file {path} names itself '{board.name}'; rename one of them")
    return board
