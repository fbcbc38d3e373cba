"""Corpus -> vocabulary + integer ids, streamed in chunks into a cached memory map.

A corpus is a text file or a directory: every text file below it, in sorted path order,
concatenated, leaving out hidden files and directories, __pycache__, charrnn run dirs, and
whatever the include/exclude globs filter away. Text is decoded incrementally, CRLF and lone CR
become LF, and a leading BOM is dropped. Encoding makes two passes over the bytes, so the whole
text is never one Python string: the first collects the vocabulary, the second writes ids of
the smallest integer dtype that fits. The result is cached (see `charrnn.cache`), so later
runs start at once.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from charrnn import cache
from charrnn.cache import dtype_for
from charrnn.errors import UserError
from charrnn.files import require_file

CHUNK_BYTES = 256 << 10  # small enough that per-chunk temporaries stay in cache
BYTES = "bytes"  # the encoding name that means "raw bytes, 256 symbols"
_MAX_CODEPOINT = 0x110000
SKIPPED_DIRS = ("__pycache__",)  # build products, skipped like hidden directories
_ASCII_SUPERSETS = {"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252"}  # codec names as codecs.lookup gives them

# A piece of decoded text: a str, or bytes whose values are its code points (ASCII that skipped
# the decoder, or raw bytes under --encoding bytes).
Piece = str | bytes


@dataclass(frozen=True)
class Vocab:
    """The sorted characters of a corpus; `byte_level` means the 256 raw byte values."""

    chars: str
    byte_level: bool = False

    @classmethod
    def bytes(cls) -> Vocab:
        return cls("".join(map(chr, range(256))), byte_level=True)

    @property
    def size(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        return dtype_for(self.size)

    def encode(self, text: str) -> list[int]:
        """Ids for `text`; characters outside the vocabulary are an error that names them."""
        index = {c: i for i, c in enumerate(self.chars)}
        missing = sorted({c for c in text if c not in index})
        if missing:
            shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise UserError(f"{len(missing)} character(s) not in the model's vocabulary: {shown}")
        return [index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_bytes(self, text: str) -> bytes:
        """How decoded text goes to a byte stream: raw bytes for byte-level, UTF-8 otherwise."""
        return text.encode("latin-1" if self.byte_level else "utf-8")


@dataclass(frozen=True)
class Corpus:
    path: Path
    ids: np.ndarray  # (N,) read-only memory map
    vocab: Vocab
    content_hash: str  # BLAKE2b of the raw bytes of the files that were used
    files: int
    notes: tuple[str, ...] = ()  # what was left out, for the user
    cached: bool = True  # False when the cache dir could not be written
    encode_seconds: float = 0.0  # 0 when it came from the cache
    size_bytes: int = 0


def list_files(path: Path, include: Sequence[str] = (), exclude: Sequence[str] = (),
               skip_dir: Callable[[Path], bool] = lambda d: False) -> tuple[list[Path], list[str]]:
    """The files of a corpus, sorted, and notes on what was left out.

    A directory contributes every file below it except hidden ones, those in hidden or skipped
    directories (__pycache__, and any for which `skip_dir` is true), and those the globs filter
    out: a file is kept when its path relative to `path` (with '/') matches some `include` glob
    (or there are none) and no `exclude` glob. In a glob, '*' also matches '/'.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"corpus not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read the corpus {path}: {e.strerror or e}") from None
    if stat.S_ISREG(mode):
        return [path], []
    if not stat.S_ISDIR(mode):
        raise UserError(f"corpus {path} is neither a regular file nor a directory")
    found, left_out, filtered = [], [], 0
    for root, dirs, names in os.walk(path, onerror=_walk_error):
        here = Path(root)
        if here != path and skip_dir(here):
            left_out.append(str(here.relative_to(path)))
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS]
        for name in names:
            file = here / name
            if name.startswith(".") or not _is_regular(file):
                continue
            relative = file.relative_to(path).as_posix()
            if (include and not any(fnmatch.fnmatchcase(relative, g) for g in include)) or \
                    any(fnmatch.fnmatchcase(relative, g) for g in exclude):
                filtered += 1
                continue
            found.append(file)
    notes = []
    if left_out:
        notes.append(f"left out {len(left_out)} charrnn run dir(s) inside the corpus: {', '.join(sorted(left_out))}")
    if filtered:
        notes.append(f"left out {filtered} file(s) that data.include / data.exclude filter away")
    if not found:
        why = " after data.include / data.exclude" if filtered else ""
        raise UserError(f"directory {path} holds no files to train on{why}")
    return sorted(found, key=lambda p: p.relative_to(path).parts), notes


def _walk_error(error: OSError) -> None:
    raise UserError(f"cannot read the corpus directory {error.filename}: {error.strerror or error}")


def _is_regular(path: Path) -> bool:
    """A regular file (following symlinks); FIFOs, sockets, devices and broken links are not text to read."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


class _BadFile(Exception):
    """A file that is binary or not valid in the requested encoding."""


def _read_chunks(path: Path, on_chunk: Callable[[bytes], object]) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                on_chunk(chunk)
                yield chunk
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def iter_text(path: Path, encoding: str, on_chunk: Callable[[bytes], object] = len) -> Iterator[Piece]:
    """Decoded, newline-normalised text of one file, piece by piece.

    In an ASCII-compatible encoding, a chunk of plain ASCII (no CR, the decoder holding nothing)
    skips the decoder and comes as bytes: its byte values are its code points.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    ascii_passthrough = codecs.lookup(encoding).name in _ASCII_SUPERSETS
    offset, held_cr, started = 0, "", False
    for chunk in _read_chunks(path, on_chunk):
        if ascii_passthrough and started and chunk.isascii() and not decoder.getstate()[0]:
            if b"\0" in chunk:
                raise _BadFile("contains NUL bytes and looks binary; use --encoding bytes to train on raw bytes")
            offset += len(chunk)
            data = b"\r" + chunk if held_cr else chunk
            held_cr = "\r" if data.endswith(b"\r") else ""  # its LF may start the next chunk
            data = data[: len(data) - len(held_cr)]
            yield data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data
            continue
        buffered = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as e:
            at = offset - buffered + e.start
            raise _BadFile(f"is not valid {encoding} at byte offset {at}; pass --encoding "
                           f"(e.g. latin-1) or --encoding bytes") from None
        except UnicodeError as e:  # codecs such as 'undefined' refuse any input
            raise _BadFile(f"cannot be decoded as {encoding} ({e})") from None
        offset += len(chunk)
        if "\0" in text:
            raise _BadFile("contains NUL bytes and looks binary; use --encoding bytes to train on raw bytes")
        text = held_cr + text
        if not started and text:
            started, text = True, text.removeprefix("\ufeff")
        held_cr = "\r" if text.endswith("\r") else ""  # its LF may start the next chunk
        text = text[: len(text) - len(held_cr)]
        yield text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeError:
        raise _BadFile(f"ends in a truncated {encoding} sequence") from None
    text = (held_cr + tail).replace("\r\n", "\n").replace("\r", "\n")
    if text:
        yield text.removeprefix("\ufeff") if not started else text


def _texts(path: Path, encoding: str, on_chunk: Callable[[bytes], object] = len) -> Iterator[Piece]:
    """A file as pieces of text; raw bytes come as they are: their values are the ids of the byte vocabulary."""
    if encoding == BYTES:
        return _read_chunks(path, on_chunk)
    return iter_text(path, encoding, on_chunk)


def _codepoints(piece: Piece) -> np.ndarray:
    if isinstance(piece, bytes):
        return np.frombuffer(piece, dtype=np.uint8)
    if piece.isascii():  # O(1) in CPython, and the common case: one byte per character
        return np.frombuffer(piece.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class _Alphabet:
    """The set of code points seen so far."""

    def __init__(self) -> None:
        self.seen = np.zeros(_MAX_CODEPOINT, dtype=bool)
        self._known_bytes = b""  # the seen code points below 256, for bytes.translate

    def add(self, piece: Piece) -> None:
        if isinstance(piece, bytes):
            piece = piece.translate(None, self._known_bytes)  # C speed; usually nothing is left
        if piece:
            self.seen[_codepoints(piece)] = True
            self._known_bytes = np.flatnonzero(self.seen[:256]).astype(np.uint8).tobytes()


def id_table(vocab: Vocab, dtype: np.dtype, missing: int = 0) -> np.ndarray:
    """A code point -> id lookup table for `vocab`; code points outside it map to `missing`."""
    table = np.full(_MAX_CODEPOINT, missing, dtype=dtype)
    table[_codepoints(vocab.chars)] = np.arange(vocab.size, dtype=dtype)
    return table


def _lookup(table: np.ndarray, piece: Piece) -> np.ndarray:
    """table[c] for every code point c in `piece`."""
    return np.take(table, _codepoints(piece))


class _BackgroundHash:
    """BLAKE2b of a stream of chunks, computed on a worker thread (hashlib releases the GIL), one chunk ahead."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._hash, self._pool, self._pending = hashlib.blake2b(digest_size=16), pool, None

    def update(self, chunk: bytes) -> None:
        if self._pending is not None:
            self._pending.result()  # at most one chunk in flight: memory stays bounded
        self._pending = self._pool.submit(self._hash.update, chunk)

    def digest(self) -> bytes:
        if self._pending is not None:
            self._pending.result()
        return self._hash.digest()


def check_encoding(encoding: str) -> None:
    """Accept 'bytes' and Python's text encodings; refuse unknown codecs and bytes-to-bytes ones like base64."""
    if encoding == BYTES:
        return
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}: use a Python codec name or 'bytes'") from None
    if not getattr(info, "_is_text_encoding", True):
        raise UserError(f"{encoding!r} is not a text encoding: use one such as utf-8 or latin-1, or 'bytes'")


def _scan(files: list[Path], encoding: str, single: bool, bar: tqdm,
          check: Callable[[], None]) -> tuple[Vocab, int, str, list[int], list[str]]:
    """Pass 1: vocabulary, length, content hash, and which files are usable (by index)."""
    alphabet = _Alphabet()
    total, digest, used, skipped = 0, hashlib.blake2b(digest_size=16), [], []
    with ThreadPoolExecutor(1) as pool:
        for index, f in enumerate(files):
            file_alphabet, file_hash, n = _Alphabet(), _BackgroundHash(pool), 0

            def on_chunk(chunk: bytes, file_hash=file_hash) -> None:
                check()
                file_hash.update(chunk)
                bar.update(len(chunk))

            try:
                for piece in _texts(f, encoding, on_chunk):
                    if encoding != BYTES:  # the byte vocabulary is all 256 values anyway
                        file_alphabet.add(piece)
                    n += len(piece)
            except _BadFile as e:
                if single:
                    raise UserError(f"{f} {e}") from None
                skipped.append(f"{f.name}: {str(e).split(';')[0]}")
                continue
            alphabet.seen |= file_alphabet.seen
            total += n
            digest.update(file_hash.digest())
            used.append(index)
    vocab = Vocab.bytes() if encoding == BYTES else Vocab("".join(map(chr, np.flatnonzero(alphabet.seen))))
    return vocab, total, digest.hexdigest(), used, skipped


def content_hash(files: list[Path], check: Callable[[], None] = lambda: None) -> str:
    """The BLAKE2b content hash of these files' bytes, as pass 1 computes it."""
    digest = hashlib.blake2b(digest_size=16)
    for f in files:
        file_hash = hashlib.blake2b(digest_size=16)
        for chunk in _read_chunks(f, lambda c: check()):
            file_hash.update(chunk)
        digest.update(file_hash.digest())
    return digest.hexdigest()


def _write_ids(files: list[Path], encoding: str, vocab: Vocab, total: int, out: Path, bar: tqdm,
               check: Callable[[], None]) -> None:
    """Pass 2: ids appended to a .npy file with plain writes, so no dirty pages pile up in this process."""
    table = id_table(vocab, vocab.dtype)
    translation = table[:256].tobytes() if vocab.dtype == np.uint8 else None  # ASCII pieces: bytes.translate
    written = 0

    def on_chunk(chunk: bytes) -> None:
        check()
        bar.update(len(chunk))

    with open(out, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(vocab.dtype), "fortran_order": False, "shape": (total,)}
        np.lib.format.write_array_header_1_0(f, header)
        for path in files:
            try:
                for piece in _texts(path, encoding, on_chunk):
                    use_translate = translation is not None and isinstance(piece, bytes)
                    ids = piece.translate(translation) if use_translate else _lookup(table, piece).tobytes()
                    written += len(piece)
                    if written > total:
                        raise UserError(f"{path} changed while it was being encoded; try again")
                    f.write(ids)
            except _BadFile:
                raise UserError(f"{path} changed while it was being encoded; try again") from None
    if written != total:
        raise UserError("the corpus changed while it was being encoded; try again")


def _bar(desc: str, total: int, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress, leave=False, dynamic_ncols=True)


def load_corpus(path: Path, encoding: str = "utf-8", *, include: Sequence[str] = (), exclude: Sequence[str] = (),
                skip_dir: Callable[[Path], bool] = lambda d: False, verify: bool = False, progress: bool = False,
                check: Callable[[], None] = lambda: None) -> Corpus:
    """Encode a file or directory (or reuse its cached encoding) into ids and a vocabulary.

    `verify` re-hashes the files' bytes even on a cache hit (for resuming, where the text must be
    exactly the same); `check` is called for every chunk read and may raise to abandon the work.
    """
    check_encoding(encoding)
    path = Path(path)
    files, notes = list_files(path, include, exclude, skip_dir)
    entry_path = cache.cache_dir() / cache.key(files, encoding)
    size = sum(f.stat().st_size for f in files)
    entry = None
    try:
        entry = cache.open_entry(entry_path, _vocab_size)
    except cache.Damaged as e:
        notes.append(f"the cache entry {entry_path} was damaged ({e}): rebuilt it")
    if entry is not None and verify:
        used = [files[i] for i in entry.meta["files"] if i < len(files)]
        if content_hash(used, check) != entry.meta["hash"]:
            notes.append(f"the cache entry {entry_path} did not match the files' bytes: rebuilt it")
            entry = None
    seconds = 0.0
    if entry is None:
        started = time.perf_counter()
        with _bar("scan", size, progress) as bar:
            vocab, total, digest, used, skipped = _scan(files, encoding, path.is_file(), bar, check)
        if total == 0:
            what = f"{path} is empty" if path.is_file() else f"directory {path} holds no text files"
            raise UserError(what + (f" ({len(skipped)} binary or undecodable skipped)" if skipped else ""))
        meta = {"format": cache.FORMAT, "chars": vocab.chars, "byte_level": vocab.byte_level, "length": total,
                "hash": digest, "files": used, "skipped": skipped}
        with _bar("encode", size, progress) as bar:
            entry = cache.store(entry_path, meta, lambda out: _write_ids([files[i] for i in used], encoding, vocab,
                                                                          total, out, bar, check), _vocab_size)
        seconds = time.perf_counter() - started
    meta = entry.meta
    if meta["skipped"]:
        notes.insert(0, f"skipped {len(meta['skipped'])} binary or undecodable file(s), e.g. {meta['skipped'][0]}")
    return Corpus(path, entry.ids, Vocab(meta["chars"], meta["byte_level"]), meta["hash"], len(meta["files"]),
                  tuple(notes), entry.cached, seconds, size)


def _vocab_size(meta: dict) -> int:
    return len(meta["chars"])


def encode_file(path: Path, vocab: Vocab, encoding: str = "utf-8") -> tuple[np.ndarray, int]:
    """Ids of a text file under a fixed vocabulary; characters outside it are skipped and counted."""
    check_encoding(encoding)
    path = Path(path)
    require_file(path)
    table = id_table(vocab, np.dtype(np.int64), missing=-1)
    parts, skipped = [], 0
    try:
        for text in _texts(path, BYTES if vocab.byte_level else encoding):
            ids = _lookup(table, text)
            keep = ids >= 0
            skipped += int((~keep).sum())
            parts.append(ids[keep].astype(vocab.dtype))
    except _BadFile as e:
        raise UserError(f"{path} {e}") from None
    return (np.concatenate(parts) if parts else np.zeros(0, vocab.dtype)), skipped
