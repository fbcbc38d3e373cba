"""Validation loss against model size, characters seen and corpus size: the data a run planner is fitted to.

Every run is budgeted in steps, not seconds, so its loss does not depend on the machine (only its
wall time does, which the table also prints). For each corpus, each shape and each step count it
trains the shape with the presets' recipe (batch 32 x 100, dropout 0.1, weight decay 0.1, lr 6e-3
for one layer and 4e-3 for more, annealed to 0) and prints one Markdown row: parameters P,
training characters N, characters seen D, epochs D / N, the best and the final validation loss,
the final train loss (so overfitting shows), and the step of the best validation.

    .venv/bin/python scripts/scaling_sweep.py --corpus shakespeare-100k=../shared/data/tinyshakespeare.txt:100000 \\
        --corpus warpeace=../shared/data/warpeace.txt --shape 1x256 --shape 1x512 --shape 2x512 --steps 600 --steps 1800

A corpus is NAME=PATH, or NAME=PATH:CHARS for a file's first CHARS characters; PATH may be a directory. P counts
the embedding and head rows of the symbols that make up 99.9% of the training text, as the planner's rule does.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from charrnn.config import Config, load_config
from charrnn.data.encoding import load_data
from charrnn.data.split import split_of
from charrnn.model import parameter_count
from charrnn.training.loop import train
from charrnn.training.rule import used_symbols

BATCH, SEQ_LEN = 32, 100


def corpus_file(spec: str, out: Path) -> tuple[str, Path]:
    """NAME=PATH[:CHARS] -> (name, a file holding that text)."""
    name, _, rest = spec.partition("=")
    path, _, chars = rest.partition(":")
    if not chars:
        return name, Path(path).resolve()
    cut = out / f"{name}.txt"
    out.mkdir(parents=True, exist_ok=True)
    cut.write_text(Path(path).read_text(encoding="utf-8-sig")[: int(chars)], encoding="utf-8")
    return name, cut.resolve()


def run(name: str, corpus: Path, shape: str, steps: int, out: Path) -> dict:
    layers, hidden = map(int, shape.split("x"))
    cfg = load_config(None, [
        f"model.num_layers={layers}", f"model.hidden_size={hidden}", "model.embed_dim=64", "model.dropout=0.1",
        f"train.batch_size={BATCH}", f"train.seq_len={SEQ_LEN}", f"train.lr={6e-3 if layers == 1 else 4e-3}",
        "train.weight_decay=0.1", "train.warmup_steps=50", "train.min_lr_ratio=0.0", f"train.max_steps={steps}",
        f"train.eval_every={max(steps // 6, 1)}", f"train.checkpoint_every={steps}", "train.sample_every=0",
        "train.precision='auto'", "train.device='cpu'", "train.baselines=false", f"data.path='{corpus}'"])
    run_dir = out / f"{name}-{shape}-{steps}"
    start = time.perf_counter()
    result = train(cfg, run_dir, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["val/loss"]) for r in records if "val/loss" in r]
    trains = [r["train/loss"] for r in records if "train/loss" in r][-5:]
    chars, symbols = train_counts(cfg)
    seen = steps * BATCH * SEQ_LEN
    return {"corpus": name, "shape": shape, "params": parameter_count(symbols, cfg.model), "train_chars": chars,
            "steps": steps, "seen": seen, "epochs": seen / chars, "best_val": result.best_val_loss,
            "final_val": result.val_loss, "final_train": sum(trains) / len(trains),
            "best_step": min(vals, key=lambda v: v[1])[0], "seconds": seconds}


def train_counts(cfg: Config) -> tuple[int, int]:
    """(training characters, symbols that make up 99.9% of them) of a run's corpus, split as the run split it:
    N and the vocabulary of P as the planner's rule counts them."""
    corpus = load_data(cfg.data)
    train = split_of(corpus, cfg.data).train
    return len(train), used_symbols(train, corpus.vocab.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", action="append", required=True, metavar="NAME=PATH[:CHARS]")
    parser.add_argument("--shape", action="append", required=True, metavar="LAYERSxHIDDEN")
    parser.add_argument("--steps", action="append", type=int, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/scaling"))
    args = parser.parse_args()
    print("| corpus | shape | P | N (train chars) | steps | D (chars seen) | epochs | best val | final val | "
          "final train | best at step | seconds |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
          flush=True)
    rows = []
    for spec in args.corpus:
        name, corpus = corpus_file(spec, args.out)
        for shape in args.shape:
            for steps in args.steps:
                r = run(name, corpus, shape, steps, args.out)
                rows.append(r)
                print(f"| {r['corpus']} | {r['shape']} | {r['params']:,} | {r['train_chars']:,} | {r['steps']:,} | "
                      f"{r['seen']:,} | {r['epochs']:.2f} | {r['best_val']:.4f} | {r['final_val']:.4f} | "
                      f"{r['final_train']:.4f} | {r['best_step']:,} | {r['seconds']:.0f} |", flush=True)
    (args.out / "scaling.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
