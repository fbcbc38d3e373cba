"""Run a small sweep of time-budgeted training runs, one after another, and print a Markdown table.

    .venv/bin/python scripts/sweep.py CORPUS --config configs/shakespeare.toml --budget 138 \\
        --variant "preset=" --variant "gru 448=model.cell=gru model.hidden_size=448" --repeats 2

Each --variant is NAME=OVERRIDES (space-separated section.key=value, applied over --config). Run
it alone on the machine: runs that share the CPU train fewer steps and say nothing.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from charrnn.config import load_config
from charrnn.training.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--budget", type=float, required=True, help="seconds per run (train.time_budget)")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=OVERRIDES")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant (the seed changes)")
    parser.add_argument("--seed", type=int, default=1337, help="train.seed of each variant's first run")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    args = parser.parse_args()
    rows = []
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        results = []
        for repeat in range(args.repeats):
            cfg = load_config(args.config, shlex.split(overrides), {
                "data.path": str(args.corpus.resolve()), "train.time_budget": args.budget,
                "train.max_steps": 1_000_000, "train.device": "cpu", "train.seed": args.seed + repeat})
            run_dir = args.out / f"{name.replace(' ', '-')}-{args.seed + repeat}"
            result = train(cfg, run_dir, overwrite=True, progress=False)
            results.append(result.best_val_loss)
            print(f"{name} seed {args.seed + repeat}: best val {result.best_val_loss:.4f} at step {result.step}",
                  file=sys.stderr)
        rows.append((name, overrides or "(the config as it is)", results))
    print(f"| variant | overrides | best val nats/char ({args.budget:g} s each) | mean |")
    print("|---|---|---|---:|")
    for name, overrides, results in rows:
        print(f"| {name} | `{overrides}` | {', '.join(f'{r:.4f}' for r in results)} | "
              f"{statistics.mean(results):.4f} |")


if __name__ == "__main__":
    main()
