"""Truncated-BPTT batching: the ids are cut into parallel contiguous streams, read window by window.

With N = 19 ids and batch_size B = 3, each stream holds L = (N - 1) // B = 6 inputs and
overlaps the next stream by one id, so every id is an input or a target:

    ids:       a b c d e f g h i j k l m n o p q r s
    stream 0:  a b c d e f g
    stream 1:              g h i j k l m
    stream 2:                          m n o p q r s

With seq_len T = 4, step 0 reads columns 0..4 and step 1 the ragged rest, columns 4..6:

               window 0             window 1
               x        y           x    y
    stream 0:  a b c d  b c d e     e f  f g
    stream 1:  g h i j  h i j k     k l  l m
    stream 2:  m n o p  n o p q     q r  r s

Row b of window 1 continues row b of window 0, so the hidden state that window 0 leaves is
carried (detached) into window 1. Only the last (N - 1) - B * L < B targets are never read.
Streams are strided views of the (memory-mapped) ids, so nothing is copied until a window is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from charrnn.errors import UserError

MIN_SEQ_LEN = 8  # below this, truncated BPTT learns next to nothing


def make_streams(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """(N,) -> (B, L + 1) read-only view; stream b starts at b * L and overlaps the next by one id."""
    stream_len = (len(ids) - 1) // batch_size
    if stream_len < 1:
        raise ValueError(f"{len(ids)} ids cannot fill {batch_size} streams")
    step = ids.strides[0]
    return np.lib.stride_tricks.as_strided(ids, shape=(batch_size, stream_len + 1),
                                           strides=(stream_len * step, step), writeable=False)


@dataclass(frozen=True)
class Streams:
    """The windows of one split: `len()` windows per epoch, window i -> (x, y), each (B, T)."""

    data: np.ndarray  # (B, L + 1)
    seq_len: int

    @classmethod
    def of(cls, ids: np.ndarray, batch_size: int, seq_len: int, rows: slice = slice(None)) -> Streams:
        """Streams over `ids`; `rows` picks this process's share of them in distributed runs."""
        return cls(make_streams(ids, batch_size)[rows], seq_len)

    def __len__(self) -> int:
        return -(-(self.data.shape[1] - 1) // self.seq_len)

    @property
    def batch_size(self) -> int:
        return self.data.shape[0]

    @property
    def chars_per_epoch(self) -> int:
        return self.batch_size * (self.data.shape[1] - 1)

    def read_ids(self, windows: int | None = None) -> np.ndarray:
        """The ids that the first `windows` windows (all when None) read, stream after stream, as one array."""
        columns = self.data.shape[1] if windows is None else min(windows * self.seq_len + 1, self.data.shape[1])
        return self.data[:, :columns].ravel()

    def window(self, index: int) -> tuple[Tensor, Tensor]:
        """Inputs and next-char targets of window `index`, as int64 tensors (B, T)."""
        start = index * self.seq_len
        block = np.ascontiguousarray(self.data[:, start : start + self.seq_len + 1])
        block = torch.from_numpy(block.astype(np.int64))
        return block[:, :-1], block[:, 1:]


def fit_batch(num_ids: int, batch_size: int, seq_len: int, what: str, multiple: int = 1) -> tuple[int, int, str]:
    """Shrink batch_size, then seq_len, so that every stream holds at least one full window.

    Returns (batch_size, seq_len, warning); the warning is empty when nothing changed. `multiple`
    keeps batch_size divisible by the number of processes.
    """
    pairs = num_ids - 1
    if pairs >= batch_size * seq_len:
        return batch_size, seq_len, ""
    new_batch = max(multiple, pairs // seq_len // multiple * multiple)
    new_seq = min(seq_len, pairs // new_batch)
    if new_seq < MIN_SEQ_LEN:
        need = multiple * MIN_SEQ_LEN + 1
        raise UserError(f"the {what} split has {num_ids} characters, too few to train or evaluate on "
                        f"(need at least {need}); use a longer corpus or a different data.val_fraction")
    warning = (f"the {what} split has only {num_ids} characters: using batch_size {new_batch} "
               f"and seq_len {new_seq} for it instead of {batch_size} and {seq_len}")
    return new_batch, new_seq, warning
