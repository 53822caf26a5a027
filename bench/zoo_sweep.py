"""The zoo on one board through verification, as committed under bench/results/: ``flows sweep --verify``.

Each model is trained briefly (the design hardly depends on training), built through
the estimates and verified on the whole test split (flows/sweep.py: a model that
does not fit the board at any folding goes on with --allow-overflow and is marked
"no"). Figures are labelled: estimates are FINN's models; accuracy and verification
are simulated on this CPU. The runs stay in --work, and a model already done there
is not built again (resumable). Results: <out>/zoo_<board>_<data>.json and .md.

    python bench/zoo_sweep.py --data mnist --data-dir ../shared/datasets/mnist --epochs 1
    python bench/zoo_sweep.py --archs cnv --data digits32 --epochs 1
"""
from __future__ import annotations

import argparse
import shutil
import sys
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
    p.add_argument("--work", type=Path, default=Path("build/zoo_sweep"), help="the sweep folder (kept, resumable)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from flows.sweep import SweepConfig, run_sweep, zoo_models

    models = zoo_models(args.archs, None, args.models)
    cfg = SweepConfig(models, (args.board,), args.data, args.data_dir, args.epochs, verify=True,
                      out=args.work / f"{args.board}_{args.data}")
    result = run_sweep(cfg, on_row=lambda row, reused: print(row, flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"zoo_{args.board}_{args.data}"
    shutil.copyfile(result["paths"]["json"], stem.with_suffix(".json"))
    shutil.copyfile(result["paths"]["markdown"], stem.with_suffix(".md"))
    print(f"wrote {stem}.json and {stem}.md")
    return 0 if all(r.get("verified") for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
