"""Deep Compression on LeNet-300-100, MNIST: pruning, weight sharing and Huffman coding, step by step.

Han, Mao and Dally (arXiv 1510.00149) took LeNet-300-100 from 1070 KB to 27 KB (40x)
at 1.58% test error (dense 1.64%). This benchmark does the same with the flow's
techniques on the zoo's lenet (784-300-100-10, 8-bit weights and activations,
batch-norm instead of biases): the dense model trained here, then unstructured
magnitude pruning (gradual, cubic schedule, masks kept while fine-tuning), then
k-means weight sharing with centroid fine-tuning, then Huffman coding of the shared
indices and of the sparse layout's runs. Each row: test error on the 10,000 MNIST test
images (measured, PyTorch) and storage (computed exactly, qat.compress.storage), the
ratio against the dense float32 model. The compressed checkpoint is then built and
verified through the flow (flows build --checkpoint ... --to verify). Also: the CPU
time of each layer dense vs sparse CSR (measured here) and each technique's FPGA effect.

    python bench/deep_compression.py --data-dir ../shared/datasets/mnist
    python bench/deep_compression.py --data-dir ../shared/datasets/mnist --dense CKPT   # reuse a dense model

Stage checkpoints go to --work and are reused when present (delete them to redo a stage).
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

from host.results import markdown_table  # noqa: E402

PAPER = {"dense_kb": 1070, "compressed_kb": 27, "ratio": 40, "dense_error": 1.64, "error": 1.58}
TARGET_RATIO, TARGET_ERROR = 40.0, 1.6


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="folder with the MNIST IDX files")
    p.add_argument("--dense", type=Path, default=None, help="a trained lenet-w8a8 checkpoint (default: train one)")
    p.add_argument("--dense-epochs", type=int, default=15)
    p.add_argument("--sparsity", default="0.95,0.9,0.75", help="per layer, comma-separated")
    p.add_argument("--prune-epochs", type=int, default=20)
    p.add_argument("--share-bits", default="5", help="k-means bits, one or per layer")
    p.add_argument("--share-epochs", type=int, default=8)
    p.add_argument("--verify-images", type=int, default=None, help="verify on the first N test images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("build/deep_compression"))
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--no-build", action="store_true", help="skip the flow build and verification")
    return p.parse_args(argv)


def floats(text: str) -> float | list[float]:
    values = [float(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def apply_stage(technique, ckpt, ds, train_cfg, path: Path):
    """Apply one technique (the compress runner's job; here until it is merged) or reuse its saved result."""
    from qat.compress.base import CompressContext
    from qat.train import TrainHooks, load_checkpoint

    if path.is_file():
        return load_checkpoint(path)
    technique.check(ckpt.spec, ckpt.data)
    ctx = CompressContext(ds, train_cfg, TrainHooks(), path.parent, progress=False)
    start = time.perf_counter()
    out = technique.apply(ckpt, ctx)
    out.metrics["compress_seconds"] = round(time.perf_counter() - start, 1)
    out.metrics["technique"] = technique.to_dict()
    out.save(path)
    return out


def stage_row(step: str, ckpt, ds, storage_key: str, reference_bytes: int) -> dict:
    from qat.compress.storage import storage_report
    from qat.train import accuracy

    report = storage_report(ckpt)
    nbytes = report["total"]["bytes"][storage_key]
    error = 100 * (1 - accuracy(ckpt.model(), ds.test.images, ds.test.labels))
    return {"step": step, "encoding": storage_key, "error_percent": round(error, 2), "bytes": nbytes,
            "ratio": round(reference_bytes / nbytes, 2), "nonzeros": report["total"]["nonzeros"],
            "storage": report["total"], "layers": report["layers"]}


def build_and_verify(ckpt_path: Path, args) -> dict:
    from flows.build import run_build
    from flows.config import BuildConfig

    run = args.work / "build"

    def path(step: str) -> Path:
        return run / step / "report.json"

    def report(step: str) -> dict:
        return json.loads(path(step).read_text())

    if not path("verify").is_file():  # a finished build in --work is reused
        run_build(BuildConfig(checkpoint=ckpt_path, data="mnist", data_dir=args.data_dir, out=run, to_step="verify"))

    est, ver = report("estimate"), report("verify")
    seconds = sum(json.loads(p.read_text()).get("seconds", 0) for p in run.glob("*/report.json"))
    return {"seconds": round(seconds, 1), "verified": ver["passed"], "images": ver["images"],
            "accuracy": ver["stages"]["dataflow"]["accuracy"],
            "excused_at_boundary": {s: r["at_rounding_boundary"] for s, r in ver["stages"].items()},
            "cycles_per_image": est["cycles_per_image"], "fps": est["fps"], "bound": est["binding"],
            "label": "estimate: FINN's models; verification: simulated (FINN Python execution)"}


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from qat.compress.sharing import WeightSharing
    from qat.compress.storage import sparse_cpu_effect
    from qat.compress.unstructured import UnstructuredPrune
    from qat.data import load_dataset
    from qat.models import parse_model_name
    from qat.train import TrainConfig, load_checkpoint, train_to_file

    args.work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("mnist", args.data_dir)
    dense_path = args.dense or args.work / "dense.pt"
    if not dense_path.is_file():
        train_to_file(parse_model_name("lenet-w8a8"), ds, TrainConfig(epochs=args.dense_epochs, shift=1),
                      dense_path, progress=False)
    dense = load_checkpoint(dense_path)
    prune = UnstructuredPrune(sparsity=floats(args.sparsity), events=10, ramp=0.5)
    pruned = apply_stage(prune, dense, ds, TrainConfig(epochs=args.prune_epochs, lr=0.01, dropout=0.1, shift=1),
                         args.work / "pruned.pt")
    bits = [int(b) for b in args.share_bits.split(",")]
    share = WeightSharing(bits=bits[0] if len(bits) == 1 else bits)
    shared = apply_stage(share, pruned, ds, TrainConfig(epochs=args.share_epochs, lr=0.002, dropout=0.1, shift=1),
                         args.work / "shared.pt")

    from qat.compress.storage import storage_report

    reference = storage_report(dense)["total"]["bytes"]["dense_float32"]
    rows = [stage_row("dense, float32", dense, ds, "dense_float32", reference),
            stage_row("dense, 8-bit weights", dense, ds, "dense_quant", reference),
            stage_row("pruned (relative index, 8-bit values)", pruned, ds, "relative", reference),
            stage_row("+ shared (k-means codebook)", shared, ds, "shared", reference),
            stage_row("+ Huffman", shared, ds, "shared_huffman", reference)]
    final = rows[-1]
    result = {"benchmark": "deep_compression", "model": "lenet-w8a8 (784-300-100-10)", "data": "mnist",
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {args.threads} thread(s)",
              "reference": "the zoo's lenet-w8a8 trained here (dense); its float32 size counts every weight and "
                           "folded batch-norm parameter as float32",
              "paper": PAPER, "target": {"ratio": TARGET_RATIO, "error_percent": TARGET_ERROR},
              "options": {"prune": prune.to_dict(), "share": share.to_dict(), "dense_epochs": args.dense_epochs,
                          "prune_epochs": args.prune_epochs, "share_epochs": args.share_epochs},
              "rows": rows, "met": {"ratio": final["ratio"] >= TARGET_RATIO,
                                    "error": final["error_percent"] <= TARGET_ERROR},
              "sparsity": prune.report(shared), "sharing": share.report(shared),
              "cpu_sparse": sparse_cpu_effect(shared),
              "fpga_effect": {"unstructured": prune.fpga_effect, "share": share.fpga_effect}}
    if not args.no_build:
        result["build"] = build_and_verify(args.work / "shared.pt", args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deep_compression.json").write_text(json.dumps(result, indent=2))
    (args.out / "deep_compression.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = ["# Deep Compression, LeNet-300-100 on MNIST", "",
             f"Model: {r['model']}; reference: {r['reference']}. Error: measured (PyTorch, 10,000 test images). "
             "Bytes: computed exactly from the quantised weights (qat.compress.storage).", ""]
    lines += markdown_table(["step", "encoding", "test error", "bytes", "vs float32", "nonzero weights"],
                            [[row["step"], row["encoding"], f"{row['error_percent']:.2f}%", f"{row['bytes']:,}",
                              f"{row['ratio']:.1f}x", f"{row['nonzeros']:,}"] for row in r["rows"]])
    p = r["paper"]
    lines += ["", f"Paper (Han et al.): {p['dense_kb']} KB -> {p['compressed_kb']} KB ({p['ratio']}x), error "
              f"{p['dense_error']}% -> {p['error']}%. Target here: >= {r['target']['ratio']:.0f}x at <= "
              f"{r['target']['error_percent']}% error: ratio {'met' if r['met']['ratio'] else 'MISSED'}, "
              f"error {'met' if r['met']['error'] else 'MISSED'}.", "",
              "Per layer (final model):", ""]
    lines += markdown_table(["layer", "shape", "nonzeros", "shared values", "Huffman bytes", "run bits"],
                            [[layer["layer"], layer["shape"], f"{layer['nonzeros']:,}", share["shared_values"],
                              f"{layer['bytes']['shared_huffman']:,}", layer["run_bits"]["shared_huffman"]]
                             for layer, share in zip(r["rows"][-1]["layers"], r["sharing"]["layers"])])
    lines += ["", f"CPU, dense vs CSR sparse matmul per layer ({r['cpu_sparse']['label']}):", ""]
    lines += markdown_table(["layer", "batch", "density", "dense us", "CSR us", "speedup"],
                            [[c["layer"], c["batch"], f"{c['density']:.3f}", c["dense_us"], c["csr_us"],
                              f"{c['speedup']}x"] for c in r["cpu_sparse"]["layers"]])
    lines += ["", f"FPGA effect: pruning: {r['sparsity']['fpga_effect']}. Sharing: {r['sharing']['fpga_effect']}."]
    for share in r["sharing"]["layers"]:
        lines.append(f"- {share['layer']}: {share['finn_effect']}")
    if "build" in r:
        b = r["build"]
        lines += ["", f"Flow build of the compressed checkpoint ({b['label']}): verified {b['verified']} on "
                  f"{b['images']:,} images, accuracy {100 * b['accuracy']:.2f}%, {b['cycles_per_image']:,} cycles/image "
                  f"({b['bound']}), {b['seconds']} s; images excused at a rounding boundary: {b['excused_at_boundary']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
