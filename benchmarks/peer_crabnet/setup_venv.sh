#!/usr/bin/env bash
# Separate virtual environment for the peer run of the CrabNet package (PyPI `crabnet==2.0.8`).
# Kept apart from mmlit's own requirements on purpose: crabnet is never a dependency of mmlit.
#
# Notes
# - torch is installed first, pinned, from the local CPU wheel. crabnet does not declare torch
#   at all (it expects the user to install it), and a bare `torch` from the index pulls the
#   CUDA build (GBs).
# - crabnet 2.0.8 declares `Requires-Python >=3.7,<3.11`, but its code is pure Python and the
#   local torch wheel exists only for CPython 3.11. So crabnet alone is installed with
#   `--ignore-requires-python` (its dependencies are resolved normally for 3.11).
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
# crabnet's declared dependencies, plus torch re-pinned so nothing can replace it
"$VENV/bin/python" -m pip install "torch==2.13.0" numpy pandas scikit-learn scipy matplotlib \
  seaborn tqdm colorama joblib psutil
"$VENV/bin/python" -m pip install --ignore-requires-python --no-deps "crabnet==2.0.8"
"$VENV/bin/python" -m pip check || true

"$VENV/bin/python" - <<'PY'
import sys, importlib.metadata as md
print("python", sys.version.split()[0])
for p in ["torch", "crabnet", "numpy", "pandas", "scikit-learn", "scipy", "matplotlib"]:
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "(not installed)")
import torch
print("torch.cuda.is_available():", torch.cuda.is_available())
from crabnet.crabnet_ import CrabNet  # noqa: F401  (import check)
print("crabnet import OK")
PY
