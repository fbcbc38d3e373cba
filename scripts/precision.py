"""Training speed in fp32 and in bf16 autocast, shape by shape, in one run on this machine's CPU.

    .venv/bin/python scripts/precision.py [--steps 10]

Each row times full training steps (forward, loss, backward, AdamW) of an LSTM on random ids,
fp32 then bf16 for each shape, and prints chars/s and the bf16 / fp32 ratio. On a CPU with AMX
(Intel Sapphire Rapids or newer) oneDNN runs the fused LSTM's bf16 matmuls on the tile unit;
elsewhere bf16 is emulated and slower, which is why train.precision = "auto" picks it only there.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from charrnn.config import ModelConfig
from charrnn.devices import autocast, resolve_precision
from charrnn.model import CharRNN, cross_entropy

SHAPES = [(1, 384, 16), (1, 512, 32), (2, 512, 32), (1, 1024, 32), (2, 512, 64)]  # (layers, hidden, batch)
SEQ_LEN, VOCAB = 100, 65


def seconds_per_step(layers: int, hidden: int, batch: int, precision: str, steps: int) -> float:
    torch.manual_seed(0)
    model = CharRNN(VOCAB, ModelConfig(hidden_size=hidden, num_layers=layers, dropout=0.1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randint(0, VOCAB, (2, batch, SEQ_LEN))
    cpu = torch.device("cpu")

    def step() -> None:
        with autocast(cpu, precision):
            logits, _ = model(x)
            loss = cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # oneDNN builds its kernels on first use
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per shape and precision")
    args = parser.parse_args()
    kernel = resolve_precision("auto", torch.device("cpu")) == "bf16"
    print(f"{torch.get_num_threads()} threads; a bf16 LSTM kernel: {'yes' if kernel else 'no'} (train.precision "
          "auto times both precisions for the run's own shape and keeps the faster)")
    print("\n| LSTM | batch × seq_len | fp32 chars/s | bf16 chars/s | bf16 / fp32 |\n|---|---|---:|---:|---:|")
    for layers, hidden, batch in SHAPES:
        fp32, bf16 = (seconds_per_step(layers, hidden, batch, p, args.steps) for p in ("fp32", "bf16"))
        chars = batch * SEQ_LEN
        print(f"| {layers} × {hidden} | {batch} × {SEQ_LEN} | {chars / fp32:,.0f} | {chars / bf16:,.0f} | "
              f"{fp32 / bf16:.2f} |")


if __name__ == "__main__":
    main()
