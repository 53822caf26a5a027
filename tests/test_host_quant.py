"""Input quantisation on the host (``flows build --input-quant host``).

The host's InputQuantiser (host.executor) against QONNX's MultiThreshold on every raw value,
thresholds included; the driver packing its narrow output (4 or 8 pixels a byte); the executor
taking raw pixels; and (slow) 1- and 2-bit-input TFCs built with the quantiser on the host,
verified bit-exactly on digits whose pixels sit exactly on the thresholds.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from host.driver import Accelerator, Backend, IOSpec, TensorSpec
from host.errors import IOSpecError
from host.executor import Executor, InputQuantiser
from host.packing import unpack

RAW = np.arange(256)  # every UINT8 value

CASES = {  # id: (output datatype, ActVal, thresholds (channels or 1, steps)), FINN Thresholding semantics
    "uint2": ("UINT2", 0, [[43, 128, 213]]),
    "int2-narrow": ("INT2", -1, [[4, 13]]),  # a signed narrow 2-bit quantiser: levels -1, 0, 1
    "bipolar": ("BIPOLAR", 0, [[128]]),  # 2 * count - 1
    "per-channel": ("UINT2", 0, [[1, 2, 3], [0, 100, 255], [256, 256, 256]]),
}


def finn_reference(x: np.ndarray, datatype: str, act_val: int, thresholds) -> np.ndarray:
    """FINN's Thresholding.execute_node: qonnx's multithreshold on the last axis, + ActVal, bipolar 2y - 1."""
    from qonnx.custom_op.general.multithreshold import multithreshold

    y = multithreshold(x.astype(np.float32), np.asarray(thresholds, np.float32), out_bias=act_val,
                       channels_last=True)
    return 2 * y - 1 if datatype == "BIPOLAR" else y


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_quantiser_equals_finn_thresholding_on_every_value(case):
    datatype, act_val, thresholds = CASES[case]
    channels = len(thresholds)
    x = np.repeat(RAW[:, None], channels, axis=1)  # (256, C): values on, below and above every threshold
    q = InputQuantiser("UINT8", datatype, act_val, np.array(thresholds))
    np.testing.assert_array_equal(q(x), finn_reference(x, datatype, act_val, thresholds))


def test_value_on_a_threshold_passes_it():
    q = InputQuantiser("UINT8", "UINT2", 0, np.array([[43, 128, 213]]))
    assert q(np.array([[42, 43, 127, 128, 212, 213, 255]])).tolist() == [[0, 1, 1, 2, 2, 3, 3]]


def test_quantiser_refuses_values_outside_the_raw_datatype():
    q = InputQuantiser("UINT8", "UINT2", 0, np.array([[1, 2, 3]]))
    with pytest.raises(IOSpecError, match="outside the raw UINT8"):
        q(np.array([[256]]))


class Loopback(Backend):
    """Returns the input bytes as the output (same port): what the driver packed, unchanged."""

    label = "test double"

    def run(self, ibuf, n):
        self.seen = np.array(ibuf[:n])
        return self.seen


@pytest.mark.parametrize("datatype,per_byte", [("UINT2", 4), ("BIPOLAR", 8)], ids=["2-bit", "1-bit"])
def test_driver_quantises_then_packs_narrow(datatype, per_byte):
    thresholds = np.array([[43, 128, 213]]) if datatype == "UINT2" else np.array([[128]])
    q = InputQuantiser("UINT8", datatype, 0, thresholds)
    port = TensorSpec(datatype, (1, 16), (1, 2, 8))
    spec = IOSpec(port, port, q)
    accel = Accelerator(IOSpec.from_dict(json.loads(json.dumps(spec.to_dict()))), Loopback())  # via its JSON
    raw = np.random.default_rng(0).integers(0, 256, (5, 16))
    raw[0, :4] = thresholds[0, 0]  # pixels exactly on a threshold
    y = accel.execute(raw)
    assert accel.backend.seen.shape == (5, 2, 8 // per_byte)  # 8 pixels a word: 2 or 1 bytes
    np.testing.assert_array_equal(y, q(raw))
    np.testing.assert_array_equal(unpack(accel.backend.seen, datatype, (5, 2, 8)).reshape(5, 16), q(raw))


def test_io_spec_refuses_a_quantiser_for_another_port():
    q = InputQuantiser("UINT8", "UINT2", 0, np.array([[1, 2, 3]]))
    with pytest.raises(IOSpecError, match="input_quantiser gives UINT2"):
        IOSpec(TensorSpec("UINT4", (1, 4), (1, 1, 4)), TensorSpec("UINT4", (1, 4), (1, 1, 4)), q)


def test_executor_takes_raw_values_and_quantises_first():
    layer = {"kind": "Thresholding", "name": "t", "input_datatype": "UINT2", "output_datatype": "UINT2",
             "input_shape": [4], "output_shape": [4], "attrs": {"ActVal": 0}, "arrays": {"thresholds": "t.th"}}
    q = InputQuantiser("UINT8", "UINT2", 0, np.array([[43, 128, 213]]))
    meta = {"input": {"datatype": "UINT2", "shape": [4]}, "output": {"datatype": "UINT2", "shape": [4]},
            "layers": [layer], "host_input": q.to_dict()}
    ex = Executor(meta, {"t.th": np.array([[1, 2, 3]])})  # the design's own layer: identity on UINT2
    raw = np.array([[0, 43, 128, 255], [42, 127, 212, 213]])
    assert ex.input_datatype == "UINT8" and ex.stream_datatype == "UINT2"
    np.testing.assert_array_equal(ex.run(raw), q(raw))
    np.testing.assert_array_equal(ex.run_stream(q(raw)), q(raw))


@pytest.mark.parametrize("pixels,bits,simd,beats,width", [
    (784, 2, 16, 49, 32),  # 1,568 bits: gcd with 64 is 32, FINN's IODMA narrows the port
    (512, 2, 512, 16, 64),  # 1,024 bits: the whole 64-bit port
    (784, 1, 16, 49, 16),  # 784 bits in 2-byte words: gcd 16
    (784, 1, 49, 14, 64),  # 49-bit words padded to 56 bits: 16 x 56 = 896 bits, gcd 64
    (512, 1, 512, 8, 64),
], ids=["784px-2b", "512px-2b", "784px-1b", "784px-1b-padded", "512px-1b"])
def test_iodma_width_rule_for_narrow_inputs(pixels, bits, simd, beats, width):
    """FINN's InsertIODMA: transfer = padded stream word x words; IODMA width = gcd(transfer, AXI)."""
    from host.perf_model import Port

    port = Port(pixels * bits, 8 * -(-simd * bits // 8), pixels // simd)
    assert (port.beats(64), port.dma_width(64)) == (beats, width)


def test_bad_input_quant_names_the_option():
    from flows.config import BuildConfig
    from flows.errors import ConfigError

    with pytest.raises(ConfigError, match="--input-quant 'gpu': use one of fpga, host"):
        BuildConfig(input_quant="gpu")


def test_only_fewer_bits_than_the_pixel_go_to_the_host():
    from flows.config import input_quant_for

    assert [input_quant_for(b) for b in (1, 2, 4, 8)] == ["host", "host", "host", "fpga"]


# -- through the flow ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("in_bits", [1, 2], ids=["in1", "in2"])
def test_flow_builds_and_verifies_with_the_input_quantiser_on_the_host(in_bits, tmp_path):
    from flows.build import run_build
    from flows.config import BuildConfig, TrainOptions
    from host.deploy import load_package, open_accelerator
    from host.executor import load
    from qat.data import load_dataset

    config = tmp_path / f"tfc_in{in_bits}.yaml"
    config.write_text(f"{{arch: tfc, weight_bits: 2, act_bits: 2, in_bits: {in_bits}}}\n")
    run = tmp_path / "run"
    reports = run_build(BuildConfig(model_config=config, out=run, input_quant="host",
                                    train=TrainOptions(epochs=2)))
    q = InputQuantiser.from_dict(json.loads((run / "hw_layers" / "input_quantiser.json").read_text()))
    images = load_dataset("digits").test.images
    on_threshold = np.isin(images, q.thresholds)
    assert on_threshold.any(), "no test pixel sits exactly on an input threshold: the case is not constructed"
    assert reports["partition"]["fpga_nodes"][0].startswith("MVAU")  # the Thresholding left the accelerator
    assert reports["verify"]["passed"], reports["verify"]["summary"]
    assert reports["verify"]["host_input"]["mismatches"] == 0 and reports["verify"]["host_input"]["values"] >= 17
    pixels = int(np.prod(images.shape[1:]))
    bits = 1 if q.datatype in ("BIPOLAR", "BINARY") else int(q.datatype[-1])
    assert bits <= in_bits and reports["estimate"]["in_bits"] == pixels * bits  # the DMA moves the narrow values
    package = load_package(run / "deploy")
    assert package.spec.input.datatype == q.datatype and package.inputs.max() > 1  # raw pixels go in
    for predict in (open_accelerator(package, "sim").execute, load(run / "deploy" / "executor").run):
        np.testing.assert_array_equal(predict(package.inputs).reshape(-1), package.expected)
    # the hardware's decisions (host quantiser first, then the dataflow graph's) line up with an integer
    # stage's layer by layer, so a differing image is analysed as in an --input-quant fpga build
    from flows.boundary import graph_decisions
    from flows.build import Build, load_config
    from flows.execute import to_graph_input
    from flows.verify import hardware_decisions

    build = Build(load_config(run))
    streamlined = build.model("streamline")
    for values in (False, True):
        stage = graph_decisions(streamlined, to_graph_input(streamlined, images[:40]), False, values)
        hardware = hardware_decisions(build, build.model("fold"), images[:40], values)
        assert len(stage.counts) == len(hardware.counts)
        for ours, theirs in zip(stage.counts, hardware.counts):
            np.testing.assert_array_equal(ours, theirs)
