#!/usr/bin/env bash
# Peak memory on a corpus far larger than a model needs: generate a text file of SIZE_MB (default
# 2048) from the Python standard library's sources, then measure with /usr/bin/time -v
#   1. a cold start: encoding (two streamed passes) plus a short training run;
#   2. a warm start: the same run again, reading the cached memory map.
# Not part of the test suite: it writes ~2 GB twice and takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
command -v /usr/bin/time >/dev/null 2>&1 || { apt-get install -y -qq time >/dev/null 2>&1 || true; }

dir=${BIG_DIR:-/tmp/charrnn-big}
size_mb=${SIZE_MB:-2048}
mkdir -p "$dir"
corpus="$dir/big-${size_mb}mb.txt"
if [ ! -f "$corpus" ]; then
  echo "bigcorpus: writing $corpus"
  .venv/bin/python - "$corpus" "$size_mb" <<'PY'
import sys, sysconfig
from pathlib import Path
out, size = Path(sys.argv[1]), int(sys.argv[2]) << 20
base = "".join(p.read_text(errors="replace") for p in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")))
block = base.encode()
with open(out, "wb") as f:
    written = 0
    while written < size:
        piece = block[: size - written]
        f.write(piece)
        written += len(piece)
PY
fi
export CHARRNN_CACHE_DIR="$dir/cache"
rm -rf "$CHARRNN_CACHE_DIR"
run() {
  /usr/bin/time -v .venv/bin/charrnn train "$corpus" --run-dir "$dir/run" --overwrite --device cpu \
    --max-steps 30 --set data.val_fraction=0.0001 --set train.eval_every=1000 --set train.sample_every=0 \
    --set model.hidden_size=256 2> "$dir/$1.log" >/dev/null
  rss_kb=$(grep "Maximum resident set size" "$dir/$1.log" | awk '{print $NF}')
  wall=$(grep "Elapsed (wall clock)" "$dir/$1.log" | awk '{print $NF}')
  printf "| %-38s | %8.0f MB | %9s |\n" "$2" "$((rss_kb / 1024))" "$wall"
}
echo "corpus: $(du -h "$corpus" | cut -f1), $(nproc) cores"
echo "| run | peak RSS | wall time |"
echo "|---|---:|---:|"
run cold "cold: encode (2 passes) + 30 train steps"
run warm "warm: cached memory map + 30 train steps"
grep -o "encode[^\r]*MB/s[^\r]*" "$dir/cold.log" | tail -1 || true
