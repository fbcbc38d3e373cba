"""Simple baselines to print beside a model's bits per character: unigram, a Kneser–Ney n-gram, three compressors.

Each is a number of bits per character (bpc) on the scored text, and each is defined exactly so that docs may quote it:

- **unigram**: the cross-entropy of the scored characters under the training split's character frequencies with
  add-1/2 (Krichevsky–Trofimov) smoothing, p(c) = (count(c) + 1/2) / (N + V/2) over the V symbols of the vocabulary.
- **k-gram KN** ("6-gram KN" conditions on the 5 previous characters): interpolated modified Kneser–Ney (Chen and
  Goodman 1998). With h the context, h' the context less its oldest character, and p_0(c) = 1/V,

      p_n(c | h) = (max(a(hc) - D(a(hc)), 0) + gamma(h) p_{n-1}(c | h')) / sum_x a(hx),
      gamma(h) = D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.),

  where a is the training count at the top order n = k and the continuation count N1+(.hc) (how many distinct
  characters precede hc) at each order below, and Nj(h.) counts the characters x with a(hx) = j (3 or more for
  N3+). Each order has its own discounts from its count-of-counts n1..n4 of a: Y = n1 / (n1 + 2 n2),
  Dj = j - (j + 1) Y n(j+1) / nj, or KenLM's fallback D = 0.5, 1, 1.5 where some nj is 0 or some Dj falls outside
  (0, j]. A context with sum_x a(hx) = 0 (never seen in training) takes p_{n-1} as it is, and so do the first
  characters of the scored text for the orders whose context reaches back before its start; every scored character
  counts, the first included. No character of the vocabulary ever has probability 0.
- **the order k** is chosen on the training split alone: fit on its first 90%, keep the order from 1 to max_order
  with the lowest bpc on its last 10%.
- **zlib, bz2, xz**: the compressed size in bits over the number of characters, with zlib level 9, bz2 level 9 and
  xz (lzma) preset 9 | PRESET_EXTREME, compressing the scored text's UTF-8 bytes alone, without the training text.

Big inputs are capped so that all of it takes well under a minute on two cores: the n-gram (its order chosen included)
trains on NGRAM_TRAIN_CHARS training characters in STRETCHES evenly spaced runs, and it and the compressors score
the first SCORED_CHARS; the unigram is never capped. `Baselines.notes` says which caps applied.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from charrnn.errors import UserError

NGRAM_TRAIN_CHARS = 16_000_000  # the n-gram trains on at most this many leading training characters
SCORED_CHARS = 8_000_000  # the n-gram and the compressors score at most this many leading characters
STRETCHES = 256  # a capped training text is this many evenly spaced runs of the training split
HELD_OUT = 0.1  # the tail of the training text that chooses the order
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # KenLM's --discount_fallback, for count-of-counts too sparse to estimate from


@dataclass(frozen=True)
class Baselines:
    bpc: dict[str, float]  # name -> bits per character on the scored text
    notes: tuple[str, ...]  # the caps that applied, in words
    order: int  # the n-gram order chosen


@dataclass(frozen=True)
class _Level:
    """The n-grams of one length in training, and which of them each scored position holds."""

    length: int  # characters in each n-gram
    train_type: np.ndarray  # (N,) index among the types of the n-gram ending at each position, -1 before one fits
    scored_type: np.ndarray  # (M,) the same for the scored text, also -1 for an n-gram unseen in training
    counts: np.ndarray  # (types,) occurrences in training
    context: np.ndarray  # (types,) each type's context: its first length-1 characters, as a type of the level below
    first: np.ndarray  # (types,) one training position where each type ends


def _check(vocab_size: int, **texts: np.ndarray) -> None:
    if vocab_size < 1:
        raise UserError(f"baselines need a vocabulary of at least 1 character, got {vocab_size}")
    for name, ids in texts.items():
        if len(ids) == 0:
            raise UserError(f"baselines need some {name} text, got none")
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            raise UserError(f"{name} character ids run from {low} to {high}, outside the vocabulary [0, {vocab_size})")


def unigram_bpc(train: np.ndarray, scored: np.ndarray, vocab_size: int) -> float:
    """Bits per character of `scored` under the add-1/2 smoothed character frequencies of `train`."""
    _check(vocab_size, training=train, scored=scored)
    counts = np.bincount(train.astype(np.intp), minlength=vocab_size) + 0.5
    log2p = np.log2(counts) - np.log2(counts.sum())
    return float(-(np.bincount(scored.astype(np.intp), minlength=vocab_size) * log2p).sum() / len(scored))


def _discounts(counts: np.ndarray) -> np.ndarray:
    """(0, D1, D2, D3+), indexed by min(count, 3), from the count-of-counts n1..n4 (Chen and Goodman's estimate)."""
    n = np.bincount(np.minimum(counts, 5), minlength=6)[1:5].astype(np.float64)  # n1..n4
    if not n.all():
        return np.array([0.0, *FALLBACK_DISCOUNTS])
    y = n[0] / (n[0] + 2 * n[1])
    estimate = np.array([k - (k + 1) * y * n[k] / n[k - 1] for k in (1, 2, 3)])
    usable = ((estimate > 0) & (estimate <= np.arange(1, 4))).all()  # each Dk in (0, k], as KenLM demands
    return np.array([0.0, *(estimate if usable else FALLBACK_DISCOUNTS)])


def _interpolate(counts: np.ndarray, context: np.ndarray, contexts: int, types: np.ndarray, scored_context: np.ndarray,
                 lower: np.ndarray) -> np.ndarray:
    """p(c | context) at each scored position: the discounted count, plus the freed mass times the lower order."""
    if len(counts) == 0:  # a training text shorter than the n-gram
        return lower
    discount = _discounts(counts)
    total = np.bincount(context, weights=counts, minlength=contexts)
    freed = np.bincount(context, weights=discount[np.minimum(counts, 3)], minlength=contexts)
    here = np.maximum(scored_context, 0)
    # unseen, or seen only before continuations that all began the training text: back off to the lower order
    seen = (scored_context >= 0) & (total[here] > 0)
    count = np.where(types >= 0, counts[np.maximum(types, 0)], 0)
    mixed = (count - discount[np.minimum(count, 3)] + freed[here] * lower) / np.where(seen, total[here], 1)
    return np.where(seen, mixed, lower)


def _sort_with_positions(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys sorted, where each came from): one SIMD sort of key and position packed in 64 bits, when they fit."""
    shift = max(len(keys) - 1, 1).bit_length()
    if len(keys) and int(keys.max()) >> (64 - shift) == 0:
        packed = np.sort((keys << np.uint64(shift)) | np.arange(len(keys), dtype=np.uint64))
        return packed >> np.uint64(shift), (packed & np.uint64((1 << shift) - 1)).astype(np.int64)
    order = np.argsort(keys)  # five times slower; only where types x V x N passes 2^64 (V past ~2^16 at the caps)
    return keys[order], order


def _keys(context: np.ndarray | None, chars: np.ndarray, vocab_size: int) -> np.ndarray:
    """Exact n-gram keys: the context's type times V plus the last character (the character alone for 1-grams)."""
    return chars if context is None else context.astype(np.uint64) * np.uint64(vocab_size) + chars


def _level(below: _Level | None, train: np.ndarray, scored: np.ndarray, vocab_size: int) -> _Level:
    """The n-grams one character longer than those of `below`, keyed exactly by (context type, last character)."""
    length = 1 if below is None else below.length + 1
    start = length - 1  # the first position where a whole n-gram fits
    ordered, where = _sort_with_positions(_keys(None if below is None else below.train_type[start - 1:-1],
                                                train[start:], vocab_size))
    new = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    types, counts = ordered[starts], np.diff(np.append(starts, len(ordered)))
    train_type = np.full(len(train), -1, dtype=np.int64)
    train_type[start + where] = np.repeat(np.arange(len(types)), counts)
    # only an n-gram whose context was seen can have been seen; sorted lookups stay in cache, random ones do not
    ask = np.arange(len(scored)) if below is None else np.flatnonzero(below.scored_type[:-1] >= 0) + 1
    asked, order = _sort_with_positions(_keys(None if below is None else below.scored_type[ask - 1], scored[ask],
                                              vocab_size))
    found = np.minimum(np.searchsorted(types, asked), max(len(types) - 1, 0))
    scored_type = np.full(len(scored), -1, dtype=np.int64)
    if len(types):
        scored_type[ask[order]] = np.where(types[found] == asked, found, -1)
    context = (types // np.uint64(vocab_size)).astype(np.int64)  # 0, the empty context, for single characters
    return _Level(length, train_type, scored_type, counts, context, start + where[starts])


def _bpc_by_order(train: np.ndarray, scored: np.ndarray, vocab_size: int, max_order: int) -> list[float]:
    """The bpc of `scored` under the KN n-gram of each order 1..max_order fitted on `train`, all in one pass."""
    # No hashing: an n-gram is keyed by (its context's type, its last character), so keys are exact, never collide,
    # and stay below types x V; each level costs one sort of the training text and one of the scored text.
    train, scored = (np.asarray(ids).astype(np.uint64) for ids in (train, scored))
    lower = np.full(len(scored), 1.0 / vocab_size)  # the uniform base below the unigram
    level = _level(None, train, scored, vocab_size)
    scored_context, contexts = np.zeros(len(scored), np.int64), 1
    bpcs = []
    for order in range(1, max_order + 1):
        top = _interpolate(level.counts, level.context, contexts, level.scored_type, scored_context, lower)
        bpcs.append(float(-np.log2(top).mean()))
        if order == max_order:
            break
        longer = _level(level, train, scored, vocab_size)
        # continuation count: how many distinct characters precede each n-gram = longer types ending in it
        continuations = np.bincount(level.train_type[longer.first], minlength=len(level.counts))
        lower = _interpolate(continuations, level.context, contexts, level.scored_type, scored_context, lower)
        scored_context = np.concatenate([[-1], level.scored_type[:-1]])
        contexts, level = len(level.counts), longer
    return bpcs


def ngram_bpc(train: np.ndarray, scored: np.ndarray, vocab_size: int, order: int) -> float:
    """Bits per character of `scored` under the interpolated modified Kneser–Ney `order`-gram fitted on `train`."""
    _check(vocab_size, training=train, scored=scored)
    if order < 1:
        raise UserError(f"the n-gram order must be at least 1, got {order}")
    return _bpc_by_order(train, scored, vocab_size, order)[-1]


def choose_order(train: np.ndarray, vocab_size: int, max_order: int = 8) -> int:
    """The order 1..max_order with the lowest bpc on the last 10% of `train` when fitted on the first 90%."""
    if max_order < 1:
        raise UserError(f"the largest n-gram order must be at least 1, got {max_order}")
    _check(vocab_size, training=train)
    if len(train) < 2:
        raise UserError(f"choosing the n-gram order needs at least 2 training characters, got {len(train)}")
    split = min(len(train) - 1, max(1, round(len(train) * (1 - HELD_OUT))))
    return 1 + int(np.argmin(_bpc_by_order(train[:split], train[split:], vocab_size, max_order)))


def compressor_bpc(text: bytes, chars: int) -> dict[str, float]:
    """Compressed bits per character of `text` (`chars` characters) with zlib 9, bz2 9 and xz 9e."""
    if chars < 1:
        raise UserError(f"compressor baselines need at least 1 character, got {chars}")
    sizes = {"zlib": len(zlib.compress(text, 9)), "bz2": len(bz2.compress(text, 9)),
             "xz": len(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME))}
    return {name: size * 8 / chars for name, size in sizes.items()}


def spread(ids: np.ndarray, limit: int, stretches: int = STRETCHES) -> np.ndarray:
    """`ids` itself when it holds at most `limit`; else `stretches` evenly spaced runs of it, `limit` in all.

    A directory corpus is in path order, so its first characters are one corner of it (the kernel's `arch/`).
    """
    if len(ids) <= limit:
        return ids
    run = limit // stretches
    starts = np.linspace(0, len(ids) - run, stretches).astype(np.int64)
    return np.concatenate([ids[start : start + run] for start in starts.tolist()])


def baselines(train: np.ndarray, scored: np.ndarray, vocab_size: int,
              to_bytes: Callable[[np.ndarray], bytes] | None = None, *, max_order: int = 8) -> Baselines:
    """All the baselines of `scored`, the n-gram's order chosen on `train`; the compressors only given `to_bytes`,
    which turns ids into the text's bytes."""
    _check(vocab_size, training=train, scored=scored)
    notes = []
    fit, score = spread(train, NGRAM_TRAIN_CHARS, STRETCHES), scored[:SCORED_CHARS]
    if len(fit) < len(train):
        notes.append(f"the n-gram trained on {len(fit):,} of the {len(train):,} training characters, in "
                     f"{STRETCHES} evenly spaced stretches")
    if len(score) < len(scored):
        notes.append(f"the n-gram and the compressors scored the first {len(score):,} of {len(scored):,} characters")
    order = choose_order(fit, vocab_size, max_order) if len(fit) > 1 else 1
    ngram = ngram_bpc(fit, score, vocab_size, order)
    bpc = {"unigram": unigram_bpc(train, scored, vocab_size), f"{order}-gram KN": ngram}
    if to_bytes is not None:
        bpc |= compressor_bpc(to_bytes(score), len(score))
    return Baselines(bpc, tuple(notes), order)
