"""A checkpoint's own training corpus, found again from its config, for the figures that need it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.config import Config
from charrnn.data.encoding import Corpus, load_data
from charrnn.data.split import split_of
from charrnn.errors import UserError
from charrnn.evaluation.copies import WINDOW, open_index
from charrnn.training import rundir
from charrnn.vocab import Vocab


def run_corpus(config: Config, vocab: Vocab, purpose: str, instead: str = "") -> Corpus:
    """The corpus `config` was trained on, encoded (usually a cache hit); a clear error when it is gone or changed.

    `purpose` says what needs it ("dynamic evaluation gathers gradient statistics from"), `instead` what
    the user can do without it.
    """
    data = config.data
    where = f"the checkpoint's training corpus {data.path or '(none recorded)'}"
    if not data.path or not Path(data.path).exists():
        raise UserError(f"{purpose} {where}, which is not there" + (f"; {instead}" if instead else ""))
    corpus = load_data(data, skip_dir=rundir.is_run_dir)
    if corpus.vocab != vocab:
        raise UserError(f"{where} has changed since training (its vocabulary differs)"
                        + (f"; {instead}" if instead else ""))
    return corpus


@dataclass(frozen=True)
class Copy:
    """How much of a sample the corpus holds verbatim (see `charrnn.evaluation.copies`)."""

    longest: int  # characters of the longest span found verbatim in the corpus; 0 when under WINDOW
    file: str | None  # the corpus file it was copied from, relative to the corpus
    offset: int | None  # the character offset in that file where the copied span starts
    copied_windows: float  # fraction of the sample's WINDOW-character windows that occur in the corpus
    exact: bool  # False past copies.MAX_WINDOWS characters of corpus (see the module doc)

    def to_dict(self) -> dict[str, object]:
        return {"longest_copy": self.longest, "file": self.file, "offset": self.offset,
                "copied_windows": self.copied_windows, "exact": self.exact}

    def describe(self) -> str:
        """One line for the user."""
        windows = f"{self.copied_windows:.1%} of its {WINDOW}-character windows occur in the corpus"
        if not self.longest:
            return f"copy check: no {WINDOW}-character span of the sample is in the corpus ({windows})"
        return (f"copy check: the longest span copied verbatim from the corpus is {self.longest:,} characters, "
                f"from {self.file} at character {self.offset:,}; {windows}")


class CorpusCopies:
    """The copy check against one corpus; the index is built (or read from the corpus cache) on first use."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus, self._index = corpus, None

    def check(self, ids: np.ndarray) -> Copy:
        """The copy report of (N,) sample ids."""
        if self._index is None:
            self._index = open_index(self.corpus.ids, self.corpus.cache_path)
        report = self._index.check(np.asarray(ids, dtype=self.corpus.ids.dtype))
        file, offset = (None, None) if report.position is None else self.corpus.locate(report.position)
        return Copy(report.longest, file, offset, report.copied_windows, report.exact)


def held_out_share(config: Config, vocab: Vocab, text_file: Path) -> float | None:
    """The share of `text_file`'s characters that the run held out for validation; None when the file is not part
    of its corpus (or the corpus is not there to tell)."""
    root, target = Path(config.data.path).resolve(), Path(text_file).resolve()
    try:
        name = root.name if target == root else target.relative_to(root).as_posix()
        corpus = run_corpus(config, vocab, "")
    except (UserError, ValueError, OSError):
        return None
    if name not in corpus.file_names:
        return None
    index = corpus.file_names.index(name)
    start, end = int(corpus.file_starts[index]), int(corpus.file_starts[index + 1])
    held = split_of(corpus, config.data).held_out
    overlap = np.clip(np.minimum(held[:, 1], end) - np.maximum(held[:, 0], start), 0, None).sum()
    return float(overlap / max(end - start, 1))
