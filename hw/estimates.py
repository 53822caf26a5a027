"""Estimated cycles, resources, throughput and latency of a folded dataflow design.

Here live FINN's per-layer queries: its cycle estimate (``get_exp_cycles``), its
resource estimates (``res_estimation``), and the shapes the performance model
needs (stream widths, folded shapes, MW/MH/PE/SIMD). The timing arithmetic
(interval, DMA, batch-1 latency) is host.perf_model's, the one model the board
side uses too. Every figure is an estimate, and reports label it so.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from boards import Board
from host import perf_model as pm

RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    op_type: str
    folding: dict
    cycles: int  # per image, FINN's estimate
    resources: dict  # LUT, BRAM_18K, URAM, DSP
    timing: pm.LayerCycles  # what the performance model knows of it


@dataclass(frozen=True)
class Estimates:
    board: str
    clock_mhz: float
    layers: list[LayerEstimate]
    port_in: pm.Port
    port_out: pm.Port
    axi_width_bits: int
    total: dict = field(default_factory=dict)
    capacity: dict = field(default_factory=dict)

    @functools.cached_property
    def model(self) -> pm.PerfModel:
        return pm.PerfModel.from_ports([l.timing for l in self.layers], self.clock_mhz, self.port_in,
                                       self.port_out, self.axi_width_bits)

    @property
    def in_bytes(self) -> int:
        """Payload bytes per image, packed at the input datatype's width."""
        return math.ceil(self.port_in.bits / 8)

    @property
    def out_bytes(self) -> int:
        return math.ceil(self.port_out.bits / 8)

    @property
    def io_in_cycles(self) -> int:
        """AXI beats per image into the design (one beat per cycle at best)."""
        return self.port_in.beats(self.axi_width_bits)

    @property
    def io_out_cycles(self) -> int:
        return self.port_out.beats(self.axi_width_bits)

    @property
    def compute_cycles(self) -> int:
        """FINN's estimate of its slowest layer (its 'max_cycles')."""
        return max(layer.cycles for layer in self.layers)

    @property
    def slowest_layer(self) -> str:
        """The slowest layer's name, or how many layers share the slowest cycle count."""
        slowest = [layer.name for layer in self.layers if layer.cycles == self.compute_cycles]
        return slowest[0] if len(slowest) == 1 else f"{len(slowest)} layers at {self.compute_cycles} cycles"

    @property
    def cycles_per_image(self) -> float:
        """Initiation interval of the whole pipeline (the model's: depths and DMA efficiency included)."""
        return self.model.ii_cycles

    @property
    def binding(self) -> str:
        model = self.model
        if model.binding.startswith("compute"):
            return f"compute ({self.slowest_layer})"
        return "I/O (input DMA)" if model.binding == "input DMA" else "I/O (output DMA)"

    @property
    def fps(self) -> float:
        return self.model.peak_images_per_second

    @property
    def compute_fps(self) -> float:
        """FINN's 'ideal' figure: the slowest layer's estimate alone, DMA and depths ignored."""
        return self.clock_mhz * 1e6 / self.compute_cycles

    @property
    def latency_cycles(self) -> float:
        """One image alone through the fabric, layers overlapping (the model's batch-1 latency)."""
        return self.model.latency_cycles

    @property
    def latency_us(self) -> float:
        return self.latency_cycles / self.clock_mhz

    def dma_bound_exp_cycles(self) -> int:
        """The largest FINN layer estimate that keeps the design at its IO DMA bound."""
        return self.model.dma_bound_exp_cycles()

    def over_capacity(self) -> list[str]:
        return [r for r in RESOURCES if self.total.get(r, 0) > self.capacity.get(r, 0)]

    @property
    def fits(self) -> bool:
        return not self.over_capacity()

    def to_dict(self) -> dict:
        model = self.model
        layers = [{"name": l.name, "op_type": l.op_type, "folding": l.folding, "cycles": l.cycles,
                   "resources": l.resources, **{k: v for k, v in l.timing.to_dict().items()
                                                if k in ("first_out", "tail", "needs", "stages", "depth")}}
                  for l in self.layers]
        return {"kind": "estimated", "board": self.board, "clock_mhz": self.clock_mhz, "layers": layers,
                "in_bits": self.port_in.bits, "out_bits": self.port_out.bits,
                "in_bytes": self.in_bytes, "out_bytes": self.out_bytes,
                "in_transfer_bits": self.port_in.transfer_bits, "out_transfer_bits": self.port_out.transfer_bits,
                "axi_width_bits": self.axi_width_bits,
                "io_in_cycles": self.io_in_cycles, "io_out_cycles": self.io_out_cycles,
                "dma_in_cycles": model.dma_in_cycles, "dma_out_cycles": model.dma_out_cycles,
                "dma_in_why": model.io_in.why, "dma_out_why": model.io_out.why,
                "dma_efficiency": pm.DMA_EFFICIENCY, "layer_depth_cycles": pm.LAYER_DEPTH_CYCLES,
                "total": self.total, "capacity": self.capacity,
                "compute_cycles": self.compute_cycles, "cycles_per_image": model.ii_cycles,
                "binding": self.binding, "ii_why": model.ii_why, "fps": self.fps, "compute_fps": self.compute_fps,
                "latency_cycles": model.latency_cycles, "latency_us": self.latency_us,
                "latency_why": model.latency_why,
                "timeline": [{"stage": s.stage, "first": s.first, "last": s.last, "why": s.why}
                             for s in model.timeline],
                "dma_bound_exp_cycles": self.dma_bound_exp_cycles(),
                "fits": self.fits, "over_capacity": self.over_capacity()}


def ports(model) -> tuple[pm.Port, pm.Port]:
    """What crosses each end per image: the graph's datatypes (packed bits) and the stream
    words of the first and last layer (what FINN's IODMA moves)."""
    from qonnx.custom_op.registry import getCustomOp

    def payload(tensor: str) -> int:
        return math.prod(model.get_tensor_shape(tensor)[1:]) * model.get_tensor_datatype(tensor).bitwidth()

    first, last = getCustomOp(model.graph.node[0]), getCustomOp(model.graph.node[-1])
    port_in = pm.Port(payload(model.graph.input[0].name), int(first.get_instream_width_padded()),
                      int(math.prod(first.get_folded_input_shape()[:-1])))
    port_out = pm.Port(payload(model.graph.output[0].name), int(last.get_outstream_width_padded()),
                       int(math.prod(last.get_folded_output_shape()[:-1])))
    return port_in, port_out


def dma_bound_exp_cycles(model, board: Board) -> int:
    """The folding rule's target: the slowest FINN layer estimate that does not bind before the
    IO DMA, for the packed payload of the graph's input and output datatypes (what the DMA moves
    at least, whatever the first layer's folding)."""
    port_in, port_out = ports(model)
    axi = 8 * board.axi_bytes_per_cycle
    return pm.dma_bound_exp_cycles(pm.IOStream.dma(pm.Port(port_in.bits), axi),
                                   pm.IOStream.dma(pm.Port(port_out.bits), axi, direction="output"))


def timing(model, node, folding: dict, stages: int) -> pm.LayerCycles:
    """The performance model's view of one HW layer: FINN's cycle estimate and its shape."""
    from qonnx.custom_op.registry import getCustomOp

    from hw.folding import generic_op

    inst, op = getCustomOp(node), generic_op(node.op_type)
    attr = inst.get_nodeattr
    cycles = max(1, int(inst.get_exp_cycles()))
    kw = {"kind": node.op_type, "folding": folding, "stages": stages}
    if op == "MVAU":
        vectors = int(math.prod(attr("numInputVectors")))
        return pm.mvau(node.name, attr("MW"), attr("MH"), attr("PE"), attr("SIMD"), vectors, cycles=cycles, **kw)
    if op == "Thresholding":
        return pm.elementwise(node.name, cycles, **kw)
    if op == "LabelSelect":
        return pm.label_select(node.name, attr("Labels"), attr("PE"), cycles=cycles, **kw)
    if op == "ConvolutionInputGenerator":
        folds = max(1, attr("IFMChannels") // attr("SIMD"))
        return pm.swg(node.name, attr("IFMDim"), attr("ConvKernelDim"), folds, cycles, **kw)
    pixels = int(math.prod(inst.get_normal_output_shape()[1:-1]))
    return pm.streaming(node.name, cycles, pixels, **kw)


def stream_stages(model, node) -> int:
    """FIFO/width-converter stages the build puts in front of ``node``: the input FIFO before
    the first layer, a data-width converter where the stream width changes (FINN's InsertDWC)."""
    from qonnx.custom_op.registry import getCustomOp

    producer = model.find_producer(node.input[0])
    if producer is None:
        return 1
    return int(getCustomOp(producer).get_outstream_width() != getCustomOp(node).get_instream_width())


def estimate(model, board: Board) -> Estimates:
    """Estimates of a specialised, folded dataflow partition on ``board``."""
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from qonnx.custom_op.registry import getCustomOp

    from hw.folding import current_folding

    res = res_estimation(model, board.part)
    folding = current_folding(model)
    layers = [LayerEstimate(n.name, n.op_type, folding[n.name], int(getCustomOp(n).get_exp_cycles()),
                            {r: float(res[n.name].get(r, 0)) for r in RESOURCES},
                            timing(model, n, folding[n.name], stream_stages(model, n)))
              for n in model.graph.node]
    total = {r: sum(layer.resources[r] for layer in layers) for r in RESOURCES}
    port_in, port_out = ports(model)
    return Estimates(board.name, board.clock_mhz, layers, port_in, port_out, 8 * board.axi_bytes_per_cycle,
                     total, {r: board.capacity()[r] for r in RESOURCES})
