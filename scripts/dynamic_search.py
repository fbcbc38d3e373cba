"""Grid search for dynamic evaluation's hyperparameters on a run's validation split.

    .venv/bin/python scripts/dynamic_search.py RUN_DIR [--chars N] [--segment-lens 25,50,100]
        [--lrs 1e-4,3e-4,1e-3] [--decays 0,0.01,0.03]

Scores the validation split (the one the run recorded in data.split, exactly as training
held it out) statically, then dynamically for every combination, and prints a Markdown table,
best first. The gradient statistics come from the end of the training split, as `charrnn eval
--dynamic` gathers them. Losses do not depend on the machine's load; the seconds do.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from charrnn.checkpoint import load_model
from charrnn.data.encoding import load_data
from charrnn.data.split import split_of
from charrnn.evaluation.dynamic import STATS_CHARS, dynamic_evaluate, gradient_stats, training_ids
from charrnn.model import cross_entropy
from charrnn.training import rundir


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--chars", type=int, default=0, help="score only the first N validation characters (0: all)")
    parser.add_argument("--segment-lens", default="25,50,100")
    parser.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    parser.add_argument("--decays", default="0,0.01,0.03")
    parser.add_argument("--stats-chars", type=int, default=STATS_CHARS)
    args = parser.parse_args()

    loaded = load_model(args.run_dir, "cpu")
    data = loaded.config.data
    corpus = load_data(data, skip_dir=rundir.is_run_dir)
    val = split_of(corpus, data).val
    val = torch.from_numpy((val[: args.chars + 1] if args.chars else val).astype(np.int64))
    with torch.no_grad():
        logits, _ = loaded.model(val[None, :-1])
        static = cross_entropy(logits, val[None, 1:]).item()
    print(f"{args.run_dir}: {loaded.config.model.cell} {loaded.config.model.num_layers}x"
          f"{loaded.config.model.hidden_size}, {len(val) - 1:,} validation characters, static {static:.4f} nats/char")

    rows = []
    train_ids = training_ids(loaded, None, args.stats_chars)
    for segment_len in map(int, args.segment_lens.split(",")):
        stats = gradient_stats(loaded.model, train_ids, segment_len)
        for lr, decay in itertools.product(floats(args.lrs), floats(args.decays)):
            start = time.perf_counter()
            loss = dynamic_evaluate(loaded.model, val, stats, lr, decay).loss
            rows.append((loss, segment_len, lr, decay, time.perf_counter() - start))
            print(f"  segment_len {segment_len} lr {lr:g} decay {decay:g}: {loss:.4f}", flush=True)

    print("\n| segment_len | lr | decay | dynamic nats/char | gain over static | seconds |")
    print("|---:|---:|---:|---:|---:|---:|")
    for loss, segment_len, lr, decay, seconds in sorted(rows):
        print(f"| {segment_len} | {lr:g} | {decay:g} | {loss:.4f} | {static - loss:+.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
