"""The typed configuration of one compression run; round-trips to YAML/JSON.

```yaml
model: lenet-w8a8            # a zoo model to train first (base_epochs), or
checkpoint: base.pt          # a trained qnn-flows checkpoint to start from
data: mnist
data_dir: /path/to/mnist
out: build/c1
techniques:                  # applied in this order, each fine-tuning `epochs`
  - {name: prune, ratio: 0.75, schedule: agp}
  - {name: input_bits, bits: 2}
epochs: 5
candidate: full              # none | estimate (build to the FPGA estimate) | full (verify, package, CPU bench)
```
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from host.errors import ConfigError
from qat.compress.base import Technique, load_techniques, technique_from_dict

CANDIDATE_LEVELS = ("none", "estimate", "full")
FIELDS_DOC = "model or checkpoint, data, data_dir, out, techniques, epochs, base_epochs, lr, batch_size, seed, " \
             "dropout, board, target_fps, candidate, threads"


@dataclass(frozen=True)
class CompressConfig:
    """One ``flows compress``: the starting model, the techniques in order, how to fine-tune, where to write."""

    out: str
    techniques: tuple[Technique, ...] = ()
    model: str | None = None  # zoo model trained first for base_epochs, when no checkpoint is given
    checkpoint: str | None = None  # trained qnn-flows checkpoint to start from
    data: str = "digits"
    data_dir: str | None = None
    epochs: int = 5  # fine-tuning epochs of each technique
    base_epochs: int = 20  # training of --model when no checkpoint is given
    lr: float = 0.01  # peak fine-tuning learning rate (one-cycle); the base trains at flows train's 0.05
    batch_size: int = 128
    seed: int = 0
    dropout: float = 0.0
    board: str = "pynq-z2"  # the candidate's FPGA estimate
    target_fps: float | None = None  # the candidate build's folding target (default: the flow's DMA-bound rule)
    candidate: str = "full"  # none, estimate, full (see module docstring)
    threads: int = 1  # torch CPU threads

    def __post_init__(self):
        object.__setattr__(self, "techniques", tuple(self.techniques))
        if (self.model is None) == (self.checkpoint is None):
            raise ConfigError("compress: give --model (a zoo model to train first) or --checkpoint (a trained one), "
                              "exactly one")
        if self.candidate not in CANDIDATE_LEVELS:
            raise ConfigError(f"compress: option 'candidate' is {self.candidate!r}; use {', '.join(CANDIDATE_LEVELS)}")
        for name in ("epochs", "base_epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"compress: option '{name}' must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"compress: option 'lr' must be > 0 and 'dropout' in [0, 1), got {self.lr}, {self.dropout}")
        from qat.data import check_data_option

        check_data_option(self.data, self.data_dir, prefix="compress: ")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["techniques"] = [t.to_dict() for t in self.techniques]
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "compression config") -> "CompressConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{source} must be a mapping with fields {FIELDS_DOC}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; fields are {FIELDS_DOC}")
        if "out" not in d:
            raise ConfigError(f"{source}: field 'out' (the run folder) is missing")
        techniques = d.get("techniques") or []
        if not isinstance(techniques, list):
            raise ConfigError(f"{source}: field 'techniques' must be a list of {{name: ..., options}}")
        load_techniques()
        return cls(**{**d, "techniques": tuple(technique_from_dict(t, source) for t in techniques)})

    def save(self, path: str | Path) -> None:
        """Write as JSON (``.json``) or YAML (anything else)."""
        import yaml

        path = Path(path)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else yaml.safe_dump(
            self.to_dict(), sort_keys=False)
        path.write_text(text)

    def train_config(self):
        """Fine-tuning of each technique."""
        from qat.train import TrainConfig

        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
                           dropout=self.dropout)

    def base_train_config(self):
        """Training of --model: ``flows train``'s recipe (its learning rate) for base_epochs."""
        from qat.train import TrainConfig

        return TrainConfig(epochs=self.base_epochs, batch_size=self.batch_size, seed=self.seed, dropout=self.dropout)


def load_config(path: str | Path, **overrides) -> CompressConfig:
    """Read a YAML/JSON compression config; ``overrides`` (non-None) replace its fields."""
    from qat.config_file import read_yaml

    data = read_yaml(path, "compression config")
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return CompressConfig.from_dict(data, source=f"compression config {path}")


def config_from_options(config: str | None, techniques: list[dict], **fields) -> CompressConfig:
    """The command line's config: ``--config FILE`` with options over it, or the options alone.
    ``techniques`` (from --distill, --prune, --input-bits, --technique) are appended to the file's."""
    load_techniques()
    if config is not None:
        cfg = load_config(config, **fields)
        extra = tuple(technique_from_dict(t, "command line") for t in techniques)
        return dataclasses.replace(cfg, techniques=cfg.techniques + extra)
    if fields.get("out") is None:
        raise ConfigError("compress: give --out (the run folder) or --config FILE")
    given = {k: v for k, v in fields.items() if v is not None}
    if "data" not in given and given.get("checkpoint"):  # default: the dataset the checkpoint was trained on
        from qat.train import load_checkpoint

        given["data"] = load_checkpoint(given["checkpoint"]).data.name
    return CompressConfig(**given, techniques=tuple(technique_from_dict(t, "command line") for t in techniques))
