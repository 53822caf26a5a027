"""pyproject.toml's dependencies and the staged install's requirements/*.txt name the same packages
with the same versions: the two lists of one stack cannot drift apart."""
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def requirements(*names: str) -> dict[str, str]:
    out = {}
    for name in names:
        for line in (REPO / "requirements" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                req = Requirement(line)
                out[canonicalize_name(req.name)] = str(req.specifier)
    return out


def declared(reqs: list[str]) -> dict[str, str]:
    return {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier) for r in reqs}


def test_pyproject_declares_what_the_staged_install_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = declared(project["dependencies"] + extras["search"] + extras["compress"])
    assert runtime == requirements("torch.txt", "stack.txt")
    assert declared(extras["dev"]) == requirements("dev.txt")
    assert "finn-plus" not in runtime  # installed with --no-deps (requirements/finn.txt): its brevitas pin is broken
