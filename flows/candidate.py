"""The candidate report of a compression run: what the compressed model costs on FPGA and CPU (and GPU).

``candidate_report(cfg, checkpoint, steps, out)`` writes ``out/candidate.json`` and
``out/candidate.md``:

- accuracy on the test split (PyTorch, measured) and parameters;
- storage: :func:`storage_columns` (qat.compress.storage's totals);
- the FPGA estimate: the build flow (flows.build.run_build) on the compressed checkpoint to
  ``estimate`` (cfg.candidate "estimate") or through verify and package ("full": every stage
  bit-exact on the whole test split): cycles per layer, images/s, latency, binding bound,
  LUT/BRAM/DSP, fits or not (estimated, FINN's models). A model whose input quantiser has
  fewer bits than the raw pixel is built with ``input_quant`` host (flows.config.input_quant_for):
  the host quantises, the DMA streams in_bits per pixel, and the estimate's input-DMA bound
  is that of the narrow stream;
- CPU (and GPU when CUDA is present): flows.bench on the package (``full`` only): batch-1
  p50/p99 and best throughput of PyTorch (Brevitas) and onnxruntime, outputs checked
  against the verified design, per-layer times from forward hooks (measured here);
- ``fpga_effect`` per technique, and the per-layer table: CPU per-layer time beside FPGA cycles.
"""
from __future__ import annotations

import json
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
    deploy, fpga = _build(cfg, checkpoint, out / "build", ckpt.spec.in_bits)
    report["fpga"] = fpga
    report["cpu"] = _bench(deploy, checkpoint, out / "bench") if deploy else {
        "skipped": "candidate 'estimate': no package to benchmark (use candidate 'full')"}
    report["layers"] = layer_table(report)
    (out / "candidate.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "candidate.md").write_text(markdown(report))
    return report


def _build(cfg, checkpoint: Path, run_dir: Path, in_bits: int) -> tuple[Path | None, dict]:
    """Run the build flow to estimate (or through package); the estimate and the verification."""
    from flows.build import run_build
    from flows.config import BuildConfig, input_quant_for

    to = "package" if cfg.candidate == "full" else "estimate"
    bcfg = BuildConfig(board=cfg.board, checkpoint=Path(checkpoint).resolve(), data=cfg.data,
                       data_dir=Path(cfg.data_dir) if cfg.data_dir else None, out=run_dir, to_step=to,
                       allow_overflow=True, target_fps=cfg.target_fps, input_quant=input_quant_for(in_bits))
    reports = run_build(bcfg)
    est = reports["estimate"]
    fpga = {k: est[k] for k in ("kind", "board", "clock_mhz", "cycles_per_image", "compute_cycles", "io_in_cycles",
                                "binding", "fps", "latency_us", "fits", "total", "capacity", "in_bytes",
                                "in_transfer_bits", "dma_in_cycles", "dma_in_why", "ii_why")}
    fpga["input_quant"] = bcfg.input_quant
    fpga["input_quantiser"] = reports.get("hw_layers", {}).get("input_quantiser")
    fpga["layers"] = [{"name": l["name"], "op_type": l["op_type"], "cycles": l["cycles"], "folding": l["folding"],
                       "resources": l["resources"]} for l in est["layers"]]
    fpga["utilisation"] = {r: est["total"][r] / est["capacity"][r] for r in est["total"] if est["capacity"].get(r)}
    if "verify" in reports:
        fpga["verified"] = {"passed": reports["verify"]["passed"], "summary": reports["verify"]["summary"]}
    return (run_dir / "deploy" if to == "package" else None), fpga


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
    f = r["fpga"]
    util = ", ".join(f"{k} {100 * v:.1f}%" for k, v in f["utilisation"].items() if v)
    lines = [f"# Candidate: {json.dumps(r['model'])} on {r['data']}, {r['board']}", "",
             f"- test accuracy: **{100 * r['test_accuracy']['value']:.2f}%** ({r['test_accuracy']['images']} images, "
             "measured, PyTorch)",
             f"- weights: {r['weights']:,}; storage: " + ", ".join(f"{k} {v:,}" for k, v in r["storage"].items()),
             f"- FPGA (estimated, FINN's models): {f['cycles_per_image']:,} cycles/image, {f['fps']:,.0f} images/s, "
             f"latency {f['latency_us']:.2f} us, bound: {f['binding']}, fits: {'yes' if f['fits'] else 'no'} ({util})",
             f"- input quantiser on the {f['input_quant']} ({f['input_quantiser'] or 'none moved'}); input DMA: "
             f"{f['in_bytes']} B/image, {f['dma_in_cycles']:.1f} cycles ({f['dma_in_why']})"]
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
