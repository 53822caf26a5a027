"""The report's trainings, several at a time: ``flows search --jobs N``.

After the trials, the report retrains each Pareto point and each uniform model with ``cfg.seeds``
seeds and trains one variant per sensitivity row. These trainings are independent of each other;
with ``jobs > 1`` they run first in N spawned processes (``cfg.threads`` torch threads each), each
writing its result into the report's cache (flows.search.report.Cache: one file per result, written
atomically). The report then finds every one of them in the cache and trains nothing itself. A run
killed here resumes from what the cache holds. Estimates and the CPU latency measurement stay in the
main process, after the pool has finished, so that no training disturbs the timing.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from flows.search.config import SearchConfig

Task = tuple[str, dict, int, str]  # ("run", design dict, seed, work folder) or ("sens", design dict, seed, "")

_STATE: dict = {}  # per worker process: the config, data, design inputs and cache (set by _start)


def report_tasks(cfg: SearchConfig, retrained: list[tuple], sensitivity: list) -> list[Task]:
    """One task per seed of each (design, work folder) in ``retrained``, and one per sensitivity design."""
    from flows.search.report import seeds_of

    return ([("run", design.to_dict(), seed, str(work)) for design, work in retrained for seed in seeds_of(cfg)]
            + [("sens", design.to_dict(), cfg.seed, "") for design in sensitivity])


def train_ahead(cfg: SearchConfig, tasks: list[Task], progress=None) -> None:
    """Run ``tasks`` in ``cfg.jobs`` processes; every result lands in the report's cache."""
    spawn = multiprocessing.get_context("spawn")  # a fork after torch's thread pool has started can hang
    with ProcessPoolExecutor(cfg.jobs, mp_context=spawn, initializer=_start, initargs=(cfg,)) as pool:
        for done, _ in enumerate(pool.map(_run, tasks), 1):
            if progress:
                progress(f"report trainings: {done}/{len(tasks)} done ({cfg.jobs} at a time)")


def _start(cfg: SearchConfig) -> None:
    import torch

    from flows.search import prepare
    from flows.search.report import Cache

    torch.set_num_threads(cfg.threads)
    _, ds, inputs = prepare(cfg)
    _STATE.update(cfg=cfg, ds=ds, inputs=inputs, cache=Cache(Path(cfg.out) / "cache"))


def _run(task: Task) -> None:
    from flows.search.report import sensitivity_accuracy, trained_run
    from flows.search.space import Design

    kind, design, seed, work = task
    s = _STATE
    if kind == "run":
        trained_run(Design.from_dict(design), seed, s["ds"], s["cfg"], s["cache"], Path(work), s["inputs"])
    else:
        sensitivity_accuracy(Design.from_dict(design), s["cfg"], s["cache"], s["inputs"])
