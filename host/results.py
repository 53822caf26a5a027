"""What a benchmark ran on and what it found: the environment record, the summary table,
bench.json and bench.md (and the plots, through host.plots).

Also the one Markdown table writer (`markdown_table`) the project's reports use.
numpy and the standard library only.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from host.plots import save_plots


# -- the environment -----------------------------------------------------------------


PACKAGES = ("numpy", "torch", "onnxruntime", "brevitas", "qonnx", "finn-plus", "pynq")


def environment() -> dict:
    """What the numbers were measured on (no package is imported to learn its version)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "cpu_max_mhz": _cpu_mhz(), "load_average":
            os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "machine": platform.machine(), "system": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "packages": versions, "board": os.environ.get("BOARD"),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def machine_label(env: dict) -> str:
    """'measured on <cpu> (<n> cores)' (or on the named board)."""
    where = f"{env['board']}, " if env.get("board") else ""
    return f"measured on {where}{env['cpu_model']} ({env['cores']} cores)"


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in lines:
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_mhz() -> float | None:
    """The CPU's maximum clock (cpufreq), else what /proc/cpuinfo reports now."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    except (OSError, ValueError):
        pass
    return None


# -- reporting -----------------------------------------------------------------------


_RULES = {"l": "---", "r": "---:", "c": ":---:"}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> list[str]:
    """The lines of a Markdown table: the header row, the rule, one line per row (cells as str,
    a "|" inside a cell written as "/" so that it cannot split the cell).

    `align`: one letter per column, "l" (the default rule "---"), "r" ("---:") or "c" (":---:");
    None: every column "---". ValueError when its length or a letter is wrong."""
    align = align or "l" * len(headers)
    if len(align) != len(headers) or set(align) - set(_RULES):
        raise ValueError(f"align {align!r}: give one of l, r, c per column ({len(headers)} columns)")

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"

    return [line(headers), "|" + "".join(_RULES[a] + "|" for a in align)] + [line(row) for row in rows]


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if r >= scale:
            return f"{r / scale:.3g}{unit} img/s"
    return f"{r:.3g} img/s"


def summary_rows(results: Sequence[dict]) -> list[dict]:
    """Per target: target, label, batch-1 p50, best throughput, accuracy, status (strings)."""
    rows = []
    for r in results:
        acc = r.get("accuracy")
        acc_text = "-" if not acc else "unknown (no data)" if acc["accuracy"] is None else f"{100 * acc['accuracy']:.2f}%"
        if acc and r.get("approximate"):
            acc_text += f" ({100 * acc['agreement']:.1f}% agree)"
        ok = r["status"] == "ok"
        best = fmt_rate(r["best_images_per_second"]) + f" (batch {r['best_batch']})" if ok else "-"
        rows.append({"target": r["name"], "label": r["label"], "latency_p50": fmt_seconds(r["latency_s"]["p50"])
                     if ok else "-", "best_throughput": best, "accuracy": acc_text, "status": r["status"],
                     "reason": r.get("reason", "")})
    return rows


ROW_TITLES = {"target": "target", "label": "label", "latency_p50": "batch-1 p50 latency",
              "best_throughput": "best throughput", "accuracy": "accuracy", "status": "status"}


def markdown(results: Sequence[dict], env: dict, title: str) -> str:
    """A short comparison table with the machine it was measured on."""
    pk = env["packages"]
    lines = [f"# {title}", "",
             f"{machine_label(env)}, {env['machine']}; Python {env['python']}, numpy {env['numpy']}"
             + "".join(f", {n} {pk[n]}" for n in ("torch", "onnxruntime") if pk.get(n))
             + (f"; torch/onnxruntime on {env['threads']} thread(s)" if env.get("threads") else "")
             + (f"; load average {env['load_average']:.1f} at the start" if env.get("load_average") is not None else "")
             + f"; {env['date']}.",
             "Rows labelled *modelled* are the performance model's (host/perf_model.py), not measurements.", ""]
    rows = summary_rows(results)
    for row in rows:
        row["status"] += f": {row['reason']}" if row["reason"] else ""
    lines += markdown_table(list(ROW_TITLES.values()), [[row[k] for k in ROW_TITLES] for row in rows])
    notes = [f"- **{r['name']}**: {r['note']}" for r in results if r.get("note")]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_results(results: Sequence[dict], env: dict, out_dir: str | os.PathLike, title: str,
                  extra: dict | None = None, plots: bool = True) -> dict[str, Path]:
    """bench.json, bench.md and (with ``plots``) the plots under out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md"}
    paths["json"].write_text(json.dumps({"title": title, "environment": env, **(extra or {}),
                                         "targets": list(results)}, indent=1))
    paths["markdown"].write_text(markdown(results, env, title))
    if plots:
        paths.update(save_plots(results, out))
    return paths
