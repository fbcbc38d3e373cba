"""The train/validation split: one rule, used by training, evaluation and inspection alike.

Two rules, chosen by `data.split`:

- **tail**: the last `val_fraction` of the corpus's characters is held out. A single file keeps
  this rule ('auto'), so tinyshakespeare's figures stay comparable with nanoGPT's and char-rnn's.
- **hash**: the corpus is cut into pieces, one per file and one per BLOCK characters of a longer
  file. Each piece gets a stable hash of its relative path and block number; pieces are held out
  in hash order until `val_fraction` of the characters is reached (the piece that crosses the
  mark is held out when that lands nearer to it). Validation then samples the whole tree, where
  the tail of a sorted source tree is one corner of it (`sound/`, `tools/`, `virt/` of the
  Linux kernel). A directory corpus uses this rule ('auto'). Each side keeps corpus order.

The rule a run used is recorded in its config, so evaluation, dynamic evaluation's statistics and
`visualize` use the same split; a checkpoint from before the rule existed used 'tail'.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from charrnn.config import DataConfig
from charrnn.errors import UserError

if TYPE_CHECKING:
    from charrnn.data.encoding import Corpus

BLOCK = 1 << 16  # characters: a file longer than this is hashed block by block, so no one file decides the split


@dataclass(frozen=True)
class Split:
    """A corpus's ids and the ranges held out of them; each side is joined (in corpus order) when first read."""

    ids: np.ndarray = field(repr=False)  # (N,) the whole corpus
    rule: str  # 'tail' or 'hash': the rule that made it
    held_out: np.ndarray  # (P, 2) [start, end) ranges of corpus ids held out, in corpus order

    @cached_property
    def train(self) -> np.ndarray:
        """(N_train,) ids: a view of the corpus under the tail rule, the kept pieces joined under hash."""
        return _join(self.ids, self._kept)

    @cached_property
    def val(self) -> np.ndarray:
        """(N_val,) ids."""
        return _join(self.ids, self.held_out)

    def train_end(self, count: int) -> np.ndarray:
        """The last `count` training ids (fewer when there are fewer), without joining the rest."""
        parts, needed = [], count
        for start, end in self._kept[::-1].tolist():
            parts.append(self.ids[max(start, end - needed) : end])
            needed -= len(parts[-1])
            if needed <= 0:
                break
        return np.concatenate(parts[::-1]) if parts else self.ids[:0]

    @property
    def _kept(self) -> np.ndarray:
        edges = np.concatenate([[0], self.held_out.ravel(), [len(self.ids)]]).reshape(-1, 2)
        return edges[edges[:, 1] > edges[:, 0]]

    def describe(self) -> str:
        """One line for the user: which rule, and how much it holds out."""
        share = int((self.held_out[:, 1] - self.held_out[:, 0]).sum()) / len(self.ids)
        if self.rule == "tail":
            return f"validation: the last {share:.1%} of the corpus (data.split = 'tail')"
        return (f"validation: {len(self.held_out):,} files and {BLOCK // 1024}K-character blocks chosen by a hash of "
                f"their paths, {share:.1%} of the characters (data.split = 'hash')")


def split_point(num_ids: int, val_fraction: float) -> int:
    """Where validation starts under the tail rule: the last `val_fraction` of the corpus is held out."""
    return int(num_ids * (1 - val_fraction))


def pieces(names: tuple[str, ...], starts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(P, 2) [start, end) ranges of every file and BLOCK of a file, and each one's hash key."""
    ranges, keys = [], []
    for name, start, end in zip(names, starts[:-1].tolist(), starts[1:].tolist(), strict=True):
        for block, first in enumerate(range(start, max(end, start + 1), BLOCK)):
            ranges.append((first, min(first + BLOCK, end)))
            keys.append(f"{name}\0{block}")
    return np.array(ranges, dtype=np.int64).reshape(-1, 2), keys


def _hash(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()


def held_out(names: tuple[str, ...], starts: np.ndarray, val_fraction: float) -> np.ndarray:
    """The hash rule's held-out [start, end) ranges, in corpus order; empty when fewer than two pieces hold text."""
    ranges, keys = pieces(names, starts)
    sizes = ranges[:, 1] - ranges[:, 0]
    order = sorted((i for i in range(len(keys)) if sizes[i] > 0), key=lambda i: _hash(keys[i]))
    if len(order) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    target = val_fraction * int(sizes.sum())
    total = np.cumsum(sizes[order])
    take = int(np.searchsorted(total, target))  # pieces before this one stay under the mark
    if take < len(order) and abs(total[take] - target) <= abs((total[take - 1] if take else 0) - target):
        take += 1  # the crossing piece lands nearer the mark
    take = min(max(take, 1), len(order) - 1)  # both sides hold text
    return ranges[np.sort(np.array(order[:take]))]


def split_corpus(ids: np.ndarray, names: tuple[str, ...], starts: np.ndarray, val_fraction: float, rule: str,
                 single_file: bool) -> Split:
    """The training and validation ids of a corpus under `rule` ('auto', 'tail' or 'hash', as config checks).

    'auto' is 'tail' for a single file and 'hash' for a directory, or 'tail' when the directory is a
    single piece (one small file), which the hash rule cannot cut.
    """
    if rule == "hash" or (rule == "auto" and not single_file):
        ranges = held_out(names, starts, val_fraction)
        if len(ranges):
            return Split(ids, "hash", ranges)
        if rule == "hash":
            raise UserError(f"data.split = 'hash' needs at least two files or {BLOCK:,}-character blocks to hold "
                            "some out; this corpus is one: use data.split = 'tail'")
    return Split(ids, "tail", np.array([[split_point(len(ids), val_fraction), len(ids)]], dtype=np.int64))


def _join(ids: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The ids of `ranges`, one after another: a view for one range, else one read-only copy."""
    if len(ranges) == 1:
        return ids[ranges[0, 0] : ranges[0, 1]]
    out = np.concatenate([ids[start:end] for start, end in ranges.tolist()])
    out.flags.writeable = False
    return out


def split_of(corpus: Corpus, data: DataConfig) -> Split:
    """A loaded corpus split as `data` (the run's data config) says."""
    return split_corpus(corpus.ids, corpus.file_names, corpus.file_starts, data.val_fraction, data.split,
                        corpus.path.is_file())
