"""PynqBackend against a fake PYNQ device and a fixture .hwh (no board).

Needs pynq, which cannot share the numpy-2 development venv: run in the
board env (scripts/setup-board-env.sh).
"""

import types

import numpy as np
import pytest

pynq = pytest.importorskip(
    "pynq",
    reason="pynq is not installed here; run tests/board in the env from scripts/setup-board-env.sh",
)

from fake_zynq import ADDR_HI, ADDR_LO, COUNT, CTRL, START, FakeZynq  # noqa: E402

from host import driver  # noqa: E402
from host.driver import Accelerator, IOSpec, PynqBackend  # noqa: E402
from host.errors import BitfileError, DmaTimeoutError  # noqa: E402


def spec(in_dt="UINT8", out_dt="UINT8"):
    port = {"normal_shape": [1, 32], "folded_shape": [1, 4, 8]}
    return IOSpec.from_dict(
        {"input": dict(port, datatype=in_dt), "output": dict(port, datatype=out_dt)}
    )


def accelerator(bitfile, device, io=None, **kwargs):
    backend = PynqBackend(bitfile, clock_mhz=100.0, device=device, download=False, **kwargs)
    return Accelerator(io or spec(), backend)


def images(n, low=0, high=256, seed=0):
    return np.random.default_rng(seed).integers(low, high, size=(n, 32))


def test_overlay_exposes_finn_io_dmas(iodma_bitfile):
    backend = PynqBackend(iodma_bitfile, 100.0, device=FakeZynq(), download=False)
    assert {"idma0", "odma0", "StreamingDataflowPartition_1"} <= set(backend.overlay.ip_dict)
    assert backend.overlay.ip_dict["idma0"]["phys_addr"] == 0x40000000


def test_design_without_io_dmas_lists_its_ips(plain_bitfile):
    with pytest.raises(BitfileError, match="idma0 or odma0.*status_regs_0.*zynq_ps"):
        PynqBackend(plain_bitfile, 100.0, device=FakeZynq(), download=False)


def test_missing_hwh_is_named(iodma_bitfile):
    iodma_bitfile.with_suffix(".hwh").unlink()
    with pytest.raises(BitfileError, match=r"\.hwh.*accel\.hwh"):
        PynqBackend(iodma_bitfile, 100.0, device=FakeZynq(), download=False)


def test_register_sequence_arms_odma_before_idma(iodma_bitfile):
    device = FakeZynq()
    acc = accelerator(iodma_bitfile, device)
    acc.execute(images(3))
    n_in, n_out = acc.backend._buffers[1:]
    expected = []
    for dma, buf in (("odma0", n_out), ("idma0", n_in)):
        address = buf.device_address
        expected += [
            (dma, ADDR_LO, address & 0xFFFFFFFF),
            (dma, ADDR_HI, address >> 32),
            (dma, COUNT, 3),
            (dma, CTRL, START),
        ]
    assert device.writes == expected
    assert device.flushes == 1 and device.invalidates == 1


def test_done_poll_times_out(iodma_bitfile, monkeypatch):
    """The done-bit poll gives up once ``timeout_s`` has passed, within one look at the clock
    (host.driver's time.monotonic; here a fake one that advances 1/16 s at each read)."""
    reads = []

    def monotonic():
        reads.append(len(reads) / 16)
        return reads[-1]

    monkeypatch.setattr(driver, "time", types.SimpleNamespace(monotonic=monotonic))
    acc = accelerator(iodma_bitfile, FakeZynq(stall=True), timeout_s=0.25)
    with pytest.raises(DmaTimeoutError, match=r"odma0 .* batch of 3 within 0\.25 s"):
        acc.execute(images(3))
    assert 0.25 <= reads[-1] - reads[0] <= 0.25 + 1 / 16


def test_stuck_dma_is_reported_on_next_batch(iodma_bitfile):
    acc = accelerator(iodma_bitfile, FakeZynq(stall=True), timeout_s=0.05)
    with pytest.raises(DmaTimeoutError):
        acc.execute(images(2))
    with pytest.raises(DmaTimeoutError, match="not idle"):
        acc.execute(images(2))


def test_identity_hardware_round_trips(iodma_bitfile):
    acc = accelerator(iodma_bitfile, FakeZynq())
    x = images(5)
    y = acc.execute(x)
    assert y.dtype == np.uint8 and y.shape == (5, 32)
    np.testing.assert_array_equal(y, x)


def test_negating_hardware_through_int8_packing(iodma_bitfile):
    def negate(ibuf):
        return (-ibuf.view(np.int8)).view(np.uint8)

    acc = accelerator(iodma_bitfile, FakeZynq(kernel=negate), io=spec("INT8", "INT8"))
    x = images(4, low=-127, high=128)
    np.testing.assert_array_equal(acc.execute(x), -x)


def test_buffers_are_reused_until_the_batch_size_changes(iodma_bitfile):
    acc = accelerator(iodma_bitfile, FakeZynq())
    acc.execute(images(2))
    first = acc.backend._buffers
    acc.execute(images(2, seed=1))
    assert acc.backend._buffers is first
    np.testing.assert_array_equal(acc.execute(images(7, seed=2)), images(7, seed=2))
    assert acc.backend._buffers[0] == 7


def test_clock_is_set_from_the_build_and_read_back(iodma_bitfile, monkeypatch):
    class Clocks:
        set_to = []

        @property
        def fclk0_mhz(self):
            return 99.9

        @fclk0_mhz.setter
        def fclk0_mhz(self, mhz):
            self.set_to.append(mhz)

    clocks = Clocks()
    monkeypatch.setattr(pynq.ps, "CPU_ARCH_IS_SUPPORTED", True)
    monkeypatch.setattr(pynq, "Clocks", clocks)
    backend = PynqBackend(iodma_bitfile, 125.0, device=FakeZynq(), download=False)
    assert clocks.set_to == [125.0]
    assert backend.clock_mhz == 125.0 and backend.clock_mhz_measured == 99.9


def test_clock_is_skipped_without_a_ps(iodma_bitfile, monkeypatch):
    monkeypatch.setattr(pynq.ps, "CPU_ARCH_IS_SUPPORTED", False)
    backend = PynqBackend(iodma_bitfile, 100.0, device=FakeZynq(), download=False)
    assert backend.clock_mhz_measured is None


def test_label_names_the_board(iodma_bitfile, monkeypatch):
    monkeypatch.delenv("BOARD", raising=False)
    named = PynqBackend(iodma_bitfile, 100.0, device=FakeZynq(), download=False, board="Pynq-Z2")
    assert named.label == "measured on Pynq-Z2"
    monkeypatch.setenv("BOARD", "Ultra96")
    assert PynqBackend(iodma_bitfile, 100.0, device=FakeZynq(), download=False).label == (
        "measured on Ultra96"
    )


@pytest.mark.parametrize("datatype,thresholds", [("UINT2", [[43, 128, 213]]), ("BIPOLAR", [[128]])],
                         ids=["2-bit", "1-bit"])
def test_host_input_quantiser_packs_narrow_values(iodma_bitfile, datatype, thresholds):
    # the build moved the input Thresholding to the host (--input-quant host): raw pixels in,
    # quantised by the recorded thresholds, packed 4 or 8 to a byte; identity hardware returns them
    port = {"normal_shape": [1, 32], "folded_shape": [1, 4, 8], "datatype": datatype}
    quantiser = {"raw_datatype": "UINT8", "datatype": datatype, "ActVal": 0, "thresholds": thresholds}
    io = IOSpec.from_dict({"input": port, "output": port, "input_quantiser": quantiser})
    acc = accelerator(iodma_bitfile, FakeZynq(), io=io)
    x = images(6)
    x[0, :len(thresholds[0])] = thresholds[0]  # pixels exactly on the thresholds pass them
    count = (x[..., None] >= np.array(thresholds[0])).sum(-1)
    want = 2 * count - 1 if datatype == "BIPOLAR" else count
    assert io.input.packed_shape == (1, 4, 2 if datatype == "UINT2" else 1)
    np.testing.assert_array_equal(acc.execute(x), want)
