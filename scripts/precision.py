"""Training speed in fp32 and in bf16 autocast, shape by shape, in one run on this machine's CPU.

    .venv/bin/python scripts/precision.py [--steps 10]
    .venv/bin/python scripts/precision.py --dropout   # the cost of dropout's mask, torch's and charrnn's
    .venv/bin/python scripts/precision.py --adamw     # torch's default AdamW against the fused one charrnn uses
    .venv/bin/python scripts/precision.py --window    # 3,200 characters a step as 32 x 100, 64 x 50 and 128 x 25
    .venv/bin/python scripts/precision.py --weight-dropout  # the cost of model.weight_dropout 0.25
    .venv/bin/python scripts/precision.py --between   # dropout between layers: the fused cell's, or charrnn's
    .venv/bin/python scripts/precision.py --mask      # charrnn's 8-bit CPU dropout mask against its 16-bit one
    .venv/bin/python scripts/precision.py --trials 5  # the planner's own trials of what it compares

Each row times full training steps (forward, loss, backward, AdamW) of an LSTM on random ids,
fp32 then bf16 for each shape, and prints chars/s and the bf16 / fp32 ratio. On a CPU with AMX
(Intel Sapphire Rapids or newer) oneDNN runs the fused LSTM's bf16 matmuls on the tile unit;
elsewhere bf16 is emulated and slower, which is why train.precision = "auto" picks it only there.
--dropout instead times each shape and precision without dropout, with torch's nn.Dropout before the head and with
charrnn's (charrnn.model.Dropout, a cheaper mask on the CPU), at p = 0.1. --adamw times each shape and precision
with torch's default AdamW (a dozen passes over the weights) and with the fused kernel charrnn's runs use
(charrnn.training.optim.adamw). --window times each shape's step of the same characters as the presets' batch x
seq_len, as twice the streams of half the window and as four times the streams of a quarter, the windows the planner
halves to. --weight-dropout times each shape's step
without and with weight dropout 0.25 on the recurrent weights. --between times two-layer models with dropout 0.1
between the layers drawn by the fused cell (torch's mask) and by charrnn, which runs the layers one at a time.
--mask times the plans' recipe (64 x 50, dropout 0.1, weight dropout 0.25) with the 16-bit mask charrnn used
until 2026-12-06 and with its 8-bit one. --trials N repeats the planner's own trials (charrnn.training.throughput)
of the pairs it compares, N times: the plans' shapes at their two windows, and finalists that plans have rated level,
each timed apart and then both in turns as the plan decides (in the planner's two rounds, and in four), and prints
the spread of each. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from charrnn.config import ModelConfig
from charrnn.devices import autocast, resolve_precision
from charrnn.model import CharRNN, Dropout, cross_entropy
from charrnn.training.optim import adamw

# (layers, hidden, batch)
SHAPES = [(1, 384, 16), (1, 512, 32), (1, 768, 32), (2, 512, 32), (1, 1024, 32), (2, 512, 64)]
SEQ_LEN, VOCAB = 100, 65


class SixteenBitDropout(torch.nn.Dropout):
    """charrnn's CPU mask until 2026-12-06, the baseline of --mask: 16 random bits an element, p to 1/65536."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        draws = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        lanes = draws.view(torch.int16)[: x.numel()].view(x.shape)
        return x * (lanes >= round(self.p * 65536) - 32768).to(x.dtype).mul_(1 / (1 - self.p))


def seconds_per_step(layers: int, hidden: int, batch: int, precision: str, steps: int,
                     dropout: type[torch.nn.Dropout] = Dropout, p: float = 0.1, fused: bool = True,
                     seq_len: int = SEQ_LEN, weight_dropout: float = 0.0, fused_between: bool = False) -> float:
    torch.manual_seed(0)
    model = CharRNN(VOCAB, ModelConfig(hidden_size=hidden, num_layers=layers, dropout=p,
                                       weight_dropout=weight_dropout))
    model.drop = dropout(p)  # torch's or charrnn's, before the head and (unless fused_between) between layers
    model.weight_drop = dropout(weight_dropout)
    if fused_between:  # the whole fused cell, with its own dropout between layers, as charrnn did before
        model._recurrent = lambda x, hidden: model.rnn(x, hidden)
    optimizer = adamw(model.parameters(), 1e-3, torch.device("cpu")) if fused else \
        torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    x, y = torch.randint(0, VOCAB, (2, batch * SEQ_LEN // seq_len, seq_len))  # the same characters at any window
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
    parser.add_argument("--dropout", action="store_true", help="time dropout's cost instead")
    parser.add_argument("--adamw", action="store_true", help="time torch's default AdamW against the fused one")
    parser.add_argument("--window", action="store_true", help="time a step as 32 x 100, 64 x 50 and 128 x 25")
    parser.add_argument("--weight-dropout", action="store_true", help="time a step without and with weight dropout")
    parser.add_argument("--between", action="store_true", help="time dropout between layers, torch's and charrnn's")
    parser.add_argument("--mask", action="store_true", help="time charrnn's 8-bit dropout mask against its 16-bit one")
    parser.add_argument("--trials", type=int, default=0, help="repeat the planner's trials this many times")
    args = parser.parse_args()
    if args.trials:
        return trials_table(args.trials)
    if args.dropout:
        return arms_table(args.steps, *DROPOUT, SHAPES)
    if args.adamw:
        return arms_table(args.steps, *ADAMW, [(1, 256, 32), *SHAPES])
    if args.window:
        return arms_table(args.steps, *WINDOW, [(1, 256, 32), (1, 384, 32), (1, 512, 32), (1, 768, 32), (2, 512, 32)])
    if args.weight_dropout:
        return arms_table(args.steps, *WEIGHT_DROP, [(1, 384, 32), (1, 512, 32), (1, 768, 32), (2, 512, 32)])
    if args.between:
        return arms_table(args.steps, *BETWEEN, [(2, 384, 32), (2, 512, 32), (2, 512, 64), (2, 768, 32)])
    if args.mask:
        return arms_table(args.steps, *MASK, [(1, 384, 32), (1, 768, 32), (2, 512, 32)])
    kernel = resolve_precision("auto", torch.device("cpu")) == "bf16"
    print(f"{torch.get_num_threads()} threads; a bf16 LSTM kernel: {'yes' if kernel else 'no'} (train.precision "
          "auto times both precisions for the run's own shape and keeps the faster)")
    print("\n| LSTM | batch × seq_len | fp32 chars/s | bf16 chars/s | bf16 / fp32 |\n|---|---|---:|---:|---:|")
    for layers, hidden, batch in SHAPES:
        fp32, bf16 = (seconds_per_step(layers, hidden, batch, p, args.steps) for p in ("fp32", "bf16"))
        chars = batch * SEQ_LEN
        print(f"| {layers} × {hidden} | {batch} × {SEQ_LEN} | {chars / fp32:,.0f} | {chars / bf16:,.0f} | "
              f"{fp32 / bf16:.2f} |")


# Each comparison: its columns, and the seconds_per_step arguments of each arm; the last column is the ratio of
# the last two arms (the one charrnn replaced over the one it uses).
DROPOUT = (["no dropout", "torch's dropout 0.1", "charrnn's", "torch's / charrnn's"],
           [{"dropout": Dropout, "p": 0.0}, {"dropout": torch.nn.Dropout}, {"dropout": Dropout}])
ADAMW = (["default AdamW", "fused AdamW", "default / fused"], [{"fused": False}, {"fused": True}])
WINDOW = ([f"seq_len {SEQ_LEN}", f"twice the streams at {SEQ_LEN // 2}", f"four times at {SEQ_LEN // 4}",
           f"{SEQ_LEN} / {SEQ_LEN // 2}", f"{SEQ_LEN // 2} / {SEQ_LEN // 4}"],
          [{}, {"seq_len": SEQ_LEN // 2}, {"seq_len": SEQ_LEN // 4}])
WEIGHT_DROP = (["no weight dropout", "weight dropout 0.25", "without / with"], [{}, {"weight_dropout": 0.25}])
PLANS_RECIPE = {"seq_len": 50, "weight_dropout": 0.25}
MASK = (["16-bit mask at 64 × 50", "8-bit mask", "16-bit / 8-bit"],
        [{"dropout": SixteenBitDropout, **PLANS_RECIPE}, PLANS_RECIPE])
BETWEEN = (["no dropout", "the fused cell's 0.1", "charrnn's", "fused / charrnn's"],
           [{"p": 0.0}, {"fused_between": True}, {}])


def arms_table(steps: int, columns: list[str], arms: list[dict], shapes: list[tuple[int, int, int]]) -> None:
    """ms per step of each arm, each shape in fp32 and bf16, in one run; the columns past the arms' are the ratios of
    the last arms, each to the next."""
    print(f"| LSTM | batch × seq_len | precision | ms/step, {' | '.join(columns)} |\n"
          f"|---|---|---|{'---:|' * len(columns)}")
    for layers, hidden, batch in shapes:
        for precision in ("fp32", "bf16"):
            ms = [seconds_per_step(layers, hidden, batch, precision, steps, **arm) * 1e3 for arm in arms]
            last = len(columns) - len(arms)  # how many ratio columns: of the last arms, each to the next
            ratios = [a / b for a, b in zip(ms[-last - 1:-1], ms[-last:], strict=True)]
            print(f"| {layers} × {hidden} | {batch} × {SEQ_LEN} | {precision} | "
                  f"{' | '.join(f'{m:.1f}' for m in ms)} | {' | '.join(f'{r:.2f}' for r in ratios)} |")


def trials_table(repeats: int) -> None:
    """Pairs the planner compares, timed by its own trials apart and in turns, `repeats` times: their spread."""
    from charrnn.training.throughput import seconds_per_step, turn_seconds, write_cache

    os.environ["CHARRNN_CACHE_DIR"] = tempfile.mkdtemp()  # every trial measured, none read; the user's cache untouched
    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu)
    print(f"{precision}; {repeats} repeats of each, in ms a step: min / median / max; a ratio is the first's time "
          "over the second's\n\n| pair | vocabulary | first apart | second apart | ratio of the medians apart | "
          "ratio apart: min / median / max | " + " | ".join(f"in turns, {r} rounds" for r in ROUNDS)
          + " |\n|---|---:|---:|---:|---:|---:|" + "---:|" * len(ROUNDS))
    for label, vocab, pair in _pairs(precision):
        apart: list[list[float]] = [[], []]
        turns: dict[int, list[float]] = {r: [] for r in ROUNDS}
        for _ in range(repeats):
            for times, t in zip(apart, pair, strict=True):
                times.append(seconds_per_step(t.precision, t.model, vocab, t.batch_size, t.seq_len, cpu))
            for rounds, ratios in turns.items():
                first, second = turn_seconds(pair, vocab, cpu, rounds)
                write_cache({})  # the next pair is measured afresh, not scaled to this one
                ratios.append(first / second)
        ratios = [a / b for a, b in zip(*apart, strict=True)]
        print(f"| {label} | {vocab:,} | " + " | ".join(_spread([t * 1e3 for t in times], ".1f") for times in apart)
              + f" | {statistics.median(apart[0]) / statistics.median(apart[1]):.2f} | {_spread(ratios, '.2f')} | "
              + " | ".join(_spread(r, ".2f") for r in turns.values()) + " |")


def _pairs(precision: str) -> list[tuple[str, int, list]]:
    """(label, vocabulary, two trials) of each pair the planner compares: a shape's two windows (PLANS), and two
    finalists a plan has rated level (FINALISTS)."""
    from charrnn.training.throughput import Trial

    def model(layers: int, hidden: int, dropout: float, weight_dropout: float) -> ModelConfig:
        return ModelConfig(num_layers=layers, hidden_size=hidden, embed_dim=64, dropout=dropout,
                           weight_dropout=weight_dropout)

    def name(shape: tuple[int, int, float, float]) -> str:
        return f"{shape[0]} × {shape[1]} ({shape[2]}, {shape[3]})"

    windows = [(f"{name(m)}: 32 × 100 / 64 × 50", VOCAB,
                [Trial(precision, model(*m), 32, 100), Trial(precision, model(*m), 64, 50)]) for m in PLANS]
    finalists = [(f"{name(a)} / {name(b)}, {batch} × {seq_len}", vocab,
                  [Trial(precision, model(*a), batch, seq_len), Trial(precision, model(*b), batch, seq_len)])
                 for a, b, vocab, batch, seq_len in FINALISTS]
    return windows + finalists


def _spread(values: list[float], fmt: str) -> str:
    return " / ".join(format(f(values), fmt) for f in (min, statistics.median, max))


# The plans' shapes with the dropouts they get (docs/planner.md): (layers, hidden, dropout, weight dropout)
PLANS = [(1, 512, 0.1, 0.0), (1, 768, 0.1, 0.25), (1, 1024, 0.1, 0.25)]
# Finalists that plans have rated within 0.01 of each other: tinyshakespeare at 138 s, the Python tree at 300 s
# (8,781 symbols) and tinyshakespeare at 600 s. (first, second, vocabulary, batch, seq_len)
FINALISTS = [((1, 384, 0.1, 0.0), (1, 512, 0.1, 0.0), VOCAB, 64, 50),
             ((1, 384, 0.0, 0.0), (1, 512, 0.0, 0.0), 8781, 32, 100),
             ((2, 512, 0.1, 0.0), (1, 768, 0.1, 0.25), VOCAB, 64, 50)]
ROUNDS = (2, 4)  # a pair's timed rounds: the planner's (throughput.STEPS), and twice as many


if __name__ == "__main__":
    main()
