"""Beam search: the continuation with the highest total log-probability that K beams find.

All K beams advance as one batched step of the stepper per character. Beside them rides one
more row, the greedy path: plain beam search can prune the greedy prefix early and end below
it, and with that row the result is never worse than greedy's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from charrnn.errors import UserError
from charrnn.generation.sampling import MAX_SAMPLES, check_length, prime_ids, warm
from charrnn.generation.stepper import State, Stepper, unstack
from charrnn.model import CharRNN, eval_mode
from charrnn.vocab import Vocab


@dataclass(frozen=True)
class Beam:
    """One continuation and its total log-probability (natural log) given the prime."""

    text: str
    log_prob: float


def check_beam_options(length: int, beam_width: int, num_results: int) -> None:
    """Reject beam options that make no sense, with one clear message each."""
    check_length(length)
    if beam_width < 1:
        raise UserError(f"--beam-width must be >= 1, got {beam_width}")
    if beam_width > MAX_SAMPLES:
        raise UserError(f"--beam-width must be at most {MAX_SAMPLES:,}, got {beam_width}")
    if not 1 <= num_results <= beam_width:
        raise UserError(f"--num-samples with --beam-width {beam_width} must be in 1..{beam_width}, got {num_results}")


def reorder(state: State, rows: Tensor) -> State:
    """The stepper's state with its rows picked (and repeated) by `rows`, for any cell's state."""
    return tuple([layer.index_select(0, rows) for layer in part] for part in state)


@torch.inference_mode()
def beam_search(model: CharRNN, vocab: Vocab, prime: str = "", length: int = 200, beam_width: int = 8,
                num_results: int = 1, progress: bool = False) -> list[Beam]:
    """The `num_results` most probable continuations of `length` characters found by `beam_width` beams, best first."""
    check_beam_options(length, beam_width, num_results)
    ids = prime_ids(vocab, prime)
    device = next(model.parameters()).device
    logits, hidden = warm(model, torch.tensor([ids], device=device), progress)
    with eval_mode(model):
        step = Stepper(model)
    state = unstack(hidden)
    log_probs = logits.double().log_softmax(dim=-1)  # (1, V): beams and greedy share the prime's row
    scores = torch.zeros(1, dtype=torch.float64, device=device)  # (K,) total log-prob of each beam
    greedy_score = torch.zeros((), dtype=torch.float64, device=device)
    parents: list[Tensor] = []  # per step, which beam of the previous step each beam extends
    chars: list[Tensor] = []  # per step, the character each beam (then the greedy row) appended
    for t in range(length):
        width = scores.shape[0]
        candidates = (scores[:, None] + log_probs[:width]).flatten()  # (K * V,)
        scores, flat = candidates.topk(min(beam_width, candidates.numel()))  # sorted, best first
        parent, char = flat.div(vocab.size, rounding_mode="floor"), flat.remainder(vocab.size)
        greedy_char = log_probs[-1].argmax()
        greedy_score = greedy_score + log_probs[-1, greedy_char]
        greedy_row = torch.full((1,), log_probs.shape[0] - 1, device=device)
        parents.append(parent)
        chars.append(torch.cat([char, greedy_char[None]]))
        if t == length - 1:
            break
        state = reorder(state, torch.cat([parent, greedy_row]))
        log_probs = step(chars[-1], state).double().log_softmax(dim=-1)  # (K + 1, V)
    beams = _backtrack(vocab, parents, chars, scores.tolist()) + [
        Beam(vocab.decode([int(c[-1]) for c in chars]), float(greedy_score))]
    unique = {beam.text: beam for beam in sorted(beams, key=lambda b: b.log_prob)}  # the best of equal texts wins
    return sorted(unique.values(), key=lambda b: b.log_prob, reverse=True)[:num_results]


def _backtrack(vocab: Vocab, parents: list[Tensor], chars: list[Tensor], scores: list[float]) -> list[Beam]:
    """Follow each final beam's parents back to the prime, spelling its text."""
    parents_host = [p.tolist() for p in parents]  # one host sync per step, after the search
    chars_host = [c.tolist() for c in chars]
    beams = []
    for final, score in enumerate(scores):
        row, text = final, []
        for parent, char in zip(reversed(parents_host), reversed(chars_host), strict=True):
            text.append(char[row])
            row = parent[row]
        beams.append(Beam(vocab.decode(text[::-1]), score))
    return beams
