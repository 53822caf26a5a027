"""Compression benchmarks on MNIST: what structured pruning, fewer bits and distillation buy on a PYNQ-Z2.

Each part writes bench/results/compress_<part>.json and .md (run dirs under --work, resumable):

- fpga-lenet: lenet-w8a8 is compute-bound at 1,568 cycles/image; target: the DMA bound or
  < 400 cycles at >= 98.0% (structured pruning, distillation from the unpruned model).
- fit-lfc: lfc-w2a2 does not fit (BRAM 127%); target: a pruned LFC-W2A2 that fits at >= 98.5%.
- input-tfc: a 2-bit-input TFC-W2A2 with its 512 most varying pixels (and a 1-bit-input one), built with
  the input quantiser on the host (flows build --input-quant host); target >= 4M images/s estimated at >= 93%.
- distill: TFC-W2A2 student from scratch, alone vs distilled from lenet-w8a8, equal epochs, 3 seeds.
- time: wall time of a TFC compress run on MNIST and of the bundled digits demo.

Labels: accuracy measured (PyTorch, the MNIST test split); cycles, images/s, fit: estimated
(FINN's models); verification: simulated (FINN's Python execution of every stage on the whole
test split); the host's quantise+pack time per image: measured on this x86 CPU (not a board's ARM).

    python bench/compress_fpga.py --data-dir ../shared/datasets/mnist --work build/compress fpga-lenet
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
PARTS = ("fpga-lenet", "fit-lfc", "input-tfc", "distill", "time")
# base models trained here: `flows train --model M --data mnist` with these options
BASES = {"lenet-w8a8": {"epochs": 12, "dropout": 0.0},
         "lfc-w2a2": {"epochs": 20, "dropout": 0.2, "shift": 1}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("parts", nargs="*", default=list(PARTS), help=f"any of {', '.join(PARTS)}")
    p.add_argument("--data-dir", type=Path, required=True, help="MNIST folder")
    p.add_argument("--work", type=Path, default=Path("build/compress"))
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--distill-epochs", type=int, default=10)
    p.add_argument("--lenet", default="prune,bits", help="fpga-lenet candidates: prune (64x32 w8a8), bits (w4a4)")
    p.add_argument("--candidate", default="full", help="full (verify on the test split, CPU bench) or estimate")
    p.add_argument("--input-tfc", default="in2,in1", help="input-tfc candidates: in2 (2-bit input), in1 (1-bit)")
    return p.parse_args(argv)


def base(work: Path, model: str, ds) -> Path:
    """A trained base checkpoint (trained once, as `flows train --model M` with BASES[M]'s options)."""
    from qat.models import parse_model_name
    from qat.train import TrainConfig, train_to_file

    path = work / "base" / f"{model}_mnist.pt"
    if not path.is_file():
        train_to_file(parse_model_name(model), ds, TrainConfig(**BASES[model]), path, progress=False)
    return path


def run(args, name: str, techniques: list[dict], checkpoint: Path, **fields) -> dict:
    from qat.compress import compress
    from qat.compress.config import CompressConfig, load_techniques
    from qat.compress.base import technique_from_dict

    load_techniques()
    cfg = CompressConfig(out=str(args.work / name), checkpoint=str(checkpoint), data="mnist",
                         data_dir=str(args.data_dir), techniques=tuple(technique_from_dict(t) for t in techniques),
                         **fields)
    start = time.perf_counter()
    result = compress(cfg, progress=False)
    c = result.candidate
    f = c["fpga"]
    return {"run": name, "config": cfg.to_dict(), "seconds": round(time.perf_counter() - start, 1),
            "accuracy": c["test_accuracy"]["value"], "spec": c["model"], "cycles_per_image": f["cycles_per_image"],
            "fps": f["fps"], "binding": f["binding"], "fits": f["fits"], "utilisation": f["utilisation"],
            "verified": f.get("verified"),
            "input": {k: f.get(k) for k in ("input_quant", "input_quantiser", "in_bytes", "dma_in_cycles",
                                            "dma_in_why", "ii_why")},
            "cpu": c["cpu"], "candidate_md": str(args.work / name / "candidate" / "candidate.md")}


def fpga_lenet(args, ds) -> dict:
    b = base(args.work, "lenet-w8a8", ds)
    teacher = {"name": "distill", "teacher": str(b), "fine_tune": False}  # the unpruned 8-bit model
    runs = []
    if "prune" in args.lenet:  # 64x32 neurons, 8 bits
        runs.append(run(args, "lenet_prune64x32", [teacher, {"name": "prune", "ratio": [0.787, 0.68],
                                                             "schedule": "agp"}], b, epochs=8))
    if "bits" in args.lenet:  # fewer bits instead: 4-bit weights, activations and input (lenet-w4a4), full width
        runs.append(run(args, "lenet_w4a4i4", [teacher, {"name": "bits", "weight_bits": 4, "act_bits": 4,
                                                         "in_bits": 4}], b, epochs=4, candidate=args.candidate))
    target = "cycles <= 98 (DMA bound) or < 400 at >= 98.0%"
    return {"target": target, "base": _base_row(b), "runs": runs,
            "met": [r["run"] for r in runs if r["accuracy"] >= 0.98 and r["cycles_per_image"] < 400]}


def fit_lfc(args, ds) -> dict:
    b = base(args.work, "lfc-w2a2", ds)
    # one-shot to 640 neurons per hidden layer (BRAM fits at 1024 x 5/8), distilled from the unpruned base;
    # one-shot: fine-tuning the smaller model is ~2.5x cheaper than AGP's masked full-size one
    teacher = {"name": "distill", "teacher": str(b), "fine_tune": False}
    runs = [run(args, "lfc_prune640", [teacher, {"name": "prune", "ratio": 0.375}], b, epochs=4,
                candidate=args.candidate)]
    return {"target": "fits pynq-z2 at >= 98.5%", "base": _base_row(b), "runs": runs,
            "met": [r["run"] for r in runs if r["accuracy"] >= 0.985 and r["fits"]]}


def input_tfc(args, ds) -> dict:
    b = HERE.parent / "checkpoints" / "tfc-w2a2_mnist.pt"
    # tfc-w2a2's input quantiser is already 2-bit (in_bits 2); prune the pixels to 512 of 784 (a multiple
    # of 32: 512 x 2 bits = 16 words of 64 bits, so FINN's IODMA keeps the whole 64-bit port; 784 x 2 bits
    # = 1,568 bits, gcd 32, would halve it). The candidate builds with the input quantiser on the host.
    runs = [run(args, "tfc_in2_px512", [{"name": "prune_pixels", "keep": 512}], b, epochs=3,
                candidate=args.candidate)]
    if "in1" in args.input_tfc:  # 1 bit per pixel: 512 bits = 8 words
        runs.append(run(args, "tfc_in1_px512", [{"name": "input_bits", "bits": 1},
                                                {"name": "prune_pixels", "keep": 512}], b, epochs=3,
                        candidate=args.candidate))
    for r in runs:
        deploy = args.work / r["run"] / "candidate" / "build" / "deploy"
        r["host_prepare"] = host_prepare_cost(deploy) if deploy.is_dir() else None
    return {"target": ">= 4M images/s estimated at >= 93%", "base": _base_row(b), "runs": runs,
            "met": [r["run"] for r in runs if r["accuracy"] >= 0.93 and r["fps"] >= 4e6]}


def host_prepare_cost(deploy: Path, n: int = 10_000, repeats: int = 15) -> dict:
    """Seconds per image the host spends before the input DMA (measured on this x86 CPU, numpy,
    best of ``repeats`` batches of ``n``): quantise (InputQuantiser) and pack at the narrow datatype,
    as host.driver.Accelerator.execute does, against packing the raw UINT8 pixels (--input-quant fpga)."""
    from host.deploy import load_package
    from host.timing import tile
    from host.packing import pack

    package = load_package(deploy)
    spec, x = package.spec, tile(package.inputs, n)
    folded = (n, *spec.input.folded_shape[1:])

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) / n

    q = spec.input_quantiser
    load = os.getloadavg()[0]
    out = {"kind": f"measured on this {platform.machine()} CPU (numpy, one thread, batch {n:,}, best of {repeats}, "
                   f"load average {load:.1f} on 2 shared cores), not the board's ARM",
           "pack_raw_uint8_s": best(lambda: pack(x.reshape(folded), "UINT8", folded))}
    if q is not None:
        out["quantise_s"] = best(lambda: q(x))
        out["quantise_pack_s"] = best(lambda: pack(q(x).reshape(folded), spec.input.datatype, folded))
        out["images_per_second_one_core"] = 1 / out["quantise_pack_s"]
    return out


def distill(args, ds) -> dict:
    """Student tfc-w2a2 from scratch, equal epochs and seeds, alone vs with lenet-w8a8's soft targets."""
    from qat.compress.distill import TeacherLoss
    from qat.models import parse_model_name
    from qat.train import TrainConfig, TrainHooks, load_checkpoint, train

    teacher = load_checkpoint(base(args.work, "lenet-w8a8", ds))
    hooks = TrainHooks(loss=TeacherLoss(teacher.model(), temperature=4.0, alpha=0.7))
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = TrainConfig(epochs=args.distill_epochs, seed=seed, dropout=0.0)
        for mode, h in (("alone", TrainHooks()), ("distilled", hooks)):
            ck = train(parse_model_name("tfc-w2a2"), ds, cfg, progress=False, hooks=h)
            rows.append({"seed": seed, "mode": mode, "accuracy": ck.metrics["test_accuracy"],
                         "seconds": ck.metrics["train_seconds"]})
    mean = {m: sum(r["accuracy"] for r in rows if r["mode"] == m) / len(rows) * 2 for m in ("alone", "distilled")}
    return {"target": "distilled beats alone at equal epochs (>= 3 seeds)", "student": "tfc-w2a2",
            "teacher": {"model": "lenet-w8a8", "accuracy": teacher.metrics["test_accuracy"]},
            "epochs": args.distill_epochs, "temperature": 4.0, "alpha": 0.7, "runs": rows, "mean": mean,
            "met": mean["distilled"] > mean["alone"]}


def timing(args, ds) -> dict:
    import subprocess

    rows = []
    for name, argv in (("tfc-mnist", ["--checkpoint", str(HERE.parent / "checkpoints" / "tfc-w2a2_mnist.pt"),
                                      "--data", "mnist", "--data-dir", str(args.data_dir), "--prune", "0.5",
                                      "--epochs", "2", "--candidate", "estimate"]),
                       ("digits-demo", ["--model", "tfc-w2a2", "--base-epochs", "10", "--epochs", "3", "--prune",
                                        "0.5", "--candidate", "estimate"])):
        out = args.work / f"time_{name}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.cli", "compress", *argv, "--out", str(out)], check=True,
                       capture_output=True)
        rows.append({"run": name, "seconds": round(time.perf_counter() - start, 1), "argv": argv})
    return {"target": "TFC on MNIST in minutes; digits demo under a minute", "runs": rows}


def _base_row(path: Path) -> dict:
    from qat.train import load_checkpoint

    ck = load_checkpoint(path)
    return {"checkpoint": str(path), "model": ck.spec.name, "accuracy": ck.metrics["test_accuracy"]}


def markdown(part: str, r: dict) -> str:
    from host.results import markdown_table

    lines = [f"# Compression benchmark: {part}", "", f"Target: {r['target']}. Machine: {platform.processor() or platform.machine()}, "
             "2 shared cores. Accuracy measured (PyTorch, MNIST test split, 10,000 images); cycles, images/s, "
             "fit estimated (FINN's models, pynq-z2, 100 MHz); verification simulated.", ""]
    if part == "distill":
        rows = []
        for seed in sorted({x["seed"] for x in r["runs"]}):
            acc = {x["mode"]: x["accuracy"] for x in r["runs"] if x["seed"] == seed}
            rows.append([seed, f"{100 * acc['alone']:.2f}%", f"{100 * acc['distilled']:.2f}%"])
        rows.append(["mean", f"{100 * r['mean']['alone']:.2f}%", f"{100 * r['mean']['distilled']:.2f}%"])
        lines += markdown_table(["seed", "alone", "distilled"], rows)
        lines += ["", f"Student {r['student']}, {r['epochs']} epochs from scratch; teacher {r['teacher']['model']} "
                  f"({100 * r['teacher']['accuracy']:.2f}%), T={r['temperature']}, alpha={r['alpha']}. "
                  f"Met: {r['met']}."]
        return "\n".join(lines) + "\n"
    if part == "time":
        lines += markdown_table(["run", "seconds (measured)", "options"],
                                [[x["run"], x["seconds"], f"`{' '.join(x['argv'])}`"] for x in r["runs"]])
        return "\n".join(lines) + "\n"
    if "base" in r:
        lines.append(f"Base: {r['base']['model']} {100 * r['base']['accuracy']:.2f}% ({r['base']['checkpoint']}).")
        lines.append("")
    lines += markdown_table(["run", "widths/bits", "accuracy", "cycles/image", "images/s", "bound", "fits", "LUT",
                             "BRAM18", "verified", "input stream", "seconds"], [_run_row(x) for x in r["runs"]])
    lines += ["", f"Met: {r['met'] or 'none'}."]
    for x in r["runs"]:
        lines.append(f"- {x['run']}: {x['input']['ii_why']}" if x.get("input") else "")
    prep = [x for x in r["runs"] if (x.get("host_prepare") or {}).get("quantise_pack_s")]
    if prep:
        lines += ["", f"Host side before the input DMA, {prep[0]['host_prepare']['kind']}:", ""]
        lines += markdown_table(
            ["run", "quantise", "quantise + pack", "pack raw UINT8 (fpga quantiser)", "images/s, one core"],
            [[x["run"], f"{1e9 * h['quantise_s']:.0f} ns", f"{1e9 * h['quantise_pack_s']:.0f} ns",
              f"{1e9 * h['pack_raw_uint8_s']:.0f} ns", f"{h['images_per_second_one_core']:,.0f}"]
             for x in prep for h in [x["host_prepare"]]])
    return "\n".join(lines) + "\n"


def _run_row(x: dict) -> list:
    """One compression run's cells in the results table."""
    u, spec = x["utilisation"], x["spec"]
    bits = f"w{spec['weight_bits']} a{spec['act_bits']} in{spec['in_bits']}"
    return [x["run"], f"widths {spec.get('widths', '-')}, {bits}",
            f"{100 * x['accuracy']:.2f}%", f"{x['cycles_per_image']:,}", f"{x['fps']:,.0f}", x["binding"],
            "yes" if x["fits"] else "no", f"{100 * u.get('LUT', 0):.1f}%", f"{100 * u.get('BRAM_18K', 0):.1f}%",
            (x["verified"] or {}).get("passed", "-"), _input_cell(x), x["seconds"]]


def _input_cell(x: dict) -> str:
    """Where the input is quantised and what the input DMA moves (older results: the modelled bound)."""
    i = x.get("input")
    if not i:
        q = x.get("host_quantised_input") or {}
        return f"fpga; host-quantised modelled: {q.get('io_in_cycles')} DMA cycles" if q else "-"
    return f"{i['input_quant']}: {i['in_bytes']} B/image, {i['dma_in_cycles']:.1f} DMA cycles"


def main(argv=None) -> None:
    import torch

    from qat.data import load_dataset

    args = parse_args(argv)
    torch.set_num_threads(1)
    ds = load_dataset("mnist", args.data_dir)
    fns = {"fpga-lenet": fpga_lenet, "fit-lfc": fit_lfc, "input-tfc": input_tfc, "distill": distill, "time": timing}
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        r = fns[part](args, ds)
        part = part if part != "fpga-lenet" or args.lenet == "prune,bits" else f"{part}-{args.lenet}"
        (args.out / f"compress_{part}.json").write_text(json.dumps(r, indent=2, default=str))
        (args.out / f"compress_{part}.md").write_text(markdown(part, r))
        print(markdown(part, r))


if __name__ == "__main__":
    main()
