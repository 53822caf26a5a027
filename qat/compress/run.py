"""Run a compression: validate everything, then base model, techniques in order, compressed.pt, candidate report.

Layout of ``out``::

    config.yaml              the run's configuration (a resumed run must match its base fields)
    00_base/checkpoint.pt    --checkpoint copied, or --model trained for base_epochs
    01_<technique>/          technique 1: technique.json (its options), checkpoint.pt, its own files
    02_<technique>/ ...
    compressed.pt            the last technique's checkpoint: a normal qnn-flows checkpoint
    candidate/               candidate.json, candidate.md, the build (flows.candidate)

Resumable: a finished folder's checkpoint is reused, never overwritten; a folder holding
another technique's options, or a run folder holding another base model, is refused.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from host.errors import ConfigError, DatasetError
from qat.compress.base import CompressContext
from qat.compress.config import CompressConfig, load_techniques

BASE_FIELDS = ("model", "checkpoint", "data", "base_epochs", "seed")


@dataclass
class CompressResult:
    checkpoint: "object"  # qat.train.Checkpoint of compressed.pt
    path: Path  # compressed.pt
    steps: list[dict]  # per technique: name, options, folder, reused, accuracy, report
    candidate: dict | None  # the candidate report (flows.candidate), None when candidate is "none"


def compress(cfg: CompressConfig, progress: bool = True) -> CompressResult:
    """Apply ``cfg.techniques`` in order to the base model; write compressed.pt and the candidate report."""
    import torch

    load_techniques()
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    ds, base_spec, base_data = _inputs(cfg)
    spec = base_spec
    for tech in cfg.techniques:  # validate the whole run before any work
        tech.check(spec, base_data)
        spec = tech.planned_spec(spec)
    _check_run_dir(cfg, out)
    ckpt = _base(cfg, ds, out / "00_base", progress)
    ctx = CompressContext(ds.gather(ckpt.data.kept_pixels), cfg.train_config(), _default_hooks(), out, progress,
                          base_ds=ds)
    steps = []
    for i, tech in enumerate(cfg.techniques, 1):
        folder = out / f"{i:02d}_{tech.name}"
        ctx.out = folder
        reused = _claim(folder, tech)
        tech.setup(ctx)
        path = folder / "checkpoint.pt"
        if reused:
            from qat.train import load_checkpoint

            ckpt = load_checkpoint(path)
        else:
            ckpt = tech.apply(ckpt, ctx)
            ckpt.save(path)
        ctx.ds = ds.gather(ckpt.data.kept_pixels)  # the data follows the checkpoint's input
        steps.append({"name": tech.name, "options": tech.to_dict(), "folder": str(folder), "reused": reused,
                      "fpga_effect": tech.fpga_effect, "test_accuracy": ckpt.metrics.get("test_accuracy"),
                      "spec": ckpt.spec.to_dict(), "report": tech.report(ckpt)})
    final = _write_compressed(out, ckpt, steps)
    candidate = None
    if cfg.candidate != "none":
        from flows.candidate import candidate_report

        candidate = candidate_report(cfg, final, steps, out / "candidate")
    return CompressResult(ckpt, final, steps, candidate)


def _default_hooks():
    from qat.train import TrainHooks

    return TrainHooks()


def _inputs(cfg: CompressConfig):
    """Dataset, starting spec and DatasetInfo; a checkpoint for other images is refused."""
    from qat.data import load_dataset
    from qat.models import parse_model_name
    from qat.train import DatasetInfo, load_checkpoint

    ds = load_dataset(cfg.data, cfg.data_dir)
    info = DatasetInfo.of(ds)
    if cfg.checkpoint is None:
        return ds, parse_model_name(cfg.model), info
    ckpt = load_checkpoint(cfg.checkpoint)
    info = DatasetInfo.of(ds.gather(ckpt.data.kept_pixels))
    if tuple(ckpt.data.image_shape) != tuple(info.image_shape) or ckpt.data.num_classes != info.num_classes:
        raise DatasetError(f"--checkpoint {cfg.checkpoint} was trained on {ckpt.data.name} {ckpt.data.image_shape} "
                           f"images, {ckpt.data.num_classes} classes; --data {cfg.data} has {info.image_shape}, "
                           f"{info.num_classes}: pass matching --data")
    return ds, ckpt.spec, info


def _check_run_dir(cfg: CompressConfig, out: Path) -> None:
    """Write config.yaml, or check that the one there describes the same base run."""
    path = out / "config.yaml"
    if path.is_file():
        import yaml

        old = yaml.safe_load(path.read_text()) or {}
        new = cfg.to_dict()
        diff = [k for k in BASE_FIELDS if old.get(k) != new.get(k)]
        if diff:
            raise ConfigError(f"{out} holds another compression run (its {', '.join(diff)} differ); use another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create --out {out}: {exc.strerror}") from None
    cfg.save(path)


def _base(cfg: CompressConfig, ds, folder: Path, progress: bool):
    from qat.models import parse_model_name
    from qat.train import load_checkpoint, train

    path = folder / "checkpoint.pt"
    if path.is_file():
        return load_checkpoint(path)
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.checkpoint is not None:
        shutil.copyfile(cfg.checkpoint, path)  # byte for byte
        return load_checkpoint(path)
    ckpt = train(parse_model_name(cfg.model), ds, cfg.base_train_config(), progress=progress)
    ckpt.save(path)
    return ckpt


def _claim(folder: Path, tech) -> bool:
    """True when ``folder`` holds this technique's finished checkpoint; refuse one of other options."""
    record = folder / "technique.json"
    if record.is_file():
        old = json.loads(record.read_text())
        if old != tech.to_dict():
            raise ConfigError(f"{folder} holds {old.get('name')} with options {old}, not {tech.to_dict()}; "
                              "use another --out (finished steps are never overwritten)")
        return (folder / "checkpoint.pt").is_file()
    folder.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(tech.to_dict(), indent=2))
    return False


def _write_compressed(out: Path, ckpt, steps: list[dict]) -> Path:
    """compressed.pt = the last step's checkpoint (the base when there is none); refuse to replace another."""
    last = Path(steps[-1]["folder"]) / "checkpoint.pt" if steps else out / "00_base" / "checkpoint.pt"
    final = out / "compressed.pt"
    if final.is_file():
        if final.read_bytes() != last.read_bytes():
            raise ConfigError(f"{final} holds another run's result; use another --out, or remove it")
        return final
    shutil.copyfile(last, final)
    return final
