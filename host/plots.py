"""The benchmark's plots: latency vs batch, time per layer, accuracy vs throughput (PNG files).

The only module of host/ that uses matplotlib, imported inside `save_plots`:
the board's notebook draws them (PYNQ images ship matplotlib), and everything
else in host/ runs with numpy alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from host.errors import HostError


def save_plots(results: Sequence[dict], out_dir: str | os.PathLike) -> dict[str, Path]:
    """latency_vs_batch.png, layers.png, accuracy_vs_throughput.png (matplotlib, Agg)."""
    try:
        import matplotlib
    except ImportError:
        raise HostError("matplotlib is not installed: pip install matplotlib, or pass plots=False") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    ok = [r for r in results if r["status"] == "ok"]
    paths = {}
    for name, draw in (("latency_vs_batch", _plot_latency), ("layers", _plot_layers),
                       ("accuracy_vs_throughput", _plot_accuracy)):
        fig = draw(plt, ok)
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=100, bbox_inches="tight")
        plt.close(fig)
    return paths


def _style(r: dict) -> dict:
    return {"linestyle": "--" if r["label"] == "modelled" else "-", "marker": "o"}


def _plot_latency(plt, results):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        t = r["throughput"]
        ax.plot([p["batch"] for p in t], [p["seconds_median"] for p in t], label=f"{r['name']} ({r['label']})",
                **_style(r))
    ax.set(xscale="log", yscale="log", xlabel="batch size (images)", ylabel="time per batch (s, median)",
           title="Time per batch vs batch size")
    ax.grid(True, which="both", alpha=0.3)
    if results:
        ax.legend(fontsize=7)
    return fig


def stage_seconds(result: dict) -> dict[int, float]:
    """A target's seconds per image per stage (0: before the first matrix layer; k: matrix layer k
    and the layers after it up to the next), the unit the per-layer plot compares across targets."""
    stages: dict[int, float] = {}
    for layer in result.get("layers") or ():
        stages[layer["stage"]] = stages.get(layer["stage"], 0.0) + layer["seconds_per_image"]
    return stages


def _plot_layers(plt, results):
    """Grouped bars: per stage (layer by layer), one bar per target, on one log axis."""
    with_layers = [r for r in results if r.get("layers")]
    per_target = [stage_seconds(r) for r in with_layers]
    stages = sorted({k for st in per_target for k in st})
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(stages) + 3), 4.5))
    width = 0.8 / max(1, len(with_layers))
    for i, (r, st) in enumerate(zip(with_layers, per_target)):
        xs = [j + (i - (len(with_layers) - 1) / 2) * width for j, k in enumerate(stages) if k in st]
        ax.bar(xs, [1e6 * st[k] for k in stages if k in st], width, hatch="//" if r["label"] == "modelled" else None,
               label=f"{r['name']} ({r['label']})")
    ax.set_xticks(range(len(stages)), ["input" if k == 0 else f"matrix layer {k}" for k in stages], fontsize=8)
    batch = with_layers[0]["layers_batch"] if with_layers else "-"
    ax.set(yscale="log", ylabel="us per image (median)",
           title=f"Time per layer, batch {batch} (a stage: a matrix layer and what follows it; hatched: modelled)")
    ax.title.set_fontsize(9)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    if with_layers:
        ax.legend(fontsize=7)
    else:
        ax.set_title("no target gave per-layer times")
    fig.tight_layout()
    return fig


def _plot_accuracy(plt, results):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    results = [r for r in results if r["accuracy"]["accuracy"] is not None]  # no data: accuracy unknown
    for i, r in enumerate(sorted(results, key=lambda r: r["best_images_per_second"])):
        x, y = r["best_images_per_second"], 100 * r["accuracy"]["accuracy"]
        ax.scatter([x], [y], marker="s" if r["label"] == "modelled" else "o")
        ax.annotate(r["name"], (x, y), fontsize=7, xytext=(4, 4 + 9 * (i % 3)), textcoords="offset points")
    ax.set(xscale="log", xlabel="best throughput (images/s)", ylabel="accuracy on the test vectors (%)",
           title="Accuracy vs throughput (squares: modelled)")
    ax.grid(True, alpha=0.3)
    return fig
