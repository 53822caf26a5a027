"""The model zoo's names (``tfc-w2a2``), importable without torch: the CLI lists and checks them.

``qat.models`` builds the models and takes its architecture names and precisions from here.
"""
from __future__ import annotations

import re

MLP_ARCHS = ("tfc", "sfc", "lfc", "lenet")
ARCH_NAMES = (*MLP_ARCHS, "cnv")
PRECISIONS = ("w1a1", "w1a2", "w2a2", "w4a4", "w8a8")  # the zoo's; any wNaM with N, M in 1..MAX_BITS builds
MAX_BITS = 8
NAME = re.compile(r"^(?P<arch>[a-z]+)-w(?P<w>\d+)a(?P<a>\d+)$")


def zoo_names() -> list[str]:
    return [f"{arch}-{p}" for arch in ARCH_NAMES for p in PRECISIONS]


def is_model_name(name: str) -> bool:
    """Whether ``name`` is ``<arch>-w<N>a<M>`` of a known architecture with 1..MAX_BITS bits."""
    m = NAME.match(name)
    return bool(m) and m["arch"] in ARCH_NAMES and all(1 <= int(m[k]) <= MAX_BITS for k in ("w", "a"))
