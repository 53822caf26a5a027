"""Reports of a build: one set of tables, rendered to the terminal (rich) and to report.md."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from host.results import markdown_table


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


def collect(build) -> dict[str, dict]:
    """The report.json of every finished step of this run (``build.steps``, in order), by step name."""
    out = {}
    for name in (step.name for step in build.steps):
        path = build.dir(name) / "report.json"
        if path.is_file():
            out[name] = json.loads(path.read_text())
    return out


def tables(reports: dict[str, dict], board) -> list[Table]:
    out = [_accuracy(reports), _verification(reports)]
    if "estimate" in reports:
        out += [_layers(reports["estimate"]), _resources(reports["estimate"]), _performance(reports["estimate"])]
    out.append(_steps(reports))
    return [t for t in out if t.rows]


def _accuracy(r: dict) -> Table:
    rows = []
    if "test_accuracy" in r.get("train", {}):
        rows.append(["PyTorch (Brevitas)", f"{100 * r['train']['test_accuracy']:.2f}%", "measured (CPU, this machine)"])
    for name, st in r.get("verify", {}).get("stages", {}).items():
        if name == "dataflow":
            acc = "unknown (no data: random inputs)" if st["accuracy"] is None else f"{100 * st['accuracy']:.2f}%"
            rows.append(["folded dataflow graph", acc, "simulated (FINN Python execution)"])
    return Table("Accuracy on the test split", ["model", "accuracy", "kind"], rows)


def _verification(r: dict) -> Table:
    v = r.get("verify")
    if not v:
        return Table("Verification", [], [])
    rows = [[name, str(st["prediction_mismatches"]), str(st["last_layer_mismatches"]),
             str(st.get("at_rounding_boundary", 0)), str(st.get("tied_predictions", 0)), f"{st['seconds']:.2f}"]
            for name, st in v["stages"].items()]
    return Table(f"Verification against the integer dataflow graph: {v['summary']}",
                 ["stage", "prediction diffs", "last-layer diffs", "excused: at a rounding boundary",
                  "excused: exact tie", "s"], rows)


def _layers(e: dict) -> Table:
    rows = [[l["name"], ", ".join(f"{k}={v}" for k, v in l["folding"].items() if k in ("PE", "SIMD")),
             str(l["cycles"]), f"{l['resources']['LUT']:.0f}", f"{l['resources']['BRAM_18K']:.0f}",
             f"{l['resources']['DSP']:.0f}"] for l in e["layers"]]
    return Table("Per layer (estimated)", ["layer", "folding", "cycles/image", "LUT", "BRAM18", "DSP"], rows)


def _resources(e: dict) -> Table:
    rows = [[r, f"{e['total'][r]:.0f}", str(e["capacity"][r]),
             f"{100 * e['total'][r] / e['capacity'][r]:.1f}%" if e["capacity"][r] else "-"]
            for r in ("LUT", "BRAM_18K", "URAM", "DSP")]
    return Table(f"Resources vs {e['board']} (estimated, dataflow layers only, no shell/DMA)",
                 ["resource", "used", "available", "utilisation"], rows)


def _performance(e: dict) -> Table:
    rows = [["cycles per image", f"{e['cycles_per_image']:.1f} ({e.get('ii_why', e['binding'])})"],
            ["binding bound", e["binding"]],
            ["input DMA", f"{e['in_bytes']} B/image = {e['io_in_cycles']} beats"
                          + (f" = {e['dma_in_cycles']:.1f} cycles" if "dma_in_cycles" in e else "")],
            ["throughput", f"{e['fps']:,.0f} images/s at {e['clock_mhz']:g} MHz"],
            ["compute-only (FINN 'ideal')", f"{e['compute_fps']:,.0f} images/s"],
            ["latency (batch 1, fabric)", f"{e['latency_us']:.2f} us ({e['latency_cycles']:.0f} cycles)"]]
    return Table("Performance (estimated, host.perf_model)", ["", "value"], rows)


def _steps(r: dict) -> Table:
    rows = [[name, f"{rep.get('seconds', 0):.2f}"] for name, rep in r.items()]
    if "bitfile" in r and not r["bitfile"].get("bitfile"):
        rows.append(["(bitfile)", r["bitfile"]["reason"]])
    return Table("Time per step (s, measured)", ["step", "seconds"], rows)


def to_markdown(title: str, ts: list[Table]) -> str:
    lines = [f"# {title}", ""]
    for t in ts:
        lines += [f"## {t.title}", ""] + markdown_table(t.headers, t.rows) + [""]
    return "\n".join(lines)


def print_tables(ts: list[Table], console=None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    for t in ts:
        rt = RichTable(title=t.title, title_justify="left")
        for h in t.headers:
            rt.add_column(h)
        for row in t.rows:
            rt.add_row(*row)
        console.print(rt)


def write_reports(build, directory: Path) -> None:
    reports = collect(build)
    (directory / "report.json").write_text(json.dumps(reports, indent=2, default=str))
    title = f"{build.cfg.run_name}: {build.board.name} ({build.board.part})"
    (directory / "report.md").write_text(to_markdown(title, tables(reports, build.board)))
