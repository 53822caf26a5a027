"""One build: its context (config, board, data, earlier steps' outputs) and the ordered steps."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

from boards import Board, load_board
from flows import steps as s
from flows.config import BuildConfig
from flows.errors import ConfigError, DatasetError, ModelError
from flows.pipeline import Step, run_steps, select, step_dir

STEPS = [Step("train", s.step_train), Step("export", s.step_export), Step("cleanup", s.step_cleanup),
         Step("convert", s.step_convert), Step("streamline", s.step_streamline),
         Step("hw_layers", s.step_hw_layers), Step("partition", s.step_partition),
         Step("specialize", s.step_specialize), Step("fold", s.step_fold), Step("estimate", s.step_estimate),
         Step("verify", s.step_verify), Step("bitfile", s.step_bitfile), Step("package", s.step_package)]
STEP_NAMES = [step.name for step in STEPS]


class Build:
    """What the steps share. Cheap to create: data and models load on first use."""

    def __init__(self, cfg: BuildConfig):
        self.cfg = cfg
        self.board: Board = load_board(cfg.board)
        self.run_dir = cfg.run_dir
        self.spec = None if (cfg.onnx or cfg.checkpoint) and not cfg.model else _parse_model(cfg.model_name)
        if cfg.model_config:
            from qat.models import load_model_config

            self.spec = load_model_config(cfg.model_config)

    def dir(self, step: str) -> Path:
        return step_dir(self.run_dir, STEPS, step)

    def model(self, step: str):
        from qonnx.core.modelwrapper import ModelWrapper

        return ModelWrapper(str(self.dir(step) / "model.onnx"))

    @functools.cached_property
    def dataset(self):
        from qat.data import load_dataset

        ds = load_dataset(self.cfg.data, self.cfg.data_dir, verify=self.cfg.verify_checksums)
        return ds.gather(self.kept_pixels)

    @functools.cached_property
    def kept_pixels(self) -> tuple[int, ...] | None:
        """A pixel-pruned checkpoint's kept pixels (qat.compress.pixels): the images the build feeds
        every stage are those pixels only, as the host gathers them for the accelerator."""
        from qat.train import load_checkpoint

        path = self.cfg.checkpoint or self.dir("train") / "checkpoint.pt"
        return load_checkpoint(path).data.kept_pixels if Path(path).is_file() else None

    @property
    def pixel_max(self) -> int:
        return self.dataset.pixel_max

    @property
    def input_datatype(self) -> str:
        return "UINT8" if self.pixel_max <= 255 else "UINT16"  # what the input DMA streams

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
        shape = tuple(model.get_tensor_shape(model.graph.input[0].name))
        want = (1, *self.dataset.image_shape)
        if math.prod(shape) != math.prod(want):
            raise ModelError(f"model input {shape} does not take {self.cfg.data} images {want}")

    # folding and estimates ---------------------------------------------------------------

    def estimate(self, model):
        from hw.estimates import estimate

        return estimate(model, self.board)

    def io_cycles(self, model) -> int:
        from hw.estimates import io_bytes

        return max(math.ceil(b / self.board.axi_bytes_per_cycle) for b in io_bytes(model))

    def choose_folding(self, model) -> dict:
        """The folding to apply: --folding FILE, --target-fps, or the default DMA-bound rule."""
        from hw import folding as fold

        if self.cfg.folding:
            return {"rule": f"--folding {self.cfg.folding}", "target_cycles": None,
                    "folding": fold.read_folding(self.cfg.folding)}
        io = self.io_cycles(model)
        if self.cfg.target_fps:
            target = max(1, math.floor(self.board.clock_mhz * 1e6 / self.cfg.target_fps))
            return {"rule": f"--target-fps {self.cfg.target_fps:g}: cheapest folding with at most {target} "
                            f"cycles per image per layer (DMA bound: {io})",
                    "target_cycles": target, "folding": fold.choose_folding(model, target, self.board.part)}
        target, folding = self.fitting_folding(model, io)
        rule = (f"default: cheapest folding (fewest LUTs) per layer reaching the IO DMA bound of {io} cycles "
                f"per image; faster compute cannot be fed")
        if target != io:
            rule += f"; relaxed to {target} cycles to fit {self.board.name}"
        return {"rule": rule, "target_cycles": target, "folding": folding}

    def fitting_folding(self, model, start: int) -> tuple[int, dict]:
        """The smallest target (start, 2*start, ...) whose cheapest folding fits the board; once
        relaxing changes nothing (every layer as folded as the rule goes), that last folding."""
        from hw import folding as fold

        target, previous = start, None
        while True:
            folding = fold.choose_folding(model, target, self.board.part)
            fold.apply_folding(model, folding)
            if self.estimate(model).fits or folding == previous or target > 1 << 30:
                return target, folding
            target, previous = target * 2, folding

    def misfit(self, model, est) -> tuple[str, dict]:
        """Why ``model`` does not fit the board, and a folding that does (FINN folding-config format)."""
        import copy

        from hw.folding import current_folding

        over = est.over_capacity()
        worst = sorted(est.layers, key=lambda l: -l.resources[over[0]])[:3]
        fitting = copy.deepcopy(model)
        target, _ = self.fitting_folding(fitting, max(est.cycles_per_image, 1))
        fps = self.board.clock_mhz * 1e6 / target
        used = ", ".join(f"{r} {est.total[r]:.0f}/{est.capacity[r]}" for r in over)
        layers = ", ".join(f"{l.name} ({l.resources[over[0]]:.0f} {over[0]})" for l in worst)
        least = self.estimate(fitting)
        if not least.fits:  # no folding fits: the weights alone are too many for the board's memories
            least_used = ", ".join(f"{r} {least.total[r]:.0f}/{least.capacity[r]}" for r in least.over_capacity())
            return (f"design does not fit {self.board.name} at any folding: {used}, and still {least_used} "
                    f"folded as far as it goes ({weight_mbit(model):.1f} Mbit of weights); largest layers: "
                    f"{layers}; choose fewer weight bits, a smaller model, or a board with more memory; "
                    "--allow-overflow continues anyway"), None
        message = (f"design does not fit {self.board.name}: {used}; largest layers: {layers}; a folding at "
                   f"{target} cycles per image (~{fps:,.0f} images/s) fits: pass --folding "
                   f"{self.dir('fold')}.failed/folding_that_fits.json, or --target-fps {math.floor(fps)}, "
                   "or no folding option; --allow-overflow continues anyway")
        return message, current_folding(fitting)


def weight_mbit(model) -> float:
    """Megabits of weights in the matrix layers (MVAU, VVAU) of ``model``: what BRAM/LUTRAM must hold."""
    from qonnx.custom_op.registry import getCustomOp

    from hw.folding import generic_op

    bits = 0
    for node in model.graph.node:
        weights = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
        if generic_op(node.op_type) in ("MVAU", "VVAU") and weights is not None:
            bits += weights.size * getCustomOp(node).get_input_datatype(1).bitwidth()
    return bits / 1e6


def _parse_model(name: str):
    from qat.models import parse_model_name

    return parse_model_name(name)


def check_run_dir(cfg: BuildConfig) -> None:
    """A run directory holds one build: refuse to mix another model/data/board into it."""
    path = cfg.run_dir / "config.json"
    if path.is_file():
        old = json.loads(path.read_text()).get("identity")
        if old and old != cfg.identity():
            raise ConfigError(f"{cfg.run_dir} holds another build ({old}); use another --out")


def run_build(cfg: BuildConfig, on_done=None) -> dict[str, dict]:
    """Run the selected steps of one build; returns the reports of the steps run."""
    from flows.finn_env import init_finn

    build = Build(cfg)
    check_run_dir(cfg)
    try:
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        probe = cfg.run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to output directory {cfg.run_dir}: {exc.strerror}; "
                          "choose another --out") from None
    (cfg.run_dir / "config.json").write_text(json.dumps({"identity": cfg.identity(), "config": json.loads(cfg.to_json())}, indent=2))
    init_finn(cfg.run_dir.resolve() / "finn_tmp")
    return run_steps(build, STEPS, select(STEPS, cfg.from_step, cfg.to_step), on_done)
