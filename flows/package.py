"""The deploy package: everything the board side needs, in build/<run>/deploy/."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from flows.pipeline import replace_dir
from host.sim import DEPLOY_FORMAT as PACKAGE_FORMAT  # one home: the reader (host.sim) owns the format
MAX_TEST_VECTORS = 1000
NOTEBOOK_TEMPLATE = Path(__file__).parent / "templates" / "benchmark.ipynb"


def io_spec(model, input_quantiser=None) -> dict:
    """Shapes and datatypes at the accelerator's boundary, as FINN's driver describes them, and the
    input quantiser the host runs before packing (host.executor.InputQuantiser), if any."""
    from qonnx.custom_op.registry import getCustomOp

    first, last = getCustomOp(model.graph.node[0]), getCustomOp(model.graph.node[-1])
    quantiser = {"input_quantiser": input_quantiser.to_dict()} if input_quantiser is not None else {}
    return {**quantiser,
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
    """Assemble the package in the step's own folder (``out/deploy``), then move it to
    ``<run>/deploy/`` in one rename, replacing the previous one: the run's product sits at the top
    of the run folder, the one thing a step writes outside its own (README, docs/architecture.md);
    a failed package step leaves the previous deploy/ as it was."""
    return _assemble(build, out / "deploy", build.run_dir / "deploy", verified=True)


def write_bench_package(build, final: Path) -> dict:
    """A package for ``flows bench`` from a build that reached its estimate but not verify/package:
    the same files, except that the expected outputs are the numpy executor's outputs of the
    folded design (not checked against the other stages) and there is no bitfile."""
    return _assemble(build, final.with_name(final.name + ".partial"), final, verified=False)


def _assemble(build, work: Path, final: Path, verified: bool) -> dict:
    """Write the package in ``work``, then move it to ``final`` (replaced whole, only once complete)."""
    from flows.executor_export import export_executor
    from flows.report import write_reports

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = build.model("fold")
    model.save(str(work / "dataflow.onnx"))
    quantiser = build.input_quantiser()  # --input-quant host: the host quantises before packing
    spec = io_spec(model, quantiser)
    (work / "io_spec.json").write_text(json.dumps(spec, indent=2))
    export_executor(model, work / "executor", quantiser.to_dict() if quantiser is not None else None)
    decision = _is_decision(model)
    n_vectors = _write_test_vectors(build, work, spec, decision if not verified else None)
    bitfile = _copy_bitfile(build, work) if verified else None
    meta = {"format": PACKAGE_FORMAT, "model": build.cfg.run_name, "board": build.board.name,
            "clock_mhz": build.board.clock_mhz, "part": build.board.part, "bitfile": bitfile,
            "test_vectors": n_vectors, "labelled": bool(build.dataset.labelled),
            **({"prediction": "positive"} if decision else {}),  # host.deploy.Package.to_predictions
            "expected": "verified: identical across every stage of the verify step" if verified else
                        "the numpy executor's outputs of the folded design (the verify step did not run)",
            "executor": "executor/"}  # numpy-only executor of the same design (host.executor)
    if quantiser is not None:
        meta["input_quant"] = (f"host: raw {quantiser.raw_datatype} pixels are quantised to {quantiser.datatype} "
                               "by host.executor.InputQuantiser (io_spec.json input_quantiser) before packing")
    if build.kept_pixels is not None:  # pixel-pruned: the host gathers these (host.packing.gather_pixels)
        meta["kept_pixels"] = list(build.kept_pixels)
    meta.update(host=_copy_host_code(work), notebook=_write_notebook(work, meta))
    (work / "deploy.json").write_text(json.dumps(meta, indent=2))
    write_reports(build, work)
    replace_dir(work, final)
    return {"deploy_dir": str(final), **meta}


def _is_decision(model) -> bool:
    from flows.execute import is_decision

    return is_decision(model)


def _write_test_vectors(build, work: Path, spec: dict, executor_decision: bool | None = None) -> int:
    """Inputs as the host gives them to the driver (raw pixels, laid out as the accelerator takes
    them; with a host input quantiser the driver quantises them), with the verified expected
    outputs; with ``executor_decision`` set (no verify step), the outputs of work/executor instead."""
    from flows.execute import to_graph_input  # NHWC for a CNN's partition, flat for an MLP's
    from host.datatypes import parse

    test = build.dataset.test
    n = min(len(test.labels), MAX_TEST_VECTORS)
    raw = spec.get("input_quantiser", {}).get("raw_datatype", spec["input"]["datatype"])
    container = parse(raw).value_dtype  # uint8 for UINT8, int8 for BIPOLAR, ...
    inputs = to_graph_input(build.model("fold"), test.images[:n]).astype(container)
    if executor_decision is None:
        outputs = np.load(build.dir("verify") / "outputs.npz")
        expected = {"expected": outputs["dataflow_predictions"][:n],
                    "expected_last_layer": np.round(outputs["dataflow_last_layer"][:n]).astype(np.int64)}
    else:
        from host import executor

        y = executor.load(work / "executor").run(inputs).reshape(n)
        expected = {"expected": (y > 0).astype(np.int64) if executor_decision else y.astype(np.int64)}
    np.savez_compressed(work / "test_vectors.npz", inputs=inputs, labels=test.labels[:n], **expected)
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
