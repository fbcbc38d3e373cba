"""Corpus -> vocabulary + integer ids, streamed in chunks into a cached memory map.

A corpus is a text file or a directory (every non-hidden text file below it, in sorted path
order, concatenated). Text is decoded incrementally, CRLF and lone CR become LF, and a leading
BOM is dropped. Encoding makes two passes over the bytes, so the whole text is never one
Python string: the first collects the vocabulary, the second writes ids into a memory-mapped
array of the smallest integer dtype that fits. The result is cached under `cache_dir()`, keyed
by the files' paths, sizes and mtimes plus the encoding, so later runs start instantly.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from charrnn.errors import UserError

CHUNK_BYTES = 256 << 10  # small enough that per-chunk temporaries stay in cache
BYTES = "bytes"  # the encoding name that means "raw bytes, 256 symbols"
_MAX_CODEPOINT = 0x110000
_CACHE_FORMAT = 2  # bump whenever the entry layout changes: old entries are then ignored


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
        return np.dtype(np.uint8 if self.size <= 256 else np.uint16 if self.size <= 65536 else np.uint32)

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
    ids: np.ndarray  # (N,) read-only memory map
    vocab: Vocab
    content_hash: str  # BLAKE2b of the raw bytes of the files that were used
    files: int
    skipped: tuple[str, ...]  # files left out of a directory corpus, with the reason
    encode_seconds: float = 0.0  # 0 when it came from the cache
    size_bytes: int = 0


def cache_dir() -> Path:
    """Where encoded corpora are cached: $CHARRNN_CACHE_DIR, else $XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn."""
    if os.environ.get("CHARRNN_CACHE_DIR"):
        return Path(os.environ["CHARRNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"


def list_files(path: Path) -> list[Path]:
    """The files of a corpus: the file itself, or every non-hidden file below a directory, sorted."""
    if not path.exists():
        raise UserError(f"corpus not found: {path}")
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"corpus is neither a file nor a directory: {path}")
    found = []
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, n) for n in names if not n.startswith(".") and Path(root, n).is_file()]
    return sorted(found, key=lambda p: p.relative_to(path).parts)


class _BadFile(Exception):
    """A file that is binary or not valid in the requested encoding."""


def _read_chunks(path: Path, on_chunk: Callable[[bytes], object]) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                on_chunk(chunk)
                yield chunk
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def iter_text(path: Path, encoding: str, on_chunk: Callable[[bytes], object] = len) -> Iterator[str]:
    """Decoded, newline-normalised text of one file, chunk by chunk."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset, held_cr, started = 0, "", False
    for chunk in _read_chunks(path, on_chunk):
        buffered = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as e:
            at = offset - buffered + e.start
            raise _BadFile(f"is not valid {encoding} at byte offset {at}; pass --encoding "
                           f"(e.g. latin-1) or --encoding bytes") from None
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
    except UnicodeDecodeError:
        raise _BadFile(f"ends in a truncated {encoding} sequence") from None
    text = (held_cr + tail).replace("\r\n", "\n").replace("\r", "\n")
    if text:
        yield text.removeprefix("\ufeff") if not started else text


def _texts(path: Path, encoding: str, on_chunk: Callable[[bytes], object] = len) -> Iterator[str]:
    """A file as text chunks; raw bytes come as latin-1 text, whose code points are the byte values."""
    if encoding == BYTES:
        return (chunk.decode("latin-1") for chunk in _read_chunks(path, on_chunk))
    return iter_text(path, encoding, on_chunk)


def _codepoints(text: str) -> np.ndarray:
    if text.isascii():  # O(1) in CPython, and the common case: one byte per character
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _mark(seen: np.ndarray, text: str) -> None:
    """Set seen[c] for every code point c in `text`."""
    points = _codepoints(text)
    if points.dtype == np.uint8:
        seen[:128] |= np.bincount(points, minlength=128).astype(bool)
    else:
        seen[points] = True


def _lookup(table: np.ndarray, text: str) -> np.ndarray:
    """table[c] for every code point c in `text`."""
    return np.take(table, _codepoints(text))


def _check_encoding(encoding: str) -> None:
    if encoding == BYTES:
        return
    try:
        codecs.getincrementaldecoder(encoding)
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}: use a Python codec name or 'bytes'") from None


def _stat_key(files: list[Path], encoding: str) -> str:
    h = hashlib.sha256(json.dumps([_CACHE_FORMAT, encoding]).encode())
    for f in files:
        st = f.stat()
        h.update(json.dumps([str(f.resolve()), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:32]


def _scan(files: list[Path], encoding: str, single: bool, bar: tqdm) -> tuple[Vocab, int, str, list[Path], list[str]]:
    """Pass 1: vocabulary, length, content hash, and which files are usable."""
    seen = np.zeros(_MAX_CODEPOINT, dtype=bool)
    total, digest, used, skipped = 0, hashlib.blake2b(digest_size=16), [], []
    for f in files:
        file_seen = np.zeros(_MAX_CODEPOINT, dtype=bool)
        file_hash, n = hashlib.blake2b(digest_size=16), 0

        def on_chunk(chunk: bytes, file_hash=file_hash) -> None:
            file_hash.update(chunk)
            bar.update(len(chunk))

        try:
            for text in _texts(f, encoding, on_chunk):
                _mark(file_seen, text)
                n += len(text)
        except _BadFile as e:
            if single:
                raise UserError(f"{f} {e}") from None
            skipped.append(f"{f.name}: {str(e).split(';')[0]}")
            continue
        seen |= file_seen
        total += n
        digest.update(file_hash.digest())
        used.append(f)
    vocab = Vocab.bytes() if encoding == BYTES else Vocab("".join(map(chr, np.flatnonzero(seen))))
    return vocab, total, digest.hexdigest(), used, skipped


def _write_ids(files: list[Path], encoding: str, vocab: Vocab, total: int, out: Path, bar: tqdm) -> None:
    """Pass 2: ids appended to a .npy file with plain writes, so no dirty pages pile up in this process."""
    lookup = np.zeros(_MAX_CODEPOINT, dtype=vocab.dtype)
    lookup[_codepoints(vocab.chars)] = np.arange(vocab.size, dtype=vocab.dtype)
    written = 0
    with open(out, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(vocab.dtype), "fortran_order": False, "shape": (total,)}
        np.lib.format.write_array_header_1_0(f, header)
        for path in files:
            for text in _texts(path, encoding, lambda c: bar.update(len(c))):
                ids = _lookup(lookup, text)
                written += len(ids)
                if written > total:
                    raise UserError(f"{path} changed while it was being encoded; try again")
                f.write(ids.tobytes())
    if written != total:
        raise UserError("the corpus changed while it was being encoded; try again")


def _bar(desc: str, total: int, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress, leave=False, dynamic_ncols=True)


def load_corpus(path: Path, encoding: str = "utf-8", *, progress: bool = False) -> Corpus:
    """Encode a file or directory (or reuse its cached encoding) into ids and a vocabulary."""
    _check_encoding(encoding)
    path = Path(path)
    files = list_files(path)
    if not files:
        raise UserError(f"directory {path} holds no files")
    key = _stat_key(files, encoding)
    entry = cache_dir() / key
    meta_path = entry / "meta.json"
    size = sum(f.stat().st_size for f in files)
    started = time.perf_counter()
    if not meta_path.exists():
        with _bar("scan", size, progress) as bar:
            vocab, total, sha, used, skipped = _scan(files, encoding, path.is_file(), bar)
        if total == 0:
            what = f"{path} is empty" if path.is_file() else f"directory {path} holds no text files"
            raise UserError(what + (f" ({len(skipped)} binary or undecodable skipped)" if skipped else ""))
        meta = {"format": _CACHE_FORMAT, "chars": vocab.chars, "byte_level": vocab.byte_level,
                "length": total, "hash": sha, "files": len(used), "skipped": skipped}
        entry = _store(entry, meta, lambda out: _write_ids(used, encoding, vocab, total, out,
                                                            _bar("encode", size, progress)))
        return replace(_open_entry(entry), encode_seconds=time.perf_counter() - started, size_bytes=size)
    return replace(_open_entry(entry), size_bytes=size)


def _store(entry: Path, meta: dict, write: Callable[[Path], None]) -> Path:
    """Write a cache entry atomically (temp dir + rename); fall back to a private temp dir."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
    except OSError:
        tmp = Path(tempfile.mkdtemp(prefix="charrnn-"))
        entry = tmp
    try:
        write(tmp / "ids.npy")
        (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))
        if tmp != entry:
            try:
                os.replace(tmp, entry)
            except OSError:  # another process cached it first; theirs is as good as ours
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def _open_entry(entry: Path) -> Corpus:
    meta = json.loads((entry / "meta.json").read_text())
    ids = np.load(entry / "ids.npy", mmap_mode="r")
    vocab = Vocab(meta["chars"], meta["byte_level"])
    return Corpus(ids, vocab, meta["hash"], meta["files"], tuple(meta["skipped"]))


def encode_file(path: Path, vocab: Vocab, encoding: str = "utf-8") -> tuple[np.ndarray, int]:
    """Ids of a text file under a fixed vocabulary; characters outside it are skipped and counted."""
    _check_encoding(encoding)
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    lookup = np.full(_MAX_CODEPOINT, -1, dtype=np.int64)
    lookup[_codepoints(vocab.chars)] = np.arange(vocab.size)
    parts, skipped = [], 0
    try:
        for text in _texts(path, BYTES if vocab.byte_level else encoding):
            ids = _lookup(lookup, text)
            keep = ids >= 0
            skipped += int((~keep).sum())
            parts.append(ids[keep].astype(vocab.dtype))
    except _BadFile as e:
        raise UserError(f"{path} {e}") from None
    return (np.concatenate(parts) if parts else np.zeros(0, vocab.dtype)), skipped
