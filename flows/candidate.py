"""The candidate report of a compression run: what the compressed model costs on FPGA and CPU (and GPU).

``candidate_report(cfg, checkpoint, steps, out)`` writes ``out/candidate.json`` and
``out/candidate.md``:

- accuracy on the test split (PyTorch, measured) and parameters;
- storage: :func:`storage_columns` (qat.compress.storage's totals);
- the FPGA estimate: the build flow (flows.build.run_build) on the compressed checkpoint to
  ``estimate`` (cfg.candidate "estimate") or through verify and package ("full": every stage
  bit-exact on the whole test split): cycles per layer, images/s, latency, binding bound,
  LUT/BRAM/DSP, fits or not (estimated, FINN's models); plus the input-DMA bound when the
  host streams the quantised input (in_bits per pixel): *modelled*, since today's graph
  input is the raw 8-bit pixel (the input datatype from the model is another change);
- CPU (and GPU when CUDA is present): flows.bench on the package (``full`` only): batch-1
  p50/p99 and best throughput of PyTorch (Brevitas) and onnxruntime, outputs checked
  against the verified design, per-layer times from forward hooks (measured here);
- ``fpga_effect`` per technique, and the per-layer table: CPU per-layer time beside FPGA cycles.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from host.results import markdown_table

BENCH_TARGETS = ("cpu-brevitas", "cpu-onnxruntime", "gpu-torch-fp32")
BENCH_BATCHES = (1, 256, 4096)


def storage_columns(ckpt) -> dict:
    """Total bytes under each encoding (qat.compress.storage: dense float32, dense at the quantised
    bits, CSR, bitmask, relative, shared, shared + Huffman), computed exactly from the weights."""
    from qat.compress.storage import storage_report

    return storage_report(ckpt)["total"]["bytes"]


def candidate_report(cfg, checkpoint: Path, steps: list[dict], out: Path) -> dict:
    """Measure and estimate the compressed checkpoint; write candidate.json/.md under ``out``."""
    from qat.data import load_dataset
    from qat.train import accuracy, load_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    ckpt = load_checkpoint(checkpoint)
    ds = load_dataset(cfg.data, cfg.data_dir).gather(ckpt.data.kept_pixels)
    params = sum(v.numel() for k, v in ckpt.state_dict.items() if k.endswith(".weight"))
    report = {"checkpoint": str(checkpoint), "model": ckpt.spec.to_dict(), "data": cfg.data, "board": cfg.board,
              "test_accuracy": {"value": accuracy(ckpt.model(), ds.test.images, ds.test.labels),
                                "images": len(ds.test), "kind": "measured (PyTorch)"},
              "weights": params, "storage": storage_columns(ckpt),
              "techniques": [{k: s[k] for k in ("name", "options", "fpga_effect", "test_accuracy", "report")}
                             for s in steps]}
    deploy, fpga = _build(cfg, checkpoint, out / "build")
    report["fpga"] = fpga
    report["fpga"]["host_quantised_input"] = quantised_input_bound(ckpt, fpga)
    report["cpu"] = _bench(deploy, checkpoint, out / "bench") if deploy else {
        "skipped": "candidate 'estimate': no package to benchmark (use candidate 'full')"}
    report["layers"] = layer_table(report)
    (out / "candidate.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "candidate.md").write_text(markdown(report))
    return report


def _build(cfg, checkpoint: Path, run_dir: Path) -> tuple[Path | None, dict]:
    """Run the build flow to estimate (or through package); the estimate and the verification."""
    from flows.build import run_build
    from flows.config import BuildConfig

    to = "package" if cfg.candidate == "full" else "estimate"
    bcfg = BuildConfig(board=cfg.board, checkpoint=Path(checkpoint).resolve(), data=cfg.data,
                       data_dir=Path(cfg.data_dir) if cfg.data_dir else None, out=run_dir, to_step=to,
                       allow_overflow=True, target_fps=cfg.target_fps)
    reports = run_build(bcfg)
    est = reports["estimate"]
    fpga = {k: est[k] for k in ("kind", "board", "clock_mhz", "cycles_per_image", "compute_cycles", "io_in_cycles",
                                "binding", "fps", "latency_us", "fits", "total", "capacity", "in_bytes")}
    fpga["layers"] = [{"name": l["name"], "op_type": l["op_type"], "cycles": l["cycles"], "folding": l["folding"],
                       "resources": l["resources"]} for l in est["layers"]]
    fpga["utilisation"] = {r: est["total"][r] / est["capacity"][r] for r in est["total"] if est["capacity"].get(r)}
    if "verify" in reports:
        fpga["verified"] = {"passed": reports["verify"]["passed"], "summary": reports["verify"]["summary"]}
    return (run_dir / "deploy" if to == "package" else None), fpga


def quantised_input_bound(ckpt, fpga: dict) -> dict:
    """Input-DMA cycles per image if the host streamed in_bits-wide quantised pixels (modelled)."""
    from boards import load_board

    board = load_board(fpga["board"])
    pixels = math.prod(ckpt.data.image_shape)
    in_bytes = math.ceil(pixels * ckpt.spec.in_bits / 8)
    io = math.ceil(in_bytes / board.axi_bytes_per_cycle)
    cycles = max(io, fpga["compute_cycles"])
    return {"kind": "modelled", "in_bits": ckpt.spec.in_bits, "in_bytes": in_bytes, "io_in_cycles": io,
            "cycles_per_image": cycles, "fps": board.clock_mhz * 1e6 / cycles,
            "binding": "I/O (input DMA)" if io >= fpga["compute_cycles"] else "compute",
            "note": "the host quantises pixels to in_bits and packs them (the graph's input is still the raw pixel); "
                    "compute at this build's folding: fold for the faster rate with target_fps"}


def _bench(deploy: Path, checkpoint: Path, out: Path) -> dict:
    from flows import bench

    rep = bench.run(deploy, BENCH_TARGETS, BENCH_BATCHES, repeats=10, out=out, checkpoint=checkpoint)
    rows = {}
    for r in rep["results"]:
        if r["status"] != "ok":
            rows[r["name"]] = {"status": r["status"], "reason": r.get("reason")}
            continue
        rows[r["name"]] = {"status": "ok", "label": r["label"], "note": r["note"],
                           "agreement": r["accuracy"]["agreement"], "p50_s": r["latency_s"]["p50"],
                           "p99_s": r["latency_s"]["p99"], "best_images_per_second": r["best_images_per_second"],
                           "best_batch": r["best_batch"], "layers": r.get("layers")}
    return rows


def layer_table(report: dict) -> list[dict]:
    """FPGA layers (cycles) beside the CPU's (Brevitas, seconds per image): each CPU weight layer with the
    BatchNorm and quantiser after it, beside the matching matrix unit; the input quantiser beside the
    first Thresholding layer when it comes before the first matrix unit."""
    fpga = report["fpga"]["layers"]
    cpu = _cpu_groups(((report.get("cpu") or {}).get("cpu-brevitas") or {}).get("layers") or [])
    matrix = [i for i, l in enumerate(fpga) if l["op_type"].startswith(("MVAU", "VVAU"))]
    slots = {}
    if cpu and cpu[0]["name"].startswith("input") and fpga and fpga[0]["op_type"].startswith("Thresholding"):
        slots[0] = cpu.pop(0)
    elif cpu and cpu[0]["name"].startswith("input"):
        cpu.pop(0)
    slots.update(zip(matrix, cpu))
    return [{"fpga_layer": l["name"], "fpga_cycles": l["cycles"], "cpu_layer": slots.get(i, {}).get("name"),
             "cpu_us_per_image": slots.get(i, {}).get("us")} for i, l in enumerate(fpga)]


def _cpu_groups(layers: list[dict]) -> list[dict]:
    """Per-module CPU times summed per weight layer (QuantLinear/QuantConv2d and what follows it)."""
    groups = [{"name": "input (quantiser)", "us": 0.0}]
    for l in layers:
        if "QuantLinear" in l["name"] or "QuantConv2d" in l["name"]:
            groups.append({"name": l["name"].split()[0] + " +BN+act", "us": 0.0})
        groups[-1]["us"] += l["seconds_per_image"] * 1e6
    return groups if len(groups) > 1 else []


def markdown(r: dict) -> str:
    f, q = r["fpga"], r["fpga"]["host_quantised_input"]
    util = ", ".join(f"{k} {100 * v:.1f}%" for k, v in f["utilisation"].items() if v)
    lines = [f"# Candidate: {json.dumps(r['model'])} on {r['data']}, {r['board']}", "",
             f"- test accuracy: **{100 * r['test_accuracy']['value']:.2f}%** ({r['test_accuracy']['images']} images, "
             "measured, PyTorch)",
             f"- weights: {r['weights']:,}; storage: " + ", ".join(f"{k} {v:,}" for k, v in r["storage"].items()),
             f"- FPGA (estimated, FINN's models): {f['cycles_per_image']:,} cycles/image, {f['fps']:,.0f} images/s, "
             f"latency {f['latency_us']:.2f} us, bound: {f['binding']}, fits: {'yes' if f['fits'] else 'no'} ({util})",
             f"- FPGA with host-quantised {q['in_bits']}-bit input (modelled): {q['io_in_cycles']} DMA cycles, "
             f"{q['cycles_per_image']:,} cycles/image, {q['fps']:,.0f} images/s, bound: {q['binding']}"]
    if "verified" in f:
        lines.append(f"- verification: {'passed' if f['verified']['passed'] else 'FAILED'}: {f['verified']['summary']}")
    lines += [""] + markdown_table(["technique", "fpga_effect", "accuracy after", "figures"], [
        [t["name"], t["fpga_effect"], "-" if t["test_accuracy"] is None else f"{100 * t['test_accuracy']:.2f}%",
         json.dumps(t["report"])] for t in r["techniques"]])
    lines += [""] + markdown_table(["target", "p50 batch 1", "p99 batch 1", "best images/s (batch)", "note"], [
        [name, "-", "-", "-", f"{c['status']}: {c['reason']}"] if c["status"] != "ok" else
        [name, f"{1e6 * c['p50_s']:.1f} us", f"{1e6 * c['p99_s']:.1f} us",
         f"{c['best_images_per_second']:,.0f} ({c['best_batch']})", c["label"]]
        for name, c in (r["cpu"].items() if "skipped" not in r["cpu"] else [])])
    lines += ["", "Per layer: FPGA cycles per image (estimated) beside CPU time per image (measured, Brevitas, "
              "forward hooks, batch 256; a weight layer with the BatchNorm and quantiser after it).", ""]
    lines += markdown_table(["FPGA layer", "cycles", "CPU layer", "us/image"], [
        [row["fpga_layer"] or "-", "-" if row["fpga_cycles"] is None else row["fpga_cycles"], row["cpu_layer"] or "-",
         "-" if row["cpu_us_per_image"] is None else f"{row['cpu_us_per_image']:.2f}"] for row in r["layers"]])
    return "\n".join(lines) + "\n"
