"""Advice at the end of a run: overfitting or underfitting, read off the run's own curves, with what the
planner's rule (`charrnn.training.rule`) would change next time; and before a run the planner leaves alone, a note
where an adaptive head would serve its vocabulary."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from charrnn.config import Config, ModelConfig
from charrnn.model import adaptive, parameter_count
from charrnn.training.metrics import read_metrics
from charrnn.training.plan import WIDTHS
from charrnn.training.rule import COVERAGE, dropout_for, predicted_loss, regularization_for, used_symbols

OVERFIT_GAP = 0.1  # nats/char: the train loss ends this far below the best validation
EARLY = 0.8  # and the best validation came before this share of the run's steps
CLOSE = 0.05  # nats/char: train and validation this close show no overfitting
FALLING = 0.005  # nats/char: the last evaluation improved on the one before by at least this
# A run the planner leaves alone hears of the adaptive head where its vocabulary is this large and mostly rare: it ran
# a step of the Python tree's 8,781 symbols 3-9x as fast, and on the kernel's 255 (89 in use) it scored 0.070-0.086
# better at the same shape and seed.
NOTE_VOCAB = 200


def advice(run_dir: Path, cfg: Config, train_chars: int, symbols: int) -> list[str]:
    """One line of advice when the run overfit or underfit; none when it did neither or is too short to tell;
    `symbols` are those the text uses (`charrnn.training.plan.used_symbols`), whose parameters the rule counts."""
    records = read_metrics(run_dir)
    evals = [(r["step"], r["val/loss"]) for r in records if isinstance(r.get("val/loss"), float)]
    trains = [r["train/loss"] for r in records if isinstance(r.get("train/loss"), float)]
    if len(evals) < 2 or not trains or train_chars <= 0:
        return []
    (best_step, best), (last_step, last), (_, before) = min(evals, key=lambda e: e[1]), evals[-1], evals[-2]
    train = statistics.fmean(trains[-5:])  # the last few logged intervals: one is noisy
    m, t = cfg.model, cfg.train
    seen = last_step * t.batch_size * t.seq_len
    epochs = seen / train_chars
    if best_step <= EARLY * last_step and best - train > OVERFIT_GAP:
        per_char = parameter_count(symbols, m) / train_chars
        dropout = min(max(m.dropout + 0.1, dropout_for(epochs, per_char)), 0.5)
        smaller = max((w for w in WIDTHS if w < m.hidden_size), default=m.hidden_size)
        # where the planner would give more weight dropout, that comes first, with the dropout it goes with
        planned_dropout, planned = regularization_for(epochs, per_char)
        weight = (f"--set model.weight_dropout={planned:g} --set model.dropout={max(planned_dropout, m.dropout):g}, "
                  "or ") if planned > m.weight_dropout else ""
        return [f"advice: overfitting: the best validation ({best:.4f}) came at step {best_step:,} of {last_step:,} "
                f"and the train loss ends {best - train:.2f} below it, after {epochs:.2g} epochs; next time try "
                f"{weight}--set model.dropout={dropout:g}, or --set model.hidden_size={smaller}, or a larger corpus"]
    if abs(last - train) < CLOSE and before - last >= FALLING:
        head = (f"advice: underfitting: train ({train:.4f}) and validation ({last:.4f}) are close and validation "
                f"still fell {before - last:.3f} at the last evaluation; ")
        if not t.time_budget:
            return [head + "more steps or a bigger model would go lower"]
        params = parameter_count(symbols, m)
        gain = predicted_loss(params, seen, train_chars) - predicted_loss(params, 2 * seen, train_chars)
        return [head + f"the planner's rule expects about {gain:.2f} nats/char lower from twice the budget, which "
                f"could also afford a bigger model: see `charrnn plan CORPUS --time-budget {2 * t.time_budget:g}`"]
    return []


def head_note(model: ModelConfig, train: np.ndarray, vocab_size: int) -> str:
    """For a run the planner leaves alone: a note where its head is full and most of a large vocabulary is rare."""
    if vocab_size < NOTE_VOCAB or adaptive(vocab_size, model):
        return ""
    used = used_symbols(train, vocab_size)
    if 2 * used > vocab_size:
        return ""
    return (f"note: {used:,} of the {vocab_size:,} symbols make up {COVERAGE:.1%} of the training text: "
            f"--set model.head_cutoff={used} would score the rest in one cluster, with the same exact probabilities, "
            "for a fraction of the head's cost a step (docs/config.md)")
