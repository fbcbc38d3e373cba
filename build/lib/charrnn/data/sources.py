"""Which files make a corpus: a text file, or every text file below a directory, in sorted path order.

A directory contributes every regular file below it except hidden ones, those in hidden or
skipped directories (__pycache__, charrnn run dirs, and any for which `skip_dir` is true), and
those the include/exclude globs filter out: a file is kept when its path relative to the corpus
(with '/') matches some include glob (or there are none) and no exclude glob. In a glob, '*'
also matches '/'.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from charrnn.errors import UserError

SKIPPED_DIRS = ("__pycache__",)  # build products, skipped like hidden directories


@dataclass
class _Walk:
    """What a directory walk found, and what it left out."""

    found: list[Path] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    filtered: int = 0

    def notes(self) -> list[str]:
        notes = []
        if self.run_dirs:
            notes.append(f"left out {len(self.run_dirs)} charrnn run dir(s) inside the corpus: "
                         f"{', '.join(sorted(self.run_dirs))}")
        if self.filtered:
            notes.append(f"left out {self.filtered} file(s) that data.include / data.exclude filter away")
        return notes


def list_files(path: Path, include: Sequence[str] = (), exclude: Sequence[str] = (),
               skip_dir: Callable[[Path], bool] = lambda d: False) -> tuple[list[Path], list[str]]:
    """The files of a corpus, sorted, and notes on what was left out (see the module doc)."""
    if _kind(path) == "file":
        return [path], []
    walk = _Walk()
    for root, dirs, names in os.walk(path, onerror=_walk_error):
        here = Path(root)
        if here != path and skip_dir(here):
            walk.run_dirs.append(str(here.relative_to(path)))
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS]
        for file in (here / name for name in names if not name.startswith(".")):
            if not _is_regular(file):
                continue
            if _wanted(file.relative_to(path).as_posix(), include, exclude):
                walk.found.append(file)
            else:
                walk.filtered += 1
    if not walk.found:
        why = " after data.include / data.exclude" if walk.filtered else ""
        raise UserError(f"directory {path} holds no files to train on{why}")
    return sorted(walk.found, key=lambda p: p.relative_to(path).parts), walk.notes()


def _kind(path: Path) -> str:
    """'file' or 'dir'; anything else (missing, unreadable, a FIFO) is a one-line error."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(f"corpus not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read the corpus {path}: {e.strerror or e}") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    raise UserError(f"corpus {path} is neither a regular file nor a directory")


def _wanted(relative: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether the globs keep a file at this relative path."""
    if include and not any(fnmatch.fnmatchcase(relative, g) for g in include):
        return False
    return not any(fnmatch.fnmatchcase(relative, g) for g in exclude)


def _walk_error(error: OSError) -> None:
    raise UserError(f"cannot read the corpus directory {error.filename}: {error.strerror or error}")


def _is_regular(path: Path) -> bool:
    """A regular file (following symlinks); FIFOs, sockets, devices and broken links are not text to read."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False
