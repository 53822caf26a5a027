#!/usr/bin/env bash
# Create the board-image test environment: Python 3.10, numpy 1.21, pynq 3.0.1
# (requirements/board.txt), in which tests/board runs host/ as on a PYNQ-Z2.
# A venv of its own: finn-plus in the main venv (.venv) needs numpy 2.4.
#   usage: scripts/setup-board-env.sh [DIR]     (default: .venv-board)
#   interpreter: $PYTHON310, else python3.10 on PATH (or pyenv's newest 3.10)
#   then:  PYTHONPATH=. DIR/bin/python -m pytest tests/board -q
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-"$root/.venv-board"}

# The interpreter: $PYTHON310, else python3.10 on PATH, else (where the
# python3.10 on PATH is a pyenv shim for a version that is not selected)
# pyenv's newest 3.10.
is_py310() { [ "$("$1" -c 'import sys; print(sys.version_info[:2] == (3, 10))' 2>/dev/null)" = True ]; }
if [ -n "${PYTHON310:-}" ]; then
  python=$PYTHON310
  if ! is_py310 "$python"; then
    echo "[board-env] error: PYTHON310=$python does not run Python 3.10 (the PYNQ v3 image's); point it at a python3.10" >&2
    exit 1
  fi
else
  python=$(command -v python3.10 || true)
  if [ -n "$python" ] && ! is_py310 "$python" && command -v pyenv >/dev/null 2>&1; then
    pyenv_310=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10\.[0-9]+$' | sort -t. -k3 -n | tail -n 1 || true)
    [ -n "$pyenv_310" ] && python="$(pyenv root)/versions/$pyenv_310/bin/python3.10"
  fi
  if [ -z "$python" ] || ! is_py310 "$python"; then
    echo "[board-env] error: no working python3.10 on PATH; install Python 3.10 or set PYTHON310=/path/to/python3.10" >&2
    exit 1
  fi
fi
echo "[board-env] using $python"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
# pip stays at the venv's own version: pynq 3.0.1 and pynqmetadata are sdists
# that newer pips build in isolation with an unpinned setuptools.
echo "[board-env] installing requirements/board.txt into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/requirements/board.txt"
"$venv/bin/python" - <<'PY'
import sys, numpy, pynq
print(f"[board-env] ok: python {sys.version.split()[0]}, numpy {numpy.__version__}, pynq {pynq.__version__}")
PY
