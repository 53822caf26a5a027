"""CLI options whose values are a closed set: listed in ``--help`` and checked while the command
line is parsed (typer's ``parser=`` and ``metavar=``), so a bad value fails before any work.

Each list comes from the concept's own home (boards/, qat.zoo, qat.data, the build's steps),
read when ``flows.cli`` is imported; those homes import nothing heavy. Three lists live in
modules that import torch (samplers, pruning schedules, benchmark targets): they are written
here and tests/test_cli_choices.py checks they equal their homes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import typer


class OneOf:
    """A typer ``parser``: a value from ``values``, or one ``also`` accepts (a board file, a model name
    of other bit widths); anything else is a usage error (exit 2) naming the known values."""

    def __init__(self, what: str, values: Sequence[str], also: Callable[[str], bool] | None = None,
                 also_text: str = "", metavar: str | None = None, known: str | None = None):
        self.what = what
        self.values = tuple(values)
        self.also = also
        self.metavar = metavar or "[" + "|".join(self.values) + (f"|{also_text}" if also_text else "") + "]"
        self.known = known or "known: " + ", ".join(self.values) + (f", or {also_text}" if also_text else "")

    @property
    def typer_args(self) -> dict:
        """``typer.Option(default, **choice.typer_args, help=...)``: parsed and listed by typer."""
        return {"parser": self, "metavar": self.metavar}

    def __call__(self, value: str) -> str:
        if value in self.values or (self.also is not None and self.also(value)):
            return value
        raise typer.BadParameter(f"unknown {self.what} '{value}'; {self.known}")


class ListOf(OneOf):
    """A comma-separated list of such values (``--targets cpu-brevitas,fpga-sim``), kept as the text."""

    def __init__(self, what: str, values: Sequence[str]):
        super().__init__(what, values)
        self.metavar = self.metavar[:-1] + ",...]"

    def __call__(self, value: str) -> str:
        for item in (v.strip() for v in str(value).split(",")):
            if item:
                super().__call__(item)
        return value


def _boards() -> OneOf:
    from boards import is_board_file, list_boards

    return OneOf("board", list_boards(), is_board_file, "FILE.yaml")


def _models() -> OneOf:
    from qat.zoo import ARCH_NAMES, MAX_BITS, PRECISIONS, is_model_name, zoo_names

    return OneOf("model", zoo_names(), is_model_name,
                 metavar=f"[{'|'.join(ARCH_NAMES)}]-[{'|'.join(PRECISIONS)}]",
                 known=f"known: {', '.join(zoo_names()[:2])}, ...: <arch>-w<N>a<M> with arch {', '.join(ARCH_NAMES)} "
                       f"and N, M in 1..{MAX_BITS} (the zoo: {', '.join(PRECISIONS)})")


def _search_models() -> OneOf:
    from qat.zoo import ARCH_NAMES, is_model_name

    return OneOf("architecture", ARCH_NAMES, is_model_name,
                 "<arch>-w<N>a<M>", known=f"searchable: {', '.join(ARCH_NAMES)}, or a zoo name of one (lfc-w1a1)")


def _datasets() -> OneOf:
    from qat.data import DATASETS

    return OneOf("dataset", DATASETS)


def _steps() -> OneOf:
    from flows.steps import DEFAULT_STEPS

    # a step of one's own (--add-step, BuildConfig.steps) is named too: the build checks it against its steps
    return OneOf("step", tuple(DEFAULT_STEPS), also=lambda v: v.isidentifier() and v == v.lower(),
                 also_text="a step added with --add-step")


def _input_quant() -> OneOf:
    from flows.config import INPUT_QUANT

    return OneOf("input quantiser place", INPUT_QUANT)


def _candidate_levels() -> OneOf:
    from qat.compress.config import CANDIDATE_LEVELS

    return OneOf("candidate level", CANDIDATE_LEVELS)


BOARD = _boards()
MODEL = _models()
SEARCH_MODEL = _search_models()
DATA = _datasets()
STEP = _steps()
CANDIDATE = _candidate_levels()
INPUT_QUANT = _input_quant()
# homes import torch: flows.search.config.SAMPLERS, qat.compress.structured.SCHEDULES, flows.baselines.TARGETS
SAMPLER = OneOf("sampler", ("tpe", "nsga2", "random", "rf"))
SCHEDULE = OneOf("prune schedule", ("oneshot", "agp"))
TARGETS = ListOf("target", ("cpu-torch-float", "cpu-brevitas", "cpu-onnxruntime", "numpy-executor", "fpga",
                            "fpga-sim", "gpu-torch-fp32", "gpu-torch-fp16"))
