"""One search, the same number of trials, run by 1 worker and by 2 workers on one shared study:
wall time ratio and the quality of what each found (measured here; the designs' figures are
estimated). Each worker is a `flows search --worker` process with one PyTorch thread; the
shared study is SQLite in the run folder (PostgreSQL works the same: --storage URL).
Results: bench/results/search_workers.json and .md.

    python bench/search_workers.py --trials 16 --epochs 4
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tfc")
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--target-accuracy", type=float, default=0.9)
    p.add_argument("--work", type=Path, default=Path("build/search_workers"))
    p.add_argument("--out", type=Path, default=HERE / "results")
    return p.parse_args(argv)


def worker_command(args, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "flows.cli", "search", "--worker", "--model", args.model, "--data", args.data,
           "--trials", str(args.trials), "--epochs", str(args.epochs), "--threads", "1",
           "--target-accuracy", str(args.target_accuracy), "--out", str(out), "--sampler", "random"]
    return cmd + (["--data-dir", args.data_dir] if args.data_dir else [])


def run(args, workers: int) -> dict:
    """Create the study with one worker's first call, then time ``workers`` processes to the end."""
    import optuna

    from flows.search.study import STUDY_NAME, constraints, open_storage
    from flows.search.report import pareto_front

    out = args.work / f"{workers}_workers"
    if out.exists():
        raise SystemExit(f"{out} exists: remove it to measure anew")
    start = time.perf_counter()
    procs = []
    for i in range(workers):
        procs.append(subprocess.Popen(worker_command(args, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
        if i == 0:
            time.sleep(5)  # the first creates the study; the others load it
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    if any(codes):
        raise SystemExit(f"a worker failed: {[p.stderr.read()[-500:] for p in procs]}")
    study = optuna.load_study(study_name=STUDY_NAME, storage=open_storage(f"sqlite:///{(out / 'study.db').resolve()}"))
    trials = study.get_trials(deepcopy=False)
    front = pareto_front(trials)
    feasible = [t for t in trials if t.values is not None and max(constraints(t)) <= 0]
    return {"workers": workers, "wall_s": wall, "trials": len(trials),
            "finished": sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials),
            "feasible": len(feasible), "front": [list(t.values) for t in front],
            "best_cycles": min((t.values[0] for t in feasible), default=None),
            "best_lut": min((t.values[1] for t in feasible), default=None)}


def main(argv=None) -> None:
    from host.results import environment, machine_label, markdown_table

    args = parse_args(argv)
    one, two = run(args, 1), run(args, 2)
    env = environment()
    result = {"command": " ".join(["python", "bench/search_workers.py", *(argv or sys.argv[1:])]),
              "label": machine_label(env), "environment": env, "runs": [one, two],
              "speedup": one["wall_s"] / two["wall_s"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_workers.json").write_text(json.dumps(result, indent=2, default=str))
    table = markdown_table(
        ["workers", "wall s", "finished trials", "meeting target and fitting", "best cycles", "best LUT", "front size"],
        [[r["workers"], f"{r['wall_s']:.0f}", f"{r['finished']} ({r['trials']} in study)", r["feasible"],
          r["best_cycles"], r["best_lut"], len(r["front"])] for r in (one, two)])
    (args.out / "search_workers.md").write_text(
        f"# flows search: 1 worker against 2 on one study ({args.model}, {args.data}, {args.trials} trials, "
        f"{args.epochs} epochs, random sampler)\n\nWall time {result['label']}; design figures estimated.\n\n"
        + "\n".join(table) + f"\n\n2 workers: **{result['speedup']:.2f}x** faster "
        f"(wall time ratio).\n\nCommand: `{result['command']}`\n")
    print((args.out / "search_workers.md").read_text())


if __name__ == "__main__":
    main()
