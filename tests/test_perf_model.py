"""host.perf_model against FINN's published TFC-W1A1 measurement, and its arithmetic."""
import json

import pytest

from host.errors import HostError
from host.perf_model import DEFAULT_OVERHEAD_S, LABEL, LayerCycles, PerfModel

# FINN's TFC-W1A1 end-to-end tutorial (notebooks/end2end_example/bnn-pynq/tfc_end2end_example.ipynb,
# throughput test output of the 2020 revisions, quoted in /work/shared/FIELD-NOTES.md): PYNQ-Z1,
# 100 MHz, batch 10000, 784 UINT8 pixels per image through a 64-bit HP port.
FINN_MEASURED_IMAGES_PER_S = 958_413
FINN_MEASURED_DRAM_IN_MB_S = 751  # = 958,413 images/s x 784 B: the whole input was moved
FINN_BATCH = 10_000
FINN_CLOCK_MHZ = 100.0
FINN_IN_BYTES, FINN_OUT_BYTES = 784, 1  # UINT8 784 pixels; one UINT8 label
PYNQ_Z1_AXI_BITS = 64


def finn_tutorial_layers():
    """The tutorial's folding. FC layers 784-64-64-64-10 with (PE, SIMD) 16/49, 8/8, 8/8, 10/8:
    cycles = (MH / PE) * (MW / SIMD) = 4*16, 8*8, 8*8, 1*8.

    Assumption: the input is binarised by a standalone Thresholding layer before the first
    FC layer (the tutorial's InferThresholdingLayer; it sets its PE to 49, the first layer's
    SIMD: 784 / 49 = 16 cycles), and LabelSelect runs at FINN's default PE=1 (10 labels:
    10 cycles). Neither binds (both are under 64 cycles); they only lengthen the fill.
    """
    fc = [("MVAU_0", 784, 64, 16, 49), ("MVAU_1", 64, 64, 8, 8), ("MVAU_2", 64, 64, 8, 8), ("MVAU_3", 64, 10, 10, 8)]
    layers = [LayerCycles("Thresholding_0", 784 // 49, "Thresholding", {"PE": 49})]
    layers += [LayerCycles(name, (mh // pe) * (mw // simd), "MVAU", {"PE": pe, "SIMD": simd})
               for name, mw, mh, pe, simd in fc]
    layers.append(LayerCycles("LabelSelect_0", 10, "LabelSelect", {"PE": 1}))
    return layers


def test_fc_cycles_follow_the_tutorial_folding():
    assert [l.cycles for l in finn_tutorial_layers()] == [16, 64, 64, 64, 8, 10]


def test_model_lands_within_10_percent_of_finns_measured_tfc_w1a1():
    model = PerfModel.from_io(finn_tutorial_layers(), FINN_CLOCK_MHZ, FINN_IN_BYTES, FINN_OUT_BYTES, PYNQ_Z1_AXI_BITS)
    assert model.dma_in_cycles == 98 and model.ii_cycles == 98 and model.binding == "input DMA"
    modelled = model.images_per_second(FINN_BATCH)
    error = modelled / FINN_MEASURED_IMAGES_PER_S - 1
    assert abs(error) < 0.10, f"modelled {modelled:,.0f} images/s vs measured {FINN_MEASURED_IMAGES_PER_S:,}"
    # the measured DRAM figure is the same input stream seen from the other side
    assert FINN_MEASURED_IMAGES_PER_S * FINN_IN_BYTES / 1e6 == pytest.approx(FINN_MEASURED_DRAM_IN_MB_S, abs=1)
    # FINN's 'ideal' 1.56M images/s is the slowest layer alone; the DMA bound is the real ceiling
    assert FINN_CLOCK_MHZ * 1e6 / model.slowest_layer.cycles == pytest.approx(1.5625e6)
    assert model.peak_images_per_second == pytest.approx(1e8 / 98)


def test_batch_time_is_overhead_plus_fill_plus_intervals():
    model = PerfModel((LayerCycles("a", 10), LayerCycles("b", 30)), clock_mhz=100.0, dma_in_cycles=20,
                      dma_out_cycles=1, overhead_s=1e-6)
    assert model.ii_cycles == 30 and model.binding == "compute (b)" and model.fill_cycles == 61
    assert model.batch_seconds(1) == pytest.approx(1e-6 + 61 / 1e8)
    assert model.batch_seconds(5) == pytest.approx(1e-6 + (61 + 4 * 30) / 1e8)
    assert model.latency_s == model.batch_seconds(1)
    assert [name for name, _ in model.layer_seconds()] == ["DMA in", "a", "b", "DMA out"]
    assert model.summary([1, 4])["label"] == LABEL == "modelled"


def test_default_overhead_is_ten_register_accesses():
    assert DEFAULT_OVERHEAD_S == pytest.approx(10 * 125e-6 / 4)


def test_from_deploy_reads_the_estimate(tmp_path):
    estimate = {"clock_mhz": 100.0, "io_in_cycles": 8, "io_out_cycles": 1,
                "layers": [{"name": "MVAU_hls_0", "op_type": "MVAU_hls", "cycles": 16, "folding": {"PE": 4}}]}
    (tmp_path / "report.json").write_text(json.dumps({"estimate": estimate}))
    model = PerfModel.from_deploy(tmp_path, overhead_s=0.0)
    assert model.ii_cycles == 16 and model.fill_cycles == 25 and model.layers[0].folding == {"PE": 4}


@pytest.mark.parametrize("bad", [{}, {"estimate": {"layers": []}}, {"estimate": {"clock_mhz": 100}}],
                         ids=["no-estimate", "no-layers", "no-cycles"])
def test_bad_reports_raise_one_clear_error(tmp_path, bad):
    (tmp_path / "report.json").write_text(json.dumps(bad))
    with pytest.raises(HostError, match="estimate|layer"):
        PerfModel.from_deploy(tmp_path)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_batch_size_must_be_positive(n):
    model = PerfModel((LayerCycles("a", 1),), 100.0, 1, 1)
    with pytest.raises(HostError, match="batch size"):
        model.batch_seconds(n)
