"""A throwaway PostgreSQL server for tests: Debian's postgresql-15 binaries, run as the
``postgres`` user (the server refuses root), listening on loopback only, in a temporary folder."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path


def server_binaries() -> tuple[str, str] | None:
    """(initdb, pg_ctl) of the newest installed server, or None."""
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        initdb, pg_ctl = Path(bindir, "initdb"), Path(bindir, "pg_ctl")
        if initdb.is_file() and pg_ctl.is_file():
            return str(initdb), str(pg_ctl)
    return None


def why_unavailable() -> str | None:
    if server_binaries() is None:
        return "no PostgreSQL server binaries (/usr/lib/postgresql/*/bin; Debian package postgresql-15)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start the server as the postgres user"
    import importlib.util

    if importlib.util.find_spec("psycopg") is None:
        return 'psycopg is not installed (pip install "psycopg[binary]")'
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``with Server() as url:`` a database URL on 127.0.0.1; stopped and removed afterwards."""

    def __init__(self):
        import tempfile

        # not under pytest's tmp_path: its parents are private to root, and the server runs as postgres
        self.root, self.port = Path(tempfile.mkdtemp(prefix="flows-pg-")), _free_port()
        self.data = self.root / "pgdata"

    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)

    def __enter__(self) -> str:
        initdb, pg_ctl = server_binaries()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        subprocess.run(self._as_postgres(initdb, "-D", str(self.data), "-A", "trust", "-U", user),
                       check=True, capture_output=True)
        subprocess.run(self._as_postgres(pg_ctl, "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                                         "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
                                         "start"), check=True, capture_output=True)
        return f"postgresql://{user}@127.0.0.1:{self.port}/postgres"

    def __exit__(self, *exc) -> None:
        _, pg_ctl = server_binaries()
        subprocess.run(self._as_postgres(pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
