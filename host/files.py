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


def read_npz(path: Path, keys: tuple[str, ...] | None, error: type[HostError], todo: str) -> dict:
    """The arrays ``keys`` (None: all) of the .npz at ``path``, read completely now.

    A missing, truncated or garbled file, or a missing key, raises ``error`` in one line
    ending with ``todo`` (what to do). numpy is imported here, not by the module.
    """
    import zipfile
    import zlib

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            wanted = npz.files if keys is None else keys
            missing = [k for k in wanted if k not in npz.files]
            if missing:
                raise error(f"{path} lacks {', '.join(missing)}; {todo}")
            return {k: npz[k] for k in wanted}
    except FileNotFoundError:
        raise error(f"{path} not found; {todo}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise error(f"{path} is damaged or truncated ({type(exc).__name__}); {todo}") from None
