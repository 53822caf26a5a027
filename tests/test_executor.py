"""The board-side numpy executor (host.executor) against FINN's execution and Brevitas.

Whole designs: the executor exported into a build's deploy package must give
FINN's outputs for every layer, its predictions and last-layer integers, and
Brevitas' predictions. Single layers: every kind the executor runs, against
FINN's generic HW op, with inputs that sit exactly on thresholds and ties.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from flows.build import run_build
from flows.config import BuildConfig, TrainOptions
from flows.errors import ModelError
from flows.execute import run_graph
from flows.executor_export import export_executor
from flows.transforms import FPGADATAFLOW, MakeHWLayersGeneric, SetBatchSize
from host.errors import DeployVersionError
from host.executor import Executor, accumulator_dtype

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "executor_tfc_w2a2"
MODELS = ["tfc-w1a1", "tfc-w1a2", "tfc-w2a2", "tfc-w4a4"]


def short_id(model: str) -> str:
    return model.split("-")[1]  # tfc-w1a1 -> w1a1


# -- helpers ---------------------------------------------------------------------------------


def finn_context(model: ModelWrapper, x: np.ndarray) -> dict:
    """Every tensor of FINN's execution of the folded graph on the batch ``x``."""
    import qonnx.core.onnx_exec as oxe

    batched = ModelWrapper(copy.deepcopy(model.model)).transform(MakeHWLayersGeneric()).transform(SetBatchSize(len(x)))
    iname = batched.graph.input[0].name
    feed = {iname: x.astype(np.float32).reshape(batched.get_tensor_shape(iname))}
    return oxe.execute_onnx(batched, feed, return_full_exec_context=True)


def popcount_to_dot(model: ModelWrapper, node, values: np.ndarray) -> np.ndarray:
    """An XNOR layer's popcount as the dot product run_graph reports (2 * popcount - MW)."""
    from qonnx.custom_op.registry import getCustomOp

    inst = getCustomOp(node)
    if inst.get_nodeattr("binaryXnorMode"):
        return 2 * values.astype(np.int64) - inst.get_nodeattr("MW")
    return values.astype(np.int64)


def brevitas_predictions(run: Path, images: np.ndarray) -> np.ndarray:
    from qat.train import load_checkpoint, predict

    return predict(load_checkpoint(run / "train" / "checkpoint.pt").model(), images).argmax(1)


def check_design(run: Path, images: np.ndarray, brevitas_ties: bool = False) -> dict:
    """The deploy package's executor against FINN (run_graph) and Brevitas on ``images``.
    ``brevitas_ties``: allow Brevitas another of the tied top classes where the integers tie."""
    model = ModelWrapper(str(run / "fold" / "model.onnx"))
    ex = Executor.load(run / "deploy" / "executor")
    x = images.reshape(len(images), *ex.input_shape)
    out, trace = ex.run(x, return_layers=True)
    finn = run_graph(model, x)
    last_mvau = [i for i, t in enumerate(trace) if t.kind == "MVAU"][-1]
    ours_last = popcount_to_dot(model, model.graph.node[last_mvau], trace[last_mvau].output)
    assert out.shape == (len(x), 1)
    assert np.array_equal(out[:, 0], finn.predictions)
    assert np.array_equal(ours_last, finn.last_layer.astype(np.int64))
    # Brevitas computes float logits: where the integer last layer ties for the top, float
    # rounding picks one of the tied classes (FINN and the executor: the lowest index)
    brevitas, top = brevitas_predictions(run, images), finn.last_layer.max(axis=1)
    tied = (finn.last_layer == top[:, None]).sum(axis=1) > 1 if brevitas_ties else np.zeros(len(x), bool)
    assert np.array_equal(out[~tied, 0], brevitas[~tied])
    assert np.array_equal(finn.last_layer[np.arange(len(x)), brevitas], top)
    return {"predictions": out[:, 0], "trace": trace, "finn": finn}


# -- whole designs ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=MODELS, ids=short_id)
def design(request, tmp_path_factory) -> Path:
    """A full build (digits, 5 epochs) of one TFC model; its run directory."""
    out = tmp_path_factory.mktemp(short_id(request.param))
    run_build(BuildConfig(model=request.param, out=out, train=TrainOptions(epochs=5)))
    return out


@pytest.fixture(scope="module")
def digits():
    from qat.data import load_dataset

    return load_dataset("digits")


def test_design_matches_finn_and_brevitas(design, digits):
    result = check_design(design, digits.test.images)
    threaded = Executor.load(design / "deploy" / "executor", blas_threads=True)
    x = digits.test.images.reshape(len(digits.test.images), -1)
    assert np.array_equal(threaded.run(x)[:, 0], result["predictions"])


def test_every_layer_matches_finn(design, digits):
    images = digits.test.images
    ex = Executor.load(design / "deploy" / "executor")
    x = images.reshape(len(images), *ex.input_shape)
    model = ModelWrapper(str(design / "fold" / "model.onnx"))
    ctx = finn_context(model, x)
    _, trace = ex.run(x, return_layers=True)
    assert [t.name for t in trace] == [n.name for n in model.graph.node]
    for node, t in zip(model.graph.node, trace):
        want = ctx[node.output[0]].reshape(t.output.shape)
        assert np.issubdtype(t.output.dtype, np.integer), t.name
        assert np.array_equal(t.output.astype(np.float64), want.astype(np.float64)), t.name
        assert t.seconds >= 0


def test_package_test_vectors(design):
    ex = Executor.load(design / "deploy" / "executor")
    meta = json.loads((design / "deploy" / "deploy.json").read_text())
    assert meta["executor"] == "executor/"
    vectors = np.load(design / "deploy" / "test_vectors.npz")
    out, trace = ex.run(vectors["inputs"], return_layers=True)
    model = ModelWrapper(str(design / "fold" / "model.onnx"))
    last = [i for i, t in enumerate(trace) if t.kind == "MVAU"][-1]
    assert np.array_equal(out[:, 0], vectors["expected"])
    assert np.array_equal(popcount_to_dot(model, model.graph.node[last], trace[last].output),
                          vectors["expected_last_layer"])


def tie_heavy_images(pixel_max: int, n: int, shape, seed: int = 0) -> np.ndarray:
    """Images that make equal accumulators likely: constant, two-level and sparse."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    constant = np.arange(pixel_max + 1)[:, None].repeat(size, 1)
    two_level = rng.choice([0, pixel_max], size=(n, size))
    sparse = np.where(rng.random((n, size)) < rng.choice([0.01, 0.05, 0.1], size=(n, 1)),
                      rng.integers(1, pixel_max + 1, size=(n, size)), 0)
    return np.concatenate([constant, two_level, sparse]).astype(np.uint8).reshape(-1, *shape)


def test_tie_heavy_inputs_match_finn(design, digits):
    """Inputs whose last layer ties for the top class (found among many tie-prone ones)."""
    pool = tie_heavy_images(digits.pixel_max, 10000, digits.image_shape)
    ex = Executor.load(design / "deploy" / "executor")
    _, trace = ex.run(pool.reshape(len(pool), -1), return_layers=True)
    top2 = np.sort([t for t in trace if t.kind == "MVAU"][-1].output, axis=1)[:, -2:]
    tied = np.flatnonzero(top2[:, 0] == top2[:, 1])
    assert len(tied) > 0
    images = np.concatenate([pool[:digits.pixel_max + 1], pool[tied[:300]]])
    result = check_design(design, images, brevitas_ties=True)
    finn_top2 = np.sort(result["finn"].last_layer, axis=1)[:, -2:]
    assert (finn_top2[:, 0] == finn_top2[:, 1]).sum() >= min(len(tied), 300)  # FINN sees the same ties


# -- the format and the import surface -------------------------------------------------------


def test_wrong_format_is_refused(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "ex")
    path = tmp_path / "ex" / "executor.json"
    meta = json.loads(path.read_text())
    for bad in ("qnn-flows-executor/2", None):
        meta["format"] = bad
        path.write_text(json.dumps(meta))
        with pytest.raises(DeployVersionError, match="qnn-flows-executor/1"):
            Executor.load(tmp_path / "ex")


def test_import_is_numpy_only():
    code = ("import sys, host.executor; "
            "bad = [m for m in ('torch', 'finn', 'qonnx', 'onnx', 'onnxruntime', 'brevitas') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_fixture_is_current(tmp_path):
    """The board test's fixture: what today's exporter writes and what FINN computes."""
    model = ModelWrapper(str(FIXTURE / "dataflow.onnx"))
    export_executor(model, tmp_path)
    assert json.loads((tmp_path / "executor.json").read_text()) == json.loads((FIXTURE / "executor.json").read_text())
    new, old = np.load(tmp_path / "executor.npz"), np.load(FIXTURE / "executor.npz")
    assert sorted(new.files) == sorted(old.files)
    assert all(np.array_equal(new[k], old[k]) and new[k].dtype == old[k].dtype for k in new.files)
    vectors = np.load(FIXTURE / "vectors.npz")
    ctx = finn_context(model, vectors["inputs"])
    for i, node in enumerate(model.graph.node):
        assert np.array_equal(vectors[f"layer{i}"], ctx[node.output[0]].reshape(vectors[f"layer{i}"].shape))


# -- single layers against FINN's generic ops ------------------------------------------------


def single_node_model(op_type: str, in_shape, in_dt: str, out_shape, out_dt: str, inits=(), **attrs) -> ModelWrapper:
    """A one-node graph of FINN's generic HW op ``op_type`` (batch 1)."""
    names = [f"p{i}" for i in range(len(inits))]
    node = helper.make_node(op_type, ["x", *names], ["y"], domain=FPGADATAFLOW, backend="fpgadataflow",
                            name=f"{op_type}_0", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("x", DataType[in_dt])
    model.set_tensor_datatype("y", DataType[out_dt])
    for name, (value, dt) in zip(names, inits):
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
        model.set_tensor_datatype(name, DataType[dt])
    return model


def finn_per_image(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """FINN's execution of a one-node graph, image by image (batch 1, as the graph is built)."""
    import qonnx.core.onnx_exec as oxe

    shape = model.get_tensor_shape("x")
    return np.stack([oxe.execute_onnx(model, {"x": xi.astype(np.float32).reshape(shape)})["y"][0] for xi in x])


def executor_of(model: ModelWrapper, tmp_path: Path) -> Executor:
    export_executor(model, tmp_path)
    return Executor.load(tmp_path)


def random_values(dt: str, shape, rng) -> np.ndarray:
    d = DataType[dt]
    if dt == "BIPOLAR":
        return rng.choice([-1, 1], size=shape)
    return rng.integers(int(d.min()), int(d.max()) + 1, size=shape)


def thresholds_on_values(acc: np.ndarray, steps: int, rng) -> np.ndarray:
    """(C, steps) thresholds drawn from the accumulators themselves: many inputs sit exactly on one."""
    cols = [np.sort(rng.choice(acc[:, c], size=steps)) for c in range(acc.shape[1])]
    return np.stack(cols).astype(np.float32)


MVAU_CASES = {  # id: (input dt, weight dt, output dt, binaryXnorMode, thresholds steps (0: none), ActVal)
    "xnor": ("BINARY", "BINARY", "BINARY", 1, 1, 0),
    "xnor-noact": ("BINARY", "BINARY", "UINT32", 1, 0, 0),
    "bipolar": ("BIPOLAR", "BIPOLAR", "BIPOLAR", 0, 1, 0),
    "bipolar-noact": ("BIPOLAR", "BIPOLAR", "UINT32", 0, 0, 0),
    "int2": ("INT2", "INT2", "INT2", 0, 3, -2),
    "uint4-int4": ("UINT4", "INT4", "UINT4", 0, 15, 0),
    "int8-noact": ("INT8", "INT8", "INT32", 0, 0, 0),
}


@pytest.mark.parametrize("case", MVAU_CASES)
def test_mvau_matches_finn(case, tmp_path):
    idt, wdt, odt, xnor, steps, act_val = MVAU_CASES[case]
    rng = np.random.default_rng(len(case))
    mw, mh, n = 40, 6, 120
    w = random_values(wdt, (mw, mh), rng)
    x = random_values(idt, (n, mw), rng)
    x[:3] = x[0]  # repeated rows: repeated accumulators
    inits = [(w, wdt)]
    if steps:
        finn_w, finn_x = ((w + 1) / 2, (x + 1) / 2) if idt == "BIPOLAR" else (w, x)
        acc = (2 * finn_x - 1) @ (2 * finn_w - 1) if xnor or idt == "BIPOLAR" else x @ w
        t = thresholds_on_values(acc, steps, rng)
        t[::2] -= 0.5  # fractional thresholds on half the channels: acc >= t.5 is acc >= ceil(t.5)
        inits.append((t, "FLOAT32"))
    model = single_node_model("MVAU", [1, mw], idt, [1, mh], odt, inits, MW=mw, MH=mh, SIMD=mw, PE=mh,
                              inputDataType=idt, weightDataType=wdt, outputDataType=odt, ActVal=act_val,
                              binaryXnorMode=xnor, noActivation=0 if steps else 1, numInputVectors=[1])
    out = executor_of(model, tmp_path).run(x)
    assert np.array_equal(out, finn_per_image(model, x))


@pytest.mark.parametrize("idt, odt, steps, act_val, channels",
                         [("UINT8", "BINARY", 1, 0, 8), ("UINT8", "BIPOLAR", 1, 0, 8), ("INT4", "INT2", 3, -2, 8),
                          ("INT16", "UINT4", 15, 0, 8), ("UINT8", "INT4", 15, -8, 8), ("INT8", "INT8", 254, -127, 1)],
                         ids=["uint8-binary", "uint8-bipolar", "int4-int2", "int16-uint4", "uint8-int4-table",
                              "int8-int8-table-global"])
def test_thresholding_matches_finn(idt, odt, steps, act_val, channels, tmp_path):
    rng = np.random.default_rng(steps)
    c, n = 8, 200
    x = random_values(idt, (n, c), rng)
    t = thresholds_on_values(x, steps, rng)[:channels]  # (channels, steps): 1 is one set for all channels
    t[0, ::2] -= 0.5  # fractional thresholds: x >= t.5 is x >= ceil(t.5)
    model = single_node_model("Thresholding", [1, c], idt, [1, c], odt, [(t, "FLOAT32")], NumChannels=c, PE=1,
                              numSteps=steps, inputDataType=idt, outputDataType=odt, weightDataType="INT32",
                              ActVal=act_val, numInputVectors=[1])
    assert np.array_equal(executor_of(model, tmp_path).run(x), finn_per_image(model, x))


@pytest.mark.parametrize("labels, k", [(10, 1), (10, 3), (7, 7)])
def test_label_select_ties_match_finn(labels, k, tmp_path):
    rng = np.random.default_rng(labels + k)
    x = rng.integers(0, 3, size=(200, labels))  # three values over many labels: ties everywhere
    model = single_node_model("LabelSelect", [1, labels], "UINT32", [1, k], "UINT8", Labels=labels, K=k, PE=1,
                              inputDataType="UINT32", outputDataType="UINT8", numInputVectors=[1])
    assert np.array_equal(executor_of(model, tmp_path).run(x), finn_per_image(model, x))


@pytest.mark.parametrize("kernel, stride, dilation", [([3, 3], [1, 1], [1, 1]), ([3, 2], [2, 1], [1, 1]),
                                                      ([2, 2], [2, 2], [1, 1]), ([2, 2], [1, 1], [2, 2])],
                         ids=["k3s1", "k3x2s2x1", "k2s2", "k2d2"])
def test_sliding_window_matches_finn(kernel, stride, dilation, tmp_path):
    h, w, c = 7, 6, 3
    oh = (h - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    model = single_node_model("ConvolutionInputGenerator", [1, h, w, c], "INT4",
                              [1, oh, ow, kernel[0] * kernel[1] * c], "INT4", ConvKernelDim=kernel,
                              IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], SIMD=c, Stride=stride,
                              Dilation=dilation, inputDataType="INT4", outputDataType="INT4")
    x = random_values("INT4", (10, h, w, c), np.random.default_rng(0))
    assert np.array_equal(executor_of(model, tmp_path).run(x), finn_per_image(model, x))


def test_padding_matches_finn(tmp_path):
    pad = [1, 2, 0, 1]  # top, left, bottom, right
    model = single_node_model("FMPadding", [1, 5, 4, 3], "INT4", [1, 6, 7, 3], "INT4", ImgDim=[5, 4], Padding=pad,
                              NumChannels=3, SIMD=1, inputDataType="INT4", numInputVectors=1)
    x = random_values("INT4", (10, 5, 4, 3), np.random.default_rng(0))
    assert np.array_equal(executor_of(model, tmp_path).run(x), finn_per_image(model, x))


@pytest.mark.parametrize("function, idt, odt", [("MaxPool", "INT4", "INT4"), ("AccPool", "UINT4", "UINT6"),
                                                ("QuantAvgPool", "UINT4", "UINT4")])
def test_pool_matches_finn(function, idt, odt, tmp_path):
    ch, k = 3, [2, 2]
    model = single_node_model("Pool", [1, 3, 3, 4 * ch], idt, [1, 3, 3, ch], odt, Channels=ch, PE=1, KernelSize=k,
                              Function=function, OutImgDims=[3, 3], InputDataType=idt, OutputDataType=odt)
    x = random_values(idt, (10, 3, 3, 4 * ch), np.random.default_rng(0))
    assert np.array_equal(executor_of(model, tmp_path).run(x), finn_per_image(model, x))


def test_exporter_refuses_other_ops(tmp_path):
    model = single_node_model("StreamingFIFO", [1, 8], "INT4", [1, 8], "INT4", depth=2, folded_shape=[1, 8],
                              dataType="INT4")
    with pytest.raises(ModelError, match="node 'StreamingFIFO_0' is a StreamingFIFO"):
        export_executor(model, tmp_path)


# -- exact accumulators beyond float32 ---------------------------------------------------------


def test_accumulator_dtype_bounds():
    assert accumulator_dtype(2**24 - 1) == np.float32
    assert accumulator_dtype(2**24) == np.int32
    assert accumulator_dtype(2**31 - 2) == np.int32
    assert accumulator_dtype(2**31) == np.int64


@pytest.mark.parametrize("idt, wdt, mw, acc", [("INT8", "INT8", 1023, "float32"), ("INT8", "INT8", 1024, "int32"),
                                               ("INT16", "INT8", 64, "int32"),
                                               ("INT16", "INT16", 64, "int64")])
def test_wide_accumulators_are_exact(idt, wdt, mw, acc, tmp_path):
    """Accumulators past 2**24, where FINN's float32 execution rounds: the exact integer product."""
    rng = np.random.default_rng(mw)
    w, x = random_values(wdt, (mw, 4), rng), random_values(idt, (50, mw), rng)
    w[:, 0], x[0] = DataType[wdt].min(), DataType[idt].min()  # the extreme column and row
    model = single_node_model("MVAU", [1, mw], idt, [1, 4], "INT64", [(w, wdt)], MW=mw, MH=4, SIMD=1, PE=1,
                              inputDataType=idt, weightDataType=wdt, outputDataType="INT64", ActVal=0,
                              binaryXnorMode=0, noActivation=1, numInputVectors=[1])
    ex = executor_of(model, tmp_path)
    assert ex.layers[0].acc == np.dtype(acc)
    exact = np.array([[sum(int(a) * int(b) for a, b in zip(row, col)) for col in w.T] for row in x], dtype=np.int64)
    assert np.array_equal(ex.run(x), exact)


# -- MNIST (784 inputs, 10000 test images) -----------------------------------------------------


def test_mnist_design_matches_finn_and_brevitas(datasets_dir, tmp_path):
    from qat.data import load_dataset

    out = tmp_path / "run"
    run_build(BuildConfig(model="tfc-w1a1", data="mnist", data_dir=datasets_dir / "mnist", out=out,
                          train=TrainOptions(epochs=1)))
    images = load_dataset("mnist", datasets_dir).test.images
    assert len(images) == 10000
    check_design(out, images)
