"""The planner's rule, fitted to scripted sweeps (scripts/scaling_sweep.py and scripts/fit_scaling.py; the tables
and the fit are in docs/results.md), and the dropout and learning rate it goes with:

    loss = E_corpus + A / P**ALPHA + B / D'**BETA

P is the parameter count, D the characters the run will see (steps x batch x seq_len), and D' discounts
repeated epochs as Muennighoff et al. (2023) do: D' = N + N R* (1 - exp(-R / R*)) for R = D / N - 1
repetitions of the N training characters. E_corpus, the corpus's own floor, is the same for every
candidate, so a choice between them does not need it. P counts the embedding and head rows of the symbols that
make up 99.9% of the text only: a source tree's thousands of rare symbols add parameters that barely learn.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA, BETA, A, B, R_STAR = 1.4, 0.65, 7.081e6, 5996.0, 3.0  # the fit in docs/results.md, over 44 runs
# Dropout's anchors: the presets' sweeps found 0.1 best at a risk of 8.7 (and 0.2 at 42, which the log puts at
# 0.21); on War and Peace at a risk of 2.2, dropout 0 scored better than 0.1 at both lrs tried (docs/results.md).
RISK_FREE, RISK_BEST = 2.0, (8.7, 0.1)
# Weight drop (model.weight_dropout) pays only where one dropout no longer holds the model back: at a risk of 46
# (2 x 512, 14 epochs of tinyshakespeare) 0.25 with dropout 0.1 beat dropout 0.2 alone; at 7.9 (1 x 384, 11
# epochs) 0.2 cost 0.008 and 0.009 on the two seeds tried (docs/results.md). Above RISK_WEIGHT_DROP, between the
# two, it takes over.
RISK_WEIGHT_DROP, WEIGHT_DROP = 20.0, 0.25
# (risk, dropout, weight dropout): past RISK_WEIGHT_DROP, 0.1 and WEIGHT_DROP hold up to the first risk, where they
# were found best, and both grow with the log of the risk to the second's, held past it. At a risk of 500 (1 x 768,
# 44 epochs of 225 K characters) 0.4 and 0.5 scored 0.058 better than 0.1 and 0.25, and better than each milder pair
# tried, on tinyshakespeare and (by 0.050) on War and Peace, where 0.5 and 0.6 gained nothing more; at 50, weight
# dropout 0.4 scored 0.025 worse than 0.25 (docs/results.md).
HEAVY = ((46.0, 0.1, WEIGHT_DROP), (500.0, 0.4, 0.5))
COVERAGE = 0.999  # the rule counts the embedding and head rows of the symbols that make up this share of the text
CHARS_PER_STEP = 32 * 100  # the presets' batch x seq_len, which the learning rates below were tuned at


def predicted_loss(params: int, chars_seen: float, train_chars: int) -> float:
    """The fitted rule, less the corpus's floor: what P parameters reach after D characters of N."""
    repeats = max(chars_seen / train_chars - 1, 0.0)
    seen = min(chars_seen, train_chars) + train_chars * R_STAR * (1 - math.exp(-repeats / R_STAR))
    return A / params**ALPHA + B / seen**BETA


def used_symbols(ids: np.ndarray, vocab_size: int) -> int:
    """The fewest symbols that make up COVERAGE of `ids`: a rare symbol's rows barely learn, so a vocabulary of
    thousands (a source tree's comments in every script) adds little a model can use."""
    counts = np.sort(np.bincount(ids, minlength=vocab_size))[::-1]
    total = int(counts.sum())
    return int(np.searchsorted(np.cumsum(counts), COVERAGE * total) + 1) if total else vocab_size


def risk(epochs: float, params_per_char: float) -> float:
    """The risk of overfitting: epochs times parameters per training character (char-rnn's advice: the more the
    model can memorize, and the more often it sees the text, the more it will)."""
    return epochs * params_per_char


def dropout_for(epochs: float, params_per_char: float) -> float:
    """Dropout by the `risk` of overfitting: none up to RISK_FREE, then growing with the log of the risk through
    the presets' best, in steps of 0.05 up to 0.3."""
    at = risk(epochs, params_per_char)
    if at <= RISK_FREE:
        return 0.0
    return min(_in_steps(RISK_BEST[1] * math.log(at / RISK_FREE) / math.log(RISK_BEST[0] / RISK_FREE)), 0.3)


def regularization_for(epochs: float, params_per_char: float) -> tuple[float, float]:
    """(dropout, weight_dropout) by the risk of overfitting: `dropout_for` alone up to RISK_WEIGHT_DROP; above it,
    weight dropout on the recurrent weights with dropout held at the presets' best, 0.1, then both growing from
    HEAVY's first risk to its second's values, in steps of 0.05."""
    at = risk(epochs, params_per_char)
    if at <= RISK_WEIGHT_DROP:
        return dropout_for(epochs, params_per_char), 0.0
    (low, dropout, weight), (high, heavy_dropout, heavy_weight) = HEAVY
    share = min(max(math.log(at / low) / math.log(high / low), 0.0), 1.0)
    return _in_steps(dropout + share * (heavy_dropout - dropout)), _in_steps(weight + share * (heavy_weight - weight))


def _in_steps(p: float) -> float:
    """A dropout rate to the nearest 0.05, the grid the sweeps were run on."""
    return round(p * 20) / 20


def lr_for(num_layers: int, hidden_size: int, batch_size: int, seq_len: int) -> float:
    """8e-3 for 1 x 512 (above the preset's 6e-3: docs/results.md) and 4e-3 deeper, as the presets' sweeps found,
    inversely with width as Adam wants, and by the square root of the characters per step."""
    chars = batch_size * seq_len
    lr = (8e-3 if num_layers == 1 else 4e-3) * 512 / hidden_size * math.sqrt(chars / CHARS_PER_STEP)
    return float(f"{min(max(lr, 5e-4), 1e-2):.2g}")
