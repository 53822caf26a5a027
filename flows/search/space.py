"""The search space of ``flows search``: per-layer choices, declared in a file the user can edit.

One entry per layer of the architecture (qat.models): weight bits per weight layer,
activation bits per hidden activation, a structured-pruning ratio per hidden layer
(the layer keeps ``width * (1 - ratio)`` neurons, snapped down to a multiple of
``width_multiple`` and at least that, so folding still has divisors to choose
from), and the input quantiser's bits. Each entry is a list of choices; a list of one
fixes the value. YAML/JSON, e.g.::

    arch: lenet
    weight_bits: [[2, 4, 8], [1, 2, 4], [2, 4, 8]]   # or one list for every layer
    act_bits: [1, 2, 4]
    in_bits: [1, 2, 8]
    prune: [0.0, 0.25, 0.5, 0.75]
    width_multiple: 8
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from flows.errors import ConfigError
from qat.models import ARCHS, MAX_BITS, ModelSpec, default_widths, validate

DEFAULT_WEIGHT_BITS = (1, 2, 4, 8)
DEFAULT_ACT_BITS = (1, 2, 4)
DEFAULT_IN_BITS = (1, 2, 4, 8)
DEFAULT_PRUNE = (0.0, 0.25, 0.5, 0.75)
FIELDS = ("arch", "weight_bits", "act_bits", "in_bits", "prune", "width_multiple")


@dataclass(frozen=True)
class SearchSpace:
    """Choices per layer for one MLP architecture (CNV is not searched: see README)."""

    arch: str
    weight_bits: tuple[tuple[int, ...], ...]  # one tuple of choices per weight layer
    act_bits: tuple[tuple[int, ...], ...]  # one per hidden activation
    in_bits: tuple[int, ...]
    prune: tuple[tuple[float, ...], ...]  # one per hidden layer: fraction of its neurons removed
    width_multiple: int = 8

    @classmethod
    def default(cls, arch: str) -> "SearchSpace":
        return cls.from_dict({"arch": arch, "weight_bits": list(DEFAULT_WEIGHT_BITS),
                              "act_bits": list(DEFAULT_ACT_BITS), "in_bits": list(DEFAULT_IN_BITS),
                              "prune": list(DEFAULT_PRUNE)})

    @classmethod
    def from_dict(cls, d: dict, source: str = "search space") -> "SearchSpace":
        """Validate every field, naming it; a flat list applies to every layer."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source} must be a mapping with fields {', '.join(FIELDS)}")
        unknown = sorted(str(k) for k in d if k not in FIELDS)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; fields are {', '.join(FIELDS)}")
        arch = d.get("arch")
        if arch not in ARCHS or arch == "cnv":
            raise ConfigError(f"{source}: field 'arch' is {arch!r}; searchable: "
                              f"{', '.join(a for a in ARCHS if a != 'cnv')}")
        n_hidden = len(default_widths(arch))
        multiple = d.get("width_multiple", 8)
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ConfigError(f"{source}: field 'width_multiple' must be a positive integer, got {multiple!r}")
        space = cls(arch,
                    _per_layer(d.get("weight_bits", list(DEFAULT_WEIGHT_BITS)), n_hidden + 1, "weight_bits", source, _bit),
                    _per_layer(d.get("act_bits", list(DEFAULT_ACT_BITS)), n_hidden, "act_bits", source, _bit),
                    _choices(d.get("in_bits", list(DEFAULT_IN_BITS)), "in_bits", source, _bit),
                    _per_layer(d.get("prune", list(DEFAULT_PRUNE)), n_hidden, "prune", source, _ratio),
                    multiple)
        for i, w in enumerate(default_widths(arch)):
            if space.width(w, max(space.prune[i])) < 1:
                raise ConfigError(f"{source}: field 'prune' removes every neuron of hidden layer {i} ({w} wide)")
        return space

    def to_dict(self) -> dict:
        return {"arch": self.arch, "weight_bits": [list(c) for c in self.weight_bits],
                "act_bits": [list(c) for c in self.act_bits], "in_bits": list(self.in_bits),
                "prune": [list(c) for c in self.prune], "width_multiple": self.width_multiple}

    @property
    def size(self) -> int:
        """How many distinct designs the space holds."""
        lists = [*self.weight_bits, *self.act_bits, self.in_bits, *self.prune]
        return math.prod(len(c) for c in lists)

    def width(self, full: int, ratio: float) -> int:
        """Neurons kept of a ``full``-wide layer pruned by ``ratio``: a multiple of width_multiple, >= it."""
        if ratio == 0:
            return full
        kept = int(full * (1 - ratio)) // self.width_multiple * self.width_multiple
        return max(kept, min(self.width_multiple, full))

    def suggest(self, trial) -> ModelSpec:
        """The model spec an Optuna trial picks (parameters named per layer: w0, a0, p0, in)."""
        w = tuple(trial.suggest_categorical(f"w{i}", list(c)) for i, c in enumerate(self.weight_bits))
        a = tuple(trial.suggest_categorical(f"a{i}", list(c)) for i, c in enumerate(self.act_bits))
        p = tuple(trial.suggest_categorical(f"p{i}", list(c)) for i, c in enumerate(self.prune))
        return self.spec(w, a, trial.suggest_categorical("in", list(self.in_bits)), p)

    def spec(self, weight_bits, act_bits, in_bits: int, prune) -> ModelSpec:
        widths = tuple(self.width(full, r) for full, r in zip(default_widths(self.arch), prune))
        return validate(ModelSpec(self.arch, tuple(weight_bits), tuple(act_bits), in_bits,
                                  None if widths == default_widths(self.arch) else widths))


def load_space(path: str | Path) -> SearchSpace:
    from qat.config_file import read_yaml

    return SearchSpace.from_dict(read_yaml(path, "search space"), source=f"search space {path}")


def space_hash(space: SearchSpace) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(space.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _bit(value, field: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BITS:
        raise ConfigError(f"{source}: field '{field}' has {value!r}; bit widths are integers 1 to {MAX_BITS}")
    return value


def _ratio(value, field: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{source}: field '{field}' has {value!r}; pruning ratios are in [0, 1)")
    return float(value)


def _choices(value, field: str, source: str, check) -> tuple:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{source}: field '{field}' needs a non-empty list of choices, got {value!r}")
    return tuple(sorted({check(v, field, source) for v in value}))


def _per_layer(value, n: int, field: str, source: str, check) -> tuple[tuple, ...]:
    """A list of n lists (one per layer) or one flat list for every layer."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        if len(value) != n:
            raise ConfigError(f"{source}: field '{field}' has {len(value)} per-layer lists; this architecture "
                              f"needs {n} (or one flat list for every layer)")
        return tuple(_choices(v, f"{field}[{i}]", source, check) for i, v in enumerate(value))
    return (_choices(value, field, source, check),) * n
