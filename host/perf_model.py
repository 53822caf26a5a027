"""The performance model of a FINN dataflow accelerator: the one home of its timing arithmetic.

Every figure it gives is *modelled*, never measured, and says so (`LABEL`). The
build's estimate (hw/estimates.py), the folding rule's DMA bound (hw/folding_rule.py),
SimBackend and `flows bench` all use it. Standard library only: it runs on the board.

The design is a pipeline: an input stream (FINN's IODMA, or a testbench in RTL
simulation) feeds the first layer, every layer works on a different image at
once, the output stream drains the last. docs/perf_model.md gives the equations
with their sources and the calibration against published figures
(tests/test_perf_model.py); in short::

    time(N)  = overhead + (latency + (N - 1) * II) / f_clk
    II       = max(FINN's cycles_i + DEPTH for every layer i, DMA in, DMA out)
    DMA      = beats / efficiency, beats = bits per image / IODMA width, where FINN's
               IODMA width = gcd(bits per image, AXI port width) (insert_iodma.py)
    latency  = one image alone, layers overlapping: each layer's first output comes
               `first_out` cycles after its first input (or once the share of its input
               it needs has arrived), its last output `tail` cycles after its last input,
               each plus DEPTH; a FIFO or width converter between layers adds STAGE.

Per-layer cycles are FINN's own estimates (``get_exp_cycles``); `first_out`,
`tail` and `needs` come from the layer's shape (`mvau`, `swg`, ... below, used
by hw/estimates.py). Reports built before these fields existed load with the
block assumption (first output after the whole image), which reproduces the old
pessimistic fill.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from host.errors import HostError

LABEL = "modelled"

# -- fabric constants (sources and checks: docs/perf_model.md) ---------------------
# Cycles a FINN HLS/RTL layer adds per image beyond its estimate (pipeline fill and
# drain of its loop, restarted for every image). Measured: the cybersecurity MLP's
# stitched-IP RTL simulation (FINN notebook 3-build-accelerator-with-finn.ipynb, 2021)
# ran at 87 cycles per image where FINN's estimate of its slowest layer says 80.
# FINN's own tests let a layer's estimate and its RTL simulation differ by 10-15 cycles.
LAYER_DEPTH_CYCLES = 7
# A FIFO or data-width converter between layers: one registered stream stage.
STREAM_STAGE_CYCLES = 1
# Share of the AXI port's beats per cycle that FINN's IODMA sustains on a Zynq HP port.
# Measured: FINN's TFC-W1A1 tutorial on a PYNQ-Z1 (958,413 images/s at batch 10,000,
# input-DMA-bound, 98 beats per image) once FINN's driver overhead is taken out.
DMA_EFFICIENCY = 0.96

# -- the host's fixed cost per batch ---------------------------------------------
# A batch costs the host a handful of AXI-Lite register accesses from Python:
# PynqBackend (host.driver) reads odma0's ctrl register (idle check), writes
# address low/high, count and start to each of the two DMAs (8 writes), and
# polls the done bit (at least one read): 10 accesses. FINN's generated driver
# makes 8 (one idle read, 3 writes per DMA, one done read).
# One PYNQ MMIO access from CPython on the PYNQ-Z2's 650 MHz Cortex-A9 costs
# about 31 us: four MMIO writes took 120-130 us under %timeit, whatever the
# accelerator's work (a user's measurement on a PYNQ-Z2,
# https://github.com/KastnerRG/Read_the_docs/issues/25). A third-party figure,
# not ours; measure it on your board (host.timing times batch 1) and pass
# ``overhead_s`` to replace it.
MMIO_ACCESS_S = 125e-6 / 4
MMIO_ACCESSES_PER_BATCH = 10
FINN_DRIVER_MMIO_ACCESSES = 8
DEFAULT_OVERHEAD_S = MMIO_ACCESSES_PER_BATCH * MMIO_ACCESS_S  # 312.5 us


@dataclass(frozen=True)
class LayerCycles:
    """One dataflow layer as the model sees it.

    cycles: FINN's estimated cycles per image (``get_exp_cycles``), its ideal interval.
    first_out: cycles from its first input word to its first output word, input at full rate.
    tail: cycles from its last input word to its last output word.
    needs: share of its input (0..1] that must have arrived before its first output.
    stages: FIFO/width-converter stages in front of it (the build inserts them).
    Defaults (None, None, 1.0): the block assumption, all its work after its whole input arrived.
    """

    name: str
    cycles: int
    kind: str = ""  # e.g. MVAU_hls
    folding: Mapping[str, Any] | None = None  # e.g. {"PE": 16, "SIMD": 49}
    first_out: int | None = None
    tail: int | None = None
    needs: float = 1.0
    stages: int = 0
    depth: int = LAYER_DEPTH_CYCLES

    @property
    def interval(self) -> int:
        """Cycles between images through this layer alone: FINN's estimate plus its depth."""
        return int(self.cycles) + self.depth

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "cycles": int(self.cycles), "folding": dict(self.folding or {}),
                "first_out": self.first_out, "tail": self.tail, "needs": self.needs, "stages": self.stages,
                "depth": self.depth}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerCycles:
        return cls(str(d["name"]), int(d["cycles"]), str(d.get("op_type") or d.get("kind") or ""),
                   dict(d.get("folding") or {}), _optional_int(d.get("first_out")), _optional_int(d.get("tail")),
                   float(d.get("needs", 1.0)), int(d.get("stages", 0)), int(d.get("depth", LAYER_DEPTH_CYCLES)))


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


# -- layer profiles from shapes (FINN's formulas for cycles; first output and tail) ----------

def mvau(name: str, mw: int, mh: int, pe: int, simd: int, vectors: int = 1, cycles: int | None = None,
         **kw) -> LayerCycles:
    """A matrix-vector unit: per input vector, MW/SIMD words in, MH/PE folds of MW/SIMD cycles.
    Its first output needs one whole input vector; after the last input word, the last
    vector's other neuron folds remain."""
    sf, nf = mw // simd, mh // pe
    return LayerCycles(name, cycles if cycles is not None else sf * nf * vectors, kw.pop("kind", "MVAU"),
                       kw.pop("folding", {"PE": pe, "SIMD": simd}), first_out=sf, tail=(nf - 1) * sf,
                       needs=1.0 / vectors, **kw)


def streaming(name: str, cycles: int, pixels: int = 1, **kw) -> LayerCycles:
    """A layer that streams pixel by pixel (thresholding, pooling, padding, VVAU): its first
    output needs one pixel's input, its last comes one pixel's work after its last input."""
    per_pixel = max(1, cycles // max(pixels, 1))
    return LayerCycles(name, cycles, kw.pop("kind", ""), kw.pop("folding", None), first_out=per_pixel,
                       tail=per_pixel, needs=1.0 / max(pixels, 1), **kw)


def elementwise(name: str, cycles: int, **kw) -> LayerCycles:
    """A layer whose every input word yields an output word (Thresholding): one word in, one out."""
    return LayerCycles(name, cycles, kw.pop("kind", "Thresholding"), kw.pop("folding", None), first_out=1,
                       tail=0, needs=1.0 / max(cycles, 1), **kw)


def swg(name: str, ifm: Sequence[int], k: Sequence[int], channel_folds: int, cycles: int, **kw) -> LayerCycles:
    """A sliding-window generator: its first window needs (k_h - 1) rows and k_w pixels of the
    image; after its last input pixel, the last window (k_h * k_w * channel folds words) remains."""
    (h, w), (kh, kw_) = ifm, k
    first = ((kh - 1) * w + kw_) * channel_folds
    return LayerCycles(name, cycles, kw.pop("kind", "ConvolutionInputGenerator"), kw.pop("folding", None),
                       first_out=first, tail=kh * kw_ * channel_folds, needs=first / (h * w * channel_folds), **kw)


def label_select(name: str, labels: int, pe: int = 1, cycles: int | None = None, **kw) -> LayerCycles:
    """Top-k over all labels: output only after the last label."""
    c = cycles if cycles is not None else labels // pe
    return LayerCycles(name, c, kw.pop("kind", "LabelSelect"), kw.pop("folding", {"PE": pe}), first_out=c,
                       tail=0, needs=1.0, **kw)


# -- the IO ports -----------------------------------------------------------------

@dataclass(frozen=True)
class Port:
    """What crosses one end of the accelerator per image.

    bits: payload bits per image, packed (elements x bits of the graph's datatype).
    word_bits, words: the stream word (padded to whole bytes) and words per image at the
    first/last layer, when known; FINN's IODMA moves words * word_bits bits.
    """

    bits: int
    word_bits: int = 0
    words: int = 0

    @property
    def transfer_bits(self) -> int:
        return self.word_bits * self.words if self.words else 8 * math.ceil(self.bits / 8)

    def dma_width(self, axi_bits: int) -> int:
        """FINN's IODMA memory width: the widest power-of-two share of the AXI port dividing the transfer."""
        return math.gcd(self.transfer_bits, axi_bits)

    def beats(self, axi_bits: int) -> int:
        return self.transfer_bits // self.dma_width(axi_bits)


@dataclass(frozen=True)
class IOStream:
    """One end as the pipeline sees it: cycles per image, and why."""

    cycles: float
    why: str

    @classmethod
    def dma(cls, port: Port, axi_bits: int, efficiency: float = DMA_EFFICIENCY, direction: str = "input") -> IOStream:
        if axi_bits < 8 or port.bits < 1 or not 0 < efficiency <= 1:
            raise HostError(f"axi_width_bits={axi_bits} must be >= 8, bits per image ({port.bits}) >= 1 and "
                            f"DMA efficiency ({efficiency}) in (0, 1]")
        width, beats = port.dma_width(axi_bits), port.beats(axi_bits)
        why = (f"{direction} DMA ({port.transfer_bits} bits per image = {beats} beats of {width} bits"
               + (f", FINN's IODMA narrows the {axi_bits}-bit port to divide the transfer" if width < axi_bits else "")
               + f", at {efficiency:g} efficiency)")
        return cls(beats / efficiency, why)

    @classmethod
    def words(cls, words: int, direction: str = "input") -> IOStream:
        """A testbench stream, one word per cycle (FINN's stitched-IP RTL simulation)."""
        return cls(float(words), f"{direction} stream ({words} words, one per cycle)")


@dataclass(frozen=True)
class Span:
    """When an image's first and last words leave a stage (cycles from its first input word)."""

    stage: str
    first: float
    last: float
    why: str


@dataclass(frozen=True)
class PerfModel:
    """Modelled time of batches on a dataflow accelerator (see the module docstring)."""

    layers: tuple[LayerCycles, ...]
    clock_mhz: float
    io_in: IOStream
    io_out: IOStream
    overhead_s: float = DEFAULT_OVERHEAD_S
    stage_cycles: int = STREAM_STAGE_CYCLES
    timeline: tuple[Span, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise HostError("a performance model needs at least one layer; pass the design's per-layer cycles")
        bad = [f"{layer.name}={layer.cycles}" for layer in self.layers if not int(layer.cycles) >= 1]
        if bad:
            raise HostError(f"layer cycles must be >= 1, got {', '.join(bad)}; take them from the build's estimate")
        if not self.clock_mhz > 0 or self.overhead_s < 0 or min(self.io_in.cycles, self.io_out.cycles) <= 0:
            raise HostError(f"clock_mhz={self.clock_mhz} must be > 0, overhead_s={self.overhead_s} >= 0 and "
                            f"DMA cycles ({self.io_in.cycles}, {self.io_out.cycles}) > 0")
        object.__setattr__(self, "timeline", tuple(self._timeline()))

    # -- construction ------------------------------------------------------------

    @classmethod
    def from_ports(cls, layers: Iterable[LayerCycles], clock_mhz: float, port_in: Port, port_out: Port,
                   axi_width_bits: int, overhead_s: float = DEFAULT_OVERHEAD_S,
                   efficiency: float = DMA_EFFICIENCY) -> PerfModel:
        """Behind FINN's zynq-iodma shell: IODMAs on an AXI port of ``axi_width_bits``."""
        return cls(tuple(layers), clock_mhz, IOStream.dma(port_in, axi_width_bits, efficiency),
                   IOStream.dma(port_out, axi_width_bits, efficiency, "output"), overhead_s)

    @classmethod
    def from_estimate(cls, estimate: Mapping[str, Any], overhead_s: float = DEFAULT_OVERHEAD_S) -> PerfModel:
        """From a build's estimate report (report.json's ``estimate``). Reports that predate the
        model's DMA terms (only io_*_cycles) keep one beat per cycle and block layers."""
        try:
            layers = tuple(LayerCycles.from_dict(l) for l in estimate["layers"])
            io = {}
            for end in ("in", "out"):
                cycles = estimate.get(f"dma_{end}_cycles", estimate[f"io_{end}_cycles"])
                io[end] = IOStream(float(cycles), estimate.get(f"dma_{end}_why") or f"{end}put DMA ({cycles} cycles)")
            return cls(layers, float(estimate["clock_mhz"]), io["in"], io["out"], overhead_s)
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

    # -- the interval --------------------------------------------------------------

    @property
    def dma_in_cycles(self) -> float:
        return self.io_in.cycles

    @property
    def dma_out_cycles(self) -> float:
        return self.io_out.cycles

    @property
    def slowest_layer(self) -> LayerCycles:
        return max(self.layers, key=lambda layer: layer.interval)

    @property
    def compute_cycles(self) -> int:
        """The slowest layer's real interval: FINN's estimate plus its depth."""
        return self.slowest_layer.interval

    @property
    def ii_cycles(self) -> float:
        """Initiation interval of the whole pipeline: cycles between consecutive images."""
        return max(self.compute_cycles, self.io_in.cycles, self.io_out.cycles)

    @property
    def binding(self) -> str:
        """What sets the interval: 'compute (<layer>)', 'input DMA' or 'output DMA'."""
        if self.compute_cycles > max(self.io_in.cycles, self.io_out.cycles):
            return f"compute ({self.slowest_layer.name})"
        return "input DMA" if self.io_in.cycles >= self.io_out.cycles else "output DMA"

    @property
    def ii_why(self) -> str:
        """The interval and the term that set it, in words."""
        if self.binding.startswith("compute"):
            l = self.slowest_layer
            why = f"compute: {l.name}, FINN's estimate {l.cycles} + {l.depth} pipeline depth"
        else:
            why = (self.io_in if self.binding == "input DMA" else self.io_out).why
        return f"II = {self.ii_cycles:.1f} cycles: {why}"

    def dma_bound_exp_cycles(self) -> int:
        """The largest FINN layer estimate that does not bind (see :func:`dma_bound_exp_cycles`)."""
        return dma_bound_exp_cycles(self.io_in, self.io_out, max(layer.depth for layer in self.layers))

    # -- batch-1 latency -------------------------------------------------------------

    def _timeline(self) -> list[Span]:
        t = Span("input", 0.0, self.io_in.cycles, self.io_in.why)
        spans = [t]
        for layer in self.layers:
            a, z = t.first + layer.stages * self.stage_cycles, t.last + layer.stages * self.stage_cycles
            first_out = layer.cycles if layer.first_out is None else layer.first_out
            tail = layer.cycles if layer.tail is None else layer.tail
            need_t = a + layer.needs * (z - a)  # when the share of input its first output needs is in
            first = max(a + first_out, need_t) + layer.depth
            last = max(a + layer.cycles, z + tail) + layer.depth
            last = max(last, first)
            bound = "its input" if need_t > a + first_out or z + tail > a + layer.cycles else "its own cycles"
            t = Span(layer.name, first, last, f"first output {first - a:.0f} and last {last - a:.0f} cycles after "
                                               f"its first input (set by {bound})")
            spans.append(t)
        end = max(t.last + 1, t.first + self.io_out.cycles)
        spans.append(Span("output", t.first + 1, end, self.io_out.why))
        return spans

    @property
    def latency_cycles(self) -> float:
        """One image alone through the fabric: first input beat to last output beat."""
        return self.timeline[-1].last

    @property
    def fill_cycles(self) -> float:
        """The same as :attr:`latency_cycles` (the name older reports used)."""
        return self.latency_cycles

    @property
    def latency_why(self) -> str:
        parts = ", ".join(f"{s.stage} {s.last:.0f}" for s in self.timeline)
        return (f"batch-1 fabric latency = {self.latency_cycles:.0f} cycles: layers overlap, each starting on its "
                f"first input; last word out of each stage at: {parts}")

    # -- seconds -------------------------------------------------------------------

    def batch_cycles(self, n: int) -> float:
        """Fabric cycles of one batch of n images: the first image's latency plus n - 1 intervals."""
        return self.latency_cycles + (_check_n(n) - 1) * self.ii_cycles

    def batch_seconds(self, n: int) -> float:
        """Modelled wall time of one batch of n images, host overhead included."""
        return self.overhead_s + self.batch_cycles(n) / (self.clock_mhz * 1e6)

    def images_per_second(self, n: int) -> float:
        return _check_n(n) / self.batch_seconds(n)

    @property
    def latency_s(self) -> float:
        """Batch 1: overhead plus the fabric latency."""
        return self.batch_seconds(1)

    @property
    def peak_images_per_second(self) -> float:
        """The limit for large batches: f_clk / II."""
        return self.clock_mhz * 1e6 / self.ii_cycles

    def layer_seconds(self) -> list[tuple[str, float]]:
        """Per stage, its steady-state time per image (interval / f_clk), DMAs included as stages."""
        f = self.clock_mhz * 1e6
        return ([("DMA in", self.io_in.cycles / f)] + [(l.name, l.interval / f) for l in self.layers]
                + [("DMA out", self.io_out.cycles / f)])


def dma_bound_exp_cycles(io_in: IOStream, io_out: IOStream, depth: int = LAYER_DEPTH_CYCLES) -> int:
    """The largest FINN layer estimate whose interval (estimate + depth) stays within the IO DMA's:
    faster compute cannot be fed. What a folding rule aims at, in FINN's estimate units."""
    return max(1, math.floor(max(io_in.cycles, io_out.cycles)) - depth)


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise HostError(f"batch size must be a positive integer, got {n!r}")
    return int(n)
