"""Reading and writing the small files users hand us, with one-line errors for everything that can go wrong."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

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


def temp_beside(path: Path, binary: bool = False) -> tuple[int, str]:
    """A new temp file in `path`'s folder, named `.NAME.PID.RANDOM.tmp` so that a stale one can be told apart."""
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", text=not binary)


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


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file so that a full disk leaves the old file (or none), never a torn one."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = temp_beside(path)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise UserError(f"cannot write {path}: {describe_os_error(e)}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def describe_os_error(error: OSError) -> str:
    """The reason of an OSError in words, with a hint for the common ones."""
    hints = {errno.ENOSPC: "; free some space", errno.EROFS: "; choose a writable place",
             errno.EACCES: "; check the permissions"}
    return (error.strerror or str(error)) + hints.get(error.errno, "")
