"""host.perf_model against published board and RTL-simulation figures of FINN designs, and its arithmetic.

Each calibration case rebuilds a published design's layers from its published folding
(FINN's cycle formulas, host.perf_model's shape profiles) and compares the model with the
published figure under the same conditions (batch size, clock, host driver, IO). A case's
`role` says whether it measured one of the model's constants or only checks them.
docs/perf_model.md carries the same table with the errors before and after.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from host import perf_model as pm
from host.errors import HostError
from host.perf_model import (DEFAULT_OVERHEAD_S, FINN_DRIVER_MMIO_ACCESSES, LABEL, MMIO_ACCESS_S, IOStream,
                             LayerCycles, PerfModel, Port, elementwise, label_select, mvau, streaming, swg)

THROUGHPUT_TOLERANCE = 0.10
LATENCY_TOLERANCE = 0.15
# FINN's generated driver: 8 register accesses per batch (host.perf_model), timed by its throughput_test
FINN_DRIVER_OVERHEAD_S = FINN_DRIVER_MMIO_ACCESSES * MMIO_ACCESS_S
DOC = Path(__file__).resolve().parent.parent / "docs" / "perf_model.md"


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # where the figure is published
    design: str  # what was built, with its folding
    build: Callable[[], PerfModel]
    batch: int  # images per timed run
    images_per_s: float  # published
    latency_cycles: float | None = None  # published batch-1 fabric latency
    role: str = "check"  # or which constant it measured


# -- the designs ------------------------------------------------------------------------------

def tfc_w1a1_tutorial() -> PerfModel:
    """784 UINT8 pixels -> Thresholding (PE 49) -> FC 784-64-64-64-10 at (PE, SIMD) 16/49, 8/8,
    8/8, 10/8 -> LabelSelect (PE 1). The input stream: 16 words of 49 UINT8 = 784 bytes."""
    layers = [elementwise("Thresholding_0", 784 // 49, folding={"PE": 49}, stages=1),
              mvau("MVAU_0", 784, 64, 16, 49, stages=1), mvau("MVAU_1", 64, 64, 8, 8, stages=1),
              mvau("MVAU_2", 64, 64, 8, 8, stages=1), mvau("MVAU_3", 64, 10, 10, 8, stages=1),
              label_select("LabelSelect_0", 10, 1, stages=1)]
    return PerfModel.from_ports(layers, 100.0, Port(784 * 8, 49 * 8, 16), Port(8, 8, 1), 64,
                                FINN_DRIVER_OVERHEAD_S)


def cybsec_2021_layers() -> list[LayerCycles]:
    """600 bipolar inputs, FC 600-64-64-64-1 (W2A2) at (PE, SIMD) 32/15, 4/16, 4/16, 1/1 (the
    notebook's final_hw_config.json); a FIFO at the input, a width converter between layers."""
    return [mvau("MVAU_0", 600, 64, 32, 15, stages=1), mvau("MVAU_1", 64, 64, 4, 16, stages=1),
            mvau("MVAU_2", 64, 64, 4, 16, stages=1), mvau("MVAU_3", 64, 1, 1, 1, stages=1)]


def cybsec_rtlsim() -> PerfModel:
    """Stitched-IP RTL simulation: the testbench streams the first layer's 40 words (15 bits,
    padded to 16) one per cycle and takes the output at once; no DMA, no host."""
    return PerfModel(cybsec_2021_layers(), 100.0, IOStream.words(40), IOStream.words(1, "output"), 0.0)


def cybsec_v010_board() -> PerfModel:
    """FINN v0.10.1's cybersecurity build (target_fps 1M, mvau_wwidth_max 80): FINN's SetFolding
    gives (PE, SIMD) 16/40, 2/32, 2/32, 1/1, i.e. the published 60/64/64/64 cycles. The 600
    bipolar inputs travel as 15 words of 40 bits: 600 bits, which FINN's IODMA moves over an
    8-bit interface (gcd(600, 64) = 8)."""
    layers = [mvau("MVAU_0", 600, 64, 16, 40, stages=1), mvau("MVAU_1", 64, 64, 2, 32, stages=1),
              mvau("MVAU_2", 64, 64, 2, 32, stages=1), mvau("MVAU_3", 64, 1, 1, 1, stages=1)]
    return PerfModel.from_ports(layers, 100.0, Port(600, 40, 15), Port(1, 8, 1), 64, FINN_DRIVER_OVERHEAD_S)


def _swg_hls(ifm: int, k: int, channels: int, simd: int, ofm: int) -> int:
    """2020 FINN's estimate for its HLS sliding-window generator (stride 1)."""
    cf = channels // simd
    return ifm * k * cf + ofm * max(ofm * k * k * cf, ifm * cf)


def cnv_w1a1_finn_examples() -> PerfModel:
    """CNV-W1A1 with finn-examples' folding (build/bnn-pynq/folding_config/cnv-w1a1_folding_config.json,
    also FINN's cnv_end2end_example): input thresholds PE 1, six convolutions at (PE, SIMD) 16/3,
    32/32, 16/32, 16/32, 4/32, 1/32, two max pools, FC 256-512-512-10 at 1/4, 1/8, 5/1, LabelSelect.
    The two 512-wide FC layers bind at 32,768 cycles; the port width does not matter."""
    conv = [(32, 3, 64, 16, 3), (30, 64, 64, 32, 32), (14, 64, 128, 16, 32), (12, 128, 128, 16, 32),
            (5, 128, 256, 4, 32), (3, 256, 256, 1, 32)]  # input size, in/out channels, PE, SIMD
    layers = [elementwise("Thresholding_0", 32 * 32 * 3, stages=1)]
    for i, (ifm, cin, cout, pe, simd) in enumerate(conv):
        ofm, folds = ifm - 2, cin // simd
        layers.append(swg(f"SWG_{i}", (ifm, ifm), (3, 3), folds, _swg_hls(ifm, 3, cin, simd, ofm), stages=1))
        layers.append(mvau(f"MVAU_{i}", 9 * cin, cout, pe, simd, ofm * ofm, stages=1))
        if i in (1, 3):  # 2x2 max pool after the second and fourth convolution
            layers.append(streaming(f"MaxPool_{i}", ofm * (ofm + ofm // 2), (ofm // 2) ** 2, stages=1))
    layers += [mvau("MVAU_6", 256, 512, 1, 4, stages=1), mvau("MVAU_7", 512, 512, 1, 8, stages=1),
               mvau("MVAU_8", 512, 10, 5, 1, stages=1), label_select("LabelSelect_0", 10, 1, stages=1)]
    return PerfModel.from_ports(layers, 100.0, Port(3072 * 8, 8, 3072), Port(8, 8, 1), 128, FINN_DRIVER_OVERHEAD_S)


CASES = [
    Case("TFC-W1A1, FINN tutorial, PYNQ-Z1",
         "Xilinx/finn notebooks/end2end_example/bnn-pynq/tfc_end2end_example.ipynb (2020 revisions): "
         "FINN driver throughput_test, batch 10000, 100 MHz, 751 MB/s in = 784 B/image; measured",
         tfc_w1a1_tutorial.__doc__, tfc_w1a1_tutorial, 10_000, 958_413, role="measured DMA_EFFICIENCY"),
    Case("Cybersecurity MLP W2A2, stitched-IP RTL simulation",
         "Xilinx/finn notebooks/end2end_example/cybersecurity/3-build-accelerator-with-finn.ipynb (2021, "
         "commit 01431f34): rtlsim_performance.json N=8, 838 cycles, latency_cycles 229; simulated",
         cybsec_2021_layers.__doc__, cybsec_rtlsim, 8, 954_653.9, latency_cycles=229,
         role="interval measured LAYER_DEPTH_CYCLES; latency checks"),
    Case("Cybersecurity MLP W2A2, FINN v0.10.1, PYNQ-Z1",
         "github.com/reethika000/Building-and-Deploying-a-Quantized-Neural-Network-Accelerator-Using-FINN "
         "README.md: FINN driver throughput_test, batch 1000, 100 MHz, 70.74 MB/s in = 75 B/image; "
         "measured (third party)", cybsec_v010_board.__doc__, cybsec_v010_board, 1000, 943_176),
    Case("Cybersecurity MLP W2A2, FINN v0.10.1, PYNQ-Z2",
         "same README, the PYNQ-Z2 row: 1.0786 ms per batch of 1000, 69.53 MB/s in; measured (third party)",
         cybsec_v010_board.__doc__, cybsec_v010_board, 1000, 927_122),
    Case("CNV-W1A1, finn-examples, Zynq UltraScale+ board",
         "Xilinx/finn-examples finn_examples/notebooks/1_cifar10_with_cnv_networks.ipynb (commit 00da6d36): "
         "throughput_test, batch 1000, 99.999 MHz, 331.07 ms; measured",
         cnv_w1a1_finn_examples.__doc__, cnv_w1a1_finn_examples, 1000, 3020.5),
]
CASE_IDS = ["tfc-tutorial", "cybsec-rtlsim", "cybsec-pynq-z1", "cybsec-pynq-z2", "cnv-finn-examples"]

# Published figures left out, and why (docs/perf_model.md says the same).
NOT_USED = {
    "TFC-W1A1, finn-examples notebook, 837,019 images/s": "run on a 64-bit ARM board (ZCU104 or Ultra96); "
        "whether that 2020 bitfile's IODMA used 64 or 128 bits decides DMA- or compute-bound, and we could "
        "not establish it (the model gives 786k, -6%, with 64 bits; 1.04M, +24%, with 128)",
    "BNN-PYNQ LFC-W1A1, 356,633 images/s": "pre-FINN-compiler hardware (BNN-PYNQ's own HLS top and data mover); "
        "the bitfile's clock is not published with the figure",
    "FINN paper (Umuroglu et al. 2017), SFC/LFC/CNV-max": "first-generation FINN hardware on a ZC706 at "
        "200 MHz; the per-layer folding of the max designs is not available to us",
}


def error(modelled: float, published: float) -> float:
    return modelled / published - 1


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_throughput_within_10_percent_of_the_published_figure(case):
    modelled = case.build().images_per_second(case.batch)
    assert abs(error(modelled, case.images_per_s)) < THROUGHPUT_TOLERANCE, \
        f"{case.name}: modelled {modelled:,.0f} images/s vs published {case.images_per_s:,.0f} ({case.source})"


@pytest.mark.parametrize("case", [c for c in CASES if c.latency_cycles], ids=lambda c: c.name)
def test_batch1_fabric_latency_within_15_percent(case):
    modelled = case.build().latency_cycles
    assert abs(error(modelled, case.latency_cycles)) < LATENCY_TOLERANCE, \
        f"{case.name}: modelled {modelled:.0f} cycles vs published {case.latency_cycles:.0f}"


def test_the_doc_table_holds_each_case_with_its_error():
    doc = DOC.read_text()
    for case in CASES:
        err = error(case.build().images_per_second(case.batch), case.images_per_s)
        assert case.name in doc and f"{100 * err:+.1f}%" in doc, case.name
    for name in NOT_USED:
        assert name in doc, name


def test_the_tfc_tutorial_is_bound_by_its_input_dma():
    model = tfc_w1a1_tutorial()
    assert model.binding == "input DMA" and model.io_in.cycles == pytest.approx(98 / pm.DMA_EFFICIENCY)
    assert "98 beats of 64 bits" in model.ii_why
    # FINN's 'ideal' 1.56M images/s is the slowest layer's estimate alone
    assert 100e6 / max(l.cycles for l in model.layers) == pytest.approx(1.5625e6)


def test_a_600_bit_input_rides_an_8_bit_iodma():
    """FINN's IODMA width divides the transfer: 600 bits per image go as 75 one-byte beats, so the
    1-bit input binds the v0.10.1 cybersecurity build, not its 64-cycle layers."""
    model = cybsec_v010_board()
    assert Port(600, 40, 15).dma_width(64) == 8 and Port(600, 40, 15).beats(64) == 75
    assert model.binding == "input DMA" and "75 beats of 8 bits" in model.ii_why
    # packed at 1 bit, not one byte per feature: 600 UINT8 inputs would need 600 bytes
    assert Port(600 * 8).beats(64) == 75 and Port(600).transfer_bits == 600


def test_layers_overlap_in_the_batch1_latency():
    model = cybsec_rtlsim()
    fill_sum = sum(l.cycles for l in model.layers)  # FINN's 'critical path' estimate: 272
    assert model.latency_cycles < fill_sum and model.ii_cycles == 80 + pm.LAYER_DEPTH_CYCLES
    assert "compute: MVAU_0, FINN's estimate 80 + 7 pipeline depth" in model.ii_why
    # the last FC layer needs its whole input: its first output waits for the previous layer's last
    spans = {s.stage: s for s in model.timeline}
    assert spans["MVAU_3"].first >= spans["MVAU_2"].last


# -- arithmetic ---------------------------------------------------------------------------------

def test_batch_time_is_overhead_plus_latency_plus_intervals():
    model = PerfModel((LayerCycles("a", 10), LayerCycles("b", 30)), 100.0, IOStream(20.0, "in"),
                      IOStream(1.0, "out"), overhead_s=1e-6)
    assert model.ii_cycles == 30 + pm.LAYER_DEPTH_CYCLES and model.binding == "compute (b)"
    assert model.batch_seconds(1) == pytest.approx(1e-6 + model.latency_cycles / 1e8)
    assert model.batch_seconds(5) == pytest.approx(1e-6 + (model.latency_cycles + 4 * model.ii_cycles) / 1e8)
    assert model.latency_s == model.batch_seconds(1)
    assert [name for name, _ in model.layer_seconds()] == ["DMA in", "a", "b", "DMA out"]
    assert LABEL == "modelled" and model.ii_why.startswith("II = 37.0 cycles: compute")


def test_block_layers_reproduce_the_old_fill():
    """Layers without a shape profile (old reports) start after the whole image: the sum."""
    model = PerfModel((LayerCycles("a", 10, depth=0), LayerCycles("b", 30, depth=0)), 100.0,
                      IOStream(20.0, "in"), IOStream(1.0, "out"), overhead_s=0.0)
    assert model.latency_cycles == 20 + 10 + 30 + 1


def test_dma_bound_in_finn_units_leaves_room_for_the_depth():
    io_in = IOStream.dma(Port(784 * 8), 64)
    assert pm.dma_bound_exp_cycles(io_in, IOStream.dma(Port(8), 64)) == int(98 / pm.DMA_EFFICIENCY) - 7


def test_default_overhead_is_ten_register_accesses():
    assert DEFAULT_OVERHEAD_S == pytest.approx(10 * 125e-6 / 4)
    assert FINN_DRIVER_OVERHEAD_S == pytest.approx(250e-6)


def test_from_deploy_reads_the_estimate(tmp_path):
    layer = mvau("MVAU_hls_0", 64, 16, 4, 8).to_dict()
    estimate = {"clock_mhz": 100.0, "io_in_cycles": 8, "io_out_cycles": 1, "dma_in_cycles": 8.5,
                "dma_out_cycles": 1.1, "dma_in_why": "input DMA (x)", "layers": [layer]}
    (tmp_path / "report.json").write_text(json.dumps({"estimate": estimate}))
    model = PerfModel.from_deploy(tmp_path, overhead_s=0.0)
    assert model.ii_cycles == 32 + pm.LAYER_DEPTH_CYCLES and model.layers[0].folding == {"PE": 4, "SIMD": 8}
    assert model.layers[0] == mvau("MVAU_hls_0", 64, 16, 4, 8) and model.io_in.cycles == 8.5


def test_from_deploy_reads_an_old_estimate(tmp_path):
    estimate = {"clock_mhz": 100.0, "io_in_cycles": 8, "io_out_cycles": 1,
                "layers": [{"name": "MVAU_hls_0", "op_type": "MVAU_hls", "cycles": 16, "folding": {"PE": 4}}]}
    (tmp_path / "report.json").write_text(json.dumps({"estimate": estimate}))
    model = PerfModel.from_deploy(tmp_path, overhead_s=0.0)
    assert model.ii_cycles == 16 + pm.LAYER_DEPTH_CYCLES and model.io_in.cycles == 8
    assert model.latency_cycles == 8 + 16 + pm.LAYER_DEPTH_CYCLES + 1  # block layer


@pytest.mark.parametrize("bad", [{}, {"estimate": {"layers": []}}, {"estimate": {"clock_mhz": 100}}],
                         ids=["no-estimate", "no-layers", "no-cycles"])
def test_bad_reports_raise_one_clear_error(tmp_path, bad):
    (tmp_path / "report.json").write_text(json.dumps(bad))
    with pytest.raises(HostError, match="estimate|layer"):
        PerfModel.from_deploy(tmp_path)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_batch_size_must_be_positive(n):
    model = PerfModel((LayerCycles("a", 1),), 100.0, IOStream(1.0, "in"), IOStream(1.0, "out"))
    with pytest.raises(HostError, match="batch size"):
        model.batch_seconds(n)
