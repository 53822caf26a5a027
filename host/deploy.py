"""Reading a deploy package (what `flows build` writes under deploy/) and opening its accelerator.

`load_package` reads deploy.json (its format checked first), io_spec.json and
test_vectors.npz into a `Package`; `open_accelerator` drives the package's
bitfile through PYNQ on a board, or simulates it (host.sim) anywhere else.

numpy, pynq (only on a board, imported by the driver) and the standard library.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from host.driver import Accelerator, IOSpec, PynqBackend
from host.errors import HostError
from host.files import read_npz
from host.sim import SimBackend, read_deploy_meta


@dataclass
class Package:
    """A deploy package: its metadata, IO spec and test vectors."""

    dir: Path
    meta: dict
    spec: IOSpec
    inputs: np.ndarray  # (N, *input_shape) uint8, as the accelerator takes them
    labels: np.ndarray  # (N,) dataset labels
    expected: np.ndarray  # (N,) verified top-1 outputs of the design

    @property
    def bitfile(self) -> Path | None:
        name = self.meta.get("bitfile")
        return self.dir / name if name else None

    @property
    def clock_mhz(self) -> float:
        return float(self.meta.get("clock_mhz", 100.0))

    @property
    def labelled(self) -> bool:
        """False where the build had no data: the inputs are random and accuracy means nothing."""
        return bool(self.meta.get("labelled", True))

    def to_predictions(self, y: np.ndarray, n: int) -> np.ndarray:
        """A target's (n, ...) outputs as (n,) class indices: a one-value decision output
        (deploy.json "prediction": "positive", e.g. bipolar -1/+1) is class 1 where positive."""
        y = np.asarray(y).reshape(n)
        return (y > 0).astype(np.int64) if self.meta.get("prediction") == "positive" else y.astype(np.int64)


def load_package(deploy_dir: str | os.PathLike) -> Package:
    """Read deploy.json (format checked first: DeployVersionError), io_spec.json and test_vectors.npz."""
    deploy_dir = Path(deploy_dir)
    meta = read_deploy_meta(deploy_dir)
    spec = IOSpec.load(deploy_dir / "io_spec.json")
    path = deploy_dir / "test_vectors.npz"
    arrays = read_npz(path, ("inputs", "labels", "expected"), HostError, "copy the package again")
    inputs, labels, expected = arrays["inputs"], arrays["labels"], arrays["expected"]
    n = len(inputs)
    if labels.size != n or expected.size != n:
        raise HostError(f"{path} holds {n} inputs but {labels.size} labels and {expected.size} expected outputs; "
                        "copy the package again (or write one label and one expected output per input)")
    return Package(deploy_dir, meta, spec, inputs, labels.reshape(n), expected.reshape(n))


def on_board(package: Package) -> str | None:
    """None when the package can run on a PYNQ board here, else why not."""
    if importlib.util.find_spec("pynq") is None:
        return "pynq is not importable (not a PYNQ board)"
    if package.bitfile is None or not package.bitfile.is_file():
        return "the package has no bitfile (built without Vivado)"
    return None


def open_accelerator(package: Package, backend: str = "auto") -> Accelerator:
    """The package's accelerator: 'pynq' (the board), 'sim' (executor + perf model) or 'auto'
    (the board where `on_board` allows it, else the simulator)."""
    if backend not in ("auto", "pynq", "sim"):
        raise HostError(f"backend {backend!r} is not one of auto, pynq, sim")
    if backend == "pynq" or (backend == "auto" and on_board(package) is None):
        bit = package.bitfile or package.dir / "accelerator.bit"
        return Accelerator(package.spec, PynqBackend(bit, package.clock_mhz, board=package.meta.get("board")))
    return Accelerator(package.spec, SimBackend.from_deploy(package.dir))
