"""A training step with the full softmax head against an adaptive one (model.head_cutoff), in one run on this CPU.

    .venv/bin/python scripts/adaptive_head.py [--rounds 8] [--precision bf16]

For the vocabularies of two directory corpora, the Python standard library's sources (8,781 symbols, of which
92 make up 99.9% of the text) and the Linux kernel's core (255, 89), and for scale of a small one (100, 80, where
the planner would not offer it), it times the planner's own trial (`charrnn.training.throughput.turn_seconds`: the
fastest of a few steps of forward, loss, backward and AdamW at 32 x 100, both heads in turns) of one-layer LSTMs
with each head, and prints ms a step and the adaptive head's speed as a multiple of the full head's. Trials draw
their ids from the adaptive head's own symbols, as a real text's 99.9% would be. The timings go to a throwaway
cache, not the planner's. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from plan_figures import host

from charrnn.config import ModelConfig
from charrnn.training.throughput import Trial, turn_seconds

VOCABS = [("Python lib dir", 8781, 92), ("the kernel's core", 255, 89), ("a small vocabulary, for scale", 100, 80)]
WIDTHS = (256, 384, 512, 768)
BATCH, SEQ_LEN = 32, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed steps of each head, in turns")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    args = parser.parse_args()
    os.environ["CHARRNN_CACHE_DIR"] = tempfile.mkdtemp()  # the trials' timings, away from the planner's cache
    print(f"host: {host()}; torch {torch.__version__}, {torch.get_num_threads()} threads; {args.precision}, "
          f"{BATCH} x {SEQ_LEN}, the fastest of {args.rounds} steps\n")
    print("| vocabulary (symbols in use) | shape | full head, ms a step | adaptive head, ms a step | "
          "speed, adaptive / full |")
    print("|---|---|---:|---:|---:|")
    for name, vocab, cutoff in VOCABS:
        for width in WIDTHS:
            full = ModelConfig(hidden_size=width, num_layers=1)
            trials = [Trial(args.precision, m, BATCH, SEQ_LEN) for m in (full, ModelConfig(
                hidden_size=width, num_layers=1, head_cutoff=cutoff))]
            a, b = turn_seconds(trials, vocab, torch.device("cpu"), args.rounds)
            print(f"| {name}: {vocab:,} ({cutoff}) | 1 x {width} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
