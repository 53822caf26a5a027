"""``flows bench``: every target built from one model, on one deploy package's test vectors.

Targets come from flows.baselines, measuring from host.timing, reporting from host.results
(the same harness the board's notebook runs). Writes ``bench.json``,
``bench.md`` and three plots to the output folder (default ``<run>/bench/``,
beside the package) and prints the comparison table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from flows.errors import ConfigError

DEFAULT_BATCHES = (1, 16, 256, 1024, 10000)


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,16,256' -> (1, 16, 256); ConfigError naming the bad entry."""
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            raise ConfigError(f"--batch entry {part.strip()!r} is not an integer; give e.g. 1,16,256") from None
        if size < 1:
            raise ConfigError(f"--batch entry {size} must be >= 1")
        sizes.append(size)
    return tuple(sorted(set(sizes)))


def parse_targets(text: str | None) -> list[str]:
    from flows.baselines import TARGETS, check_names

    return list(TARGETS) if not text else check_names([t.strip() for t in text.split(",") if t.strip()])


def default_checkpoint(deploy_dir: Path) -> Path | None:
    """The build's checkpoint beside its deploy/ folder (``<run>/train/checkpoint.pt``), if any."""
    path = deploy_dir.resolve().parent / "train" / "checkpoint.pt"
    return path if path.is_file() else None


def resolve_package(path: Path) -> tuple[Path, Path]:
    """(package folder, run folder) for ``path``: a deploy/ folder, or a run folder whose build
    reached its estimate. A run without deploy/ gets a bench package made from its folded design
    (``<run>/bench/package/``, flows.package.write_bench_package)."""
    path = Path(path)
    if (path / "deploy.json").is_file():
        return path, path.resolve().parent
    run = path if (path / "config.json").is_file() else path.parent
    if (run / "deploy" / "deploy.json").is_file():
        return run / "deploy", run
    if not (run / "config.json").is_file():
        raise ConfigError(f"{path} is neither a deploy package (deploy.json) nor a build's run folder "
                          "(config.json); pass build/<run>/deploy or build/<run>")
    from flows.build import Build, load_config
    from flows.package import write_bench_package
    from flows.pipeline import check_run_folders

    check_run_folders(run)

    estimate = run / "estimate" / "report.json"
    if not estimate.is_file():
        raise ConfigError(f"build {run} has not reached its estimate step; run flows build --out {run} "
                          "--to estimate first (the FPGA target's time comes from the estimate)")
    package = run / "bench" / "package"
    write_bench_package(Build(load_config(run)), package)
    return package, run


def run(deploy_dir: Path, targets: Sequence[str] | None = None, batches: Sequence[int] = DEFAULT_BATCHES,
        repeats: int = 20, out: Path | None = None, checkpoint: Path | None = None, extra_targets=(),
        progress=None, threads: int = 1) -> dict:
    """Build the targets, benchmark them, write the results; returns {"results", "environment", "paths"}.

    ``threads``: intra-op threads of torch and onnxruntime. One by default: on a shared machine their
    thread pools stall when a core is taken (torch, 2 threads, 2 busy cores: 180 ms for a batch of 16
    TFC images that takes 0.2 ms on one thread)."""
    import torch

    from flows.baselines import TARGETS, make_targets
    from host.deploy import load_package
    from host.results import environment, machine_label, write_results
    from host.timing import BenchConfig, run_benchmark

    deploy_dir, run_dir = resolve_package(Path(deploy_dir))
    package = load_package(deploy_dir)
    if threads < 1:
        raise ConfigError(f"threads={threads} must be >= 1")
    cfg = BenchConfig(batches=tuple(batches), repeats=repeats)
    env = environment()
    env.update(threads=threads, gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    names = list(TARGETS) if targets is None else list(targets)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        built = make_targets(names, package, checkpoint or default_checkpoint(run_dir / "deploy"),
                             machine_label(env), threads)
        results = run_benchmark([*built, *extra_targets], package, cfg, progress=progress)
    finally:
        torch.set_num_threads(previous)
    out = Path(out) if out else run_dir / "bench"
    title = f"Benchmark: {package.meta.get('model', deploy_dir.name)} ({package.meta.get('board', '?')})"
    paths = write_results(results, env, out, title,
                          extra={"deploy_dir": str(deploy_dir.resolve()), "package": package.meta,
                                 "batches": list(batches), "repeats": repeats, "threads": threads})
    return {"results": results, "environment": env, "paths": paths, "title": title}


def check_any_measured(results: list[dict]) -> None:
    """Raise unless at least one target was measured: a bench in which every target failed is a failure.
    Exit 7 when a target's predictions differed from the verified outputs, 8 when a target crashed,
    5 when every target was skipped (its hardware or tool is not here)."""
    from flows.errors import StepError, ToolMissingError, VerificationError

    if any(r["status"] == "ok" for r in results):
        return
    counts = {s: sum(r["status"] == s for r in results) for s in ("failed", "error", "skipped")}
    first = next((r for s in counts for r in results if r["status"] == s), None)
    why = f"{first['name']}: {first.get('reason', '')}" if first else "no targets"
    message = (f"no target was measured ({counts['failed']} failed, {counts['error']} crashed, "
               f"{counts['skipped']} skipped; first: {why}); see bench.md")
    if counts["failed"]:
        raise VerificationError(message)
    if counts["error"]:
        raise StepError("bench", message)
    raise ToolMissingError(message)


def print_table(report: dict, console) -> None:
    """The comparison table, with rich."""
    from rich.table import Table

    from host.results import ROW_TITLES, machine_label, summary_rows

    table = Table(title=f"{report['title']}\n{machine_label(report['environment'])}")
    for title in ROW_TITLES.values():
        table.add_column(title, overflow="fold")
    rows = summary_rows(report["results"])
    for row in rows:
        style = {"ok": None, "skipped": "dim"}.get(row["status"], "red")
        table.add_row(*(row[k] for k in ROW_TITLES), style=style)
    console.print(table)
    for row in rows:
        if row["reason"]:
            console.print(f"{row['target']}: {row['status']}: {row['reason']}", style="dim", highlight=False)
