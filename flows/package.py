"""The deploy package: everything the board side needs, in build/<run>/deploy/."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from flows.pipeline import replace_dir

PACKAGE_FORMAT = "qnn-flows-deploy/1"  # host.sim.DEPLOY_FORMAT reads it; change both together
MAX_TEST_VECTORS = 1000
NOTEBOOK_TEMPLATE = Path(__file__).parent / "templates" / "benchmark.ipynb"


def io_spec(model) -> dict:
    """Shapes and datatypes at the accelerator's boundary, as FINN's driver describes them."""
    from qonnx.custom_op.registry import getCustomOp

    first, last = getCustomOp(model.graph.node[0]), getCustomOp(model.graph.node[-1])
    return {
        "input": {"datatype": str(model.get_tensor_datatype(model.graph.input[0].name)),
                  "shape": [int(d) for d in first.get_normal_input_shape()],
                  "normal_shape": [int(d) for d in first.get_normal_input_shape()],  # host.driver.IOSpec's key
                  "folded_shape": [int(d) for d in first.get_folded_input_shape()]},
        "output": {"datatype": str(model.get_tensor_datatype(model.graph.output[0].name)),
                   "shape": [int(d) for d in last.get_normal_output_shape()],
                   "normal_shape": [int(d) for d in last.get_normal_output_shape()],
                   "folded_shape": [int(d) for d in last.get_folded_output_shape()]},
    }


def write_package(build, out: Path) -> dict:
    """Assemble deploy/ beside the step folders (replaced whole, only once complete)."""
    from flows.executor_export import export_executor
    from flows.report import write_reports

    final = build.run_dir / "deploy"
    work = build.run_dir / "deploy.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    model = build.model("fold")
    model.save(str(work / "dataflow.onnx"))
    spec = io_spec(model)
    (work / "io_spec.json").write_text(json.dumps(spec, indent=2))
    n_vectors = _write_test_vectors(build, work, spec)
    bitfile = _copy_bitfile(build, work)
    export_executor(model, work / "executor")
    meta = {"format": PACKAGE_FORMAT, "model": build.cfg.run_name, "board": build.board.name,
            "clock_mhz": build.board.clock_mhz, "part": build.board.part, "bitfile": bitfile,
            "test_vectors": n_vectors,
            "executor": "executor/"}  # numpy-only executor of the same design (host.executor)
    if build.kept_pixels is not None:  # pixel-pruned: the host gathers these (host.packing.gather_pixels)
        meta["kept_pixels"] = list(build.kept_pixels)
    meta.update(host=_copy_host_code(work), notebook=_write_notebook(work, meta))
    (work / "deploy.json").write_text(json.dumps(meta, indent=2))
    write_reports(build, work)
    replace_dir(work, final)
    return {"deploy_dir": str(final), **meta}


def _write_test_vectors(build, work: Path, spec: dict) -> int:
    """Inputs as the accelerator takes them, with the verified expected outputs."""
    outputs = np.load(build.dir("verify") / "outputs.npz")
    test = build.dataset.test
    n = min(len(test.labels), MAX_TEST_VECTORS)
    from flows.execute import to_graph_input  # NHWC for a CNN's partition, flat for an MLP's

    inputs = to_graph_input(build.model("fold"), test.images[:n]).astype(np.uint8)
    np.savez_compressed(work / "test_vectors.npz", inputs=inputs, labels=test.labels[:n],
                        expected=outputs["dataflow_predictions"][:n],
                        expected_last_layer=np.round(outputs["dataflow_last_layer"][:n]).astype(np.int64))
    return n


def _copy_bitfile(build, work: Path) -> str | None:
    report = json.loads((build.dir("bitfile") / "report.json").read_text())
    if not report.get("bitfile"):
        return None
    for key in ("bitfile", "hwh"):
        shutil.copyfile(report[key], work / f"accelerator{Path(report[key]).suffix}")
    return "accelerator.bit"


def _copy_host_code(work: Path) -> str:
    """host/*.py (numpy and pynq only) into deploy/host/, so the package runs on a board as is."""
    import host

    dest = work / "host"
    dest.mkdir()
    for src in sorted(Path(host.__file__).parent.glob("*.py")):
        shutil.copyfile(src, dest / src.name)
    return "host/"


def _write_notebook(work: Path, meta: dict) -> str:
    """deploy/benchmark.ipynb from the template, its title naming the model and board."""
    nb = json.loads(NOTEBOOK_TEMPLATE.read_text())
    title = nb["cells"][0]
    title["source"] = [line.replace("{model}", meta["model"]).replace("{board}", meta["board"])
                       for line in title["source"]]
    (work / "benchmark.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    return "benchmark.ipynb"
