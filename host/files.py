"""Reading the versioned JSON files of a deploy package (numpy-free, board-safe)."""
from __future__ import annotations

import json
from pathlib import Path

from host.errors import DeployVersionError, HostError


def read_versioned_json(path: Path, fmt: str, error: type[HostError], missing: str, unreadable: str,
                        mismatch: str) -> dict:
    """The JSON object at ``path`` after checking its ``format`` field is ``fmt``.

    ``missing``/``unreadable``/``mismatch`` finish the one-line messages (what to do);
    a missing or garbled file raises ``error``, another format DeployVersionError.
    """
    try:
        meta = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error(f"{path} not found; {missing}") from None
    except (OSError, ValueError) as exc:
        raise error(f"{path} is not readable JSON ({exc}); {unreadable}") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != fmt:
        raise DeployVersionError(f"{path} has format {found!r} but this host code reads {fmt!r}; {mismatch}")
    return meta
