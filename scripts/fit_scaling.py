"""Fit a scaling law to scripts/scaling_sweep.py's runs: best validation loss from parameters, characters seen, corpus.

    .venv/bin/python scripts/fit_scaling.py runs/scaling/scaling.json
    .venv/bin/python scripts/fit_scaling.py scripts/scaling_runs.json   # the 44 runs the planner's rule is fitted to
    .venv/bin/python scripts/fit_scaling.py scripts/scaling_runs.json --held-out runs/figure-runs.json
    .venv/bin/python scripts/fit_scaling.py scripts/scaling_runs.json --depth   # and a deeper model's early lag

--held-out predicts other runs (scripts/plan_figures.py --scaling) with the law fitted to the first files, without
refitting: a corpus the fit has not seen gets the E that fits its runs best (their mean residual), so what is
tested is whether the law ranks shapes and budgets on it as the runs did.

scripts/scaling_runs.json holds every run the planner's coefficients (charrnn/training/rule.py) come from:
the step-budgeted sweep of docs/results.md and the time-budgeted tinyshakespeare sweeps on two hosts, each
with its source. A time-budgeted run counts as well as a step-budgeted one: the law needs only P, D and N.

The law, with data repetition discounted as in Muennighoff et al. (2023, "Scaling data-constrained
language models"):

    L = E_corpus + A / P^alpha + B / D'^beta
    D' = N + N R* (1 - exp(-R / R*)),  R = max(D / N - 1, 0)

P is the parameter count, D the characters seen, N the training characters, R the repetitions past
the first epoch and R* how many repetitions are still worth having. E_corpus (one per corpus: each
has its own entropy and its own validation text), A and B are fitted by least squares for every
alpha, beta and R* on a grid; the best grid point is printed with each run's residual.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

ALPHAS = BETAS = np.round(np.arange(0.05, 3.01, 0.05), 2)
R_STARS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 1e6)  # 1e6: repetitions are worth as much as new text
GAMMAS = (0.5, 1.0, 1.5, 2.0, 3.0)  # --depth: how fast a deeper model's early lag fades with its steps


def effective_data(seen: np.ndarray, unique: np.ndarray, r_star: float) -> np.ndarray:
    """D': the characters seen, with repetitions past the first epoch worth less and less."""
    repeats = np.maximum(seen / unique - 1, 0)
    return np.minimum(seen, unique) + unique * r_star * (1 - np.exp(-repeats / r_star))


def fit(rows: list[dict], depth: bool = False) -> tuple[float, dict]:
    """The least-squares law over the grid: (RMS residual, coefficients). With `depth`, a term C (layers - 1)
    (1000 / steps)^gamma more: a deeper model's lag in its first steps, which P and D alone do not see."""
    corpora = sorted({r["corpus"] for r in rows})
    loss = np.array([r["best_val"] for r in rows])
    params = np.array([r["params"] for r in rows], dtype=float)
    seen = np.array([r["seen"] for r in rows], dtype=float)
    unique = np.array([r["train_chars"] for r in rows], dtype=float)
    onehot = np.array([[r["corpus"] == c for c in corpora] for r in rows], dtype=float)
    extra = np.array([int(r["shape"].split("x")[0]) - 1 for r in rows], dtype=float)
    steps = np.array([r["steps"] for r in rows], dtype=float)
    best = (np.inf, {})
    for alpha, beta, r_star, gamma in itertools.product(ALPHAS, BETAS, R_STARS, GAMMAS if depth else (None,)):
        columns = [onehot, params**-alpha, effective_data(seen, unique, r_star) ** -beta]
        if gamma is not None:
            columns.append(extra * (1000 / steps) ** gamma)
        design = np.column_stack(columns)
        coef, *_ = np.linalg.lstsq(design, loss, rcond=None)
        if (coef < 0).any():  # more parameters or data never predict a worse loss, and no entropy is negative
            continue
        rms = float(np.sqrt(np.mean((design @ coef - loss) ** 2)))
        if rms < best[0]:
            n = len(corpora)
            best = (rms, {"alpha": float(alpha), "beta": float(beta), "r_star": r_star, "A": float(coef[n]),
                          "B": float(coef[n + 1]), "E": dict(zip(corpora, map(float, coef[:n]), strict=True)),
                          "gamma": gamma, "C": float(coef[n + 2]) if gamma is not None else 0.0})
    return best


def predict(law: dict, row: dict) -> float:
    d = effective_data(np.array(float(row["seen"])), np.array(float(row["train_chars"])), law["r_star"])
    lag = law["C"] * (int(row["shape"].split("x")[0]) - 1) * (1000 / row["steps"]) ** law["gamma"] if law["C"] else 0.0
    return law["E"][row["corpus"]] + law["A"] * row["params"] ** -law["alpha"] + law["B"] * float(d) ** -law["beta"] \
        + lag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="scaling.json files of scripts/scaling_sweep.py")
    parser.add_argument("--held-out", type=Path, help="runs to predict with the fitted law, not fit to")
    parser.add_argument("--depth", action="store_true", help="fit a deeper model's early lag too (C, gamma)")
    args = parser.parse_args()
    rows = [row for path in args.runs for row in json.loads(path.read_text())]
    rms, law = fit(rows, args.depth)
    lag = f", C {law['C']:.4g}, gamma {law['gamma']:g}" if args.depth else ""
    print(f"alpha {law['alpha']}, beta {law['beta']}, R* {law['r_star']:g}, A {law['A']:.4g}, B {law['B']:.4g}{lag}, "
          f"RMS residual {rms:.4f} nats/char over {len(rows)} runs")
    print("E per corpus: " + ", ".join(f"{k} {v:.4f}" for k, v in law["E"].items()))
    if args.held_out:
        rows = json.loads(args.held_out.read_text())
        for corpus in {r["corpus"] for r in rows} - set(law["E"]):
            law["E"][corpus] = 0.0
            mine = [r for r in rows if r["corpus"] == corpus]
            law["E"][corpus] = float(np.mean([r["best_val"] - predict(law, r) for r in mine]))
            print(f"held out: {corpus} is new to the fit; its E is fitted to its {len(mine)} runs: "
                  f"{law['E'][corpus]:.4f}")
        residuals = np.array([r["best_val"] - predict(law, r) for r in rows])
        print(f"held out: RMS residual {np.sqrt(np.mean(residuals**2)):.4f} nats/char over {len(rows)} runs")
    print("\n| corpus | shape | steps | epochs | best val | law | residual |\n|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        guess = predict(law, row)
        print(f"| {row['corpus']} | {row['shape']} | {row['steps']:,} | {row['epochs']:.2f} | {row['best_val']:.4f} | "
              f"{guess:.4f} | {row['best_val'] - guess:+.4f} |")


if __name__ == "__main__":
    main()
