"""Which folding a design gets: the folding rule of a build.

Three ways, one per option of ``flows build``: a folding file (its nodes as given,
the rest by the default rule), a target rate (the cheapest folding within that many
cycles per image), or the default: the cheapest folding (fewest LUTs) per layer that
reaches the input/output DMA bound (host.perf_model, through hw.estimates), relaxed
(2x, 4x, ...) until the design fits the board. The folding itself (candidates, costs,
applying it to the graph) is hw.folding's; the estimates are hw.estimates'.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

from boards import Board
from hw import folding as fold
from hw.estimates import dma_bound_exp_cycles, estimate


def choose(model, board: Board, folding_file: Path | None = None, target_fps: float | None = None) -> dict:
    """The folding for ``model`` on ``board``: {"rule": how it was chosen, "target_cycles", "folding"
    (FINN folding-config format), and with a folding file its "file_report" lines}. The default rule
    applies the folding to ``model`` as it searches; the caller applies the returned one in every case."""
    io = dma_bound_exp_cycles(model, board)
    if folding_file:
        from hw.folding_file import apply_folding_file, named_cycles

        raw = fold.read_folding(folding_file)
        target = max(io, named_cycles(model, raw))  # unnamed layers need not outrun the file's slowest
        lines = apply_folding_file(model, raw, fold.choose_folding(model, target, board.part), str(folding_file))
        return {"rule": f"--folding {folding_file}; nodes it does not name: the default rule (cheapest "
                        f"folding within {target} cycles per image: the slower of the IO DMA bound, {io}, and "
                        "the slowest layer the file folds)",
                "target_cycles": target, "folding": fold.current_folding(model), "file_report": lines}
    if target_fps:
        target = max(1, math.floor(board.clock_mhz * 1e6 / target_fps))
        return {"rule": f"--target-fps {target_fps:g}: cheapest folding with at most {target} "
                        f"cycles per image per layer (DMA bound: {io})",
                "target_cycles": target, "folding": fold.choose_folding(model, target, board.part)}
    target, folding = fitting_folding(model, board, io)
    rule = (f"default: cheapest folding (fewest LUTs) per layer reaching the IO DMA bound of {io} cycles "
            f"per image; faster compute cannot be fed")
    if target != io:
        rule += f"; relaxed to {target} cycles to fit {board.name}"
    return {"rule": rule, "target_cycles": target, "folding": folding}


def fitting_folding(model, board: Board, start: int) -> tuple[int, dict]:
    """The smallest target (start, 2*start, ...) whose cheapest folding fits the board, applied to
    ``model``; once relaxing changes nothing (every layer as folded as the rule goes), that last folding."""
    target, previous = start, None
    while True:
        folding = fold.choose_folding(model, target, board.part)
        fold.apply_folding(model, folding)
        if estimate(model, board).fits or folding == previous or target > 1 << 30:
            return target, folding
        target, previous = target * 2, folding


def misfit(model, est, board: Board, fitting_path: Path | str) -> tuple[str, dict | None]:
    """Why ``model`` (estimated ``est``) does not fit ``board``, and a folding that does (FINN
    folding-config format; None when none does). The message offers ``fitting_path``, where the
    caller writes that folding."""
    over = est.over_capacity()
    worst = sorted(est.layers, key=lambda l: -l.resources[over[0]])[:3]
    fitting = copy.deepcopy(model)
    target, _ = fitting_folding(fitting, board, max(int(est.cycles_per_image), 1))
    fps = board.clock_mhz * 1e6 / target
    used = ", ".join(f"{r} {est.total[r]:.0f}/{est.capacity[r]}" for r in over)
    layers = ", ".join(f"{l.name} ({l.resources[over[0]]:.0f} {over[0]})" for l in worst)
    least = estimate(fitting, board)
    if not least.fits:  # no folding fits: the weights alone are too many for the board's memories
        least_used = ", ".join(f"{r} {least.total[r]:.0f}/{least.capacity[r]}" for r in least.over_capacity())
        return (f"design does not fit {board.name} at any folding: {used}, and still {least_used} "
                f"folded as far as it goes ({weight_mbit(model):.1f} Mbit of weights); largest layers: "
                f"{layers}; choose fewer weight bits, a smaller model, or a board with more memory; "
                "--allow-overflow continues anyway"), None
    message = (f"design does not fit {board.name}: {used}; largest layers: {layers}; a folding at "
               f"{target} cycles per image (~{fps:,.0f} images/s) fits: pass --folding "
               f"{fitting_path}, or --target-fps {math.floor(fps)}, "
               "or no folding option; --allow-overflow continues anyway")
    return message, fold.current_folding(fitting)


def weight_mbit(model) -> float:
    """Megabits of weights in the matrix layers (MVAU, VVAU) of ``model``: what BRAM/LUTRAM must hold."""
    from qonnx.custom_op.registry import getCustomOp

    bits = 0
    for node in model.graph.node:
        weights = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
        if fold.generic_op(node.op_type) in ("MVAU", "VVAU") and weights is not None:
            bits += weights.size * getCustomOp(node).get_input_datatype(1).bitwidth()
    return bits / 1e6
