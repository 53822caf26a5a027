"""FINN as a library: settings, and detection of the AMD tools it needs for the vendor stage."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


def init_finn(build_dir: Path) -> None:
    """Point FINN's global settings at ``build_dir`` for its temporary files.

    FINN's transforms read settings that its CLI normally creates; calling them as a
    library needs this first. Nothing is written to the environment.
    """
    import finn.util.settings as settings
    from finn.interface.settings import FINNSettings

    build_dir.mkdir(parents=True, exist_ok=True)
    st = FINNSettings.init(auto_set_environment_vars=False, flow_config=build_dir / "flow.yaml")
    st.finn_build_dir = str(build_dir)
    settings._SETTINGS = st


@dataclass(frozen=True)
class VendorTools:
    """Which AMD tools are on PATH (the vendor stage needs Vivado and Vitis HLS)."""

    vivado: str | None
    vitis_hls: str | None

    @property
    def available(self) -> bool:
        return bool(self.vivado and self.vitis_hls and os.environ.get("XILINX_VIVADO"))

    def missing(self) -> list[str]:
        names = [("vivado", self.vivado), ("vitis_hls", self.vitis_hls)]
        out = [n for n, p in names if not p]
        if not os.environ.get("XILINX_VIVADO"):
            out.append("XILINX_VIVADO (set by Vivado's settings64.sh)")
        return out


def detect_vendor_tools() -> VendorTools:
    return VendorTools(shutil.which("vivado"), shutil.which("vitis_hls") or shutil.which("vitis-run"))
