"""The ``flows`` command. Errors print one line and exit non-zero; ``--debug`` shows the traceback."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer

from flows.errors import FlowsError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="From quantisation-aware training to a FINN dataflow accelerator on a PYNQ board.")
STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")):
    STATE["debug"] = debug


@app.command()
def build(
    board: str = typer.Option("pynq-z2", help="Target board (see boards/)."),
    model: str = typer.Option("tfc-w1a1", help="Zoo model, e.g. tfc-w2a2."),
    checkpoint: Optional[Path] = typer.Option(None, help="Trained qnn-flows checkpoint instead of training."),
    onnx: Optional[Path] = typer.Option(None, help="QONNX model instead of a checkpoint."),
    data: str = typer.Option("digits", help="digits (bundled), mnist, fashion-mnist."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder holding the dataset files."),
    no_verify_checksums: bool = typer.Option(False, "--no-verify-checksums", help="Accept one's own dataset copy."),
    target_fps: Optional[float] = typer.Option(None, help="Fold for this many images/s."),
    folding: Optional[Path] = typer.Option(None, help="Folding JSON to apply (edit the one a build writes)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default build/<model>_<board>)."),
    from_step: Optional[str] = typer.Option(None, "--from", help="Resume at this step."),
    to_step: Optional[str] = typer.Option(None, "--to", help="Stop after this step."),
    allow_overflow: bool = typer.Option(False, help="Continue when the design does not fit the board."),
    epochs: int = typer.Option(40, help="Training epochs when no checkpoint is given."),
    seed: int = typer.Option(0, help="Training seed."),
):
    """Train (or load), export, streamline, fold, estimate, verify and package one model for a board."""
    from flows.config import BuildConfig, TrainOptions

    cfg = BuildConfig(board=board, model=model, checkpoint=checkpoint, onnx=onnx, data=data, data_dir=data_dir,
                      verify_checksums=not no_verify_checksums, target_fps=target_fps, folding=folding, out=out,
                      from_step=from_step, to_step=to_step, allow_overflow=allow_overflow,
                      train=TrainOptions(epochs=epochs, seed=seed))
    _run(lambda: _build(cfg))


def _build(cfg) -> None:
    from rich.console import Console

    from flows.build import STEP_NAMES, Build, run_build
    from flows.report import collect, print_tables, tables

    console = Console(stderr=True)
    start = time.perf_counter()

    def done(name: str, report: dict) -> None:
        idx = STEP_NAMES.index(name)
        console.print(f"[{idx:2d}/{len(STEP_NAMES) - 1}] {name:<11} {report.get('seconds', 0):6.2f} s")
        if name == "bitfile" and report.get("reason"):
            console.print(f"        {report['reason']}")

    run_build(cfg, on_done=done)
    b = Build(cfg)
    print_tables(tables(collect(b), b.board), Console())
    console.print(f"run: {cfg.run_dir}  ({time.perf_counter() - start:.1f} s)")


def _run(fn) -> None:
    try:
        fn()
    except FlowsError as exc:
        if STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
