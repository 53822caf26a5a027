"""``flows sweep``: the model zoo across precisions and boards, in one table.

Each (model, board) pair is one build under ``<out>/runs/``: a short training
run (the design hardly depends on training; one checkpoint per model, reused
for every board), then the steps through the estimates, or with ``verify``
through verification of the whole test split. A design that does not fit a
board at any folding goes on with ``allow_overflow`` and is marked "no" in the
fit column. Each finished pair's row is kept in ``<out>/rows/``, so a sweep
that stops resumes at the next pair (and a sweep given more models or boards
adds rows); ``<out>/sweep.json`` and ``<out>/sweep.md`` hold the table.

Figures are labelled: fit, cycles, images/s, bound, LUT and BRAM are
*estimated* (FINN's models, dataflow layers only); accuracy and verification
are *simulated* (FINN's Python execution of the folded graph on this CPU).

This is where design-space exploration goes: a new axis (folding targets,
per-layer widths) is one more field of `SweepConfig` and one more loop in
`pairs`; a search over the space is ``flows search``.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.errors import ConfigError, FitError, FlowsError, finite
from host.results import markdown_table

ROWS = "rows"
RUNS = "runs"


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: every model on every board, trained on ``data`` for ``epochs``."""

    models: tuple[str, ...]  # zoo names, e.g. ("tfc-w1a1", "tfc-w2a2")
    boards: tuple[str, ...] = ("pynq-z2",)
    data: str = "digits"
    data_dir: Path | None = None
    epochs: int = 1
    verify: bool = False  # False: estimates only (quick); True: also verify the whole test split
    out: Path = Path("build/sweep")

    def __post_init__(self):
        from boards import load_board
        from qat.data import check_data_option
        from qat.models import parse_model_name

        if not self.models or not self.boards:
            raise ConfigError("a sweep needs at least one model and one board")
        for name in self.models:
            parse_model_name(name)  # ConfigError naming the known models
        for board in self.boards:
            load_board(board)
        check_data_option(self.data, self.data_dir)
        finite("--epochs", self.epochs, minimum=1)

    def identity(self) -> dict:
        """What every row of one ``out`` folder shares; a resumed sweep must match it."""
        return {"data": self.data, "epochs": self.epochs, "verify": self.verify}


def zoo_models(archs: str | None = None, precisions: str | None = None, models: str | None = None) -> tuple[str, ...]:
    """Zoo names from comma-separated lists: ``models`` as given, else every architecture in ``archs``
    (default: the MLPs) at every precision in ``precisions`` (default: the zoo's), e.g. "tfc,lfc" x
    "w1a1,w2a2"; the names are checked by SweepConfig."""
    from qat.models import MLP_HIDDEN, PRECISIONS

    if models:
        return tuple(split(models))
    return tuple(f"{arch}-{p}" for arch in split(archs or ",".join(MLP_HIDDEN))
                 for p in split(precisions or ",".join(PRECISIONS)))


def split(text: str) -> list[str]:
    """The items of a comma-separated option."""
    return [t.strip() for t in text.split(",") if t.strip()]


def pairs(cfg: SweepConfig) -> list[tuple[str, str]]:
    """The (model, board) pairs in table order: by model, then board."""
    return [(model, board) for model in cfg.models for board in cfg.boards]


def run_sweep(cfg: SweepConfig, on_row=None) -> dict:
    """Sweep every pair not already done under ``cfg.out``; write sweep.json and sweep.md; return
    {"rows", "paths"}. ``on_row(row, reused)`` is called for each pair in order."""
    out = Path(cfg.out)
    (out / ROWS).mkdir(parents=True, exist_ok=True)
    _check_identity(cfg, out / "sweep_config.json")
    rows = []
    for model, board in pairs(cfg):
        path = out / ROWS / f"{model}_{board}.json"
        reused = path.is_file()
        row = json.loads(path.read_text()) if reused else sweep_one(cfg, model, board)
        if not reused and "error" not in row:
            path.write_text(json.dumps(row, indent=1))  # a failed pair is retried next time
        rows.append(row)
        if on_row:
            on_row(row, reused)
    paths = {"json": out / "sweep.json", "markdown": out / "sweep.md"}
    paths["json"].write_text(json.dumps({**_record(cfg), "rows": rows}, indent=2))
    paths["markdown"].write_text(markdown(rows, cfg))
    return {"rows": rows, "paths": paths}


def check_rows(rows: list[dict]) -> None:
    """After the table is written: StepError (exit 8) when a pair failed to build, VerificationError (exit 7)
    when a verified design disagreed; the table says which."""
    from flows.errors import StepError, VerificationError

    failed = [f"{r['model']} on {r['board']}" for r in rows if "error" in r]
    if failed:
        raise StepError("sweep", f"{len(failed)} design(s) failed to build ({', '.join(failed)}); see sweep.md")
    wrong = [f"{r['model']} on {r['board']}" for r in rows if r.get("verified") is False]
    if wrong:
        raise VerificationError(f"{len(wrong)} design(s) failed verification ({', '.join(wrong)}); see sweep.md")


def _check_identity(cfg: SweepConfig, path: Path) -> None:
    if path.is_file():
        before = json.loads(path.read_text())
        if before != cfg.identity():
            raise ConfigError(f"{path.parent} holds a sweep with {before}, not {cfg.identity()}; "
                              "choose another --out (rows of different sweeps are not comparable)")
    else:
        path.write_text(json.dumps(cfg.identity()))


def _record(cfg: SweepConfig) -> dict:
    return {"config": json.loads(json.dumps(asdict(cfg), default=str)),
            "machine": platform.processor() or platform.machine()}


def sweep_one(cfg: SweepConfig, model: str, board: str) -> dict:
    """Build one pair (retrying past a misfit with allow_overflow) and make its row; a flow error
    becomes the row's "error"."""
    from flows.build import run_build
    from flows.config import BuildConfig, TrainOptions

    run = Path(cfg.out) / RUNS / f"{model}_{board}_{cfg.data}"
    build = dict(model=model, board=board, data=cfg.data, data_dir=cfg.data_dir, out=run,
                 checkpoint=_trained_checkpoint(cfg, model, board), train=TrainOptions(epochs=cfg.epochs),
                 to_step="verify" if cfg.verify else "estimate")
    start = time.perf_counter()
    row = {"model": model, "board": board}
    try:
        try:
            reports = run_build(BuildConfig(**build))
        except FitError:
            reports = run_build(BuildConfig(**build, from_step="fold", allow_overflow=True))
    except FlowsError as exc:
        return {**row, "error": str(exc), "seconds": round(time.perf_counter() - start, 1)}
    return {**row, **estimate_columns(reports["estimate"]),
            **(verify_columns(reports["verify"]) if cfg.verify else {}),
            "seconds": round(time.perf_counter() - start, 1)}


def _trained_checkpoint(cfg: SweepConfig, model: str, board: str) -> Path | None:
    """The checkpoint this model was trained to for an earlier board of the sweep (training does not
    depend on the board), else None: the build trains it."""
    from flows.pipeline import step_dir

    for other in cfg.boards[:cfg.boards.index(board)]:
        ckpt = step_dir(Path(cfg.out) / RUNS / f"{model}_{other}_{cfg.data}", "train") / "checkpoint.pt"
        if ckpt.is_file():
            return ckpt
    return None


def estimate_columns(est: dict) -> dict:
    """A row's estimated columns, from the estimate step's report."""
    return {"fits": est["fits"], "cycles_per_image": est["cycles_per_image"], "fps": est["fps"],
            "bound": est["binding"], "lut_share": est["total"]["LUT"] / est["capacity"]["LUT"],
            "bram_share": est["total"]["BRAM_18K"] / est["capacity"]["BRAM_18K"]}


def verify_columns(ver: dict) -> dict:
    """A row's simulated columns, from the verify step's report."""
    stages = ver["stages"]
    return {"accuracy": stages["dataflow"]["accuracy"], "images": ver["images"], "verified": ver["passed"],
            "boundary_cases": {s: r["at_rounding_boundary"] for s, r in stages.items() if r["at_rounding_boundary"]},
            "largest_excused_margin_steps": max((c["largest_margin_steps"] for r in stages.values()
                                                 for c in r.get("differing_images", []) if c["excused"]), default=None),
            "tied_predictions": {s: r["tied_predictions"] for s, r in stages.items() if r["tied_predictions"]}}


ESTIMATED = ["model", "board", "fits", "cycles/image", "images/s", "bound", "LUT", "BRAM18"]
SIMULATED = ["accuracy", "verified", "excused at a boundary", "largest margin", "ties"]


def markdown(rows: list[dict], cfg: SweepConfig) -> str:
    """The sweep's table: estimated columns, and with ``verify`` the simulated ones."""
    lines = [f"# Zoo on {', '.join(cfg.boards)}, {cfg.data} ({cfg.epochs} training epoch(s) per model)", "",
             "Fit, cycles, images/s, bound, LUT and BRAM: **estimated** (FINN's models, dataflow layers only)."]
    if cfg.verify:
        lines += ["Accuracy and verification: **simulated** (FINN's Python execution of the folded graph on the "
                  "whole test split, against PyTorch, QONNX, the FINN graph and the streamlined graph).", "",
                  "Excused: images where a float stage (PyTorch, QONNX, FINN graph) rounded a value at a rounding "
                  "boundary (flows/boundary.py), per stage, and the largest distance from the boundary among them "
                  "in quantiser steps; then images where a float argmax broke an exact tie its own way."]
    headers = ESTIMATED + (SIMULATED if cfg.verify else [])
    lines += [""] + markdown_table(headers, [_cells(r, len(headers), cfg.verify) for r in rows])
    return "\n".join(lines) + "\n"


def _cells(r: dict, width: int, verify: bool) -> list[str]:
    if "error" in r:
        return [r["model"], r["board"], f"error: {r['error']}"] + [""] * (width - 3)
    # a design that does not fit: the default folding rule found no folding that does, so its cycles
    # (the fully folded design's) describe no design; its LUT/BRAM shares say what overflows
    timing = ([f"{r['cycles_per_image']:,.1f}", f"{r['fps']:,.0f}", r["bound"]] if r["fits"]
              else ["-", "-", "does not fit at any folding"])
    cells = [r["model"], r["board"], "yes" if r["fits"] else "no", *timing,
             f"{100 * r['lut_share']:.1f}%", f"{100 * r['bram_share']:.1f}%"]
    if verify:
        boundary = ", ".join(f"{s} {k}" for s, k in r["boundary_cases"].items()) or "0"
        margin = "-" if r["largest_excused_margin_steps"] is None else f"{r['largest_excused_margin_steps']:.1e}"
        cells += [f"{100 * r['accuracy']:.2f}%", f"{'yes' if r['verified'] else 'NO'} ({r['images']})", boundary,
                  margin, str(sum(r["tied_predictions"].values()))]
    return cells
