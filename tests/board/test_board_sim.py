"""The modelled FPGA path in the board environment (Python 3.10, numpy 1.21, no finn):
Accelerator -> packing -> SimBackend -> executor -> packing, and the performance model
against FINN's published PYNQ-Z1 measurement.
"""
from pathlib import Path

import numpy as np
import pytest

from host.driver import Accelerator, IOSpec
from host.errors import IOSpecError
from host.executor import Executor
from host.perf_model import DMA_EFFICIENCY, LayerCycles, PerfModel, Port
from host.sim import SimBackend

DESIGN = Path(__file__).resolve().parent.parent / "fixtures" / "executor_tfc_w2a2"
FINN_TFC_W1A1_PYNQ_Z1 = 958_413  # images/s, FINN's TFC-W1A1 end-to-end tutorial, batch 10000, 100 MHz


def design_spec(executor: Executor) -> IOSpec:
    """The IO spec of the fixture's design, as its package's io_spec.json would hold it."""
    first = executor.describe()[0]
    pe_in = first["folding"]["PE"]
    n_in, n_out = executor.input_shape[-1], executor.output_shape[-1]
    return IOSpec.from_dict({
        "input": {"datatype": executor.input_datatype, "normal_shape": [1, n_in],
                  "folded_shape": [1, n_in // pe_in, pe_in]},
        "output": {"datatype": executor.output_datatype, "normal_shape": [1, n_out],
                   "folded_shape": [1, 1, n_out]}})


@pytest.fixture(scope="module")
def executor():
    return Executor.load(DESIGN)


def test_accelerator_over_sim_backend_matches_the_executor(executor):
    with np.load(DESIGN / "vectors.npz") as npz:
        inputs = npz["inputs"]
    model = PerfModel.from_ports([LayerCycles(d["name"], 8) for d in executor.describe()], 100.0, Port(64 * 8),
                               Port(8), 64)
    backend = SimBackend(executor, model)
    accel = Accelerator(design_spec(executor), backend)
    out = accel.execute(inputs.reshape(len(inputs), -1))
    assert np.array_equal(out.reshape(len(inputs), -1), executor.run(inputs).reshape(len(inputs), -1))
    assert backend.label == "modelled"
    assert backend.last_modelled_seconds == pytest.approx(model.batch_seconds(len(inputs)))


def test_accelerator_refuses_a_wrong_shape(executor):
    model = PerfModel.from_ports([LayerCycles("l", 8)], 100.0, Port(64 * 8), Port(8), 64)
    accel = Accelerator(design_spec(executor), SimBackend(executor, model))
    with pytest.raises(IOSpecError):
        accel.execute(np.zeros((4, 1, 63), dtype=np.uint8))


def test_perf_model_lands_within_10_percent_of_finns_measurement():
    # FINN's tutorial folding: input thresholds (PE 49 -> 16 cycles), four MVAUs 64/64/64/8, label select 10
    layers = [LayerCycles("Thresholding", 16), LayerCycles("MVAU_0", 64), LayerCycles("MVAU_1", 64),
              LayerCycles("MVAU_2", 64), LayerCycles("MVAU_3", 8), LayerCycles("LabelSelect", 10)]
    model = PerfModel.from_ports(layers, 100.0, Port(784 * 8), Port(8), 64)
    # the input DMA binds: 784 B = 98 beats of 8 B, at the IODMA's measured efficiency
    assert model.binding == "input DMA" and model.ii_cycles == pytest.approx(98 / DMA_EFFICIENCY)
    assert abs(model.images_per_second(10000) / FINN_TFC_W1A1_PYNQ_Z1 - 1) < 0.10
