#!/usr/bin/env bash
# Set everything up, train a model for a few minutes on the Python standard library's own
# asyncio sources (on every machine with Python: no download), then sample from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

corpus=${1:-$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')/asyncio}
run_dir=runs/demo-$(date +%Y%m%d-%H%M%S)
seconds=${DEMO_SECONDS:-150}

echo "demo: training on $corpus for ${seconds}s into $run_dir (watch it: tensorboard --logdir runs)"
.venv/bin/charrnn train "$corpus" --run-dir "$run_dir" --config configs/shakespeare.toml --time-budget "$seconds" \
  --include '*.py'  # a source tree also holds build products; learn the Python only
echo
echo "demo: a sample at temperature 0.7 (charrnn sample $run_dir --prime 'def ' -t 0.7):"
.venv/bin/charrnn sample "$run_dir" --prime "def " --length 800 --temperature 0.7 --seed 0
echo
echo "demo: the cells of $run_dir, on a file it never trained on (charrnn visualize):"
# From character 20,000: past the module docstring, so both halves of the window (one picks each probe's
# cell, the other scores it) hold code, strings, comments and if statements alike.
.venv/bin/charrnn visualize "$run_dir" "$(.venv/bin/python -c 'import argparse; print(argparse.__file__)')" \
  --offset 20000 --chars 30000 --out "$run_dir/visualize.html"
echo "demo: open $run_dir/visualize.html in a browser to see which cells track brackets, if conditions, strings and comments"
