#!/usr/bin/env bash
# Create .venv and install charrnn into it. On a machine without CUDA it installs a pinned CPU
# build of PyTorch first, so pip never pulls the multi-GB CUDA wheels; a torch already in the
# venv (CUDA or not) is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CHARRNN_VENV:-.venv}
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: CUDA found: installing the default (CUDA) PyTorch build"
    pip install torch
  else
    echo "setup: no CUDA: installing the CPU build of PyTorch 2.13.0"
    pip install "torch==2.13.0+cpu" 2>/dev/null \
      || pip install "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -e ".[dev]"
echo "setup: ready ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
