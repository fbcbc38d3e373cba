#!/usr/bin/env bash
# A corpus far larger than a model needs, with charrnn's default settings (2 x 512 LSTM, 10%
# validation capped by train.eval_chars): generate a text file of SIZE_MB (default 2048) from the
# Python standard library's sources, then measure with /usr/bin/time -v
#   1. a cold start: encoding (two streamed passes), 20 training steps and the final evaluation;
#   2. a warm start: the same run again, reading the cached memory map.
# End-to-end MB/s is the corpus size over the whole command's wall time.
# Not part of the test suite: it writes ~2 GB twice and takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
[ -x /usr/bin/time ] || { echo "bigcorpus: needs GNU time at /usr/bin/time for peak RSS (Debian: apt-get install time)" >&2; exit 1; }

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
    --max-steps 20 2> "$dir/$1.log" >/dev/null
  rss_kb=$(grep "Maximum resident set size" "$dir/$1.log" | awk '{print $NF}')
  wall=$(grep "Elapsed (wall clock)" "$dir/$1.log" | awk '{print $NF}')
  seconds=$(echo "$wall" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
  printf "| %-52s | %8.0f MB | %9s | %6.1f MB/s |\n" "$2" "$((rss_kb / 1024))" "$wall" \
    "$(awk -v mb="$size_mb" -v s="$seconds" 'BEGIN { print mb * 1.048576 / s }')"
}
echo "corpus: $(du -h "$corpus" | cut -f1), $(nproc) cores"
echo "| run | peak RSS | wall time | end to end |"
echo "|---|---:|---:|---:|"
run cold "cold: encode + 20 steps + final evaluation"
run warm "warm: cached memory map + 20 steps + final evaluation"
grep -o "encode[^\r]*MB/s[^\r]*" "$dir/cold.log" | tail -1 || true
