"""What a search found: the Pareto front retrained with several seeds, the uniform-precision zoo
models on the same axes, per-layer sensitivity and latency, as report.json, report.md and plots.

Labels: accuracy is measured here (test split; the search itself selected on a validation
split), cycles/LUT/BRAM/images/s are estimated (the flow's estimate step), CPU latency is
measured here (PyTorch, batch 1, median of repeats, outputs checked). Every figure is cached
under <out>/cache/, so an interrupted report resumes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from flows.search.config import SearchConfig
from host.results import markdown_table
from flows.search.study import constraints, estimate_checkpoint, train_config

MAX_FRONT = 6  # Pareto points retrained and reported
LAYER_REPEATS = 20  # whole runs whose per-layer times give each layer's median
UNIFORM = ("w1a1", "w1a2", "w2a2", "w4a4", "w8a8")
MATCH_POINTS = 0.2  # 'equal accuracy': within this many percentage points


class Cache:
    """JSON results keyed by what made them, one file each, written atomically."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get_or_make(self, key: dict, make):
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.root / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())["value"]
        value = make()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "value": value}, default=float))
        tmp.replace(path)
        return value


def pareto_front(trials) -> list:
    """Finished trials that meet every constraint and that no other such trial dominates on estimated
    cycles, estimated LUTs and validation accuracy (so the front spans the accuracy-cost trade-off,
    not only the cheapest design at the target); at most MAX_FRONT of them, spread over the cycles."""
    ok = [t for t in trials if t.values is not None and max(constraints(t)) <= 0]
    key = {t.number: (*t.values, -t.user_attrs.get("val_accuracy", 0.0)) for t in ok}
    front = [t for t in ok if not any(all(o <= v for o, v in zip(key[u.number], key[t.number]))
                                      and key[u.number] != key[t.number] for u in ok)]
    unique = sorted({key[t.number]: t for t in sorted(front, key=lambda t: t.number, reverse=True)}.values(),
                    key=lambda t: key[t.number])
    if len(unique) <= MAX_FRONT:
        return unique
    picks = sorted({round(i * (len(unique) - 1) / (MAX_FRONT - 1)) for i in range(MAX_FRONT)})
    return [unique[i] for i in picks]


def design_key(design, inputs) -> dict:
    """A cache key part for ``design``: its dict, and the teacher when it distils."""
    d = design.to_dict()
    return {**d, "teacher": inputs.teacher_key()} if design.distill else d


def estimate_key(design) -> dict:
    """What an estimate depends on besides the design's shape: where its input quantiser runs."""
    from flows.config import input_quant_for

    return {"input_quant": input_quant_for(design.spec.in_bits)}


def trained_run(design, seed: int, ds, cfg: SearchConfig, cache: Cache, work: Path, inputs) -> dict:
    """One seed of ``design`` trained on ``ds`` (the whole training split; the design's kept pixels and
    teacher from ``inputs``), cached: its test accuracy (measured) and checkpoint path."""
    key = {"spec": design_key(design, inputs), "seed": seed, **cfg.training_key()}

    def make():
        from qat.train import train

        ckpt = train(design.spec, inputs.dataset(design, ds), train_config(cfg, seed), progress=False,
                     hooks=inputs.hooks(design))
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"seed{seed}.pt"
        ckpt.save(path, overwrite=True)
        return {"test_accuracy": ckpt.metrics["test_accuracy"], "checkpoint": str(path)}
    return cache.get_or_make(key, make)


def evaluate_design(design, ds, cfg: SearchConfig, cache: Cache, work: Path, inputs) -> dict:
    """Retrain ``design`` (flows.search.space.Design) with cfg.seeds seeds on the whole training split
    (trained_run): test accuracy (measured), the trained design's estimate, CPU batch-1 latency and
    per-layer times (measured)."""
    runs = [trained_run(design, seed, ds, cfg, cache, work, inputs) for seed in seeds_of(cfg)]
    spec, ds = design.spec, inputs.dataset(design, ds)
    accs = [r["test_accuracy"] for r in runs]
    first = functools.cache(lambda: _load(runs[0]["checkpoint"]))  # read once, only if something is not cached
    est = cache.get_or_make({"estimate": design_key(design, inputs), "board": cfg.board, "seed": cfg.seed,
                             **cfg.training_key(), **estimate_key(design)},
                            lambda: estimate_checkpoint(first(), work / "trained", cfg))
    cpu = cache.get_or_make({"cpu": design_key(design, inputs), **cfg.training_key()},
                            lambda: cpu_latency(first(), ds))
    size = cache.get_or_make({"storage": design_key(design, inputs), **cfg.training_key()},
                             lambda: weight_storage(first()))
    return {"spec": design.to_dict(), "name": spec.name, "seeds": seeds_of(cfg),
            "test_accuracy": {"mean": float(np.mean(accs)), "min": float(min(accs)), "max": float(max(accs)),
                              "each": accs, "kind": "measured"},
            "estimate": est, "cpu": cpu, "storage": size}


def weight_storage(ckpt) -> dict:
    """Bytes of the model's parameters stored densely at their quantised widths (what the FPGA's weight
    memories and a packed CPU deployment hold) and as float32 (qat.compress.storage, computed exactly)."""
    from qat.compress.storage import dense_storage

    total = dense_storage(ckpt)
    return {"dense_bytes": total["bytes"]["dense_quant"], "float32_bytes": total["bytes"]["dense_float32"],
            "params": total["params"], "label": "computed"}


def seeds_of(cfg: SearchConfig) -> list[int]:
    return list(range(cfg.seed, cfg.seed + cfg.seeds))


def _load(path: str):
    from qat.train import load_checkpoint

    return load_checkpoint(path)


def cpu_latency(ckpt, ds, repeats: int = 200, layer_batch: int = 256) -> dict:
    """The CPU running the same model: PyTorch float with dequantised weights (flows bench's
    cpu-torch-float) on this machine. Batch-1 latency (median and p99 of ``repeats`` after warm-up),
    per-layer seconds per image at ``layer_batch``, and how often its answers agree with the
    quantised model's (float rounding may flip an exact tie)."""
    import torch

    from flows.baselines import float_model, torch_layer_times
    from host.results import environment, machine_label
    from qat.train import as_tensor

    quantised = ckpt.model()
    model = float_model(quantised)
    images = ds.test.images[:repeats]
    with torch.no_grad():
        expected = quantised(as_tensor(images)).argmax(1).numpy()
        got, times = [], []
        for i in range(-10, len(images)):
            x = as_tensor(images[max(i, 0):max(i, 0) + 1])
            start = time.perf_counter()
            answer = int(model(x).argmax(1)[0])
            times.append(time.perf_counter() - start)
            got.append(answer)
        batch = as_tensor(np.resize(ds.test.images, (layer_batch, *ds.test.images.shape[1:])))
        model(batch)  # warm-up; then per-layer times of repeated whole runs, as flows bench measures them
        runs = [torch_layer_times(model, lambda: model(batch), "cpu") for _ in range(LAYER_REPEATS)]
    names = [name for name, _, _ in runs[0]]
    layers = [(name, float(np.median([run[i][2] for run in runs])) / layer_batch) for i, name in enumerate(names)]
    lat = np.array(times[10:])
    return {"label": machine_label(environment()), "model": "PyTorch float, dequantised weights",
            "batch1_p50_us": float(np.median(lat) * 1e6), "batch1_p99_us": float(np.percentile(lat, 99) * 1e6),
            "agreement": float(np.mean(np.array(got[10:]) == expected)),
            "layers": [{"name": n, "us_per_image": s * 1e6} for n, s in layers]}


def uniform_designs(arch: str) -> list[tuple]:
    """(design, work folder name) of the uniform zoo models the report compares with."""
    from flows.search.space import Design
    from qat.models import parse_model_name

    return [(Design(parse_model_name(f"{arch}-{p}")), p) for p in UNIFORM]


def sensitivity_variants(space) -> list[tuple[str, str, dict]]:
    """(where, change, choices): the reference (every layer at its richest choice), then one row per layer
    and technique where the space offers a choice, that layer alone at its cheapest: fewer weight and
    activation bits, pruning, low rank (the smallest rank), fewer input pixels, distillation on."""
    from flows.search.space import layer_name

    ref = space.richest()
    rows = [("reference", "-", ref)]

    def variant(where: str, change: str, key: str, value, i: int | None = None):
        c = {k: list(v) if isinstance(v, list) else v for k, v in ref.items()}
        if i is None:
            c[key] = value
        else:
            c[key][i] = value
        rows.append((where, change, c))

    for i, c in enumerate(space.weight_bits):
        if len(c) > 1:
            variant(layer_name(space.arch, i, "w"), f"weight bits {max(c)} -> {min(c)}", "w", min(c), i)
    for i, c in enumerate(space.act_bits):
        if len(c) > 1:
            variant(layer_name(space.arch, i, "a"), f"activation bits {max(c)} -> {min(c)}", "a", min(c), i)
    for i, c in enumerate(space.prune):
        if len(c) > 1:
            variant(layer_name(space.arch, i, "p"), f"pruned {max(c):.0%}", "p", max(c), i)
    for i, c in enumerate(space.rank or ()):
        ranks = [r for r in c if r is not None]
        if ranks and len(c) > 1:
            variant(f"layer {i}", f"low rank {min(ranks)}", "r", min(ranks), i)
    if len(space.pixels) > 1:
        variant("input", f"pixels kept {max(space.pixels):.0%} -> {min(space.pixels):.0%}", "pix", min(space.pixels))
    if len(space.distill) > 1:
        variant("training", "distillation on", "kd", True)
    return rows


def sensitivity_accuracy(design, cfg: SearchConfig, cache: Cache, inputs) -> float:
    """Validation accuracy of ``design`` trained once (cfg.seed) on the search's training split, cached."""
    def make() -> float:
        from qat.train import train

        return train(design.spec, inputs.dataset(design, inputs.ds), train_config(cfg, cfg.seed), progress=False,
                     hooks=inputs.hooks(design)).metrics["test_accuracy"]
    return cache.get_or_make({"sens": design_key(design, inputs), "seed": cfg.seed, **cfg.training_key()}, make)


def sensitivity(space, inputs, cfg: SearchConfig, cache: Cache) -> list[dict]:
    """Accuracy (validation, one seed) and estimated cycles of each sensitivity_variants row."""
    from flows.search.study import untrained

    def estimate(design) -> dict:
        return estimate_checkpoint(untrained(design.spec, inputs.dataset(design, inputs.ds), cfg),
                                   Path(cfg.out) / "sensitivity" / spec_id(design), cfg)

    rows = []
    for where, change, choices in sensitivity_variants(space):
        design = inputs.design(choices)
        acc = sensitivity_accuracy(design, cfg, cache, inputs)
        est = cache.get_or_make({"sens-est": design.shape_dict(), "board": cfg.board, "data": cfg.data,
                                 **estimate_key(design)},
                                lambda d=design: estimate(d))
        rows.append({"where": where, "change": change, "design": design.to_dict(), "val_accuracy": acc,
                     "cycles_per_image": est["cycles_per_image"], "LUT": est["total"]["LUT"],
                     "binding": est["binding"]})
    ref = rows[0]
    for r in rows:
        r["accuracy_drop_points"] = 100 * (ref["val_accuracy"] - r["val_accuracy"])
        r["cycles_change"] = r["cycles_per_image"] - ref["cycles_per_image"]
    return rows


def spec_id(spec) -> str:
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


def gain_over_uniform(front: list[dict], uniform: list[dict]) -> dict:
    """The best uniform model (highest mean test accuracy) against the searched designs that reach its
    accuracy within MATCH_POINTS: ratios of estimated latency and LUTs (> 1: the search is better)."""
    best = max(uniform, key=lambda r: r["test_accuracy"]["mean"])
    need = best["test_accuracy"]["mean"] - MATCH_POINTS / 100
    match = [r for r in front if r["test_accuracy"]["mean"] >= need and r["estimate"]["fits"]]
    fitting = [r for r in uniform if r["estimate"]["fits"]]
    out = {"best_uniform": best["name"], "best_uniform_accuracy": best["test_accuracy"]["mean"],
           "best_uniform_fits": best["estimate"]["fits"], "matching_designs": len(match)}
    if fitting:
        best_fit = max(fitting, key=lambda r: r["test_accuracy"]["mean"])
        out["best_fitting_uniform"] = best_fit["name"]
    if match:
        fast, small = _cheapest(match)
        out.update(latency_ratio=best["estimate"]["cycles_per_image"] / fast["estimate"]["cycles_per_image"],
                   lut_ratio=best["estimate"]["total"]["LUT"] / small["estimate"]["total"]["LUT"],
                   fastest=fast["spec"], smallest=small["spec"])
    out["iso_accuracy"] = iso_accuracy(front, uniform)
    return out


def iso_accuracy(front: list[dict], uniform: list[dict]) -> list[dict]:
    """Each fitting searched design against the uniform models that are as accurate (no more than
    MATCH_POINTS below it) and fit: the cheapest of them in estimated latency and in LUTs, and the
    ratios (> 1: the searched design is cheaper). This is the comparison at equal accuracy, so a
    cheaper uniform model of the same accuracy is not hidden behind the most accurate one. A design
    with no such uniform model is more accurate than every fitting one."""
    fitting = [u for u in uniform if u["estimate"]["fits"]]
    rows = []
    for r in (r for r in front if r["estimate"]["fits"]):
        acc = r["test_accuracy"]["mean"]
        peers = [u for u in fitting if u["test_accuracy"]["mean"] >= acc - MATCH_POINTS / 100]
        row = {"spec": r["spec"], "test_accuracy": acc, "cycles_per_image": r["estimate"]["cycles_per_image"],
               "LUT": r["estimate"]["total"]["LUT"], "uniform_peers": [u["name"] for u in peers]}
        if peers:
            fast, small = _cheapest(peers)
            row.update(fastest_uniform=fast["name"], small_uniform=small["name"],
                       latency_ratio=fast["estimate"]["cycles_per_image"] / row["cycles_per_image"],
                       lut_ratio=small["estimate"]["total"]["LUT"] / row["LUT"])
        elif fitting:
            best = max(fitting, key=lambda u: u["test_accuracy"]["mean"])
            row.update(above_uniform=best["name"], above_points=100 * (acc - best["test_accuracy"]["mean"]))
        rows.append(row)
    return rows


def _cheapest(rows: list[dict]) -> tuple[dict, dict]:
    """The row with the fewest estimated cycles per image and the one with the fewest LUTs."""
    return (min(rows, key=lambda r: r["estimate"]["cycles_per_image"]),
            min(rows, key=lambda r: r["estimate"]["total"]["LUT"]))


# BNN-PYNQ's LFC-W1A1 on a PYNQ-Z1 (Xilinx/BNN-PYNQ, measured): the published point a search compares with
PUBLISHED = {"name": "BNN-PYNQ LFC-W1A1, PYNQ-Z1", "accuracy": 0.984, "images_per_second": 118_883,
             "kind": "measured (published)"}


def against_published(front: list[dict], ref: dict = PUBLISHED) -> dict:
    """The fastest searched design (estimated) that reaches the published accuracy, as a multiple of
    the published throughput, with the bound that stops it; or the closest design when none reaches it."""
    ok = [r for r in front if r["test_accuracy"]["mean"] >= ref["accuracy"] and r["estimate"]["fits"]]
    if not ok:
        return {"reference": ref, "reached": False, "closest": _closest(front, ref["accuracy"])}
    best = max(ok, key=lambda r: r["estimate"]["fps"])
    return {"reference": ref, "reached": True, "design": best["spec"], "fps": best["estimate"]["fps"],
            "ratio": best["estimate"]["fps"] / ref["images_per_second"], "binding": best["estimate"]["binding"],
            "why": best["estimate"].get("ii_why", best["estimate"]["binding"])}


def chosen_per_target(front: list[dict], targets: list[float]) -> list[dict]:
    rows = []
    for t in targets:
        ok = [r for r in front if r["test_accuracy"]["mean"] >= t and r["estimate"]["fits"]]
        best = min(ok, key=lambda r: r["estimate"]["cycles_per_image"]) if ok else None
        rows.append({"target": t, "design": best["spec"] if best else None,
                     "closest": None if best else _closest(front, t)})
    return rows


def _closest(front, t):
    if not front:
        return None
    r = max(front, key=lambda r: r["test_accuracy"]["mean"])
    return {"spec": r["spec"], "test_accuracy": r["test_accuracy"]["mean"]}


# -- writing ----------------------------------------------------------------------------------


def trial_rows(trials) -> list[dict]:
    rows = []
    for t in trials:
        a = t.user_attrs
        est = a.get("estimate", {})
        note = a.get("failed") or a.get("not_trained") or (f"duplicate of trial {a['duplicate_of']}"
                                                           if "duplicate_of" in a else "")
        if a.get("stopped_at"):
            note = f"stopped at epoch {a['stopped_at']}"
        rows.append({"number": t.number, "state": t.state.name, "spec": a.get("spec"),
                     "val_accuracy": a.get("val_accuracy"), "cycles_per_image": est.get("cycles_per_image"),
                     "LUT": est.get("total", {}).get("LUT"), "fits": est.get("fits"),
                     "feasible": t.values is not None and max(constraints(t)) <= 0, "note": note})
    return rows


def _design(spec: dict) -> str:
    """A design's per-layer settings in one cell (flows.search.space.Design.to_dict)."""
    widths, ranks = spec.get("widths"), spec.get("ranks")
    return (f"w{spec['weight_bits']} a{spec['act_bits']} in{spec['in_bits']}"
            + (f" {_widths(spec['arch'], widths)}" if widths else "")
            + (f" ranks {['-' if r is None else r for r in ranks]}" if ranks and any(r is not None for r in ranks) else "")
            + (f" pixels {spec['kept_pixels']}" if spec.get("kept_pixels") else "")
            + (" distilled" if spec.get("distill") else ""))


def _widths(arch: str, widths: list) -> str:
    """A pruned design's widths; CNV's as its convolutions' channels, then its hidden linears' widths."""
    if arch != "cnv":
        return f"widths {widths}"
    from qat.cnv import CNV_OUT_CH_POOL

    return f"channels {widths[:len(CNV_OUT_CH_POOL)]} fc {widths[len(CNV_OUT_CH_POOL):]}"


def _front_row(r: dict, kind: str) -> list:
    """One design's cells in the Pareto table: a searched design (by its settings) or a uniform zoo model."""
    e, a = r["estimate"], r["test_accuracy"]
    return [r["name"] if kind == "uniform" else _design(r["spec"]), kind,
            f"{100 * a['mean']:.2f} ({100 * a['min']:.2f}-{100 * a['max']:.2f})", f"{e['cycles_per_image']:.1f}",
            f"{e['fps']:,.0f}", f"{e['latency_us']:.2f}", f"{e['total']['LUT']:,.0f}", f"{e['total']['BRAM_18K']:.0f}",
            "yes" if e["fits"] else "no", e["binding"], f"{r['cpu']['batch1_p50_us']:.0f}",
            f"{r['storage']['dense_bytes'] / 1024:,.1f}" if "storage" in r else "-"]


def markdown(report: dict) -> str:
    cfg, lines = report["config"], []
    lines += [f"# flows search: {cfg['arch']} on {cfg['board']}, {cfg['data']}, target {100 * cfg['target_accuracy']:.1f}%",
              "", f"{report['trials']['finished']} finished trials ({report['trials']['total']} in the study), "
              f"search wall time {report['wall_s']:.0f} s; sampler {cfg['sampler']}; {cfg['epochs']} epochs per trial; "
              f"accuracy: test split, mean of {cfg['seeds']} seeds (measured); cycles, images/s, LUT, BRAM: estimated "
              f"(FINN + DMA bound); CPU: {report.get('cpu_label', 'measured here')}; weights: the parameters stored "
              "densely at their quantised widths (computed).", ""]
    teacher, space = report.get("teacher"), report.get("space", {})
    if teacher:
        lines += [f"Distillation teacher: {teacher['model']}, {teacher['epochs']} epochs, trained once on the search's "
                  f"training split (<out>/{teacher['path']}): validation accuracy {100 * teacher['val_accuracy']:.2f}% "
                  "(measured).", ""]
    elif space.get("teacher") and True in space.get("distill", []):
        lines += [f"Distillation teacher: {space['teacher']} (a file).", ""]
    lines += ["## Pareto front (retrained) and uniform zoo models", ""]
    lines += markdown_table(["design", "kind", "test acc % (min-max)", "cycles/image", "images/s", "latency us", "LUT",
                             "BRAM18", "fits", "binding", "CPU b1 p50 us", "weights KiB"],
                            [_front_row(r, kind) for kind, rows in (("searched", report["front"]),
                                                                   ("uniform", report["uniform"])) for r in rows])
    g = report["gain"]
    lines += ["", "## Layer-aware against uniform", ""]
    if "latency_ratio" in g:
        lines.append(f"Best uniform model {g['best_uniform']} ({100 * g['best_uniform_accuracy']:.2f}%, "
                     f"fits: {g['best_uniform_fits']}); the searched designs within {MATCH_POINTS} points of it: "
                     f"**{g['latency_ratio']:.2f}x** lower estimated latency (fastest: {_design(g['fastest'])}), "
                     f"**{g['lut_ratio']:.2f}x** fewer estimated LUTs (smallest: {_design(g['smallest'])}).")
    else:
        lines.append(f"No searched design reached the best uniform model {g['best_uniform']} "
                     f"({100 * g['best_uniform_accuracy']:.2f}%) within {MATCH_POINTS} points.")
    iso = g.get("iso_accuracy")
    if iso:
        lines += ["", f"At equal accuracy, each searched design against the cheapest fitting uniform model that is "
                  f"at most {MATCH_POINTS} points less accurate (ratio > 1: the searched design is cheaper):", ""]
        lines += markdown_table(
            ["design", "test acc %", "cycles", "LUT", "uniform peers", "latency ratio (vs)", "LUT ratio (vs)"],
            [[_design(r["spec"]), f"{100 * r['test_accuracy']:.2f}", f"{r['cycles_per_image']:.0f}", f"{r['LUT']:,.0f}",
              _peers_cell(r),
              f"{r['latency_ratio']:.2f}x ({r['fastest_uniform']})" if "latency_ratio" in r else "-",
              f"{r['lut_ratio']:.2f}x ({r['small_uniform']})" if "lut_ratio" in r else "-"] for r in iso])
    p = report.get("published")
    if p:
        ref = p["reference"]
        lines += ["", f"## Against {ref['name']} ({100 * ref['accuracy']:.1f}%, {ref['images_per_second']:,} images/s, "
                  f"{ref['kind']})", ""]
        if p["reached"]:
            lines.append(f"Fastest searched design at that accuracy: {_design(p['design'])}, {p['fps']:,.0f} images/s "
                         f"estimated on {cfg['board']}: **{p['ratio']:.1f}x**; bound: {p['why']}.")
        else:
            c = p["closest"]
            lines.append("No searched design reached that accuracy here"
                         + (f"; the closest: {_design(c['spec'])} at {100 * c['test_accuracy']:.2f}%." if c else "."))
    lines += ["", "## Chosen design per accuracy target", ""]
    lines += markdown_table(["target %", "design", "closest if none"], [
        [f"{100 * r['target']:.1f}", _design(r["design"]) if r["design"] else "none reached it",
         f"{_design(r['closest']['spec'])} ({100 * r['closest']['test_accuracy']:.2f}%)" if r["closest"] else ""]
        for r in report["chosen"]])
    if report.get("sensitivity"):
        lines += ["", "## Per-layer sensitivity (validation accuracy, one seed; estimated cycles)", ""]
        lines += markdown_table(["where", "change", "acc drop (points)", "cycles/image", "change", "LUT", "binding"], [
            [r["where"], r["change"], f"{r['accuracy_drop_points']:.2f}", f"{r['cycles_per_image']:.1f}",
             f"{r['cycles_change']:+.1f}", f"{r['LUT']:,.0f}", r["binding"]] for r in report["sensitivity"]])
    if report["front"]:
        r = report["front"][0]
        lines += ["", f"## Per-layer latency of the fastest searched design ({_design(r['spec'])})", ""]
        fpga, cpu = r["estimate"]["layers"], r["cpu"]["layers"]
        lines += markdown_table(
            ["FPGA layer", "cycles, FINN (estimated)", "", "CPU layer (PyTorch float)", "us/image (measured)"],
            [([fpga[i]["name"], fpga[i]["cycles"]] if i < len(fpga) else ["", ""]) + [""]
             + ([cpu[i]["name"], f"{cpu[i]['us_per_image']:.2f}"] if i < len(cpu) else ["", ""])
             for i in range(max(len(fpga), len(cpu)))])
    lines += ["", "Not trained (decided from the estimate alone): "
              f"{sum(1 for t in report['trial_rows'] if t['note'].startswith(('does not fit', 'dominated')))}; "
              f"stopped early: {sum(1 for t in report['trial_rows'] if t['note'].startswith('stopped'))}; "
              f"failed: {sum(1 for t in report['trial_rows'] if t['state'] == 'FAIL')}.", ""]
    return "\n".join(lines)


def _peers_cell(row: dict) -> str:
    if row["uniform_peers"]:
        return ", ".join(row["uniform_peers"])
    if "above_uniform" in row:
        return f"none: {row['above_points']:+.2f} points over {row['above_uniform']}"
    return "none fits"


def save_plots(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    luts = [r["estimate"]["total"]["LUT"] for r in (*report["front"], *report["uniform"])] or [0, 1]
    for name, x_of, xlabel in (("pareto_fpga.png", lambda r: r["estimate"]["latency_us"],
                                "estimated FPGA latency, batch 1 (us)"),
                               ("pareto_cpu.png", lambda r: r["cpu"]["batch1_p50_us"],
                                "measured CPU latency, PyTorch batch 1 p50 (us)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for kind, rows, marker in (("searched (Pareto front)", report["front"], "o"),
                                   ("uniform zoo", report["uniform"], "s")):
            if not rows:
                continue
            sc = ax.scatter([x_of(r) for r in rows], [100 * r["test_accuracy"]["mean"] for r in rows],
                            c=[r["estimate"]["total"]["LUT"] for r in rows], cmap="viridis", marker=marker,
                            vmin=min(luts), vmax=max(luts),
                            s=60, label=kind, edgecolors="k")
            for r in rows:
                if kind.startswith("uniform"):
                    ax.annotate(r["name"].split("-")[-1], (x_of(r), 100 * r["test_accuracy"]["mean"]), fontsize=7)
        fig.colorbar(sc, ax=ax, label="estimated LUTs")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy % (measured, mean of seeds)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(str(out / name))
    return paths
