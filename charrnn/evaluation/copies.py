"""Did the model copy its training text? The longest verbatim span of a sample found in the corpus.

The index holds one uint64 key per corpus position p that starts a WINDOW-gram: the top bits are a
rolling hash of ids[p : p + WINDOW], the low `bits` bits are p // stride. One sorted array (8 bytes a
window, sorted in place) serves as both hash table and position list, and loads as a memory map.
Every candidate is verified against the ids, so a hash collision never counts as a copy. A window
that occurs very often (a run of spaces) yields only its first MAX_CANDIDATES positions; the span
is also extended backward, so a long copy is still found from any of its rarer windows, and only a
copy made entirely of such frequent windows (low-complexity text) may be reported shorter.

Up to `max_windows` windows every position is indexed and the report is exact. Past that only the
positions that are multiples of stride = ceil(windows / max_windows) are: any span of at least
WINDOW + stride - 1 characters is still found exactly (some window inside it starts on the stride;
extending both ways recovers all of it), `copied_windows` is a lower bound, and `exact` is False.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from charrnn.errors import UserError
from charrnn.files import remove_stale_temps, write_atomic

WINDOW = 20
MAX_WINDOWS = 150_000_000  # 1.2 GB of keys: exact up to 150M characters
MAX_CANDIDATES = 256  # positions tried per sample window: caps the work for windows that occur millions of times
FORMAT = 1  # bump whenever the file layout changes: older files are then rebuilt
_MAGIC = 0x5345_4950_4F43_4E52  # b"RNCOPIES", the first word of the file
_HEADER = 8  # words before the keys: magic, format, window, stride, length, count, bits, fingerprint
_MULTIPLIER = np.uint64(0x9E37_79B9_7F4A_7C15)  # odd, so multiplying mod 2**64 loses nothing
_CHUNK = 1 << 22  # positions hashed at a time: bounds the build's temporaries to ~64 MB
_GATHER = 1 << 22  # characters compared at a time when extending spans


@dataclass(frozen=True)
class CopyReport:
    longest: int  # characters of the longest verbatim span (0 when under WINDOW)
    position: int | None  # where it starts in the corpus ids
    sample_start: int | None  # where it starts in the sample
    copied_windows: float  # fraction of the sample's WINDOW-character windows found in the corpus
    exact: bool  # False when the index is strided: then only spans >= WINDOW + stride - 1 are sure to be found


@dataclass(frozen=True, eq=False)
class CopyIndex:
    """Sorted window keys over a corpus; `check` finds where a sample copies it."""

    ids: np.ndarray = field(repr=False)  # (N,) the corpus, never modified
    keys: np.ndarray = field(repr=False)  # (count,) uint64: hash top bits | position // stride, sorted
    stride: int
    bits: int  # low bits of a key that hold the position

    @classmethod
    def build(cls, ids: np.ndarray, *, max_windows: int = MAX_WINDOWS) -> CopyIndex:
        """Hash every window (every stride-th past max_windows) and sort: about 8 bytes per window."""
        _require_ids(ids, unsigned=True)
        stride, count, bits = _layout(len(ids), max_windows)
        low = np.uint64((1 << bits) - 1)
        keys = np.empty(count, np.uint64)
        for first in range(0, count, _CHUNK):
            n = min(_CHUNK, count - first)
            hashes = _hash_windows(ids, first * stride, n, stride)
            keys[first:first + n] = (hashes & ~low) | np.arange(first, first + n, dtype=np.uint64)
        keys.sort()  # in place: no second copy of the index at any time
        return cls(ids, keys, stride, bits)

    def save(self, directory: Path) -> None:
        """Write the index as one .npy file, atomically; `UserError` when the directory cannot be written."""
        path = Path(directory) / _name(self.stride)
        remove_stale_temps(path.parent)  # a kill during an earlier save
        header = np.array(_header(self.ids, self.stride, len(self.keys), self.bits), np.uint64)

        def write(f: BinaryIO) -> None:
            shape = {"descr": np.lib.format.dtype_to_descr(header.dtype), "fortran_order": False,
                     "shape": (_HEADER + len(self.keys),)}
            np.lib.format.write_array_header_1_0(f, shape)
            f.write(header.tobytes())
            for first in range(0, len(self.keys), _CHUNK):  # a loaded index is a memory map: stream it
                f.write(np.ascontiguousarray(self.keys[first:first + _CHUNK]).tobytes())

        write_atomic(path, write, what="copy index", make_parent=True)

    @classmethod
    def load(cls, directory: Path, ids: np.ndarray, *, max_windows: int = MAX_WINDOWS) -> CopyIndex | None:
        """The index saved for these ids, memory-mapped; None when absent, damaged or for other ids."""
        _require_ids(ids, unsigned=True)
        stride, count, bits = _layout(len(ids), max_windows)
        try:
            words = np.load(Path(directory) / _name(stride), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing, truncated, or not a .npy at all
            return None
        if words.ndim != 1 or words.dtype != np.uint64 or len(words) != _HEADER + count:
            return None
        if tuple(int(w) for w in words[:_HEADER]) != _header(ids, stride, count, bits):
            return None
        return cls(ids, words[_HEADER:], stride, bits)

    def check(self, sample: np.ndarray) -> CopyReport:
        """Where `sample` (ids) copies the corpus: its longest verbatim span and its copied windows."""
        sample = _require_ids(sample, unsigned=False)
        windows = len(sample) - WINDOW + 1
        if windows <= 0 or len(self.keys) == 0:
            return CopyReport(0, None, None, 0.0, self.stride == 1)
        win, pos = _verified(self.ids, sample, *self._candidates(sample, windows))
        if len(win) == 0:
            return CopyReport(0, None, None, 0.0, self.stride == 1)
        starts, at, length = _spans(self.ids, sample, win, pos, self.stride)
        best = np.lexsort((starts, at, -length))[0]  # longest, then earliest in the corpus, then in the sample
        covered = np.zeros(windows + 1, np.int64)  # +1 where a span's windows begin, -1 past its last window
        np.add.at(covered, starts, 1)
        np.add.at(covered, starts + length - WINDOW + 1, -1)
        copied = float(np.mean(np.cumsum(covered[:windows]) > 0))
        return CopyReport(int(length[best]), int(at[best]), int(starts[best]), copied, self.stride == 1)

    def _candidates(self, sample: np.ndarray, windows: int) -> tuple[np.ndarray, np.ndarray]:
        """(sample window, corpus position) pairs whose hashes agree, at most MAX_CANDIDATES per window."""
        low = np.uint64((1 << self.bits) - 1)
        wanted = _hash_windows(sample, 0, windows, 1) & ~low
        first = np.searchsorted(self.keys, wanted, side="left")
        counts = np.minimum(np.searchsorted(self.keys, wanted | low, side="right") - first, MAX_CANDIDATES)
        win = np.repeat(np.arange(windows), counts)
        rank = np.arange(len(win)) - np.repeat(np.cumsum(counts) - counts, counts)  # 0, 1, ... within a window
        pos = (self.keys[np.repeat(first, counts) + rank] & low).astype(np.int64) * self.stride
        return win, pos


def open_index(ids: np.ndarray, directory: Path | None, *, max_windows: int = MAX_WINDOWS) -> CopyIndex:
    """The index saved in `directory` if valid, else a new one, saved there when the directory is writable."""
    if directory is not None and (index := CopyIndex.load(directory, ids, max_windows=max_windows)) is not None:
        return index
    index = CopyIndex.build(ids, max_windows=max_windows)
    if directory is not None:
        try:
            index.save(directory)
        except UserError:
            pass  # a read-only cache: the index still serves this process from memory
    return index


def _hash_windows(ids: np.ndarray, first: int, count: int, stride: int) -> np.ndarray:
    """(count,) uint64 polynomial hashes of the windows starting at first, first + stride, ..."""
    hashes = np.zeros(count, np.uint64)
    stop = first + (count - 1) * stride + 1
    for k in range(WINDOW):
        hashes += ids[first + k:stop + k:stride]  # a strided view of the ids: only this chunk is read
        hashes *= _MULTIPLIER  # after the add, so that the last character reaches the top bits too
    return hashes


def _verified(ids: np.ndarray, sample: np.ndarray, win: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs whose WINDOW characters really agree: hash collisions are dropped here."""
    for k in range(WINDOW):
        same = ids[pos + k] == sample[win + k]
        win, pos = win[same], pos[same]
    return win, pos


def _spans(ids: np.ndarray, sample: np.ndarray, win: np.ndarray, pos: np.ndarray,
           stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The verbatim spans through verified pairs: (sample starts, corpus starts, lengths)."""
    diagonal = pos - win  # pairs of one span share it
    order = np.lexsort((win, diagonal))
    win, diagonal = win[order], diagonal[order]
    # Pairs stride apart on a diagonal overlap (stride <= WINDOW) and so lie in one span: extend each run once.
    joined = (diagonal[1:] == diagonal[:-1]) & (np.diff(win) == stride) & (stride <= WINDOW)
    first, last = win[np.r_[True, ~joined]], win[np.r_[~joined, True]]
    diagonal = diagonal[np.r_[True, ~joined]]
    back = _extend(ids, sample, first - 1, first - 1 + diagonal, -1)
    ahead = _extend(ids, sample, last + WINDOW, last + WINDOW + diagonal, 1)
    starts = first - back
    return starts, starts + diagonal, back + (last - first + WINDOW) + ahead


def _extend(ids: np.ndarray, sample: np.ndarray, at: np.ndarray, pos: np.ndarray, step: int) -> np.ndarray:
    """How many characters agree from sample[at], ids[pos] on, going in direction `step` (+1 or -1)."""
    limit = np.minimum(len(sample) - at, len(ids) - pos) if step > 0 else np.minimum(at, pos) + 1
    done = np.zeros(len(at), np.int64)
    todo, width = np.flatnonzero(limit > 0), 16
    while len(todo):
        offsets = done[todo, None] + np.arange(width)  # (todo, width): grows so long copies take few rounds
        inside = offsets < limit[todo, None]
        ours = np.clip(at[todo, None] + step * offsets, 0, len(sample) - 1)
        theirs = np.clip(pos[todo, None] + step * offsets, 0, len(ids) - 1)
        agree = inside & (sample[ours] == ids[theirs])
        run = np.where(agree.all(axis=1), width, agree.argmin(axis=1))
        done[todo] += run
        todo = todo[(run == width) & (done[todo] < limit[todo])]
        width = min(width * 2, max(16, _GATHER // max(len(todo), 1)))
    return done


def _layout(length: int, max_windows: int) -> tuple[int, int, int]:
    """(stride, windows indexed, position bits) for a corpus of `length` ids."""
    if not 1 <= max_windows <= 1 << 32:
        raise ValueError(f"max_windows must be between 1 and 2**32, not {max_windows}")
    windows = max(length - WINDOW + 1, 0)
    stride = max(1, -(-windows // max_windows))
    count = -(-windows // stride)
    return stride, count, max(1, (count - 1).bit_length())


def _header(ids: np.ndarray, stride: int, count: int, bits: int) -> tuple[int, ...]:
    return _MAGIC, FORMAT, WINDOW, stride, len(ids), count, bits, _fingerprint(ids)


def _fingerprint(ids: np.ndarray) -> int:
    """A hash of 1,024 evenly spread ids: tells another corpus of the same length apart, reading little.

    Not a checksum: the corpus cache entry that holds the index owns invalidation.
    """
    picks = np.linspace(0, len(ids) - 1, num=min(len(ids), 1024)).astype(np.int64)
    digest = hashlib.blake2b(np.asarray(ids[picks], dtype="<u8").tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _name(stride: int) -> str:
    return f"copies-w{WINDOW}-s{stride}.npy"


def _require_ids(ids: np.ndarray, *, unsigned: bool) -> np.ndarray:
    """`ids` as a 1-D array of non-negative integers; a signed (small) sample is widened to uint64."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or (unsigned and ids.dtype.kind != "u"):
        raise ValueError(f"ids must be a 1-D array of {'unsigned ' if unsigned else ''}integers, not {ids.dtype}"
                         f" of shape {ids.shape}")
    if ids.dtype.kind == "i":
        if len(ids) and ids.min() < 0:
            raise ValueError("ids must not be negative")
        ids = ids.astype(np.uint64)
    return ids
