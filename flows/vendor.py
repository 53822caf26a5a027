"""The vendor stage: FINN's own HLS/RTL generation, stitched IP, Zynq shell and bitfile.

This needs Vivado and Vitis HLS, so it is a thin call into FINN's tested build
steps, starting from the folded partition this flow produced. Without the
tools it stops with one clear line and records ``"bitfile": null`` and why.
"""
from __future__ import annotations

from pathlib import Path

from flows.errors import StepError
from flows.finn_env import VendorTools, detect_vendor_tools

# FINN build steps that continue from a specialised, folded dataflow partition
FINN_VENDOR_STEPS = ["step_minimize_bit_width", "step_hw_codegen", "step_hw_ipgen", "step_set_fifo_depths",
                     "step_create_stitched_ip", "step_synthesize_bitfile", "step_make_driver",
                     "step_deployment_package"]


def vendor_build_config(build, out: Path):
    """FINN's DataflowBuildConfig for this build's board, clock and folding."""
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType, ShellFlowType

    return DataflowBuildConfig(
        output_dir=str(out / "finn"),
        synth_clk_period_ns=build.board.clock_ns,
        board=build.board.finn_board,
        fpga_part=build.board.part,
        shell_flow_type=ShellFlowType.VIVADO_ZYNQ,
        folding_config_file=build.dir("fold") / "folding.json",
        steps=FINN_VENDOR_STEPS,
        generate_outputs=[DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER,
                          DataflowOutputType.DEPLOYMENT_PACKAGE],
    )


def skip_reason(tools: VendorTools) -> str:
    return (f"vendor stage skipped: {', '.join(tools.missing())} not found; HLS/RTL IP generation, "
            "stitched IP, Zynq shell and bitfile need Vivado and Vitis HLS (estimates and "
            "simulation above do not)")


def run_vendor_flow(build, out: Path, tools: VendorTools | None = None) -> dict:
    tools = tools or detect_vendor_tools()
    if not tools.available:
        return {"bitfile": None, "hwh": None, "reason": skip_reason(tools)}
    from finn.builder.build_dataflow import build_dataflow_cfg

    cfg = vendor_build_config(build, out)
    code = build_dataflow_cfg(str(build.dir("fold") / "model.onnx"), cfg)
    bit = next((out / "finn" / "bitfile").glob("*.bit"), None)
    hwh = next((out / "finn" / "bitfile").glob("*.hwh"), None)
    if code != 0 or bit is None or hwh is None:
        raise StepError("bitfile", f"FINN's build returned {code}; see {out / 'finn' / 'build_dataflow.log'}")
    return {"bitfile": str(bit), "hwh": str(hwh), "reason": None, "vivado": tools.vivado}
