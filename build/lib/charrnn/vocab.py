"""The vocabulary: which characters a model knows, and the integer ids that stand for them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.errors import UserError


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids below `vocab_size`."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.uint32)


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
