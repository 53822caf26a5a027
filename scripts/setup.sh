#!/usr/bin/env bash
# Install qnn-flows and its stack into a virtual environment, in the order that
# works (docs/install.md): torch first, the stack and the test tools, finn-plus
# without its stale brevitas pin, then this package (its dependencies are in by then).
#   usage: scripts/setup.sh [VENV_DIR]      (default: .venv)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-"$root/.venv"}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
echo "[setup] 1/4 torch (CPU build)"
"${pip[@]}" -r "$root/requirements/torch.txt"
echo "[setup] 2/4 QAT/FINN stack, test tools"
"${pip[@]}" -r "$root/requirements/stack.txt" -r "$root/requirements/dev.txt" -r "$root/requirements/torch.txt"
echo "[setup] 3/4 finn-plus (--no-deps)"
"${pip[@]}" --no-deps -r "$root/requirements/finn.txt"
echo "[setup] 4/4 qnn-flows"
"${pip[@]}" --no-deps -e "$root"
"$venv/bin/python" - <<'PY'
import torch, brevitas, qonnx, finn, onnxruntime, numpy
print(f"[setup] ok: torch {torch.__version__} (cuda={torch.version.cuda}), "
      f"brevitas {brevitas.__version__}, numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}")
PY
