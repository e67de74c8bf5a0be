#!/usr/bin/env bash
# Separate virtual environment for the peer run of the official ALIGNN package.
# Kept apart from mmlit's own requirements on purpose.
# torch is installed first, pinned, so that alignn's bare `torch` requirement is
# satisfied by the local CPU wheel instead of pulling the CUDA build.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade pip wheel >/dev/null
"$VENV/bin/python" -m pip install "torch==2.13.0"
"$VENV/bin/python" -m pip install "alignn==2026.8.11" "torch==2.13.0"

"$VENV/bin/python" - <<'PY'
import sys, importlib.metadata as md
print("python", sys.version.split()[0])
for p in ["torch", "alignn", "jarvis-tools", "numpy", "pandas", "scikit-learn", "pymatgen", "torch-geometric", "dgl"]:
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "(not installed)")
import torch
print("torch.cuda.is_available():", torch.cuda.is_available())
PY
