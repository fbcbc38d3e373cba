"""Bytes -> text, one file at a time, in chunks: strict decoding, LF newlines, no BOM, no binary files.

Text is decoded incrementally, CRLF and lone CR become LF (also across chunk boundaries), and a
leading BOM is dropped. A file with NUL bytes, or bytes invalid in its encoding, is refused with
the byte offset where it went wrong.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from pathlib import Path

from charrnn.errors import UserError

CHUNK_BYTES = 256 << 10  # small enough that per-chunk temporaries stay in cache
BYTES = "bytes"  # the encoding name that means "raw bytes, 256 symbols"
_ASCII_SUPERSETS = {"utf-8", "utf-8-sig", "ascii", "iso8859-1", "cp1252"}  # codec names as codecs.lookup gives them
_BINARY = "contains NUL bytes and looks binary; use --encoding bytes to train on raw bytes"

# A piece of decoded text: a str, or bytes whose values are its code points (ASCII that skipped
# the decoder, or raw bytes under --encoding bytes).
Piece = str | bytes


class BadFile(Exception):
    """A file that is binary or not valid in the requested encoding; the message completes '<path> ...'."""


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


def read_chunks(path: Path, on_chunk: Callable[[bytes], object] = len) -> Iterator[bytes]:
    """The raw bytes of a file in chunks; `on_chunk` sees each one first (and may raise to stop)."""
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                on_chunk(chunk)
                yield chunk
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def texts(path: Path, encoding: str, on_chunk: Callable[[bytes], object] = len) -> Iterator[Piece]:
    """A file as pieces of text; raw bytes come as they are: their values are the ids of the byte vocabulary."""
    if encoding == BYTES:
        return read_chunks(path, on_chunk)
    return iter_text(path, encoding, on_chunk)


def iter_text(path: Path, encoding: str, on_chunk: Callable[[bytes], object] = len) -> Iterator[Piece]:
    """Decoded, newline-normalised text of one file, piece by piece (see `_Decoder` for the ASCII fast path)."""
    decoder, newlines = _Decoder(encoding), _Newlines()
    for chunk in read_chunks(path, on_chunk):
        if piece := newlines(decoder.decode(chunk)):
            yield piece
    if piece := newlines(decoder.decode(b"", final=True), final=True):
        yield piece


class _Decoder:
    """Strict incremental decoding of one file, with byte offsets in its errors; drops a leading BOM.

    In an ASCII-compatible encoding, a chunk of plain ASCII (the decoder holding no partial
    character) skips the decoder and comes back as bytes: its byte values are its code points.
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self._passthrough = codecs.lookup(encoding).name in _ASCII_SUPERSETS
        self._offset = 0  # bytes of the file read before this chunk
        self._started = False  # whether any text came out yet: only the first can hold the BOM

    def decode(self, chunk: bytes, final: bool = False) -> Piece:
        if self._passthrough and self._started and chunk.isascii() and not self._decoder.getstate()[0]:
            text: Piece = chunk
        else:
            text = self._decode(chunk, final)
            if not self._started and text:
                self._started, text = True, text.removeprefix("\ufeff")
        self._offset += len(chunk)
        if ("\0" if isinstance(text, str) else b"\0") in text:
            raise BadFile(_BINARY)
        return text

    def _decode(self, chunk: bytes, final: bool) -> str:
        buffered = len(self._decoder.getstate()[0])  # bytes of a partial character from the chunk before
        try:
            return self._decoder.decode(chunk, final)
        except UnicodeDecodeError as e:
            if final:
                raise BadFile(f"ends in a truncated {self.encoding} sequence") from None
            raise BadFile(f"is not valid {self.encoding} at byte offset {self._offset - buffered + e.start}; pass "
                          "--encoding (e.g. latin-1) or --encoding bytes") from None
        except UnicodeError as e:  # codecs such as 'undefined' refuse any input
            raise BadFile(f"cannot be decoded as {self.encoding} ({e})") from None


class _Newlines:
    """CRLF and lone CR -> LF across chunk boundaries: a CR that ends a piece waits, its LF may start the next."""

    def __init__(self) -> None:
        self._held = False

    def __call__(self, piece: Piece, final: bool = False) -> Piece:
        cr, lf = ("\r", "\n") if isinstance(piece, str) else (b"\r", b"\n")
        if self._held:
            piece = cr + piece
        self._held = not final and piece.endswith(cr)
        if self._held:
            piece = piece[:-1]
        return piece.replace(cr + lf, lf).replace(cr, lf) if cr in piece else piece
