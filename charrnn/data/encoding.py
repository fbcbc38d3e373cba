"""Text -> vocabulary + integer ids, streamed in chunks into a cached memory map.

Encoding makes two passes over the bytes, so the whole text is never one Python string: the
first collects the vocabulary, the length and the content hash, the second writes ids of the
smallest integer dtype that fits. The result is cached (see `charrnn.data.cache`), so later runs
start at once. Which files make the corpus is `charrnn.data.sources`' job; how bytes become text,
`charrnn.data.decoding`'s.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from charrnn.checkpoint import ModelCheckpoint, load_model
from charrnn.config import DataConfig
from charrnn.data import cache
from charrnn.data.decoding import BYTES, BadFile, Piece, check_encoding, read_chunks, texts
from charrnn.data.sources import list_files
from charrnn.errors import UserError
from charrnn.files import require_file
from charrnn.vocab import Vocab

_MAX_CODEPOINT = 0x110000


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
    file_names: tuple[str, ...] = ()  # the files used, relative to `path` (a single file: its name)
    file_starts: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))  # (files + 1,) offsets in ids
    cache_path: Path | None = None  # its cache entry's directory; None when it lives in a private temp file

    def locate(self, position: int) -> tuple[str, int]:
        """The file that holds corpus id `position`, and the character offset in it."""
        index = int(np.searchsorted(self.file_starts, position, side="right")) - 1
        return self.file_names[index], position - int(self.file_starts[index])


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


def _scan(files: list[Path], encoding: str, single: bool, bar: tqdm,
          check: Callable[[], None]) -> tuple[Vocab, list[int], str, list[int], list[str]]:
    """Pass 1: vocabulary, each usable file's length, content hash, and which files are usable (by index)."""
    alphabet = _Alphabet()
    lengths, digest, used, skipped = [], hashlib.blake2b(digest_size=16), [], []
    with ThreadPoolExecutor(1) as pool:
        for index, f in enumerate(files):
            file_alphabet, file_hash, n = _Alphabet(), _BackgroundHash(pool), 0

            def on_chunk(chunk: bytes, file_hash=file_hash) -> None:
                check()
                file_hash.update(chunk)
                bar.update(len(chunk))

            try:
                for piece in texts(f, encoding, on_chunk):
                    if encoding != BYTES:  # the byte vocabulary is all 256 values anyway
                        file_alphabet.add(piece)
                    n += len(piece)
            except BadFile as e:
                if single:
                    raise UserError(f"{f} {e}") from None
                skipped.append(f"{f.name}: {str(e).split(';')[0]}")
                continue
            alphabet.seen |= file_alphabet.seen
            lengths.append(n)
            digest.update(file_hash.digest())
            used.append(index)
    vocab = Vocab.bytes() if encoding == BYTES else Vocab("".join(map(chr, np.flatnonzero(alphabet.seen))))
    return vocab, lengths, digest.hexdigest(), used, skipped


def content_hash(files: list[Path], check: Callable[[], None] = lambda: None) -> str:
    """The BLAKE2b content hash of these files' bytes, as pass 1 computes it."""
    digest = hashlib.blake2b(digest_size=16)
    for f in files:
        file_hash = hashlib.blake2b(digest_size=16)
        for chunk in read_chunks(f, lambda c: check()):
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
                for piece in texts(path, encoding, on_chunk):
                    use_translate = translation is not None and isinstance(piece, bytes)
                    ids = piece.translate(translation) if use_translate else _lookup(table, piece).tobytes()
                    written += len(piece)
                    if written > total:
                        raise UserError(f"{path} changed while it was being encoded; try again")
                    f.write(ids)
            except BadFile:
                raise UserError(f"{path} changed while it was being encoded; try again") from None
    if written != total:
        raise UserError("the corpus changed while it was being encoded; try again")


def _bar(desc: str, total: int, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not progress, leave=False, dynamic_ncols=True)


def load_data(data: DataConfig, **options: object) -> Corpus:
    """`load_corpus` of a config's [data] table: its path, encoding and include and exclude patterns."""
    return load_corpus(Path(data.path), data.encoding, include=data.include, exclude=data.exclude,
                       **options)  # type: ignore[arg-type]


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
    entry = _cached(entry_path, files, verify, check, notes)
    seconds = 0.0
    if entry is None:
        started = time.perf_counter()
        entry = _encode(path, files, encoding, entry_path, size, progress, check)
        seconds = time.perf_counter() - started
    meta = entry.meta
    if meta["skipped"]:
        notes.insert(0, f"skipped {len(meta['skipped'])} binary or undecodable file(s), e.g. {meta['skipped'][0]}")
    names = tuple(files[i].relative_to(path).as_posix() for i in meta["files"]) if path.is_dir() else (path.name,)
    starts = np.concatenate([[0], np.cumsum(meta["lengths"], dtype=np.int64)])
    return Corpus(path, entry.ids, Vocab(meta["chars"], meta["byte_level"]), meta["hash"], len(meta["files"]),
                  tuple(notes), entry.cached, seconds, size, names, starts, entry_path if entry.cached else None)


def _cached(entry_path: Path, files: list[Path], verify: bool, check: Callable[[], None],
            notes: list[str]) -> cache.Entry | None:
    """The usable cache entry for these files, or None; a damaged or (with `verify`) stale one is noted."""
    try:
        entry = cache.open_entry(entry_path, _vocab_size)
    except cache.Damaged as e:
        notes.append(f"the cache entry {entry_path} was damaged ({e}): rebuilt it")
        return None
    if entry is not None and verify:
        used = [files[i] for i in entry.meta["files"] if i < len(files)]
        if content_hash(used, check) != entry.meta["hash"]:
            notes.append(f"the cache entry {entry_path} did not match the files' bytes: rebuilt it")
            return None
    return entry


def _encode(path: Path, files: list[Path], encoding: str, entry_path: Path, size: int, progress: bool,
            check: Callable[[], None]) -> cache.Entry:
    """Both passes over the files, stored as a cache entry."""
    with _bar("scan", size, progress) as bar:
        vocab, lengths, digest, used, skipped = _scan(files, encoding, path.is_file(), bar, check)
    total = sum(lengths)
    if total == 0:
        what = f"{path} is empty" if path.is_file() else f"directory {path} holds no text files"
        raise UserError(what + (f" ({len(skipped)} binary or undecodable skipped)" if skipped else ""))
    meta = {"format": cache.FORMAT, "chars": vocab.chars, "byte_level": vocab.byte_level, "length": total,
            "hash": digest, "files": used, "lengths": lengths, "skipped": skipped}
    with _bar("encode", size, progress) as bar:
        return cache.store(entry_path, meta, lambda out: _write_ids([files[i] for i in used], encoding, vocab,
                                                                     total, out, bar, check), _vocab_size)


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
        for text in texts(path, BYTES if vocab.byte_level else encoding):
            ids = _lookup(table, text)
            keep = ids >= 0
            skipped += int((~keep).sum())
            parts.append(ids[keep].astype(vocab.dtype))
    except BadFile as e:
        raise UserError(f"{path} {e}") from None
    return (np.concatenate(parts) if parts else np.zeros(0, vocab.dtype)), skipped


@dataclass(frozen=True)
class ModelText:
    """A checkpoint's model with a text file encoded under its vocabulary."""

    loaded: ModelCheckpoint
    ids: np.ndarray  # (N,) the file's characters the model knows
    skipped: int  # characters outside the vocabulary, left out


def load_model_and_text(checkpoint: Path, text_file: Path, device: object, *, min_chars: int = 2,
                        purpose: str = "score") -> ModelText:
    """Load a checkpoint's model and encode `text_file` as its corpus was; fewer than `min_chars` known is an error."""
    loaded = load_model(checkpoint, device)
    ids, skipped = encode_file(text_file, loaded.vocab, loaded.config.data.encoding)
    if len(ids) >= min_chars:
        return ModelText(loaded, ids, skipped)
    if len(ids) == 0 and not skipped:
        raise UserError(f"{text_file} is empty")
    if len(ids) == 0:
        raise UserError(f"{text_file} has no characters the model knows ({skipped:,} skipped: not in its vocabulary)")
    raise UserError(f"{text_file} has {len(ids)} character(s) the model knows, too few to {purpose}"
                    + (f" ({skipped:,} skipped: not in the model's vocabulary)" if skipped else ""))
