"""LSTM, GRU and vanilla RNN side by side: the same corpus, config and wall-clock budget for each.

    .venv/bin/python scripts/compare_cells.py [--budget 138] [--config configs/shakespeare.toml]
        [--corpus /work/shared/data/tinyshakespeare.txt] [--out runs/cells] [--overwrite]

Trains, one after another, the config's LSTM and then the GRU and the tanh RNN twice each: at the
LSTM's width, and at the width whose parameter count comes closest to the LSTM's. The RNN at
the matched width runs once more with train.grad_clip=0, to show what clipping prevents. Prints
a Markdown table (best validation loss, training chars/s, the mean and max pre-clip gradient
norm over all steps, and the fraction of steps where clipping engaged, all read from each run's
metrics.jsonl), then a sample from each run's best.pt at the same temperature and seed.

Every run gets the machine to itself only if nothing else runs: chars/s and so the loss reached
in the budget depend on it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

from charrnn.checkpoint import load_model
from charrnn.config import Config, ModelConfig, load_config
from charrnn.data.encoding import load_corpus
from charrnn.generation.sampling import sample_text
from charrnn.model import CharRNN
from charrnn.training.loop import train

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    name: str
    cell: str
    hidden_size: int
    grad_clip: float | None = None  # None: the config's


def num_params(vocab_size: int, cfg: ModelConfig) -> int:
    return CharRNN(vocab_size, cfg).num_params()


def matched_width(vocab_size: int, cfg: ModelConfig, cell: str, target: int) -> int:
    """The hidden size at which `cell` comes closest to `target` parameters (they grow with the width)."""
    low, high = 1, 16 * cfg.hidden_size
    while low < high:  # the smallest width with at least `target` parameters
        mid = (low + high) // 2
        if num_params(vocab_size, replace(cfg, cell=cell, hidden_size=mid)) < target:
            low = mid + 1
        else:
            high = mid
    candidates = (max(low - 1, 1), low)
    return min(candidates, key=lambda h: abs(num_params(vocab_size, replace(cfg, cell=cell, hidden_size=h)) - target))


def plan(base: Config, vocab_size: int) -> list[Run]:
    width = base.model.hidden_size
    target = num_params(vocab_size, replace(base.model, cell="lstm"))
    gru, rnn = (matched_width(vocab_size, base.model, cell, target) for cell in ("gru", "rnn"))
    return [Run(f"lstm-{width}", "lstm", width),
            Run(f"gru-{width}", "gru", width), Run(f"gru-{gru}", "gru", gru),
            Run(f"rnn-{width}", "rnn", width), Run(f"rnn-{rnn}", "rnn", rnn),
            Run(f"rnn-{rnn}-noclip", "rnn", rnn, grad_clip=0.0)]


def gradient_summary(metrics: Path) -> tuple[float, float, float]:
    """(mean, max) pre-clip gradient norm over all steps, and the fraction of steps clipped, from metrics.jsonl."""
    previous, steps, norm_sum, norm_max, clipped = 0, 0, 0.0, 0.0, 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if "train/grad_norm" not in record:
            continue
        interval = record["step"] - previous  # each record summarises the steps since the previous one
        previous = record["step"]
        steps += interval
        norm_sum += record["train/grad_norm"] * interval
        norm_max = max(norm_max, record["train/grad_norm_max"])
        clipped += record["train/clip_frac"] * interval
    return norm_sum / max(steps, 1), norm_max, clipped / max(steps, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=138.0, help="seconds of training per run")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "shakespeare.toml")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "cells")
    parser.add_argument("--overwrite", action="store_true", help="replace runs already in --out")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1, help="seed of every sample")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="train.precision of every run, whatever the config says "
                        "(fp32: every cell in the same arithmetic)")
    args = parser.parse_args()

    base = load_config(args.config, values={"data.path": str(args.corpus.resolve()), "train.time_budget": args.budget,
                                            "train.device": args.device, "train.precision": args.precision})
    vocab_size = load_corpus(args.corpus).vocab.size
    runs = plan(base, vocab_size)
    rows, samples = [], []
    for run in runs:
        values = {"model.cell": run.cell, "model.hidden_size": run.hidden_size}
        if run.grad_clip is not None:
            values["train.grad_clip"] = run.grad_clip
        cfg = base.with_overrides((), values)
        print(f"training {run.name} for {args.budget:g} s ...", flush=True)
        result = train(cfg, args.out / run.name, overwrite=args.overwrite, echo=print, progress=False)
        mean_norm, max_norm, clip_frac = gradient_summary(args.out / run.name / "metrics.jsonl")
        loaded = load_model(args.out / run.name)
        rows.append(f"| {run.name} | {run.cell} | {run.hidden_size} | {loaded.model.num_params():,} | "
                    f"{cfg.train.grad_clip:g} | {result.best_val_loss:.4f} | {result.chars_per_sec:,.0f} | "
                    f"{result.step:,} | {mean_norm:.3g} | {max_norm:.3g} | "
                    + (f"{clip_frac:.0%} |" if cfg.train.grad_clip else "off |"))
        samples.append((run.name, sample_text(loaded.model, loaded.vocab, "", args.sample_length,
                                              args.temperature, args.seed)))

    print(f"\n{args.budget:g} s of training each, {args.config.name} in {args.precision}, {args.corpus.name}\n")
    print("| run | cell | hidden | params | grad_clip | best val nats/char | chars/s | steps | "
          "mean grad norm | max grad norm | steps clipped |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    for name, text in samples:
        print(f"\n### {name} (temperature {args.temperature:g}, seed {args.seed})\n\n```\n{text}\n```")


if __name__ == "__main__":
    main()
