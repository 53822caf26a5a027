"""Shared test options and fixtures.

``--datasets DIR`` names the folder holding the real datasets (mnist/, fashion-mnist/);
CI passes ``../shared/datasets``. Tests that need it skip, saying why, without it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--datasets", default=None, metavar="DIR",
                     help="folder with the real datasets (mnist/, fashion-mnist/), e.g. ../shared/datasets; write it as --datasets=DIR")


@pytest.fixture(scope="session")
def datasets_dir(request) -> Path:
    value = request.config.getoption("--datasets")
    if not value:
        pytest.skip("no --datasets DIR given (e.g. --datasets=../shared/datasets)")
    for candidate in (Path(value), REPO / value):
        if candidate.is_dir():
            return candidate.resolve()
    pytest.skip(f"--datasets {value} is not a directory (looked from {Path.cwd()} and {REPO})")


@pytest.fixture(scope="module")
def deploy(tmp_path_factory) -> Path:
    """A small built TFC deploy package (tests/deploy_fixture.py), one per test module."""
    from tests.deploy_fixture import small_build

    return small_build(tmp_path_factory) / "deploy"


@pytest.fixture
def copy_of(deploy, tmp_path):
    """A private copy of the package, to damage."""
    def make() -> Path:
        import shutil

        return Path(shutil.copytree(deploy, tmp_path / "deploy"))
    return make
