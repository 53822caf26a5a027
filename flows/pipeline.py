"""Run an ordered list of named build steps, each writing only under its own folder.

A step is ``fn(build, out_dir) -> report dict``. The runner gives it a fresh
``NN_step.partial/`` folder; on success the folder replaces ``NN_step/`` in one
rename, so a failed step leaves the earlier artefacts (and the previous output
of the same step) intact. A failed step's output is kept as ``NN_step.failed/``; an
interrupted one (Ctrl-C) is removed, and the error says where to resume.
A run resumes from any step whose predecessors have finished.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.errors import ConfigError, FlowsError, RunInterrupted, StepError

log = logging.getLogger("flows")
StepFn = Callable[["object", Path], dict]


@dataclass(frozen=True)
class Step:
    name: str
    fn: StepFn


def step_dir(run_dir: Path, steps: list[Step], name: str) -> Path:
    index = [s.name for s in steps].index(name)
    return run_dir / f"{index:02d}_{name}"


def select(steps: list[Step], start: str | None, stop: str | None) -> list[Step]:
    """The steps from ``start`` to ``stop`` inclusive; unknown names list the known ones."""
    names = [s.name for s in steps]
    for given in (start, stop):
        if given is not None and given not in names:
            raise ConfigError(f"unknown step '{given}'; steps: {', '.join(names)}")
    lo = names.index(start) if start else 0
    hi = names.index(stop) if stop else len(names) - 1
    if lo > hi:
        raise ConfigError(f"--from {start} comes after --to {stop}")
    return steps[lo:hi + 1]


def replace_dir(new: Path, final: Path) -> None:
    """Move ``new`` to ``final``, replacing it; the old one is removed only after the move."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    new.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def run_steps(build, steps: list[Step], selected: list[Step], on_done=None) -> dict[str, dict]:
    """Run ``selected`` (a slice of ``steps``) in order; returns each step's report."""
    _check_predecessors(build.run_dir, steps, selected[0].name)
    reports = {}
    for step in selected:
        reports[step.name] = _run_one(build, steps, step)
        if on_done:
            on_done(step.name, reports[step.name])
    return reports


def _check_predecessors(run_dir: Path, steps: list[Step], first: str) -> None:
    for step in steps[: [s.name for s in steps].index(first)]:
        if not (step_dir(run_dir, steps, step.name) / "report.json").is_file():
            raise ConfigError(f"cannot start at '{first}': step '{step.name}' has not finished in "
                              f"{run_dir}; run from '{step.name}' (or earlier) first")


def _run_one(build, steps: list[Step], step: Step) -> dict:
    final = step_dir(build.run_dir, steps, step.name)
    work = final.with_name(final.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    try:
        with _step_log(work / "log.txt"):
            report = step.fn(build, work) or {}
    except KeyboardInterrupt:
        shutil.rmtree(work, ignore_errors=True)  # half a step's output; earlier steps stay as they were
        raise RunInterrupted(f"interrupted during step '{step.name}'; the steps before it are kept in "
                             f"{build.run_dir}: resume by running the same command with --from {step.name}") from None
    except Exception as exc:
        _keep_failed(work, final)
        if isinstance(exc, FlowsError):
            raise
        raise StepError(step.name, f"{type(exc).__name__}: {exc} (log: {final}.failed/log.txt)") from exc
    report["seconds"] = round(time.perf_counter() - start, 3)
    (work / "report.json").write_text(json.dumps(report, indent=2, default=str))
    replace_dir(work, final)
    return report


def _keep_failed(work: Path, final: Path) -> None:
    failed = final.with_name(final.name + ".failed")
    shutil.rmtree(failed, ignore_errors=True)
    work.rename(failed)


@contextlib.contextmanager
def _step_log(path: Path):
    """Send the step's logging, warnings and the libraries' prints to its log file."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    with open(path, "a") as stream, contextlib.redirect_stdout(stream), warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.setLevel(old_level)
            handler.close()
