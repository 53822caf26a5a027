"""The search space of ``flows search``: per-layer choices, declared in a file the user can edit.

One entry per layer of the architecture (qat.models): weight bits per weight layer,
activation bits per hidden activation, a structured-pruning ratio per hidden layer
(the layer keeps ``width * (1 - ratio)`` neurons, snapped down to a multiple of
``width_multiple`` and at least that, so folding still has divisors to choose
from), a low-rank choice per weight layer (``null``: kept whole; ``r``: two matrix
units n -> r -> m, qat.compress.lowrank's layout, trained from scratch in each trial;
a rank at or above the sampled layer's smaller side keeps it whole), and globally the
input quantiser's bits, the share of input pixels kept (qat.compress.pixels: the
highest-variance pixels of the search's training split, the count snapped down to a
multiple of ``width_multiple``) and distillation on/off (qat.compress.distill, with
the one teacher the space names). Each entry is a list of choices; a list of one fixes
the value. YAML/JSON, e.g.::

    arch: lenet
    weight_bits: [[2, 4, 8], [1, 2, 4], [2, 4, 8]]   # or one list for every layer
    act_bits: [1, 2, 4]
    in_bits: [1, 2, 8]
    prune: [0.0, 0.25, 0.5, 0.75]
    width_multiple: 8
    rank: [[null, 32, 72], [null, 8, 24], [null]]    # per weight layer; null = not factorised
    pixels: [1.0, 0.75, 0.5]                         # share of input pixels kept, in (0, 1]
    distill: [false, true]
    teacher_model: lenet-w8a8                        # trained once per search under <out>/teacher/, or
    # teacher: teacher.onnx                          # a file: flows checkpoint, TorchScript or ONNX
    teacher_epochs: 10                               # default: the search's --epochs
    temperature: 4.0
    alpha: 0.7

In a file, an absent ``rank``/``pixels``/``distill`` leaves that technique off (so a
space written before they existed means what it meant); ``SearchSpace.default`` (no
``--space``) searches every technique.

CNV (qat.cnv) is searched with the same fields, one entry per layer in its order: 9 weight layers
(6 convolutions, 2 hidden linears, the output linear), 8 activations and 8 pruning ratios (the
convolutions' output channels, then the hidden linears' neurons). Its input quantiser is fixed
at 8 bits (Brevitas' CNV), so ``in_bits`` is ``[8]`` or left out; ``rank`` (qat.models builds no
factorised CNV layer) and ``pixels`` (convolutions need the whole image) are refused.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from flows.errors import ConfigError
from qat.models import ARCHS, MAX_BITS, ModelSpec, default_widths, validate
from qat.zoo import MLP_ARCHS

DEFAULT_WEIGHT_BITS = (1, 2, 4, 8)
DEFAULT_ACT_BITS = (1, 2, 4)
DEFAULT_IN_BITS = (1, 2, 4, 8)
DEFAULT_PRUNE = (0.0, 0.25, 0.5, 0.75)
DEFAULT_PIXELS = (1.0, 0.75, 0.5)
# CNV trains for hours per trial on a CPU: fewer choices per layer, input fixed (qat.cnv.IN_BITS)
CNV_DEFAULT = {"weight_bits": [1, 2, 4], "act_bits": [1, 2], "prune": [0.0, 0.25, 0.5]}
TEACHER_FIELDS = ("teacher", "teacher_model", "teacher_epochs", "temperature", "alpha")
FIELDS = ("arch", "weight_bits", "act_bits", "in_bits", "prune", "width_multiple", "rank", "pixels", "distill",
          *TEACHER_FIELDS)


@dataclass(frozen=True)
class Teacher:
    """Where distillation's soft targets come from: a file (flows checkpoint, TorchScript, ONNX) or a zoo
    model trained once per search (``epochs`` None: the search's own)."""

    path: str | None = None
    model: str | None = None
    epochs: int | None = None
    temperature: float = 4.0
    alpha: float = 0.7

    def to_dict(self) -> dict:
        return {"teacher": self.path, "teacher_model": self.model, "teacher_epochs": self.epochs,
                "temperature": self.temperature, "alpha": self.alpha}


@dataclass(frozen=True)
class Design:
    """One point of a space: the model spec, the input pixels kept (None: all) and distillation."""

    spec: ModelSpec
    kept: int | None = None  # number of input pixels kept (the highest-variance ones)
    distill: bool = False

    def to_dict(self) -> dict:
        """The spec's dict, plus ``kept`` and ``distill`` when used (a plain design reads as its spec)."""
        d = self.spec.to_dict()
        if self.kept is not None:
            d["kept_pixels"] = self.kept
        if self.distill:
            d["distill"] = True
        return d

    def shape_dict(self) -> dict:
        """What the FPGA estimate depends on: everything but distillation (which changes no shape)."""
        return {k: v for k, v in self.to_dict().items() if k != "distill"}

    @classmethod
    def from_dict(cls, d: dict) -> "Design":
        rest = {k: v for k, v in d.items() if k not in ("kept_pixels", "distill")}
        return cls(ModelSpec.from_dict(rest), d.get("kept_pixels"), bool(d.get("distill", False)))


@dataclass(frozen=True)
class SearchSpace:
    """Choices per layer for one architecture of the zoo (MLPs and CNV: see the module docstring)."""

    arch: str
    weight_bits: tuple[tuple[int, ...], ...]  # one tuple of choices per weight layer
    act_bits: tuple[tuple[int, ...], ...]  # one per hidden activation
    in_bits: tuple[int, ...]
    prune: tuple[tuple[float, ...], ...]  # one per hidden layer: fraction of its neurons removed
    width_multiple: int = 8
    rank: tuple[tuple[int | None, ...], ...] | None = None  # one per weight layer (None: not factorised); None: off
    pixels: tuple[float, ...] = (1.0,)  # shares of input pixels kept
    distill: tuple[bool, ...] = (False,)
    teacher: Teacher | None = None

    @classmethod
    def default(cls, arch: str) -> "SearchSpace":
        """Every technique: bits, pruning, low rank (hidden layers at 1/8 and 1/4 of their width; the output
        layer whole), pixels, distillation from the architecture's 8-bit zoo model trained once. CNV: fewer
        bits and pruning choices (CNV_DEFAULT), the 8-bit input, distillation; no low rank, no pixels."""
        if arch == "cnv":
            return cls.from_dict({"arch": arch, **CNV_DEFAULT, "distill": [False, True],
                                  "teacher_model": f"{arch}-w8a8"})
        return cls.from_dict({"arch": arch, "weight_bits": list(DEFAULT_WEIGHT_BITS),
                              "act_bits": list(DEFAULT_ACT_BITS), "in_bits": list(DEFAULT_IN_BITS),
                              "prune": list(DEFAULT_PRUNE), "rank": default_ranks(arch),
                              "pixels": list(DEFAULT_PIXELS), "distill": [False, True],
                              "teacher_model": f"{arch}-w8a8"})

    @classmethod
    def from_dict(cls, d: dict, source: str = "search space") -> "SearchSpace":
        """Validate every field, naming it; a flat list applies to every layer."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source} must be a mapping with fields {', '.join(FIELDS)}")
        unknown = sorted(str(k) for k in d if k not in FIELDS)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; fields are {', '.join(FIELDS)}")
        arch = d.get("arch")
        if arch not in ARCHS:
            raise ConfigError(f"{source}: field 'arch' is {arch!r}; searchable: {', '.join(ARCHS)}")
        if arch not in MLP_ARCHS and d.get("rank") is not None:  # before the per-layer count is checked
            raise ConfigError(f"{source}: field 'rank' is for the MLPs ({', '.join(MLP_ARCHS)}); {arch} has no "
                              "low-rank layers: leave the field out")
        fixed_in = ARCHS[arch].in_bits
        n_hidden = len(default_widths(arch))
        multiple = d.get("width_multiple", 8)
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ConfigError(f"{source}: field 'width_multiple' must be a positive integer, got {multiple!r}")
        space = cls(arch,
                    _per_layer(d.get("weight_bits", list(DEFAULT_WEIGHT_BITS)), n_hidden + 1, "weight_bits", source, _bit),
                    _per_layer(d.get("act_bits", list(DEFAULT_ACT_BITS)), n_hidden, "act_bits", source, _bit),
                    _choices(d.get("in_bits", [fixed_in] if fixed_in else list(DEFAULT_IN_BITS)), "in_bits", source,
                             _bit),
                    _per_layer(d.get("prune", list(DEFAULT_PRUNE)), n_hidden, "prune", source, _ratio),
                    multiple,
                    None if d.get("rank") is None else _per_layer(d["rank"], n_hidden + 1, "rank", source, _rank),
                    _choices(d.get("pixels", [1.0]), "pixels", source, _share),
                    _choices(d.get("distill", [False]), "distill", source, _flag),
                    _teacher(d, source))
        for i, w in enumerate(default_widths(arch)):
            if space.width(w, max(space.prune[i])) < 1:
                raise ConfigError(f"{source}: field 'prune' removes every neuron of hidden layer {i} ({w} wide)")
        if fixed_in is not None and space.in_bits != (fixed_in,):
            raise ConfigError(f"{source}: field 'in_bits' has {list(space.in_bits)}; {arch}'s input quantiser is "
                              f"fixed at {fixed_in} bits: give [{fixed_in}] or leave the field out")
        if arch not in MLP_ARCHS and space.pixels != (1.0,):
            raise ConfigError(f"{source}: field 'pixels' is for the MLPs; {arch}'s convolutions need the whole "
                              "image: leave the field out")
        if True in space.distill and space.teacher is None:
            raise ConfigError(f"{source}: field 'distill' includes true but the space names no teacher; give "
                              "'teacher' (a flows checkpoint, TorchScript or ONNX file) or 'teacher_model' (a zoo "
                              "model trained once, e.g. tfc-w8a8)")
        return space

    def to_dict(self) -> dict:
        """Plain values; the techniques left off are left out (a space file of before reads the same)."""
        d = {"arch": self.arch, "weight_bits": [list(c) for c in self.weight_bits],
             "act_bits": [list(c) for c in self.act_bits], "in_bits": list(self.in_bits),
             "prune": [list(c) for c in self.prune], "width_multiple": self.width_multiple}
        if self.rank is not None:
            d["rank"] = [list(c) for c in self.rank]
        if self.pixels != (1.0,):
            d["pixels"] = list(self.pixels)
        if self.distill != (False,):
            d["distill"] = list(self.distill)
        if self.teacher is not None:
            d.update({k: v for k, v in self.teacher.to_dict().items() if v is not None})
        return d

    @property
    def size(self) -> int:
        """How many distinct designs the space holds."""
        lists = [*self.weight_bits, *self.act_bits, self.in_bits, *self.prune, *(self.rank or ()), self.pixels,
                 self.distill]
        return math.prod(len(c) for c in lists)

    def check_data(self, image_pixels: int, classes: int) -> None:
        """Refuse a rank larger than its layer (the unpruned layer fed every pixel), before any trial."""
        dims = (image_pixels, *default_widths(self.arch), classes)
        for i, choices in enumerate(self.rank or ()):
            top = min(dims[i], dims[i + 1])
            for r in choices:
                if r is not None and r > top:
                    raise ConfigError(f"search space: field 'rank' has {r} for layer {i} ({dims[i]} -> "
                                      f"{dims[i + 1]}), larger than the layer; a rank there is at most {top} "
                                      "(give one list per weight layer)")

    def kept(self, image_pixels: int, share: float) -> int | None:
        """Input pixels kept at ``share``: snapped down to a multiple of width_multiple, >= it; None keeps all."""
        if share >= 1:
            return None
        kept = int(image_pixels * share) // self.width_multiple * self.width_multiple
        return max(kept, min(self.width_multiple, image_pixels))

    def width(self, full: int, ratio: float) -> int:
        """Neurons kept of a ``full``-wide layer pruned by ``ratio``: a multiple of width_multiple, >= it."""
        if ratio == 0:
            return full
        kept = int(full * (1 - ratio)) // self.width_multiple * self.width_multiple
        return max(kept, min(self.width_multiple, full))

    def suggest(self, trial) -> dict:
        """The choices an Optuna trial picks (parameters named per layer: w0, a0, p0, r0; globally in, pix,
        kd; a technique left off adds no parameter), as ``design`` takes them."""
        c = {"w": [trial.suggest_categorical(f"w{i}", list(c)) for i, c in enumerate(self.weight_bits)],
             "a": [trial.suggest_categorical(f"a{i}", list(c)) for i, c in enumerate(self.act_bits)],
             "in": trial.suggest_categorical("in", list(self.in_bits)),
             "p": [trial.suggest_categorical(f"p{i}", list(c)) for i, c in enumerate(self.prune)]}
        if self.rank is not None:
            c["r"] = [trial.suggest_categorical(f"r{i}", list(ranks)) for i, ranks in enumerate(self.rank)]
        if self.pixels != (1.0,):
            c["pix"] = trial.suggest_categorical("pix", list(self.pixels))
        if self.distill != (False,):
            c["kd"] = trial.suggest_categorical("kd", list(self.distill))
        return c

    def richest(self) -> dict:
        """Every layer at its most expensive choice: the reference of the sensitivity table."""
        c = {"w": [max(c) for c in self.weight_bits], "a": [max(c) for c in self.act_bits], "in": max(self.in_bits),
             "p": [min(c) for c in self.prune], "pix": max(self.pixels), "kd": min(self.distill)}
        if self.rank is not None:
            c["r"] = [None if None in ranks else max(ranks) for ranks in self.rank]
        return c

    def design(self, choices: dict, image_pixels: int, classes: int) -> Design:
        """The design of ``choices`` (``suggest``'s keys) for images of ``image_pixels`` pixels and ``classes``."""
        kept = self.kept(image_pixels, choices.get("pix", 1.0))
        spec = self.spec(choices["w"], choices["a"], choices["in"], choices["p"])
        ranks = choices.get("r")
        if ranks is not None:
            dims = (kept or image_pixels, *spec.layer_widths, classes)
            ranks = tuple(r if r is not None and r < min(dims[i], dims[i + 1]) else None for i, r in enumerate(ranks))
            if any(r is not None for r in ranks):
                spec = validate(ModelSpec(spec.arch, spec.weight_bits, spec.act_bits, spec.in_bits, spec.widths,
                                          ranks))
        return Design(spec, kept, bool(choices.get("kd", False)))

    def spec(self, weight_bits, act_bits, in_bits: int, prune) -> ModelSpec:
        widths = tuple(self.width(full, r) for full, r in zip(default_widths(self.arch), prune))
        return validate(ModelSpec(self.arch, tuple(weight_bits), tuple(act_bits), in_bits,
                                  None if widths == default_widths(self.arch) else widths))


def default_ranks(arch: str, multiple: int = 8) -> list[list[int | None]]:
    """Low-rank choices per weight layer: each hidden layer whole or at 1/8 or 1/4 of its width (snapped down
    to ``multiple``, at least it); the output layer (to the classes) whole."""
    def snap(w: int) -> int:
        return max(w // multiple * multiple, multiple)

    hidden = [sorted({snap(w // 8), snap(w // 4)}) for w in default_widths(arch)]
    return [[None, *r] for r in hidden] + [[None]]


def layer_name(arch: str, i: int, kind: str) -> str:
    """How the report names layer ``i`` of ``kind`` (w: weight layer, a: its activation, p: its pruned width):
    MLPs ``layer i``, ``act i``, ``hidden i``; CNV by the layer itself, ``conv 0``..``conv 5``, ``fc 0``..``fc 2``
    (activation i and pruning ratio i belong to weight layer i)."""
    if arch == "cnv":
        from qat.cnv import CNV_OUT_CH_POOL

        convs = len(CNV_OUT_CH_POOL)
        return f"conv {i}" if i < convs else f"fc {i - convs}"
    return {"w": "layer", "a": "act", "p": "hidden"}[kind] + f" {i}"


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


def _rank(value, field: str, source: str):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{source}: field '{field}' has {value!r}; ranks are positive integers, or null for a "
                          "layer kept whole")
    return value


def _share(value, field: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{source}: field '{field}' has {value!r}; shares of input pixels kept are in (0, 1]")
    return float(value)


def _flag(value, field: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: field '{field}' has {value!r}; choices are true and false")
    return value


def _teacher(d: dict, source: str) -> Teacher | None:
    """The teacher fields, checked for form (the file itself is checked against the data before any trial)."""
    if d.get("teacher") is not None and d.get("teacher_model") is not None:
        raise ConfigError(f"{source}: give field 'teacher' (a file) or 'teacher_model' (a zoo model), not both")
    if d.get("teacher") is None and d.get("teacher_model") is None:
        extra = [k for k in TEACHER_FIELDS if d.get(k) is not None]
        if extra:
            raise ConfigError(f"{source}: field(s) {', '.join(extra)} need 'teacher' or 'teacher_model'")
        return None
    if d.get("teacher_model") is not None:
        from qat.models import parse_model_name

        try:
            parse_model_name(d["teacher_model"])
        except ConfigError as exc:
            raise ConfigError(f"{source}: field 'teacher_model': {exc}") from None
    epochs, t, alpha = d.get("teacher_epochs"), d.get("temperature", 4.0), d.get("alpha", 0.7)
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"{source}: field 'teacher_epochs' must be a positive integer, got {epochs!r}")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ConfigError(f"{source}: field 'temperature' must be > 0, got {t!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ConfigError(f"{source}: field 'alpha' must be in [0, 1], got {alpha!r}")
    path = d.get("teacher")
    return Teacher(None if path is None else str(path), d.get("teacher_model"), epochs, float(t), float(alpha))


def _choices(value, field: str, source: str, check) -> tuple:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{source}: field '{field}' needs a non-empty list of choices, got {value!r}")
    values = {check(v, field, source) for v in value}
    return tuple(sorted(values, key=lambda v: (v is not None, v if v is not None else 0)))


def _per_layer(value, n: int, field: str, source: str, check) -> tuple[tuple, ...]:
    """A list of n lists (one per layer) or one flat list for every layer."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        if len(value) != n:
            raise ConfigError(f"{source}: field '{field}' has {len(value)} per-layer lists; this architecture "
                              f"needs {n} (or one flat list for every layer)")
        return tuple(_choices(v, f"{field}[{i}]", source, check) for i, v in enumerate(value))
    return (_choices(value, field, source, check),) * n
