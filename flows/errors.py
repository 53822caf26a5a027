"""The errors a user can act on, and the CLI exit code of each.

Every error carries one line that names what is wrong and what to do; the CLI
prints that line (no traceback unless ``--debug``) and exits with ``exit_code``.
This module imports nothing heavy: ``qat``, ``hw`` and ``boards`` use it too.
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


def require_package(module: str, install: str) -> None:
    """ToolMissingError (exit 5) unless ``module`` can be imported; ``install`` says how to get it."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ToolMissingError(f"Python package '{module}' is not installed; {install}")


def read_yaml(path, what: str):
    """The data of the YAML/JSON file ``path`` (a ``what``: "model config", "search space", ...);
    ConfigError naming the file when it is missing or unreadable."""
    from pathlib import Path

    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML/JSON: {' '.join(str(exc).split())}") from None
