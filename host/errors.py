"""Every error of the project a user can act on, and the CLI exit code of each.

Every message is one line: what is wrong, then what to do about it. The CLI
prints that line (no traceback unless ``--debug``) and exits with the error's
``exit_code``.

Two families live here because this is the lowest layer: host/ runs on the
board, and qat/, hw/, boards/ and flows/ all import it, so each layer raises
these without importing a layer above it (flows/errors.py re-exports them).

- `FlowsError` and its subclasses: the build machine's errors (bad config 2,
  dataset 3, model 4, missing tool 5, does not fit 6, verification 7, step 8).
- `HostError` and its subclasses: raised beside the accelerator (the deploy
  package, the driver, the executor); the CLI maps them to exit code 9.

Standard library only, so the module imports on the board image.
"""
from __future__ import annotations


class FlowsError(Exception):
    """Base of every error the flow reports to a user."""

    exit_code = 1


class ConfigError(FlowsError):
    """A bad option, config field, model name or board name."""

    exit_code = 2


class DatasetError(FlowsError):
    """A dataset file is missing, corrupt, or in the wrong layout."""

    exit_code = 3


class ModelError(FlowsError):
    """A checkpoint or ONNX file that cannot be used (corrupt, not QONNX, unsupported layer)."""

    exit_code = 4


class ToolMissingError(FlowsError):
    """What the command needs is not on this machine: a Python package installed apart (finn-plus) or
    as an extra (optuna), a CUDA GPU asked for, a board or tool every benchmark target needed."""

    exit_code = 5


class FitError(FlowsError):
    """The design does not fit the board's resources."""

    exit_code = 6


class VerificationError(FlowsError):
    """Two stages of the flow disagree on the same inputs."""

    exit_code = 7


class StepError(FlowsError):
    """A build step failed; names the step and, when known, the graph node."""

    exit_code = 8

    def __init__(self, step: str, message: str, node: str | None = None):
        where = f"step '{step}'" + (f", node '{node}'" if node else "")
        super().__init__(f"{where}: {message}")
        self.step = step
        self.node = node


class RunInterrupted(FlowsError):
    """Ctrl-C: the run stopped; what finished is kept and the message says how to resume."""

    exit_code = 130  # the shell's code for SIGINT


def finite(name: str, value, *, positive: bool = False, minimum: float | None = None):
    """``value`` when it is a finite number (and > 0 with ``positive``, >= ``minimum``);
    otherwise ConfigError naming ``name`` (an option such as ``--lr`` or a config field).
    NaN passes every ``<=`` test, so each number a user gives goes through here."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if positive and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value:g}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {value:g}")
    return value


# -- beside the accelerator --------------------------------------------------------------


class HostError(Exception):
    """Base class of every error raised by the host package (CLI exit code 9)."""

    exit_code = 9


class IOSpecError(HostError):
    """Data or an IO description does not match the accelerator's IO spec
    (shape, datatype, value range, a missing or unknown key)."""


class BitfileError(HostError):
    """The bitfile or its .hwh is missing, or describes no FINN IO DMAs."""


class DmaTimeoutError(HostError):
    """A DMA engine did not finish (or was not idle) within the timeout."""


class DeployVersionError(HostError):
    """The deployed files were built by a different version than the host code."""


def require_package(module: str, install: str) -> None:
    """ToolMissingError (exit 5) unless ``module`` can be imported; ``install`` says how to get it."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ToolMissingError(f"Python package '{module}' is not installed; {install}")
