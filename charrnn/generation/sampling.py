"""Generation: warm the state on prime text in one fused call, then step one character at a time (see `stepper`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from tqdm import tqdm

from charrnn.config import MAX_INT
from charrnn.devices import seeded_generator
from charrnn.errors import UserError
from charrnn.generation.stepper import Stepper, unstack
from charrnn.model import CharRNN, Hidden, eval_mode
from charrnn.vocab import Vocab

MAX_SAMPLES = 10_000  # streams generated together; each carries its own state
PRIME_CHUNK = 65_536  # prime characters per fused call: a bounded call, still long enough to cost nothing


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
    check_length(length)
    if not 0 <= temperature < math.inf:  # also false for NaN
        raise UserError(f"--temperature must be >= 0 and finite (0 means greedy), got {temperature}")
    if not 0 <= top_k <= MAX_INT:
        raise UserError(f"--top-k must be >= 1 (or 0 for no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UserError(f"--num-samples must be in 1..{MAX_SAMPLES:,}, got {num_samples}")


def check_length(length: int) -> None:
    """Generation lengths: anything from 0 to the largest 64-bit count."""
    if length < 0:
        raise UserError(f"--length must be >= 0, got {length}")
    if length > MAX_INT:
        raise UserError(f"--length must be below 2**63, got {length}")


@torch.inference_mode()
def warm(model: CharRNN, ids: Tensor, progress: bool = False) -> tuple[Tensor, Hidden]:
    """(N, P) prime ids -> the (N, V) fp32 logits after its last character, and the state there.

    The prime goes through the fused cell in chunks of PRIME_CHUNK characters with the state carried:
    one call over millions of steps is more than oneDNN will take.
    """
    hidden, total = None, ids.shape[1]
    with eval_mode(model), tqdm(total=total, desc="prime", unit="char", unit_scale=True, leave=False,
                                disable=not progress or total <= PRIME_CHUNK, dynamic_ncols=True) as bar:
        for start in range(0, total, PRIME_CHUNK):
            logits, hidden = model(ids[:, start : start + PRIME_CHUNK], hidden)
            bar.update(logits.shape[1])
    return logits[:, -1].float(), hidden


def generate(model: CharRNN, vocab: Vocab, prime: str = "", length: int = 200, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, num_samples: int = 1, generator: torch.Generator | None = None,
             progress: bool = False) -> Iterator[list[str]]:
    """Yield `length` steps of `num_samples` characters each, continuing `prime`.

    Bad options and prime characters outside the vocabulary fail here, before anything is yielded.
    An empty prime starts from a newline (or the first character when the vocabulary has none).
    `progress` shows a bar while a long prime is read.
    """
    check_sampling_options(length, temperature, top_k, top_p, num_samples)
    context = prime_ids(vocab, prime)
    if generator is None:
        generator = seeded_generator(next(model.parameters()).device, None)
    return _generate(model, vocab, context, length, temperature, top_k, top_p, num_samples, generator, progress)


def _generate(model: CharRNN, vocab: Vocab, prime_ids: list[int], length: int, temperature: float, top_k: int,
              top_p: float, num_samples: int, generator: torch.Generator, progress: bool) -> Iterator[list[str]]:
    device = next(model.parameters()).device
    logits, hidden = warm(model, torch.tensor(prime_ids, device=device).expand(num_samples, -1), progress)  # (N, V)
    with torch.inference_mode():
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
