"""What a build checks before its first step runs, and the lock that keeps one build per run folder.

``check_build(build)`` reads every input the configuration names (checkpoint with
its weights, ONNX file, folding file, dataset files, an earlier run's config.json)
so that a bad one fails in a second with one line, not fifteen seconds into the run.
``run_lock(run_dir)`` holds ``<run>/.lock`` for the whole build; a second build into
the same folder stops at once, naming the holder, and touches nothing.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from flows.errors import ConfigError, DatasetError, require_package

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.json"  # who holds the lock: pid, host, command, start time


def read_run_config(run_dir: Path) -> dict | None:
    """``<run>/config.json`` of an earlier build (None when there is none); ConfigError when damaged."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}); {run_dir} may hold another build: "
                          "use another --out, or delete that config.json to reuse the folder") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a qnn-flows run config; use another --out")
    return data


def check_build(build) -> None:
    """Read and check every input of ``build`` (flows.build.Build) before any step runs."""
    from flows.steps import check_onnx_file

    cfg = build.cfg
    require_package("finn", "install finn-plus with `pip install --no-deps finn-plus==1.6.1` (docs/install.md)")
    check_board_for_finn(build.board)
    if cfg.onnx and cfg.from_step in (None, "train", "export"):
        model = check_onnx_file(Path(cfg.onnx))
        build.onnx_input  # noqa: B018 - a fixed batch-1 input (the datatype is checked by cleanup)
        if cfg.data is not None:
            _check_onnx_takes_the_data(build, model)
    if cfg.checkpoint:
        build.check_checkpoint_matches_data(build.given_checkpoint)
    if cfg.folding:
        _check_folding_file(build)
    if cfg.data_dir is not None and not Path(cfg.data_dir).is_dir():
        raise DatasetError(f"--data-dir {cfg.data_dir} is not a directory; give the folder holding the "
                           f"{cfg.data} files")
    if not (cfg.onnx and cfg.data is None and not cfg.data_file):  # random inputs are drawn by the steps
        build.dataset  # noqa: B018 - loads (and checksums) the data now, cached for the steps


def _check_folding_file(build) -> None:
    """The folding file's form now; on a resumed build (the design exists), also its match to the
    design's nodes and their legal PE/SIMD (a fresh build checks that at the fold step, before it
    changes anything)."""
    import copy

    from hw.folding import read_folding
    from hw.folding_file import apply_folding_file

    raw = read_folding(build.cfg.folding)
    if (build.dir("specialize") / "model.onnx").is_file():
        apply_folding_file(copy.deepcopy(build.model("specialize")), raw, {}, str(build.cfg.folding))


def _check_onnx_takes_the_data(build, model) -> None:
    """ModelError unless the ONNX input holds as many values as one image of the dataset (what step
    cleanup checks again on the cleaned graph)."""
    import math

    from flows.errors import ModelError

    graph_input = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    shape = tuple(d.dim_value for d in graph_input.type.tensor_type.shape.dim)
    want = (1, *build.dataset.image_shape)
    if math.prod(shape) != math.prod(want):
        raise ModelError(f"{build.cfg.onnx}: input {shape} does not take {build.cfg.data} images {want}; "
                         "pass the --data it was trained on, its own data with --data-file "
                         "(docs/own-models.md), or no data for random inputs")


def check_board_for_finn(board) -> None:
    """ConfigError unless FINN builds for ``board.finn_board`` with the board's part (a user's board file
    may name any; FINN's part map decides what its Zynq build can target)."""
    from finn.util.basic import pynq_part_map

    part = pynq_part_map.get(board.finn_board)
    if part is None:
        raise ConfigError(f"board {board.name}: finn_board {board.finn_board!r} is not a board FINN builds for; "
                          f"known: {', '.join(sorted(pynq_part_map))}")
    if part != board.part:
        raise ConfigError(f"board {board.name}: part {board.part} is not FINN's part for {board.finn_board} "
                          f"({part}); make them agree")


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``<run_dir>/.lock`` while the body runs; ConfigError naming the holder if another build has it."""
    from filelock import FileLock, Timeout

    run_dir = Path(run_dir)
    lock = FileLock(str(run_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"{run_dir} is in use by another build ({_holder(run_dir)}); wait for it to "
                          "finish, or use another --out") from None
    holder = run_dir / HOLDER_NAME
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "command": " ".join(sys.argv), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _holder(run_dir: Path) -> str:
    try:
        h = json.loads((run_dir / HOLDER_NAME).read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet"
