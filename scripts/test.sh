#!/usr/bin/env bash
# Install everything and run every test suite:
#   1. the main environment (.venv, scripts/setup.sh) and the main tests (pytest, tests/);
#   2. the board-image environment (.venv-board: Python 3.10, numpy 1.21, pynq 3.0.1)
#      and tests/board, which run host/ as it runs on a PYNQ board.
#   usage: scripts/test.sh [PYTEST_ARGS...]   e.g. scripts/test.sh --datasets=../shared/datasets
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
scripts/setup-board-env.sh
scripts/setup-postgres.sh  # the server binaries of the distributed-search test (the test starts its own server)
echo "[test] main suite"
.venv/bin/python -m pytest --rootdir="$root" "$@"
echo "[test] board-image suite (Python 3.10, numpy 1.21, pynq 3.0.1)"
PYTHONPATH="$root" .venv-board/bin/python -m pytest tests/board -q -p no:cacheprovider
