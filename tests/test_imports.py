"""Light imports: the packages import nothing heavy until a function needs it."""
import re
import subprocess
import sys

import pytest

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HEAVY = ("torch", "finn", "brevitas", "qonnx", "onnx", "onnxruntime", "pynq")


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("package", ["qat", "flows", "hw", "host", "boards", "flows.errors", "flows.config"])
def test_package_import_is_light(package):
    assert not imported_after(f"import {package}") & set(HEAVY)


def test_cli_help_is_light():
    heavy = imported_after("import flows.cli") & set(HEAVY)
    assert not heavy, heavy


def test_lower_layers_own_their_errors():
    """qat/, hw/, boards/ and host/ raise the project's errors from host.errors (the lowest layer);
    flows.errors only re-exports them, with the documented exit codes."""
    import flows.errors
    import host.errors

    for pkg in ("qat", "hw", "boards", "host"):
        for path in (REPO / pkg).rglob("*.py"):
            assert not re.search(r"(from|import) flows\.errors", path.read_text()), path
    codes = {name: getattr(host.errors, name).exit_code for name in (
        "ConfigError", "DatasetError", "ModelError", "ToolMissingError", "FitError", "VerificationError",
        "StepError", "HostError", "RunInterrupted")}
    assert list(codes.values()) == [2, 3, 4, 5, 6, 7, 8, 9, 130]
    assert flows.errors.ConfigError is host.errors.ConfigError and flows.errors.finite is host.errors.finite
