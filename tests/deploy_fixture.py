"""One small TFC-W1A1 build per test session, shared by the benchmark tests.

``small_build(tmp_path_factory)`` builds once under pytest's session temp
folder (short training: the tests check agreement with the build's own
verified outputs, not accuracy) and returns the run folder; later calls
from any module reuse it.
"""
from __future__ import annotations

from pathlib import Path

from flows.build import run_build
from flows.config import BuildConfig, TrainOptions

EPOCHS = 3


def small_build(tmp_path_factory, model: str = "tfc-w1a1") -> Path:
    run = tmp_path_factory.getbasetemp() / f"bench-{model}" / "run"
    if not (run / "deploy" / "deploy.json").is_file():
        run_build(BuildConfig(model=model, out=run, train=TrainOptions(epochs=EPOCHS)))
    return run
