"""Build every zoo model for a board through verification; one table of fit, estimates and verification.

For each model: `flows build` with a short training run (the design hardly depends
on training), through the estimates, and through verification of the whole test
split. Models that do not fit the board at any folding go on with --allow-overflow,
so they are verified too and marked "no" in the fit column. Figures are labelled:
estimates are FINN's models; accuracy and verification are simulated on this CPU.
Results: <out>/zoo_<board>_<data>.json and .md.

    python bench/zoo_sweep.py --data mnist --data-dir ../shared/datasets/mnist --epochs 1
    python bench/zoo_sweep.py --archs cnv --data digits32 --epochs 1
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--board", default="pynq-z2")
    p.add_argument("--archs", default="tfc,sfc,lfc,lenet", help="comma-separated: tfc, sfc, lfc, lenet, cnv")
    p.add_argument("--models", default=None, help="comma-separated zoo names instead of --archs")
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("build/zoo_sweep"), help="run directories (kept, resumable)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--from", dest="from_step", default=None, help="resume every run at this step (e.g. verify)")
    p.add_argument("--no-build", action="store_true", help="only collect the reports of the runs in --work")
    return p.parse_args(argv)


def sweep_one(name: str, args) -> dict:
    from flows.build import run_build
    from flows.config import BuildConfig, TrainOptions
    from flows.errors import FitError, FlowsError

    run = args.work / f"{name}_{args.board}_{args.data}"
    cfg = dict(model=name, board=args.board, data=args.data, data_dir=args.data_dir, out=run, to_step="verify",
               train=TrainOptions(epochs=args.epochs))
    start = time.perf_counter()
    row = {"model": name, "fits": True}
    try:
        if not args.no_build:
            run_build(BuildConfig(**cfg, from_step=args.from_step))
    except FitError:
        row["fits"] = False
        try:
            run_build(BuildConfig(**cfg, from_step="fold", allow_overflow=True))
        except FlowsError as exc:
            return {**row, "error": str(exc), "seconds": round(time.perf_counter() - start, 1)}
    except FlowsError as exc:
        return {**row, "error": str(exc), "seconds": round(time.perf_counter() - start, 1)}

    def report(step: str, file: str = "report.json") -> dict:
        return json.loads((run / step / file).read_text())

    est, ver = report("estimate"), report("verify")
    row["fits"] = est["fits"]
    stages = ver["stages"]
    return {**row, "cycles_per_image": est["cycles_per_image"], "fps": est["fps"], "bound": est["binding"],
            "lut_share": est["total"]["LUT"] / est["capacity"]["LUT"],
            "bram_share": est["total"]["BRAM_18K"] / est["capacity"]["BRAM_18K"],
            "accuracy": stages["dataflow"]["accuracy"], "images": ver["images"], "verified": ver["passed"],
            "boundary_cases": {s: r["at_rounding_boundary"] for s, r in stages.items() if r["at_rounding_boundary"]},
            "largest_excused_margin_steps": max((c["largest_margin_steps"] for r in stages.values()
                                                 for c in r.get("differing_images", []) if c["excused"]), default=None),
            "tied_predictions": {s: r["tied_predictions"] for s, r in stages.items() if r["tied_predictions"]},
            "seconds": round(time.perf_counter() - start, 1)}


def markdown(rows: list[dict], args) -> str:
    lines = [f"# Zoo on {args.board}, {args.data} ({args.epochs} training epoch(s) per model)", "",
             "Fit, cycles, images/s, bound, LUT and BRAM: **estimated** (FINN's models, dataflow layers only). "
             "Accuracy and verification: **simulated** (FINN's Python execution of the folded graph on the whole "
             "test split, against PyTorch, QONNX, the FINN graph and the streamlined graph).", "",
             "Excused: images where a float stage (PyTorch, QONNX, FINN graph) rounded a value at a rounding "
             "boundary (flows/boundary.py), per stage, and the largest distance from the boundary among them "
             "in quantiser steps; then images where a float argmax broke an exact tie its own way.", "",
             "| model | fits | cycles/image | images/s | bound | LUT | BRAM18 | accuracy | verified "
             "| excused at a boundary | largest margin | ties |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |||||||||")
            continue
        boundary = ", ".join(f"{s} {k}" for s, k in r["boundary_cases"].items()) or "0"
        margin = "-" if r["largest_excused_margin_steps"] is None else f"{r['largest_excused_margin_steps']:.1e}"
        excused = f"{boundary} | {margin} | {sum(r['tied_predictions'].values())}"
        lines.append(f"| {r['model']} | {'yes' if r['fits'] else 'no'} | {r['cycles_per_image']:,.1f} | {r['fps']:,.0f} | "
                     f"{r['bound']} | {100 * r['lut_share']:.1f}% | {100 * r['bram_share']:.1f}% | "
                     f"{100 * r['accuracy']:.2f}% | {'yes' if r['verified'] else 'NO'} ({r['images']}) | {excused} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from qat.models import known_models

    archs = args.archs.split(",")
    names = args.models.split(",") if args.models else [m for m in known_models() if m.split("-")[0] in archs]
    rows = []
    for name in names:
        rows.append(sweep_one(name, args))
        print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"zoo_{args.board}_{args.data}"
    stem.with_suffix(".json").write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                                     "epochs": args.epochs, "rows": rows}, indent=2))
    stem.with_suffix(".md").write_text(markdown(rows, args))
    print(f"wrote {stem}.json and {stem}.md")
    return 0 if all(r.get("verified") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
