"""One build: its context (config, board, data, earlier steps' outputs) and the ordered steps."""
from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np

from boards import Board, load_board
from flows.config import BuildConfig
from flows.errors import ConfigError, DatasetError, ModelError
from flows.pipeline import Step, check_run_folders, resolve_all, run_steps, select, step_dir
from flows.preflight import check_build, read_run_config, run_lock
from flows.steps import DEFAULT_STEPS



def build_steps(cfg: BuildConfig) -> list[Step]:
    """The steps of this build: ``cfg.steps`` (names or package.module:function), else the default."""
    return resolve_all(cfg.steps if cfg.steps is not None else DEFAULT_STEPS)


class Build:
    """What the steps share. Cheap to create: data and models load on first use."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.board: Board = load_board(cfg.board)
        self.run_dir = cfg.run_dir
        self.steps: list[Step] = build_steps(cfg)
        self.spec = None if (cfg.onnx or cfg.checkpoint) and not cfg.model else _parse_model(cfg.model_name)
        if cfg.model_config:
            from qat.models import load_model_config

            self.spec = load_model_config(cfg.model_config)

    def dir(self, step: str) -> Path:
        return step_dir(self.run_dir, step)

    def model(self, step: str):
        from qonnx.core.modelwrapper import ModelWrapper

        return ModelWrapper(str(self.dir(step) / "model.onnx"))

    @functools.cached_property
    def dataset(self):
        """The built-in dataset (--data), an --onnx model's own (--data-file), or, with neither,
        unlabelled random inputs over the whole input datatype (accuracy unknown)."""
        from qat.data import load_dataset, load_own_data, random_inputs

        if self.cfg.data_file:
            dt = self.input_dt
            return load_own_data(self.cfg.data_file, self.onnx_input[1], int(dt.min), int(dt.max), dt.name,
                                 bipolar=dt.is_bipolar)
        if self.cfg.data is None:
            return random_inputs(self.onnx_input[1], self.input_values())
        ds = load_dataset(self.cfg.data, self.cfg.data_dir, verify=self.cfg.verify_checksums)
        return ds.gather(self.kept_pixels)

    @functools.cached_property
    def kept_pixels(self) -> tuple[int, ...] | None:
        """A pixel-pruned checkpoint's kept pixels (qat.compress.pixels): the images the build feeds
        every stage are those pixels only, as the host gathers them for the accelerator."""
        from qat.train import load_checkpoint

        if self.cfg.checkpoint:
            return self.given_checkpoint.data.kept_pixels
        path = self.dir("train") / "checkpoint.pt"
        return load_checkpoint(path).data.kept_pixels if path.is_file() else None

    @functools.cached_property
    def given_checkpoint(self):
        """--checkpoint, loaded once (the preflight checks it, kept_pixels and step train use it);
        None without one."""
        from qat.train import load_checkpoint

        return load_checkpoint(self.cfg.checkpoint) if self.cfg.checkpoint else None

    def input_quantiser(self):
        """The input quantiser the host runs (--input-quant host), as host.executor.InputQuantiser;
        None when the accelerator quantises its own input (or the model has no input quantiser)."""
        from flows.steps import INPUT_QUANTISER_JSON
        from host.executor import InputQuantiser

        path = self.dir("hw_layers") / INPUT_QUANTISER_JSON
        if self.cfg.input_quant != "host" or not path.is_file():
            return None
        return InputQuantiser.from_dict(json.loads(path.read_text()))

    def hardware_input(self, model, images):
        """``images`` (N, C, H, W raw pixels) as the dataflow partition ``model`` takes them: laid out
        (flows.execute.to_graph_input) and, with a host input quantiser, quantised by it."""
        from flows.execute import to_graph_input

        x = to_graph_input(model, images)
        q = self.input_quantiser()
        return x if q is None else q(x.astype(np.int64)).astype(np.float32)

    @property
    def pixel_max(self) -> int:
        return self.dataset.pixel_max

    @functools.cached_property
    def onnx_input(self) -> tuple[str, tuple[int, ...], str]:
        """An --onnx model's graph input: (name, shape without the batch axis, declared datatype)."""
        from qonnx.core.modelwrapper import ModelWrapper

        from flows.steps import check_onnx_file, data_inputs

        check_onnx_file(Path(self.cfg.onnx))
        model = ModelWrapper(str(self.cfg.onnx))
        name = data_inputs(model.graph)[0]
        shape = tuple(int(d) for d in model.get_tensor_shape(name))
        if len(shape) < 2 or shape[0] != 1 or min(shape) < 1:
            raise ModelError(f"{self.cfg.onnx}: input {name} has shape {list(shape)}; FINN takes a batch-1 input "
                             "with fixed dimensions, e.g. [1, 600] or [1, 3, 32, 32]")
        return name, shape[1:], model.get_tensor_datatype(name).name

    @functools.cached_property
    def input_datatype(self) -> str:
        """What the input DMA streams: an --onnx model's declared integer input datatype (or
        --input-datatype); else the smallest UINT holding the dataset's pixels."""
        if not self.cfg.onnx:
            return "UINT8" if self.pixel_max <= 255 else "UINT16"
        name, _, declared = self.onnx_input
        given = self.cfg.input_datatype
        if declared != "FLOAT32":
            if given and given != declared:
                raise ConfigError(f"--input-datatype {given}, but {self.cfg.onnx} declares its input {name} "
                                  f"{declared}; drop --input-datatype or re-annotate the model")
            if not _integer_datatype(declared):
                raise ModelError(f"{self.cfg.onnx}: input {name} is declared {declared}; FINN's dataflow input "
                                 "must be an integer datatype (BIPOLAR, BINARY, INTn, UINTn)")
            return declared
        if given:
            return given
        if self.cfg.data:  # a built-in dataset: its pixels
            return "UINT8" if self.pixel_max <= 255 else "UINT16"
        raise ModelError(f"{self.cfg.onnx}: input {name} has no integer datatype annotation (FLOAT32), so what "
                         "the hardware takes is unknown; annotate it (qonnx ModelWrapper.set_tensor_datatype(input, "
                         "DataType['UINT8'])) or pass --input-datatype, e.g. UINT8, INT4, BIPOLAR")

    @property
    def input_dt(self):
        from host.datatypes import parse

        return parse(self.input_datatype)

    def input_values(self):
        """Every input value (ascending) the input quantiser is tabulated over: a built-in dataset's
        0..pixel_max, else the input datatype's range (BIPOLAR: -1, +1; at most 65,536 values)."""
        import numpy as np

        if self.cfg.data is not None:
            return np.arange(self.pixel_max + 1)
        dt = self.input_dt
        if dt.is_bipolar:
            return np.array([-1, 1])
        lo, hi = int(dt.min), int(dt.max)
        if hi - lo >= 1 << 16:
            raise ModelError(f"input datatype {dt.name} has {hi - lo + 1:,} values; an input quantiser is "
                             "tabulated over every input value, so at most 16-bit inputs are supported")
        return np.arange(lo, hi + 1)

    def checkpoint(self):
        """The trained checkpoint of this run, or None for an --onnx build."""
        from qat.train import load_checkpoint

        path = self.dir("train") / "checkpoint.pt"
        return load_checkpoint(path) if path.is_file() else None

    def check_checkpoint_matches_data(self, ckpt) -> None:
        if tuple(ckpt.data.image_shape) != tuple(self.dataset.image_shape):
            raise DatasetError(f"checkpoint was trained on {ckpt.data.name} {ckpt.data.image_shape} images "
                               f"but --data {self.cfg.data} has {self.dataset.image_shape}; pass matching --data")
        if self.cfg.model and ckpt.spec != self.spec:
            raise ConfigError(f"the checkpoint holds {ckpt.spec.name} ({ckpt.spec.to_dict()}), not --model "
                              f"{self.cfg.model}; drop --model to build what the checkpoint holds")

    def check_input_shape(self, model) -> None:
        if self.cfg.onnx and self.cfg.data is None:
            return  # own data and random inputs are shaped as the model input
        shape = tuple(model.get_tensor_shape(model.graph.input[0].name))
        want = (1, *self.dataset.image_shape)
        if math.prod(shape) != math.prod(want):
            raise ModelError(f"model input {shape} does not take {self.cfg.data} images {want}"
                             + ("; give the model's own data with --data-file (docs/own-models.md), or no data "
                                "for random inputs" if self.cfg.onnx else ""))


def _integer_datatype(name: str) -> bool:
    from host.datatypes import parse
    from host.errors import IOSpecError

    try:
        return not parse(name).is_fixed
    except IOSpecError:
        return False


def _parse_model(name: str):
    from qat.models import parse_model_name

    return parse_model_name(name)


def load_config(run_dir: Path) -> BuildConfig:
    """The BuildConfig a run folder was built with (its config.json), writing to that folder."""
    from dataclasses import replace

    try:
        raw = json.loads((Path(run_dir) / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read {run_dir}/config.json ({type(exc).__name__}); rebuild the run") from None
    return replace(BuildConfig.from_dict(raw, f"{run_dir}/config.json").record(), out=Path(run_dir))


def steps_with(additions: list[str]) -> tuple[str, ...] | None:
    """The default steps with each ``AFTER=package.module:function`` of ``additions`` inserted
    right after step AFTER (flows build --add-step); None without additions."""
    from flows.pipeline import insert_step

    steps = tuple(DEFAULT_STEPS)
    for addition in additions or ():
        after, sep, entry = addition.partition("=")
        if not sep or ":" not in entry:
            raise ConfigError(f"--add-step {addition}: give AFTER=package.module:function, e.g. "
                              "fold=mypkg.passes:step_report")
        steps = insert_step(steps, entry, after)
    return steps if additions else None


def check_run_dir(cfg: BuildConfig) -> None:
    """A run directory holds one build: refuse to mix another model/data/board into it."""
    old = (read_run_config(cfg.run_dir) or {}).get("identity")
    if old and old != cfg.identity():
        raise ConfigError(f"{cfg.run_dir} holds another build ({old}); use another --out")


def run_build(cfg: BuildConfig, on_done=None) -> dict[str, dict]:
    """Check every input, then run the selected steps of one build under the run folder's lock;
    returns the reports of the steps run."""
    from flows.finn_env import init_finn

    build = Build(cfg)
    selected = select(build.steps, cfg.from_step, cfg.to_step)
    try:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        probe = cfg.run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to output directory {cfg.run_dir}: {exc.strerror}; "
                          "choose another --out") from None
    with run_lock(cfg.run_dir):
        check_run_folders(cfg.run_dir)
        check_run_dir(cfg)
        check_build(build)
        (cfg.run_dir / "config.json").write_text(json.dumps({"identity": cfg.identity(),
                                                             "config": json.loads(cfg.record().to_json())}, indent=2))
        init_finn(cfg.run_dir.resolve() / "finn_tmp")
        return run_steps(build, build.steps, selected, on_done)
