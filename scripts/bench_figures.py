"""How long the figures beside a run take on a big corpus: the baselines and the copy check.

Takes the first --chars characters of a corpus (default 100M: the size issue 17 names) as the
training text, and times, one after another:
- `baselines()` on it, scoring 120,000 characters (train.eval_chars' default), with the caps it applies;
- building the copy-check index over it, saving it, loading it again (the cached path);
- checking 2,000-character samples against it: five passages of the corpus and five of noise.
Run it alone on the machine: every figure is a wall time.

    .venv/bin/python scripts/bench_figures.py /tmp/kernel/linux-source-6.1 --include '*.c' --include '*.h'
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from charrnn.data.encoding import load_corpus
from charrnn.evaluation.copies import CopyIndex
from charrnn.evaluation.static import baselines_of

SAMPLE = 2_000
SCORED = 120_000


def host() -> str:
    """The CPU model and the flags that matter for speed, as lscpu reports them."""
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    wanted = [f for f in flags if f.startswith(("avx512_bf16", "amx", "avx2"))]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs, {' '.join(wanted)}"


def timed(work):
    start = time.perf_counter()
    out = work()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--include", action="append", default=[])
    parser.add_argument("--chars", type=int, default=100_000_000)
    args = parser.parse_args()
    corpus = load_corpus(args.corpus, include=args.include)
    ids = corpus.ids[: args.chars]
    train, scored = ids[: len(ids) - SCORED], ids[len(ids) - SCORED :]
    rows = []
    found, seconds = timed(lambda: baselines_of(train, scored, corpus.vocab))
    rows.append((f"baselines: {len(train):,} training chars, {len(scored):,} scored", seconds,
                 "; ".join(found.notes) or "no cap"))
    index, seconds = timed(lambda: CopyIndex.build(ids))
    rows.append((f"copy index: build over {len(ids):,} chars", seconds,
                 f"{index.keys.nbytes / 1e9:.2f} GB, stride {index.stride}"))
    with tempfile.TemporaryDirectory() as folder:
        _, seconds = timed(lambda: index.save(Path(folder)))
        rows.append(("copy index: save", seconds, ""))
        loaded, seconds = timed(lambda: CopyIndex.load(Path(folder), ids))
        rows.append(("copy index: load (the cached path)", seconds, "memory-mapped"))
        rng = np.random.default_rng(0)
        starts = rng.integers(0, len(ids) - SAMPLE, 5)
        copies = [ids[s : s + SAMPLE] for s in starts]
        noise = [rng.integers(0, corpus.vocab.size, SAMPLE).astype(ids.dtype) for _ in range(5)]
        for name, samples in (("passages of the corpus", copies), ("noise", noise)):
            reports, seconds = timed(lambda samples=samples: [loaded.check(s) for s in samples])
            longest = ", ".join(f"{r.longest:,}" for r in reports)
            rows.append((f"copy check: 5 samples of {SAMPLE:,} chars, {name}", seconds / 5, f"longest {longest}"))
    print(f"host: {host()}")
    print(f"corpus: {args.corpus} ({len(ids):,} of {len(corpus.ids):,} characters)\n")
    print("| step | seconds | notes |\n|---|---:|---|")
    for what, seconds, notes in rows:
        print(f"| {what} | {seconds:.3f} | {notes} |")
    print("\nbaselines (bpc): " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(found.bpc.items(), key=lambda x: x[1])))


if __name__ == "__main__":
    main()
