"""The flow's errors and exit codes, for flows/: defined in host.errors, the lowest layer,
so that qat/, hw/ and boards/ raise them without importing flows/ (see host/errors.py).
``read_yaml`` lives in qat.config_file."""
from __future__ import annotations

from host.errors import (  # noqa: F401  (re-exports)
    ConfigError,
    DatasetError,
    FitError,
    FlowsError,
    ModelError,
    RunInterrupted,
    StepError,
    ToolMissingError,
    VerificationError,
    finite,
    require_package,
)
from qat.config_file import read_yaml  # noqa: F401  (re-export)
