"""The run planner's figures (issue 16): time-budgeted `charrnn train` runs, planned and not, one after another.

    .venv/bin/python scripts/plan_figures.py --results runs/plan-figures.jsonl            # every arm
    .venv/bin/python scripts/plan_figures.py --results runs/plan-figures.jsonl --only preset --only default
    .venv/bin/python scripts/plan_figures.py --results runs/plan-figures.jsonl --group 'shakespeare 600 s' --seed 1337
    .venv/bin/python scripts/plan_figures.py --results runs/plan-figures.jsonl --table    # print, run nothing
    .venv/bin/python scripts/plan_figures.py --results runs/plan-figures.jsonl --overhead # the planning's seconds
    .venv/bin/python scripts/plan_figures.py --results runs/plan-figures.jsonl --scaling runs/figure-runs.json

--scaling writes this host's finished runs as rows for scripts/fit_scaling.py (P, D, N and the best validation),
read from their run dirs, so the fitted rule can be checked on runs it was not fitted to.

Each arm is the real CLI in a subprocess (`charrnn train CORPUS --time-budget T ...`), so the plan, the
precision trial and the corpus encoding all count as a user's run would. Every finished run appends one
JSON line to --results, and the table printed at the end holds every line there, with the host each ran
on. Run it alone on the machine: two torch processes on two cores slow both many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
STDLIB = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
NO_EXTRAS = ["--set", "train.baselines=false"]  # the same for every arm: the baselines are not under test

CORPORA = {
    "tinyshakespeare": [str(SHARED / "tinyshakespeare.txt")],
    "warpeace": [str(SHARED / "warpeace.txt")],
    # A large source tree: every .py under the Python's lib dir, the standard library and its site-packages
    # (here pyenv 3.11.7's: 13,353 files, 161 MB, a 9,000-symbol vocabulary).
    "python-lib": [str(STDLIB), "--include", "*.py"],
    # The lectures' corpus, ~100 MB of it: fs, net, kernel, mm, lib, block, crypto and security of linux-source-6.1
    # (*.c and *.h, 5,290 files, 106 MB; see docs/results.md for how it is made). Never committed: set the path.
    "linux-core": [os.environ.get("CHARRNN_LINUX_CORE", "")],
}
# (group, corpus, budget s, arm, extra args, seeds)
ARMS = [
    ("shakespeare 138 s", "tinyshakespeare", 138, "plan", [], [1337, 1338]),
    ("shakespeare 138 s", "tinyshakespeare", 138, "preset", ["--config", "shakespeare"], [1337, 1338]),
    ("shakespeare 600 s", "tinyshakespeare", 600, "plan", [], [1337, 1338]),
    ("shakespeare 600 s", "tinyshakespeare", 600, "preset", ["--config", "shakespeare-10min"], [1337, 1338]),
    ("warpeace 300 s", "warpeace", 300, "plan", [], [1337, 1338]),
    ("warpeace 300 s", "warpeace", 300, "default", ["--no-plan"], [1337, 1338]),
    ("warpeace 300 s", "warpeace", 300, "preset", ["--config", "shakespeare"], [1337, 1338]),
    ("warpeace 3600 s", "warpeace", 3600, "plan", [], [1337]),
    ("python-lib 300 s", "python-lib", 300, "plan", [], [1337, 1338]),
    ("python-lib 300 s", "python-lib", 300, "default", ["--no-plan"], [1337, 1338]),
    ("python-lib 300 s", "python-lib", 300, "preset", ["--config", "shakespeare"], [1337, 1338]),
    ("linux-core 300 s", "linux-core", 300, "plan", [], [1337, 1338]),
    ("linux-core 300 s", "linux-core", 300, "default", ["--no-plan"], [1337, 1338]),
    ("linux-core 300 s", "linux-core", 300, "preset", ["--config", "shakespeare"], [1337, 1338]),
    ("linux-core 3600 s", "linux-core", 3600, "plan", [], [1337]),
]
RESULT = re.compile(r"stopped by (\S+) at step (\d+): val loss ([\d.]+).* best ([\d.]+)")


def host() -> str:
    """The CPU's model name, family and model, and whether it has AMX or AVX-512 BF16: every table names its host
    (lscpu calls two AMD generations "AMD EPYC" alike; the family tells Zen 4, 25, from Zen 5, 26)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    name = re.search(r"model name\s*:\s*(.*)", info)
    flags = re.search(r"flags\s*:\s*(.*)", info)
    flags = set(flags.group(1).split()) if flags else set()
    marks = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    kind = [re.search(rf"^{field}\s*:\s*(\d+)", info, re.M) for field in ("cpu family", "model")]
    kind_text = f", family {kind[0].group(1)} model {kind[1].group(1)}" if all(kind) else ""
    return f"{name.group(1) if name else platform.machine()}{kind_text} ({', '.join(marks) or 'no bf16 or AMX flags'})"


def run_arm(corpus: str, budget: int, extra: list[str], seed: int, run_dir: Path) -> dict:
    """One `charrnn train` run; its result line and its plan line, parsed."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [str(Path(sys.executable).with_name("charrnn")), "train", *CORPORA[corpus], "--run-dir", str(run_dir),
           "--time-budget", str(budget), "--device", "cpu", "--seed", str(seed), *NO_EXTRAS, *extra]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    found = RESULT.search(proc.stderr)
    if proc.returncode or not found:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    plan = [line for line in proc.stderr.splitlines() if line.startswith("plan:")]
    precision = [line for line in proc.stderr.splitlines() if "train.precision auto" in line]
    return {"steps": int(found.group(2)), "final": float(found.group(3)), "best": float(found.group(4)),
            "wall": round(wall, 1), "plan": plan[0] if plan else "", "plan_lines": plan,
            "precision": precision[0] if precision else "",
            "advice": [line for line in proc.stderr.splitlines() if line.startswith("advice:")]}


OVERHEAD = [("tinyshakespeare", 120), ("tinyshakespeare", 600), ("warpeace", 300), ("python-lib", 300),
            ("tinyshakespeare", 3600)]
PLANNING = re.compile(r"in ([\d.]+) s of which planning took ([\d.]+) s")


def overhead(plans: int = 4) -> str:
    """`charrnn plan` on an empty cache, then again on the cache each filled, until one times nothing (at most
    `plans`): a plan times only what fits in its share of the budget, so the cache may take more than one to fill."""
    lines = ["| corpus | budget s | planning s, nothing cached | share of budget | planning s, the plans after | "
             "whole `charrnn plan` of the last, s |", "|---|---:|---:|---:|---|---:|"]
    for corpus, budget in OVERHEAD:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "CHARRNN_CACHE_DIR": cache}
            cmd = [str(Path(sys.executable).with_name("charrnn")), "plan", *CORPORA[corpus], "--time-budget",
                   str(budget), "--device", "cpu"]
            seconds: list[float] = []
            while len(seconds) < plans and (not seconds or seconds[-1] >= 0.5):
                start = time.monotonic()
                found = PLANNING.search(subprocess.run(cmd, capture_output=True, text=True, env=env).stdout)
                whole = time.monotonic() - start
                if not found:
                    raise SystemExit(f"{' '.join(cmd)} printed no plan")
                seconds.append(float(found.group(2)))
        after = ", ".join(f"{t:.1f}" for t in seconds[1:])
        lines.append(f"| {corpus} | {budget} | {seconds[0]:.1f} | {seconds[0] / budget:.1%} | {after} | {whole:.1f} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = ["| host | corpus, budget | arm | seed | steps | best val | wall s | plan |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['host']} | {r['group']} | {r['arm']} | {r['seed']} | {r['steps']:,} | {r['best']:.4f} | "
                     f"{r['wall']:.0f} | {r['plan'].removeprefix('plan: ')} |")
    return "\n".join(lines)


def scaling_rows(rows: list[dict], out: Path) -> list[dict]:
    """The runs of `rows` whose run dirs are under `out`, as fit_scaling.py rows: P as the planner's rule counts it."""
    from scaling_sweep import train_counts

    from charrnn.config import load_config
    from charrnn.model import parameter_count

    found, corpora, groups = [], {}, {group: (corpus, budget) for group, corpus, budget, *_ in ARMS}
    for r in rows:
        name, budget = groups[r["group"]]
        run_dir = out / f"{name}-{budget}-{r['arm']}-{r['seed']}"
        if not (run_dir / "config.toml").is_file():
            continue
        cfg = load_config(run_dir / "config.toml")
        if name not in corpora:
            corpora[name] = train_counts(cfg)
        train_chars, symbols = corpora[name]
        seen = r["steps"] * cfg.train.batch_size * cfg.train.seq_len
        found.append({"corpus": name, "shape": f"{cfg.model.num_layers}x{cfg.model.hidden_size}",
                      "params": parameter_count(symbols, cfg.model), "train_chars": train_chars, "steps": r["steps"],
                      "seen": seen, "epochs": seen / train_chars, "best_val": r["best"],
                      "source": f"plan_figures.py, {r['group']}, {r['arm']}, seed {r['seed']}, {r['host']}"})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="JSON lines: read, then appended to")
    parser.add_argument("--only", action="append", default=[], help="run only these arms (plan, preset, default)")
    parser.add_argument("--group", action="append", default=[], help="run only these groups, e.g. 'warpeace 300 s'")
    parser.add_argument("--seed", action="append", type=int, default=[],
                        help="run these seeds instead of each arm's own (a third seed, or one of two)")
    parser.add_argument("--table", action="store_true", help="print the table of --results and run nothing")
    parser.add_argument("--overhead", action="store_true", help="time the planning itself, cold and cached, only")
    parser.add_argument("--scaling", type=Path, help="write the finished runs as fit_scaling.py rows here, only")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "plan-figures")
    args = parser.parse_args()
    where = host()
    if args.scaling:
        found = scaling_rows([r for r in _rows(args.results) if r["host"] == where], args.out)
        args.scaling.write_text(json.dumps(found, indent=1) + "\n")
        print(f"{len(found)} runs written to {args.scaling}")
        return
    if args.overhead:
        print(f"host: {where}\n\n{overhead()}")
        return
    done = {(r["host"], r["group"], r["arm"], r["seed"]) for r in _rows(args.results)}
    if not args.table:
        for group, corpus, budget, arm, extra, seeds in ARMS:
            if (args.only and arm not in args.only) or (args.group and group not in args.group):
                continue
            if not all(CORPORA[corpus]):
                print(f"{group}: skipped, set CHARRNN_LINUX_CORE to the corpus's directory", file=sys.stderr)
                continue
            for seed in args.seed or seeds:  # a rerun after a stop goes on where it stopped
                if (where, group, arm, seed) in done:
                    continue
                row = {"host": where, "group": group, "arm": arm, "seed": seed, "when": time.strftime("%F %T"),
                       **run_arm(corpus, budget, extra, seed, args.out / f"{corpus}-{budget}-{arm}-{seed}")}
                print(json.dumps(row), file=sys.stderr)
                args.results.parent.mkdir(parents=True, exist_ok=True)
                with args.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(_rows(args.results)))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


if __name__ == "__main__":
    main()
