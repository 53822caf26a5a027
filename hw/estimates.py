"""Estimated cycles, resources, throughput and latency of a folded dataflow design.

Per-layer cycles and resources come from FINN's own models (``get_exp_cycles``,
``res_estimation``). Added here is what FINN's estimate leaves out: the IO DMA
bound, bytes per image over the board's AXI port width per cycle. Every figure
is an estimate, and reports label it so.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from boards import Board

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    op_type: str
    folding: dict
    cycles: int  # per image
    resources: dict  # LUT, BRAM_18K, URAM, DSP


@dataclass(frozen=True)
class Estimates:
    board: str
    clock_mhz: float
    layers: list[LayerEstimate]
    in_bytes: int  # per image, packed as the DMA moves it
    out_bytes: int
    io_in_cycles: int
    io_out_cycles: int
    total: dict = field(default_factory=dict)
    capacity: dict = field(default_factory=dict)

    @property
    def compute_cycles(self) -> int:
        return max(layer.cycles for layer in self.layers)

    @property
    def slowest_layer(self) -> str:
        """The slowest layer's name, or how many layers share the slowest cycle count."""
        slowest = [layer.name for layer in self.layers if layer.cycles == self.compute_cycles]
        return slowest[0] if len(slowest) == 1 else f"{len(slowest)} layers at {self.compute_cycles} cycles"

    @property
    def cycles_per_image(self) -> int:
        """Initiation interval of the whole pipeline: the slowest of compute and DMA."""
        return max(self.compute_cycles, self.io_in_cycles, self.io_out_cycles)

    @property
    def binding(self) -> str:
        if self.compute_cycles > max(self.io_in_cycles, self.io_out_cycles):
            return f"compute ({self.slowest_layer})"
        return "I/O (input DMA)" if self.io_in_cycles >= self.io_out_cycles else "I/O (output DMA)"

    @property
    def fps(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_per_image

    @property
    def compute_fps(self) -> float:
        """FINN's 'ideal' figure: the slowest layer alone, DMA ignored."""
        return self.clock_mhz * 1e6 / self.compute_cycles

    @property
    def latency_cycles(self) -> int:
        """One image alone: DMA in, every layer in turn (FINN's pessimistic critical path), DMA out."""
        return self.io_in_cycles + sum(layer.cycles for layer in self.layers) + self.io_out_cycles

    @property
    def latency_us(self) -> float:
        return self.latency_cycles / self.clock_mhz

    def over_capacity(self) -> list[str]:
        return [r for r in RESOURCES if self.total.get(r, 0) > self.capacity.get(r, 0)]

    @property
    def fits(self) -> bool:
        return not self.over_capacity()

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(kind="estimated", compute_cycles=self.compute_cycles, cycles_per_image=self.cycles_per_image,
                 binding=self.binding, fps=self.fps, compute_fps=self.compute_fps,
                 latency_cycles=self.latency_cycles, latency_us=self.latency_us,
                 fits=self.fits, over_capacity=self.over_capacity())
        return d


def io_bytes(model) -> tuple[int, int]:
    """Bytes per image into and out of the design: elements x bits, packed, rounded up."""
    def nbytes(tensor: str) -> int:
        shape = model.get_tensor_shape(tensor)
        bits = model.get_tensor_datatype(tensor).bitwidth()
        return math.ceil(math.prod(shape[1:]) * bits / 8)

    return nbytes(model.graph.input[0].name), nbytes(model.graph.output[0].name)


def estimate(model, board: Board) -> Estimates:
    """Estimates of a specialised, folded dataflow partition on ``board``."""
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from qonnx.custom_op.registry import getCustomOp

    from hw.folding import current_folding

    res = res_estimation(model, board.part)
    folding = current_folding(model)
    layers = [LayerEstimate(n.name, n.op_type, folding[n.name], int(getCustomOp(n).get_exp_cycles()),
                            {r: float(res[n.name].get(r, 0)) for r in RESOURCES}) for n in model.graph.node]
    total = {r: sum(layer.resources[r] for layer in layers) for r in RESOURCES}
    in_b, out_b = io_bytes(model)
    width = board.axi_bytes_per_cycle
    return Estimates(board.name, board.clock_mhz, layers, in_b, out_b, math.ceil(in_b / width),
                     math.ceil(out_b / width), total, {r: board.capacity()[r] for r in RESOURCES})
