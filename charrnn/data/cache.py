"""The corpus cache: encoded ids as a .npy memory map plus meta.json, one directory per corpus version.

An entry is keyed by every file's path, size, mtime, ctime, inode and device plus the encoding
(as git's index does), so rewriting a file in place is noticed even when its size and mtime are
put back. Entries are written to a temp dir and renamed into place; an entry is validated when
opened, and a damaged one is rebuilt and replaced.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.errors import UserError
from charrnn.files import pid_alive
from charrnn.vocab import dtype_for

FORMAT = 4  # bump whenever the entry layout changes: older entries are then rebuilt
_VALIDATE_BYTES = 16 << 20  # read ids in pieces this big to check their range, without mapping them all
_TMP, _TRASH = ".tmp-", ".trash-"
_TRIES = 5  # renames tried before giving up on an entry that other processes keep changing


class Damaged(Exception):
    """A cache entry that exists but cannot be used; the message says why."""


@dataclass(frozen=True)
class Entry:
    ids: np.ndarray  # (N,) read-only memory map
    meta: dict[str, Any]
    cached: bool  # False when it lives in a private temp file that is gone once the process ends


def cache_dir() -> Path:
    """Where encoded corpora are cached: $CHARRNN_CACHE_DIR, else $XDG_CACHE_HOME/charrnn, else ~/.cache/charrnn."""
    if os.environ.get("CHARRNN_CACHE_DIR"):
        return Path(os.environ["CHARRNN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "charrnn"


def key(files: list[Path], encoding: str) -> str:
    """The entry name for these files as they are now on disk."""
    h = hashlib.sha256(json.dumps([FORMAT, encoding]).encode())
    for f in files:
        st = f.stat()
        h.update(json.dumps([os.fsencode(f.resolve()).hex(), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                             st.st_dev]).encode())
    return h.hexdigest()[:32]


def open_entry(entry: Path, vocab_size: Callable[[dict[str, Any]], int]) -> Entry | None:
    """The entry at `entry`, None when there is none; `Damaged` when it is unusable."""
    meta_path, ids_path = entry / "meta.json", entry / "ids.npy"
    if not entry.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Damaged("its meta.json is missing") from None
    except (OSError, ValueError):
        raise Damaged("its meta.json is unreadable") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not _meta_ok(meta):
        raise Damaged("its meta.json is malformed or from another charrnn version")
    try:
        ids = np.load(ids_path, mmap_mode="r")
    except FileNotFoundError:
        raise Damaged("its ids.npy is missing") from None
    except (OSError, ValueError) as e:
        raise Damaged(f"its ids.npy is unreadable ({e})") from None
    size = vocab_size(meta)
    if ids.ndim != 1 or len(ids) != meta["length"] or ids.dtype != dtype_for(size):
        raise Damaged("its ids.npy has the wrong length or dtype")
    if size <= np.iinfo(ids.dtype).max and _max_id(ids_path, ids) >= size:
        raise Damaged("its ids.npy holds ids outside the vocabulary")
    return Entry(ids, meta, cached=True)


def store(entry: Path, meta: dict[str, Any], write: Callable[[Path], None],
          vocab_size: Callable[[dict[str, Any]], int]) -> Entry:
    """Write an entry atomically (temp dir, then rename), replacing a damaged or stale one.

    Another process (a DDP rank) may store the same text at the same moment. The rename never
    replaces an entry: a valid one of the same text that got there first is kept and returned,
    and this process's ids are mapped before the rename, so no later move can pull them away.

    When the cache dir is not writable, the ids go to a private temp file that is unlinked once
    mapped: nothing is left behind, and the entry says it is not cached.
    """
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(entry.parent)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f"{_TMP}{os.getpid()}-"))
    except OSError:
        return _store_private(meta, write)
    try:
        try:
            write(tmp / "ids.npy")
            (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(f"cannot cache the encoded corpus in {entry.parent}: {e.strerror}; free some space "
                                "or point CHARRNN_CACHE_DIR elsewhere") from None
            raise UserError(f"cannot write the corpus cache in {entry.parent}: {e.strerror or e}") from None
        own = Entry(np.load(tmp / "ids.npy", mmap_mode="r"), meta, cached=True)  # the map outlives any rename
        return _settle(tmp, entry, own, vocab_size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded


def clean_stale(parent: Path) -> None:
    """Remove temp and trash dirs left by processes that no longer run (a kill during encoding)."""
    for path in parent.glob(".*-*"):
        pid = path.name.split("-")[1]
        if path.name.startswith((_TMP, _TRASH)) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _settle(tmp: Path, entry: Path, own: Entry, vocab_size: Callable[[dict[str, Any]], int]) -> Entry:
    """Rename `tmp` to `entry`, or keep a valid entry of the same text that is there; a bad one is moved aside."""
    for _ in range(_TRIES):
        try:
            os.rename(tmp, entry)  # fails on an existing entry (ENOTEMPTY or EEXIST): never replaces one
            return own
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise UserError(f"cannot write the corpus cache entry {entry}: {e.strerror or e}") from None
        try:
            there = open_entry(entry, vocab_size)
        except Damaged:
            there = None
        if there is not None and there.meta["hash"] == own.meta["hash"]:  # the same text, stored by a racing process
            return there
        trash = entry.parent / f"{_TRASH}{os.getpid()}-{entry.name}"  # pid first, as clean_stale reads it
        try:
            os.rename(entry, trash)  # damaged or stale: moved aside whole, so no reader sees it half deleted
        except OSError:
            pass  # gone already: another process moved it
        shutil.rmtree(trash, ignore_errors=True)
    raise UserError(f"cannot write the corpus cache entry {entry}: other processes keep replacing it")


def _store_private(meta: dict[str, Any], write: Callable[[Path], None]) -> Entry:
    folder = Path(tempfile.mkdtemp(prefix="charrnn-"))
    try:
        write(folder / "ids.npy")
        ids = np.load(folder / "ids.npy", mmap_mode="r")  # the mapping outlives the file
    except OSError as e:
        raise UserError(f"cannot write the encoded corpus to {folder}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Entry(ids, meta, cached=False)


def _meta_ok(meta: dict[str, Any]) -> bool:
    types = {"chars": str, "byte_level": bool, "length": int, "hash": str, "files": list, "lengths": list,
             "skipped": list}
    return (all(isinstance(meta.get(name), kind) for name, kind in types.items())
            and len(meta["lengths"]) == len(meta["files"]) and sum(meta["lengths"]) == meta["length"])


def _max_id(path: Path, ids: np.ndarray) -> int:
    """The largest id, read with plain reads so the whole map never becomes resident."""
    offset = ids.offset if hasattr(ids, "offset") else 0
    top, step = 0, _VALIDATE_BYTES // ids.dtype.itemsize
    with open(path, "rb") as f:
        f.seek(offset)
        while piece := f.read(step * ids.dtype.itemsize):
            top = max(top, int(np.frombuffer(piece, dtype=ids.dtype).max()))
    return top
