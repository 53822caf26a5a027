"""Build steps: the registry that names them, and the runner of an ordered list of them.

A step is one registered function ``fn(build, out_dir) -> report dict`` whose docstring
says what it does (``register_step``; flows.steps registers the built-in ones, in order).
A build's list of steps is data (``BuildConfig.steps``): registered names, or
``package.module:function`` for a step of one's own, imported and registered on first use.
Each step writes under the folder of its name, ``<run>/<step>/`` (``fold/``), so a step
inserted into the list leaves the folders of the others where they were. The runner gives
a step a fresh ``<step>.partial/`` folder; on success it replaces ``<step>/`` in one
rename, so a failed step leaves the earlier artefacts (and the previous output of the
same step) intact. A failed step's output is kept as ``<step>.failed/``; an interrupted
one (Ctrl-C) is removed, and the error says where to resume. A run resumes from any
step whose predecessors (in this build's list) have finished. A run folder from before
named folders (``08_fold/``) is refused with a line saying what to do (``check_run_folders``).
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from flows.errors import ConfigError, FlowsError, RunInterrupted, StepError

log = logging.getLogger("flows")
StepFn = Callable[["object", Path], dict]
RESERVED = ("deploy", "bench", "finn_tmp")  # other folders of a run directory; no step may take their names


@dataclass(frozen=True)
class Step:
    name: str
    fn: StepFn

    @property
    def doc(self) -> str:
        """The first line of the step function's docstring."""
        return (self.fn.__doc__ or "").strip().split("\n")[0]


_REGISTRY: dict[str, Step] = {}


def register_step(fn: StepFn | None = None, *, name: str | None = None):
    """Register ``fn(build, out) -> report`` as a build step named ``name`` (default: the function's
    name without its ``step_`` prefix); usable as ``@register_step`` or ``@register_step(name=...)``.
    Returns ``fn``. A name already taken by another function is refused."""
    if fn is None:
        return lambda f: register_step(f, name=name)
    name = name or fn.__name__.removeprefix("step_")
    if not name.isidentifier() or name != name.lower() or name in RESERVED:
        raise ConfigError(f"step name '{name}' must be a lower-case identifier, not one of {', '.join(RESERVED)}")
    taken = _REGISTRY.get(name)
    if taken is not None and _qualname(taken.fn) != _qualname(fn):
        raise ConfigError(f"step name '{name}' is taken by {_qualname(taken.fn)}; register "
                          f"{_qualname(fn)} under another name")
    _REGISTRY[name] = Step(name, fn)
    return fn


def _qualname(fn) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def registered() -> dict[str, Step]:
    """Every registered step, by name."""
    return dict(_REGISTRY)


def resolve(entry: str) -> Step:
    """The step a list entry names: a registered name, or ``package.module:function`` (imported,
    and registered under its own name unless it registered itself)."""
    if entry in _REGISTRY:
        return _REGISTRY[entry]
    if ":" not in entry:
        raise ConfigError(f"unknown step '{entry}'; steps: {', '.join(_REGISTRY)}, or package.module:function "
                          "for a step of one's own")
    module_name, _, attr = entry.partition(":")
    import importlib

    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"step {entry}: cannot import it ({type(exc).__name__}: {exc}); give "
                          "package.module:function importable from the build's Python path") from None
    if not callable(fn):
        raise ConfigError(f"step {entry} is not a function")
    for step in _REGISTRY.values():
        if step.fn is fn:
            return step
    register_step(fn)
    return _REGISTRY[fn.__name__.removeprefix("step_")]


def resolve_all(entries) -> list[Step]:
    """The steps of a list of entries (``resolve``), each name once."""
    steps = [resolve(e) for e in entries]
    names = [s.name for s in steps]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"step {', '.join(twice)} is listed more than once; a step runs once per build")
    return steps


def insert_step(steps, entry: str, after: str) -> tuple[str, ...]:
    """``steps`` (a list of entries) with ``entry`` inserted right after the step named ``after``."""
    steps = list(steps)
    names = [resolve(e).name for e in steps]
    if after not in names:
        raise ConfigError(f"cannot insert {entry} after '{after}': no such step; steps: {', '.join(names)}")
    steps.insert(names.index(after) + 1, entry)
    return tuple(steps)


def step_dir(run_dir: Path, name: str) -> Path:
    """The folder of step ``name`` in ``run_dir``: its name, whatever its position."""
    return Path(run_dir) / name


OLD_FOLDER = re.compile(r"\d\d_[a-z][a-z0-9_]*(\.failed|\.partial|\.old)?")  # before named folders: 08_fold


def check_run_folders(run_dir: Path) -> None:
    """ConfigError when ``run_dir`` holds step folders numbered by position (``00_train``, ``08_fold``),
    as qnn-flows wrote them before step folders were named: such a run is neither resumed nor
    touched (its artefacts stay as they are)."""
    run_dir = Path(run_dir)
    old = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and OLD_FOLDER.fullmatch(p.name)) \
        if run_dir.is_dir() else []
    if old:
        train = next((run_dir / n / "checkpoint.pt" for n in old if n.endswith("_train")), None)
        keep = f" (--checkpoint {train} keeps its training)" if train and train.is_file() else ""
        raise ConfigError(f"{run_dir} holds step folders numbered by position ({', '.join(old[:3])}"
                          f"{', ...' if len(old) > 3 else ''}), from an older qnn-flows; step folders are now named "
                          f"by step (train/, fold/) and such a run cannot be resumed: build into another --out{keep}")


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
    check_run_folders(build.run_dir)
    _check_predecessors(build.run_dir, steps, selected[0].name)
    reports = {}
    for step in selected:
        reports[step.name] = _run_one(build, step)
        if on_done:
            on_done(step.name, reports[step.name])
    return reports


def _check_predecessors(run_dir: Path, steps: list[Step], first: str) -> None:
    for step in steps[: [s.name for s in steps].index(first)]:
        if not (step_dir(run_dir, step.name) / "report.json").is_file():
            raise ConfigError(f"cannot start at '{first}': step '{step.name}' has not finished in "
                              f"{run_dir}; run from '{step.name}' (or earlier) first")


def _run_one(build, step: Step) -> dict:
    final = step_dir(build.run_dir, step.name)
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
