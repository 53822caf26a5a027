"""Light imports: the packages import nothing heavy until a function needs it."""
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
