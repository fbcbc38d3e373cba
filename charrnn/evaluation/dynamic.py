"""Dynamic evaluation (Krause et al., 2018): the model keeps learning from the text it has just scored.

The text is read as one stream, state carried, in segments of `segment_len` characters. Each
segment is scored first, then the weights take one gradient step on that same segment, so a
character is always scored by weights that have seen only the characters before it:

    segment:   s0        s1        s2        ...
    score:     theta_0   theta_1   theta_2
    update:    -> theta_1 -> theta_2 -> ...

The step is the paper's "RMS with a global prior", for every weight element:

    theta <- theta - lr * g / rms + lambda * (theta_0 - theta),   lambda = min(1, decay * rms / mean(rms))

where g is the gradient of the segment's mean loss and rms the root mean square of that same
gradient over segments of training text, gathered before any of the file is read. Dividing by
rms gives every weight a step of about the same size relative to how much training moves it;
the decay pulls the weights back toward the trained ones, hardest where training gradients are
largest. An rms below RMS_FLOOR times its tensor's mean is raised to it, so a weight the
statistics barely exercised (the embedding of a character missing from them) cannot take a
huge step. Only a private copy of the weights changes; the checkpoint is only read.

The statistics are recomputed on every run, in a few seconds, from the last STATS_CHARS characters
of the training split of the checkpoint's corpus (`--stats-text FILE` names other text, for a
corpus that has moved), read as single-stream segments exactly like the updates. The paper
gathers them over the whole training set in batches of 100 and normalises the decay by the mean
of per-tensor means; we use single streams, so g and rms share one scale, and the mean over all
weights. Nothing is saved: `eval` never writes to a checkpoint.

Defaults (`charrnn eval --dynamic`): segment_len 50, lr 1e-3, decay 0.003, the best of a grid by
scripts/dynamic_search.py on the 111,539-character validation split of tinyshakespeare, for a
1x384 LSTM (an earlier configs/shakespeare.toml, 1,500 steps): static 1.5414 nats/char, dynamic 1.3912. The
best lr grows with segment_len, about in proportion, as in the paper; without decay the weights
drift over a long text (lr 1e-3, decay 0: 1.4088).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from charrnn.checkpoint import ModelCheckpoint
from charrnn.config import MAX_INT
from charrnn.data.encoding import encode_file, load_model_and_text
from charrnn.data.split import split_of
from charrnn.devices import resolve_device
from charrnn.errors import UserError
from charrnn.evaluation.corpus import run_corpus
from charrnn.model import CharRNN, bpc, detach

STATS_CHARS = 20_000  # training characters behind the gradient statistics: a few seconds' work
RMS_FLOOR = 0.1


@dataclass(frozen=True)
class GradStats:
    """Root mean square of each parameter's gradient over training segments, by parameter name."""

    rms: dict[str, Tensor]
    segment_len: int  # the segments they were gathered over; dynamic evaluation updates on segments this long


@dataclass(frozen=True)
class DynamicResult:
    losses: Tensor  # (N - 1,) nats for each scored character, in order, on the CPU

    @property
    def loss(self) -> float:
        """Mean nats per character."""
        return self.losses.double().mean().item()

    @property
    def bpc(self) -> float:
        return bpc(self.loss)

    @property
    def chars(self) -> int:
        return len(self.losses)


def check_dynamic_options(segment_len: int, lr: float, decay: float) -> None:
    """Reject hyperparameters that make no sense, naming the option."""
    if not 1 <= segment_len <= MAX_INT:
        raise UserError(f"--segment-len must be >= 1, got {segment_len}")
    if not 0 <= lr < math.inf:  # also false for NaN
        raise UserError(f"--dynamic-lr must be >= 0 and finite, got {lr}")
    if not 0 <= decay <= 1:
        raise UserError(f"--decay must be in [0, 1], got {decay}")


def _learner(model: CharRNN) -> CharRNN:
    """A trainable copy of the model without dropout: train mode, because cuDNN's RNN backward needs it."""
    copy = CharRNN(model.vocab_size, replace(model.cfg, dropout=0.0, embed_dropout=0.0, weight_dropout=0.0))
    copy.load_state_dict(model.state_dict())
    copy = copy.to(next(model.parameters()).device).train()
    copy.rnn.flatten_parameters()
    return copy


def _segments(ids: Tensor, segment_len: int) -> list[tuple[int, int]]:
    """(start, end) input positions of the segments covering (N,) ids; targets are one position later."""
    return [(start, min(start + segment_len, len(ids) - 1)) for start in range(0, len(ids) - 1, segment_len)]


def gradient_stats(model: CharRNN, ids: Tensor, segment_len: int) -> GradStats:
    """RMS gradients of the segment loss over (N,) ids of training text, read like `dynamic_evaluate` reads."""
    learner = _learner(model)
    ids = ids.to(next(model.parameters()).device)
    squares = {name: torch.zeros_like(p) for name, p in learner.named_parameters()}
    full = [(a, b) for a, b in _segments(ids, segment_len) if b - a == segment_len]  # a short tail would skew them
    if not full:
        raise UserError(f"gradient statistics need at least {segment_len + 1} characters of training text")
    hidden = None
    for start, end in full:
        loss, hidden = learner(ids[None, start:end], hidden, ids[None, start + 1 : end + 1])
        hidden = detach(hidden)
        learner.zero_grad(set_to_none=True)
        loss.backward()
        for name, p in learner.named_parameters():
            if p.grad is not None:  # an adaptive head's rare cluster has none where no rare symbol came
                squares[name].addcmul_(p.grad, p.grad)
    rms = {name: (sq / len(full)).sqrt_() for name, sq in squares.items()}
    return GradStats(rms, segment_len)


class _Update:
    """theta <- theta - lr * g / rms + lambda * (theta_0 - theta), per weight element (see the module docstring)."""

    def __init__(self, learner: CharRNN, stats: GradStats, lr: float, decay: float) -> None:
        self.params = [p for _, p in sorted(learner.named_parameters())]
        # + 1e-12: a tensor the statistics never moved at all (its floor is 0) must not divide by zero
        rms = [r.clamp(min=RMS_FLOOR * r.mean().item()) + 1e-12 for _, r in sorted(stats.rms.items())]
        mean = torch.cat([r.flatten() for r in rms]).mean()
        self.start = [p.detach().clone() for p in self.params]
        self.step = [lr / r for r in rms]
        self.decay = [(decay * r / mean).clamp_(max=1.0) for r in rms]

    @torch.no_grad()
    def __call__(self) -> None:
        for p, start, step, decay in zip(self.params, self.start, self.step, self.decay, strict=True):
            p.lerp_(start, decay)  # the decay is taken from the weights before this step, as in the paper
            if p.grad is not None:  # as in `gradient_stats`
                p.addcmul_(p.grad, step, value=-1.0)


def dynamic_evaluate(model: CharRNN, ids: Tensor, stats: GradStats, lr: float, decay: float, *,
                     progress: bool = False) -> DynamicResult:
    """Score (N,) ids as one stream, learning from each segment right after scoring it; `model` is untouched.

    The segment length is the one `stats` were gathered with.
    """
    check_dynamic_options(stats.segment_len, lr, decay)
    device = next(model.parameters()).device
    ids = ids.to(device)
    learner = _learner(model)
    if sorted(stats.rms) != sorted(name for name, _ in learner.named_parameters()):
        raise UserError("the gradient statistics belong to a different model")
    update = _Update(learner, stats, lr, decay)
    losses = torch.empty(len(ids) - 1, device=device)
    hidden = None
    segments = _segments(ids, stats.segment_len)
    for index, (start, end) in enumerate(tqdm(segments, desc="dynamic eval", leave=False, disable=not progress,
                                              dynamic_ncols=True)):
        loss, hidden = learner(ids[None, start:end], hidden, ids[None, start + 1 : end + 1], reduction="none")  # (T,)
        hidden = detach(hidden)
        losses[start:end] = loss.detach()  # scored before the step below has seen these characters
        if index + 1 < len(segments):  # after the last segment there is nothing left to score
            learner.zero_grad(set_to_none=True)
            loss.mean().backward()
            update()
    return DynamicResult(losses.cpu())


def training_ids(loaded: ModelCheckpoint, stats_text: Path | None, chars: int) -> Tensor:
    """Up to `chars` + 1 ids of training text: the end of the training split, or `stats_text` when given.

    The end of the training split is the training text nearest to the validation split.
    """
    if stats_text is not None:
        try:
            ids, _ = encode_file(stats_text, loaded.vocab, loaded.config.data.encoding)
        except UserError as e:
            raise UserError(f"--stats-text: {e}") from None
        if len(ids) < 2:
            raise UserError(f"--stats-text {stats_text} holds too few characters the model knows")
        return torch.from_numpy(ids[-(chars + 1) :].astype(np.int64))
    corpus = run_corpus(loaded.config, loaded.vocab, "dynamic evaluation gathers gradient statistics from",
                        "give --stats-text FILE, a text like the one it was trained on")
    return torch.from_numpy(split_of(corpus, loaded.config.data).train_end(chars + 1).astype(np.int64))


def dynamic_evaluate_file(checkpoint: Path, text_file: Path, device: str, *, segment_len: int, lr: float, decay: float,
                          stats_text: Path | None = None, stats_chars: int = STATS_CHARS,
                          progress: bool = False) -> DynamicResult:
    """Dynamic evaluation of a text file under a checkpoint, which is only read.

    Characters outside the vocabulary are skipped, as `charrnn eval` skips them.
    """
    check_dynamic_options(segment_len, lr, decay)
    found = load_model_and_text(checkpoint, text_file, resolve_device(device))
    model = found.loaded.model
    stats = gradient_stats(model, training_ids(found.loaded, stats_text, stats_chars), segment_len)
    return dynamic_evaluate(model, torch.from_numpy(found.ids.astype(np.int64)), stats, lr, decay, progress=progress)
