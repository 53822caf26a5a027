"""A stand-in for the FPGA: the numpy executor computes, the performance model keeps time.

``Accelerator(IOSpec.load(deploy / "io_spec.json"), SimBackend.from_deploy(deploy))``
behaves as the PynqBackend path does on a board: the same packed byte buffers
go in and come out (host.packing), the outputs are the bit-exact outputs of the
folded design (host.executor), and each batch's time is the *modelled* time of
the accelerator (host.perf_model), recorded in ``last_modelled_seconds``.
Nothing here is measured; ``label`` says "modelled".

Also here: reading a deploy package's ``deploy.json`` with its format check,
which every host-side entry point does first.

numpy and the standard library only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from host import executor as executor_mod
from host.driver import Backend, IOSpec, _batched, _check_ibuf
from host.errors import HostError, IOSpecError
from host.files import read_versioned_json
from host.packing import pack, unpack
from host.perf_model import DEFAULT_OVERHEAD_S, LABEL, PerfModel

# The deploy package format this host code reads (flows/package.py writes it).
DEPLOY_FORMAT = "qnn-flows-deploy/1"
DEPLOY_JSON = "deploy.json"


def read_deploy_meta(deploy_dir: str | os.PathLike) -> dict:
    """deploy.json of a package, after checking its format is the one this host code reads."""
    return read_versioned_json(Path(deploy_dir) / DEPLOY_JSON, DEPLOY_FORMAT, HostError,
                               "pass the deploy/ folder a build wrote", "copy the deploy package again",
                               "use the host/ folder inside that package, or rebuild it with this qnn-flows")


class SimBackend(Backend):
    """Runs packed buffers through the numpy executor; times batches with a PerfModel."""

    label = LABEL

    def __init__(self, executor: executor_mod.Executor, model: PerfModel) -> None:
        self.executor = executor
        self.model = model
        self.last_modelled_seconds: float | None = None  # the last batch's modelled time
        self.modelled_seconds_total = 0.0
        self.batches = 0

    @classmethod
    def from_deploy(cls, deploy_dir: str | os.PathLike, overhead_s: float = DEFAULT_OVERHEAD_S) -> SimBackend:
        """The executor (deploy/executor/) and performance model (deploy/report.json) of a package."""
        meta = read_deploy_meta(deploy_dir)
        sub = meta.get("executor") or "executor/"
        return cls(executor_mod.load(Path(deploy_dir) / sub), PerfModel.from_deploy(deploy_dir, overhead_s))

    def bind(self, spec: IOSpec) -> None:
        """Refuse an IO spec whose ports do not match the executor's."""
        ex = self.executor
        for port, shape, dtype in (("input", ex.input_shape, ex.stream_datatype),
                                   ("output", ex.output_shape, ex.output_datatype)):
            want = getattr(spec, port)
            if math.prod(want.normal_shape[1:]) != math.prod(shape) or want.datatype != dtype:
                raise IOSpecError(f"IO spec {port} is {want.datatype} {list(want.normal_shape)} but the executor's "
                                  f"is {dtype} {[1, *shape]}; use the io_spec.json and executor/ of one package")
        if (spec.input_quantiser is None) != (ex.host_input is None) or (
                ex.host_input is not None and spec.input_quantiser.to_dict() != ex.host_input.to_dict()):
            raise IOSpecError("the IO spec's input_quantiser and the executor's host_input differ; use the "
                              "io_spec.json and executor/ of one package")
        super().bind(spec)

    def run(self, ibuf: np.ndarray, n: int) -> np.ndarray:
        if self.spec is None:
            raise HostError("SimBackend has no IO spec; wrap it in Accelerator(spec, backend)")
        ibuf, n = np.asarray(ibuf), int(n)
        _check_ibuf(ibuf, n, self.spec.input)
        i_spec, o_spec = self.spec.input, self.spec.output
        x = unpack(ibuf[:n], i_spec.datatype, _batched(i_spec.folded_shape, n))
        y = self.executor.run_stream(x.reshape(n, *self.executor.input_shape))  # the bytes are quantised
        o_folded = _batched(o_spec.folded_shape, n)
        obuf = pack(y.reshape(o_folded), o_spec.datatype, o_folded)
        self.last_modelled_seconds = self.model.batch_seconds(n)
        self.modelled_seconds_total += self.last_modelled_seconds
        self.batches += 1
        return obuf
