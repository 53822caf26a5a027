"""Board definitions as data: one YAML file per board, loaded into one typed object.

    >>> from boards import load_board
    >>> load_board("pynq-z2").part
    'xc7z020clg400-1'
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from host.errors import ConfigError, finite

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


SHELLS = ("zynq-iodma",)  # FINN shells the flow builds for
AXI_WIDTHS = (32, 64, 128, 256, 512)
_COUNTS = {"luts": 1, "ffs": 1, "bram36": 0, "uram": 0, "dsps": 0}  # resource field -> least allowed


def list_boards() -> list[str]:
    return sorted(p.stem for p in BOARD_DIR.glob("*.yaml"))


def is_board_file(board: str) -> bool:
    """Whether ``--board`` names a file of the user's own (a path or a .yaml/.yml name), not a shipped board."""
    return board.endswith((".yaml", ".yml")) or "/" in board


def load_board(name: str) -> Board:
    """A shipped board by CLI name (``boards/<name>.yaml``), or the user's own board file by path
    (``--board my/zedboard.yaml``); both are validated field by field. An unknown name lists the known ones."""
    if is_board_file(name):
        path = Path(name)
        if path.is_dir() or not path.is_file():
            raise ConfigError(f"board file {path} {'is a directory' if path.is_dir() else 'not found'}; "
                              f"give a YAML file with the fields of boards/pynq-z2.yaml")
        stem = path.stem
    else:
        path, stem = BOARD_DIR / f"{name}.yaml", name
        if not path.is_file():
            raise ConfigError(f"unknown board '{name}'; known boards: {', '.join(list_boards())}; "
                              "or give the path of your own board file (see boards/pynq-z2.yaml)")
    board = Board(**_read_fields(path))
    if board.name != stem:
        raise ConfigError(f"board file {path} names itself '{board.name}'; rename one of them")
    return board


def _read_fields(path: Path) -> dict:
    """The fields of a board file, each checked for type and range (ConfigError naming the field)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"board file {path} is not readable YAML ({type(exc).__name__}); "
                          "copy boards/pynq-z2.yaml and edit it") from None
    expected = [f.name for f in fields(Board)]
    if not isinstance(data, dict) or set(data) != set(expected):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"board file {path} has fields {found}, expected {sorted(expected)}")
    for key in ("name", "finn_board", "part", "shell"):
        if not isinstance(data[key], str) or not data[key].strip():
            raise ConfigError(f"board file {path}: {key} must be a non-empty string, got {data[key]!r}")
    for key, least in _COUNTS.items():
        if isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < least:
            raise ConfigError(f"board file {path}: {key} must be an integer >= {least}, got {data[key]!r}")
    finite(f"board file {path}: clock_mhz", data["clock_mhz"], positive=True)
    if data["axi_width_bits"] not in AXI_WIDTHS or isinstance(data["axi_width_bits"], bool):
        raise ConfigError(f"board file {path}: axi_width_bits must be one of {AXI_WIDTHS}, "
                          f"got {data['axi_width_bits']!r}")
    if data["shell"] not in SHELLS:
        raise ConfigError(f"board file {path}: shell must be one of {', '.join(SHELLS)}, got {data['shell']!r}")
    return {**data, "clock_mhz": float(data["clock_mhz"])}
