"""The typed build configuration, validated on creation."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from flows.errors import ConfigError, ModelError, finite
from qat.data import DATASETS, check_data_option  # noqa: F401  (DATASETS: the CLI reads it here)
from qat.train_config import TrainConfig

TrainOptions = TrainConfig  # the name builds used: training when the build has no checkpoint

DEFAULT_MODEL = "tfc-w1a1"
INPUT_QUANT = ("fpga", "host")  # BuildConfig.input_quant


def input_quant_for(in_bits: int, pixel_bits: int = 8) -> str:
    """Where a model's input quantiser should run: on the host when it has fewer bits than the raw
    pixel (the DMA then streams in_bits per pixel, not pixel_bits), else on the FPGA."""
    return "host" if in_bits < pixel_bits else "fpga"


def check_readable_file(option: str, path: Path, error: type = ConfigError) -> None:
    """``error`` naming ``option`` unless ``path`` is a readable file (not a directory, not empty)."""
    if path.is_dir():
        raise error(f"{option} {path} is a directory; give the file itself")
    if not path.is_file():
        raise error(f"{option} {path} not found")
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as exc:
        raise error(f"{option} {path} cannot be read ({exc.strerror}); check its permissions") from None
    if empty:
        raise error(f"{option} {path} is empty (0 bytes); give a complete file")


def board_id(board: str) -> str:
    """A board's name in folder names: the CLI name, or the stem of a user's board file."""
    from boards import is_board_file

    return Path(board).stem if is_board_file(board) else board


def default_data(model: str | None) -> str:
    """The bundled dataset a zoo model trains on when none is named: CNV needs 32x32 images."""
    return "digits32" if model and model.split("-")[0] == "cnv" else "digits"


@dataclass(frozen=True)
class BuildConfig:
    """One ``flows build``: what to build, for which board, and where."""

    board: str = "pynq-z2"
    model: str | None = None  # zoo name (default tfc-w1a1); a checkpoint or ONNX file brings its own
    model_config: Path | None = None  # YAML/JSON per-layer bit widths (qat.models.load_model_config) instead
    checkpoint: Path | None = None  # trained qnn-flows checkpoint
    onnx: Path | None = None  # QONNX file instead of a checkpoint
    data: str | None = None  # default: digits, or digits32 for CNV (default_data); none for --onnx
    data_dir: Path | None = None
    data_file: Path | None = None  # an --onnx model's own labelled data (qat.data.load_own_data)
    input_datatype: str | None = None  # --onnx input datatype where the model does not declare one
    verify_checksums: bool = True
    target_fps: float | None = None  # fold for this rate instead of the DMA bound
    folding: Path | None = None  # FINN folding-config JSON to apply as is
    out: Path | None = None  # run directory; default build/<model>_<board>
    from_step: str | None = None
    to_step: str | None = None
    allow_overflow: bool = False  # go on when the design does not fit the board
    # where the input quantiser runs (docs/compression.md): "fpga", a Thresholding layer on the raw
    # pixels streamed at 8 bits; "host", the host applies its thresholds and streams the narrow result
    input_quant: str = "fpga"
    train: TrainConfig = field(default_factory=TrainConfig)  # used when the build has no checkpoint
    steps: tuple[str, ...] | None = None  # the build's steps in order (default flows.steps.DEFAULT_STEPS):
    # registered names or package.module:function (flows.pipeline.resolve; checked when the build starts)

    def __post_init__(self):
        if self.steps is not None:
            if isinstance(self.steps, str) or not all(isinstance(e, str) and e for e in self.steps):
                raise ConfigError(f"steps must be a list of step names, got {self.steps!r}")
            object.__setattr__(self, "steps", tuple(self.steps))
        if self.checkpoint and self.onnx:
            raise ConfigError("give --checkpoint or --onnx, not both")
        if self.model_config and (self.model or self.onnx or self.checkpoint):
            raise ConfigError("--model-config defines the model to train; drop --model, --onnx and --checkpoint")
        if self.onnx and self.model:
            raise ConfigError("--model names a zoo model to train; an --onnx file brings its own, so drop --model")
        if self.target_fps is not None and self.folding is not None:
            raise ConfigError("give --target-fps or --folding, not both")
        if self.target_fps is not None:
            finite("--target-fps", self.target_fps, positive=True)
        if self.data_file is not None and not self.onnx:
            raise ConfigError("--data-file is a --onnx model's own data; zoo models and checkpoints train and "
                              "verify on --data")
        if self.data_file is not None and self.data is not None:
            raise ConfigError("give --data or --data-file, not both")
        if self.input_datatype is not None:
            self._check_input_datatype()
        if self.input_quant not in INPUT_QUANT:
            raise ConfigError(f"--input-quant {self.input_quant!r}: use one of {', '.join(INPUT_QUANT)}")
        for option, path, error in (("--checkpoint", self.checkpoint, ModelError), ("--onnx", self.onnx, ModelError),
                                    ("--model-config", self.model_config, ConfigError),
                                    ("--folding", self.folding, ConfigError)):
            if path is not None:
                check_readable_file(option, Path(path), error)
        if self.onnx and (self.data_file or self.data is None):
            return  # own data, or none: verification on random inputs over the input datatype
        if self.data is None:
            object.__setattr__(self, "data", default_data(self.model))
        check_data_option(self.data, self.data_dir)

    def _check_input_datatype(self) -> None:
        from host.datatypes import parse
        from host.errors import IOSpecError

        if not self.onnx:
            raise ConfigError("--input-datatype declares an --onnx model's input; zoo models take their data's pixels")
        try:
            dt = parse(self.input_datatype)
        except IOSpecError as exc:
            raise ConfigError(f"--input-datatype: {exc}") from None
        if dt.is_fixed:
            raise ConfigError(f"--input-datatype {dt.name}: the input must be an integer datatype "
                              "(BIPOLAR, BINARY, INTn, UINTn)")
        object.__setattr__(self, "input_datatype", dt.name)

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL

    @property
    def run_name(self) -> str:
        source = self.onnx or self.checkpoint
        model = Path(source).stem if source and not self.model else self.model_name
        model = Path(self.model_config).stem if self.model_config else model
        data = Path(self.data_file).stem if self.data_file else self.data
        return f"{model}_{board_id(self.board)}" + ("" if data in ("digits", None) else f"_{data}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("build") / self.run_name

    def identity(self) -> dict:
        """The fields that define what a run directory holds; a resume must match them."""
        return {"model": self.model_name if not (self.onnx or self.checkpoint) else self.model, "onnx": str(self.onnx) if self.onnx else None,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                **({"model_config": str(self.model_config)} if self.model_config else {}),
                **({"data_file": str(self.data_file)} if self.data_file else {}),
                "data": self.data, "board": self.board,
                **({"input_quant": self.input_quant} if self.input_quant != "fpga" else {})}

    def to_json(self) -> str:
        """The config as JSON; ``BuildConfig.from_dict(json.loads(cfg.to_json())) == cfg``."""
        return json.dumps(asdict(self), default=str, indent=2)

    def record(self) -> BuildConfig:
        """What a run's config.json records: the build, without one invocation's --from/--to."""
        return replace(self, from_step=None, to_step=None)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> BuildConfig:
        """The config ``raw`` (as ``to_json`` writes it) describes, validated as the command line's
        options are; ConfigError naming ``source`` and the field for an unknown field or a wrong type."""
        values = _typed_fields(cls, raw, source)
        if isinstance(values.get("train"), dict):
            values["train"] = TrainConfig(**_typed_fields(TrainConfig, values["train"], f"{source}: train"))
        return cls(**values)


def _typed_fields(cls, raw, source: str) -> dict:
    """``raw``'s values for the fields of dataclass ``cls``, each checked against its annotation
    (Path fields from strings, steps from a list)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a JSON object of fields, got {type(raw).__name__}")
    known = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown field '{unknown[0]}'; fields: {', '.join(known)}")
    values = {}
    for name, value in raw.items():
        kind = known[name]
        if value is None and "None" in kind:
            values[name] = None
            continue
        ok = {"bool": isinstance(value, bool), "int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "str": isinstance(value, str), "Path": isinstance(value, str),
              "tuple": isinstance(value, list), "TrainConfig": isinstance(value, dict)}[kind.split()[0].split("[")[0]]
        if not ok:
            raise ConfigError(f"{source}: field '{name}' must be {kind}, got {value!r}")
        values[name] = Path(value) if kind.startswith("Path") else tuple(value) if kind.startswith("tuple") else value
    return values


def load_build_config(path: Path) -> BuildConfig:
    """The BuildConfig in ``path``: a run's config.json (its "config") or a bare object of fields."""
    check_readable_file("--config", Path(path))
    try:
        raw = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config {path} is not JSON ({exc}); give the config.json a build wrote") from None
    if isinstance(raw, dict) and "config" in raw and "identity" in raw:
        raw = raw["config"]
    return BuildConfig.from_dict(raw, f"--config {path}")
