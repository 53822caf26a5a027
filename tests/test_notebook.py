"""The deploy package's benchmark notebook, executed top to bottom against the sim backend.

The kernel is this interpreter (a kernel spec written under tmp_path), the
notebook runs in a copy of the package under tmp_path, so nothing is written
elsewhere.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")
pytest.importorskip("ipykernel", reason="ipykernel is not installed")

from tests.deploy_fixture import small_build  # noqa: E402

KERNEL = "qnn-flows-test"
FAST = "BATCHES = [1, 8]\nREPEATS = 2  # set by the test"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec for sys.executable; Jupyter's and IPython's folders under tmp_path."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "qnn-flows test", "language": "python"}))
    for var, sub in (("JUPYTER_PATH", "jupyter"), ("JUPYTER_DATA_DIR", "jupyter-data"),
                     ("JUPYTER_RUNTIME_DIR", "jupyter-runtime"), ("JUPYTER_CONFIG_DIR", "jupyter-config"),
                     ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return KERNEL


def outputs_text(nb) -> str:
    return "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
                     if o.get("output_type") == "stream")


def test_notebook_runs_and_reports_the_expected_accuracy(tmp_path_factory, tmp_path, kernel):
    deploy = Path(shutil.copytree(small_build(tmp_path_factory) / "deploy", tmp_path / "deploy"))
    nb = nbformat.read(deploy / "benchmark.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\n" + FAST
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=300,
                                     resources={"metadata": {"path": str(deploy)}})
    client.execute()

    text = outputs_text(nb)
    assert f"host code from {deploy / 'host'}" in text  # the package's own copy, not the repo's
    assert "SimBackend, times modelled" in text
    line = next(l for l in text.splitlines() if l.startswith("ACCURACY "))
    check = json.loads(line[len("ACCURACY "):])
    vectors = np.load(deploy / "test_vectors.npz")
    n = len(vectors["labels"])
    assert check == {"images": n, "agree": n, "correct": int((vectors["expected"] == vectors["labels"]).sum()),
                     "accuracy": float((vectors["expected"] == vectors["labels"]).mean())}
    bench = json.loads((deploy / "bench" / "bench.json").read_text())
    assert [(t["name"], t["status"]) for t in bench["targets"]] == [("fpga-sim", "ok"), ("numpy-executor", "ok")]
    assert all((deploy / "bench" / f"{name}.png").is_file()
               for name in ("latency_vs_batch", "layers", "accuracy_vs_throughput"))
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3
