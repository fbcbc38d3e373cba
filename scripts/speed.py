"""Inference speeds that the README quotes, for a 2 x 512 model with random weights (speed does not
depend on the weights): single-stream sampling per cell, beam search of width 8, and recording
activations for `charrnn visualize`. Run it alone on the machine; each figure is the best of 3.

    .venv/bin/python scripts/speed.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from charrnn.config import ModelConfig
from charrnn.generation.beam import beam_search
from charrnn.generation.sampling import generate
from charrnn.inspection.activations import record
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

VOCAB = Vocab("".join(chr(32 + i) for i in range(65)))


def best_seconds(work: Callable[[], None], repeats: int = 3) -> float:
    work()  # warm-up: oneDNN builds its kernels on first use
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def model(cell: str = "lstm") -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(VOCAB.size, ModelConfig(cell=cell, embed_dim=64, hidden_size=512, num_layers=2)).eval()


def main() -> None:
    rows = []
    for cell in ("lstm", "gru", "rnn"):
        net, generator = model(cell), torch.Generator().manual_seed(0)
        seconds = best_seconds(lambda net=net, generator=generator: [
            None for _ in generate(net, VOCAB, " ", 1000, generator=generator)])
        rows.append((f"sampling, {cell.upper()}, 1 stream", f"{1000 / seconds:,.0f} chars/s"))
    net = model()
    seconds = best_seconds(lambda: beam_search(net, VOCAB, "ABC", 500, beam_width=8))
    rows.append(("beam search, width 8, LSTM", f"{500 / seconds:,.0f} chars/s"))
    ids = np.random.default_rng(0).integers(0, VOCAB.size, 100_000)
    seconds = best_seconds(lambda: record(net, ids), repeats=1)
    rows.append(("activations of 100,000 characters, LSTM", f"{seconds:.1f} s"))
    print(f"2 x 512, {torch.get_num_threads()} threads\n\n| measurement | speed |\n|---|---:|")
    print("\n".join(f"| {name} | {value} |" for name, value in rows))


if __name__ == "__main__":
    main()
