"""The vendor stage: gated on Vivado/Vitis HLS; its FINN config is accepted by FINN's own class."""
import json
from pathlib import Path

import pytest

from flows.finn_env import VendorTools, detect_vendor_tools
from flows.vendor import FINN_VENDOR_STEPS, run_vendor_flow, skip_reason, vendor_build_config


class FakeBuild:
    def __init__(self, tmp_path):
        from boards import load_board

        self.board = load_board("pynq-z2")
        self.tmp = tmp_path

    def dir(self, step):
        return self.tmp / step


def test_no_tools_skips_with_reason(tmp_path):
    tools = VendorTools(vivado=None, vitis_hls=None)
    report = run_vendor_flow(FakeBuild(tmp_path), tmp_path, tools)
    assert report["bitfile"] is None
    assert "vivado" in report["reason"] and "vitis_hls" in report["reason"]
    assert report["reason"] == skip_reason(tools)


@pytest.mark.skipif(detect_vendor_tools().available, reason="Vivado is installed here")
def test_detection_finds_no_tools_here():
    assert not detect_vendor_tools().available


def test_tools_need_xilinx_vivado_too(monkeypatch):
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    tools = VendorTools("/opt/Xilinx/Vivado/bin/vivado", "/opt/Xilinx/Vitis_HLS/bin/vitis_hls")
    assert not tools.available and tools.missing() == ["XILINX_VIVADO (set by Vivado's settings64.sh)"]
    monkeypatch.setenv("XILINX_VIVADO", "/opt/Xilinx/Vivado")
    assert tools.available and tools.missing() == []


def test_finn_accepts_generated_config(tmp_path):
    from finn.builder.build_dataflow_config import DataflowBuildConfig, ShellFlowType

    cfg = vendor_build_config(FakeBuild(tmp_path), tmp_path)
    assert isinstance(cfg, DataflowBuildConfig)
    assert cfg.fpga_part == "xc7z020clg400-1" and cfg.board == "Pynq-Z2"
    assert cfg.shell_flow_type == ShellFlowType.VIVADO_ZYNQ and cfg.synth_clk_period_ns == 10.0
    # FINN serialises and re-reads its own config: what we generate survives the round trip
    again = DataflowBuildConfig.from_json(cfg.to_json())
    assert again.steps == FINN_VENDOR_STEPS and Path(again.folding_config_file) == tmp_path / "fold" / "folding.json"
    assert json.loads(cfg.to_json())["generate_outputs"]


def test_vendor_steps_exist_in_finn():
    import ast
    import importlib.util

    source = importlib.util.find_spec("finn.builder.build_dataflow_steps").origin
    defined = {n.name for n in ast.parse(open(source).read()).body if isinstance(n, ast.FunctionDef)}
    assert set(FINN_VENDOR_STEPS) <= defined
