"""Reading and writing the small files users hand us, with one-line errors for everything that can go wrong."""

from __future__ import annotations

import errno
import functools
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import UserError


def require_file(path: Path, what: str = "file") -> None:
    """Refuse a path that is missing or not a regular file (a directory, a FIFO, a device), without opening it."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{what} {path} is a directory; give a file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{what} {path} is not a regular file")


def read_text(path: Path, what: str = "file", encoding: str = "utf-8") -> str:
    """The text of a regular file, or a one-line error that names it."""
    require_file(path, what)
    try:
        return Path(path).read_text(encoding=encoding)
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not valid {encoding} (byte offset {e.start})") from None


def temp_beside(path: Path) -> tuple[int, str]:
    """A new temp file in `path`'s folder, named `.NAME.PID.RANDOM.tmp` so that a stale one can be told apart."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")


def remove_stale_temps(folder: Path) -> None:
    """Delete the temp files that processes no longer running left in `folder` (say, after a kill -9)."""
    try:
        candidates = [p for p in Path(folder).iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    except OSError:
        return
    for path in candidates:
        parts = path.name.split(".")  # ['', NAME..., PID, RANDOM, 'tmp']
        if len(parts) >= 5 and parts[-3].isdigit() and not pid_alive(int(parts[-3])):
            path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def write_atomic(path: Path, data: str | bytes | Callable[[BinaryIO], object], what: str = "",
                 make_parent: bool = False) -> None:
    """Write a file so that a full disk or a kill leaves the old file (or none), never a torn one.

    The data goes to a temp file beside `path`, is fsynced, renamed over `path`, and the rename is
    made durable. `data` is text (UTF-8), bytes, or a function that writes to the open binary file.
    `what` names the file in the error ("checkpoint" -> "cannot write checkpoint PATH: ...").
    """
    path = Path(path)
    existed, tmp = path.exists(), None
    try:
        if make_parent:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_beside(path)
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would create it: mkstemp's files are private
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        kept = f"; the previous {what or 'file'} is kept" if existed else ""
        raise UserError(f"cannot write {what + ' ' if what else ''}{path}: {describe_os_error(e)}{kept}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


@functools.cache
def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def describe_os_error(error: OSError) -> str:
    """The reason of an OSError in words, with a hint for the common ones."""
    hints = {errno.ENOSPC: "; free some space", errno.EROFS: "; choose a writable place",
             errno.EACCES: "; check the permissions"}
    return (error.strerror or str(error)) + hints.get(error.errno, "")
