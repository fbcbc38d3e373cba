"""Generation: warm the state on prime text in one fused call, then step one character at a time (see `stepper`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from charrnn.devices import seeded_generator
from charrnn.errors import UserError
from charrnn.generation.stepper import Stepper, unstack
from charrnn.model import CharRNN, eval_mode
from charrnn.vocab import Vocab


def pick(logits: Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> Tensor:
    """(N, V) logits -> (N,) ids: argmax at temperature 0, else sample after top-k / top-p filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:  # shifted first, so that a tiny temperature cannot overflow into inf - inf = NaN
        logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # mass before this token already reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    # Inverse-CDF draw: the same distribution as torch.multinomial at a third of its CPU cost.
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)  # (N, V)
    draw = torch.rand(cdf.shape[0], 1, device=cdf.device, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, draw).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def prime_ids(vocab: Vocab, prime: str) -> list[int]:
    """Ids of `prime`; an empty prime starts from a newline (or the first character when the vocabulary has none)."""
    return vocab.encode(prime or ("\n" if "\n" in vocab.chars else vocab.chars[0]))


def check_sampling_options(length: int, temperature: float, top_k: int, top_p: float, num_samples: int = 1) -> None:
    """Reject sampling options that make no sense, with one clear message each."""
    if length < 0:
        raise UserError(f"--length must be >= 0, got {length}")
    if not temperature >= 0:
        raise UserError(f"--temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k < 0:
        raise UserError(f"--top-k must be >= 1 (or 0 for no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    if num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {num_samples}")


def generate(model: CharRNN, vocab: Vocab, prime: str = "", length: int = 200, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
             generator: torch.Generator | None = None) -> Iterator[list[str]]:
    """Yield `length` steps of `num_samples` characters each, continuing `prime`.

    Bad options and prime characters outside the vocabulary fail here, before anything is yielded.
    An empty prime starts from a newline (or the first character when the vocabulary has none).
    """
    check_sampling_options(length, temperature, top_k, top_p, num_samples)
    context = prime_ids(vocab, prime)
    if generator is None:
        generator = seeded_generator(next(model.parameters()).device, None)
    return _generate(model, vocab, context, length, temperature, top_k, top_p, num_samples, generator)


def _generate(model: CharRNN, vocab: Vocab, prime_ids: list[int], length: int, temperature: float, top_k: int,
              top_p: float, num_samples: int, generator: torch.Generator) -> Iterator[list[str]]:
    with eval_mode(model), torch.inference_mode():
        device = next(model.parameters()).device
        ids = torch.tensor(prime_ids, device=device).expand(num_samples, -1)  # (N, P)
        logits, hidden = model(ids)  # the whole prime in one fused call
        logits = logits[:, -1].float()  # (N, V)
        step = Stepper(model)  # a copy of the weights: the model's mode no longer matters
        state = unstack(hidden)
    for _ in range(length):
        with torch.inference_mode():
            nxt = pick(logits, temperature, top_k, top_p, generator)
            chars = [vocab.chars[i] for i in nxt.tolist()]
        yield chars  # outside inference mode: the consumer may run anything in between
        with torch.inference_mode():
            logits = step(nxt, state)


def sample_text(model: CharRNN, vocab: Vocab, prime: str, length: int, temperature: float, seed: int,
                check: Callable[[], None] = lambda: None) -> str:
    """One sample as a string, from its own seeded generator so it never disturbs training's RNG.

    `check` runs before each character and may raise to abandon the sample.
    """
    generator = seeded_generator(next(model.parameters()).device, seed)
    chars = []
    for step in generate(model, vocab, prime, length, temperature=temperature, generator=generator):
        check()
        chars.append(step[0])
    return prime + "".join(chars)
