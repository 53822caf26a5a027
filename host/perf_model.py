"""A performance model of a FINN dataflow accelerator behind FINN's zynq-iodma shell.

Every figure it gives is *modelled*, never measured, and says so (`LABEL`).

The design is a pipeline: the input DMA streams each image's packed bytes in,
every layer works on a different image at once, the output DMA streams the
results out. One batch of N images takes::

    time(N) = overhead + fill / f_clk + (N - 1) * II / f_clk

    II   = max(slowest layer's cycles per image, DMA-in cycles, DMA-out cycles)
    DMA  = ceil(bytes per image / AXI port bytes per cycle)      (one beat per cycle)
    fill = DMA-in + the sum of every layer's cycles + DMA-out    (one image alone, FINN's
           pessimistic critical path: each layer finishes an image before the next starts)
    overhead = the host's fixed cost per batch (`DEFAULT_OVERHEAD_S`, below)

Per-layer cycles are FINN's own estimates (``get_exp_cycles``), which the build
writes to the deploy package's report.json (``estimate.layers``).

Not modelled: AXI/DRAM efficiency below one beat per cycle (burst gaps, DRAM
refresh, HP-port arbitration), FIFO stalls between unbalanced layers, and the
host's own work (packing, copies into the DMA buffers, cache flushes). The
first makes the model optimistic by a few percent on DMA-bound designs: for
FINN's TFC-W1A1 tutorial it gives about 3% more images/s than measured
(tests/test_perf_model.py).

numpy-free, standard library only, so it runs on the board.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from host.errors import HostError

LABEL = "modelled"

# -- the host's fixed cost per batch ---------------------------------------------
# A batch costs the host a handful of AXI-Lite register accesses from Python:
# PynqBackend (host.driver) reads odma0's ctrl register (idle check), writes
# address low/high, count and start to each of the two DMAs (8 writes), and
# polls the done bit (at least one read): 10 accesses.
# One PYNQ MMIO access from CPython on the PYNQ-Z2's 650 MHz Cortex-A9 costs
# about 31 us: four MMIO writes took 120-130 us under %timeit, whatever the
# accelerator's work (a user's measurement on a PYNQ-Z2,
# https://github.com/KastnerRG/Read_the_docs/issues/25). A third-party figure,
# not ours; measure it on your board (host.bench times batch 1) and pass
# ``overhead_s`` to replace it.
MMIO_ACCESS_S = 125e-6 / 4
MMIO_ACCESSES_PER_BATCH = 10
DEFAULT_OVERHEAD_S = MMIO_ACCESSES_PER_BATCH * MMIO_ACCESS_S  # 312.5 us


@dataclass(frozen=True)
class LayerCycles:
    """One dataflow layer: FINN's estimated cycles per image (its initiation interval)."""

    name: str
    cycles: int
    kind: str = ""  # e.g. MVAU_hls
    folding: Mapping[str, Any] | None = None  # e.g. {"PE": 16, "SIMD": 49}


@dataclass(frozen=True)
class PerfModel:
    """Modelled time of batches on a dataflow accelerator (see the module docstring)."""

    layers: tuple[LayerCycles, ...]
    clock_mhz: float
    dma_in_cycles: int  # per image
    dma_out_cycles: int  # per image
    overhead_s: float = DEFAULT_OVERHEAD_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise HostError("a performance model needs at least one layer; pass the design's per-layer cycles")
        bad = [f"{layer.name}={layer.cycles}" for layer in self.layers if not int(layer.cycles) >= 1]
        if bad:
            raise HostError(f"layer cycles must be >= 1, got {', '.join(bad)}; take them from the build's estimate")
        if not self.clock_mhz > 0 or self.overhead_s < 0 or min(self.dma_in_cycles, self.dma_out_cycles) < 1:
            raise HostError(f"clock_mhz={self.clock_mhz} must be > 0, overhead_s={self.overhead_s} >= 0 and "
                            f"DMA cycles ({self.dma_in_cycles}, {self.dma_out_cycles}) >= 1")

    # -- construction ------------------------------------------------------------

    @classmethod
    def from_io(cls, layers: Iterable[LayerCycles], clock_mhz: float, in_bytes: int, out_bytes: int,
                axi_width_bits: int, overhead_s: float = DEFAULT_OVERHEAD_S) -> PerfModel:
        """From bytes per image and the AXI port width (64 bits on PYNQ-Z1/Z2's HP ports)."""
        width = axi_width_bits // 8
        if width < 1 or in_bytes < 1 or out_bytes < 1:
            raise HostError(f"axi_width_bits={axi_width_bits} must be >= 8 and bytes per image "
                            f"({in_bytes}, {out_bytes}) >= 1")
        return cls(tuple(layers), clock_mhz, math.ceil(in_bytes / width), math.ceil(out_bytes / width), overhead_s)

    @classmethod
    def from_estimate(cls, estimate: Mapping[str, Any], overhead_s: float = DEFAULT_OVERHEAD_S) -> PerfModel:
        """From a build's estimate report (report.json's ``estimate``: layers, clock_mhz, io_*_cycles)."""
        try:
            layers = tuple(LayerCycles(str(l["name"]), int(l["cycles"]), str(l.get("op_type", "")),
                                       dict(l.get("folding") or {})) for l in estimate["layers"])
            return cls(layers, float(estimate["clock_mhz"]), int(estimate["io_in_cycles"]),
                       int(estimate["io_out_cycles"]), overhead_s)
        except (KeyError, TypeError, ValueError) as err:
            raise HostError(f"the estimate report lacks or garbles {err}; rebuild the package "
                            "(it needs estimate.layers[].cycles, clock_mhz, io_in_cycles, io_out_cycles)") from None

    @classmethod
    def from_deploy(cls, deploy_dir: str | os.PathLike, overhead_s: float = DEFAULT_OVERHEAD_S) -> PerfModel:
        """From a deploy package's report.json."""
        path = Path(deploy_dir) / "report.json"
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise HostError(f"cannot read {path} ({err}); the deploy package holds it") from None
        if not isinstance(report, dict) or "estimate" not in report:
            raise HostError(f"{path} has no 'estimate' section; rebuild the package with the estimate step")
        return cls.from_estimate(report["estimate"], overhead_s)

    # -- cycles --------------------------------------------------------------------

    @property
    def slowest_layer(self) -> LayerCycles:
        return max(self.layers, key=lambda layer: layer.cycles)

    @property
    def ii_cycles(self) -> int:
        """Initiation interval of the whole pipeline: cycles between consecutive images."""
        return max(self.slowest_layer.cycles, self.dma_in_cycles, self.dma_out_cycles)

    @property
    def binding(self) -> str:
        """What sets the interval: 'compute (<layer>)', 'input DMA' or 'output DMA'."""
        if self.slowest_layer.cycles > max(self.dma_in_cycles, self.dma_out_cycles):
            return f"compute ({self.slowest_layer.name})"
        return "input DMA" if self.dma_in_cycles >= self.dma_out_cycles else "output DMA"

    @property
    def fill_cycles(self) -> int:
        """One image through an empty pipeline: DMA in, every layer in turn, DMA out."""
        return self.dma_in_cycles + sum(layer.cycles for layer in self.layers) + self.dma_out_cycles

    # -- seconds -------------------------------------------------------------------

    def batch_seconds(self, n: int) -> float:
        """Modelled wall time of one batch of n images, host overhead included."""
        n = _check_n(n)
        return self.overhead_s + (self.fill_cycles + (n - 1) * self.ii_cycles) / (self.clock_mhz * 1e6)

    def images_per_second(self, n: int) -> float:
        return _check_n(n) / self.batch_seconds(n)

    @property
    def latency_s(self) -> float:
        """Batch 1: overhead plus the pipeline fill."""
        return self.batch_seconds(1)

    @property
    def peak_images_per_second(self) -> float:
        """The limit for large batches: f_clk / II."""
        return self.clock_mhz * 1e6 / self.ii_cycles

    def layer_seconds(self) -> list[tuple[str, float]]:
        """Per layer, its steady-state time per image (cycles / f_clk), DMAs included as layers."""
        f = self.clock_mhz * 1e6
        return ([("DMA in", self.dma_in_cycles / f)] + [(l.name, l.cycles / f) for l in self.layers]
                + [("DMA out", self.dma_out_cycles / f)])

    def summary(self, batches: Sequence[int] = (1, 16, 256, 10000)) -> dict:
        """Plain-data description, every figure labelled modelled."""
        return {"label": LABEL, "clock_mhz": self.clock_mhz, "ii_cycles": self.ii_cycles, "binding": self.binding,
                "fill_cycles": self.fill_cycles, "overhead_s": self.overhead_s,
                "dma_in_cycles": self.dma_in_cycles, "dma_out_cycles": self.dma_out_cycles,
                "latency_s": self.latency_s, "peak_images_per_second": self.peak_images_per_second,
                "layers": [{"name": l.name, "kind": l.kind, "cycles": l.cycles, "folding": dict(l.folding or {})}
                           for l in self.layers],
                "batches": {str(n): {"seconds": self.batch_seconds(n), "images_per_second": self.images_per_second(n)}
                            for n in batches}}


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise HostError(f"batch size must be a positive integer, got {n!r}")
    return int(n)
