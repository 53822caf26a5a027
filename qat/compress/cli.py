"""``flows compress``: command-line options -> CompressConfig -> qat.compress.run.compress."""
from __future__ import annotations

import json

from host.errors import ConfigError


def techniques_from_options(o: dict) -> list[dict]:
    """--distill first (its loss then drives every later fine-tune; it fine-tunes on its own only when
    it is the only technique), --prune, --technique..., --input-bits last."""
    out = []
    if o["prune"] is not None:
        out.append({"name": "prune", "ratio": _ratio(o["prune"]), "schedule": o["prune_schedule"]})
    for text in o["technique"] or []:
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--technique {text!r} is not JSON ({exc.msg}); e.g. '{{\"name\": \"prune\", "
                              "\"ratio\": 0.5}'") from None
    if o["input_bits"] is not None:
        out.append({"name": "input_bits", "bits": o["input_bits"]})
    if o["distill"] is not None:
        out.insert(0, {"name": "distill", "teacher": str(o["distill"]), "fine_tune": not out})
    return out


def _ratio(text: str):
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--prune {text!r}: give a ratio in [0, 1) or one per layer, e.g. 0.5,0.75") from None
    return values[0] if len(values) == 1 else values


def run_compress(o: dict) -> None:
    from qat.compress.config import config_from_options
    from qat.compress.run import compress

    fields = {k: (str(o[k]) if o[k] is not None and k in ("checkpoint", "data_dir", "out") else o[k])
              for k in ("model", "checkpoint", "data", "data_dir", "epochs", "base_epochs", "lr", "seed", "board",
                        "candidate", "out", "threads")}
    cfg = config_from_options(str(o["config"]) if o["config"] else None, techniques_from_options(o), **fields)
    if o["save_config"] is not None:
        cfg.save(o["save_config"])
        print(f"wrote {o['save_config']}")
        return
    result = compress(cfg)
    for s in result.steps:
        acc = s["test_accuracy"]
        print(f"{s['name']:<11} {'reused' if s['reused'] else 'done':<6} accuracy "
              f"{'-' if acc is None else f'{100 * acc:.2f}%'}  fpga_effect {s['fpga_effect']}  {s['report']}")
    print(f"wrote {result.path}")
    if result.candidate:
        f = result.candidate["fpga"]
        print(f"candidate: {100 * result.candidate['test_accuracy']['value']:.2f}% test accuracy; "
              f"FPGA (estimated) {f['cycles_per_image']} cycles/image, {f['fps']:,.0f} images/s, {f['binding']}, "
              f"fits {f['fits']}; report {cfg.out}/candidate/candidate.md")
