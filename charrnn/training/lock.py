"""One trainer per run dir: an exclusive lock, as git's index.lock or SQLite take one.

The lock is `flock` on RUN_DIR/.lock, which holds the holder's pid and host. The kernel releases it
when the process ends, however it ends, so a `kill -9` never leaves a run dir locked. Readers
(sample, eval, info, visualize, export) never take it: checkpoints are replaced atomically, so
reading one while a trainer writes the next is safe. The file itself stays: deleting a lock file
would let a process that opened the old one and a process that creates a new one both hold a lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from charrnn.errors import UserError
from charrnn.files import describe_os_error
from charrnn.training.distributed import World

LOCK = ".lock"
# What flock says on a filesystem without working locks (some network mounts): warn and go on.
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunDirLock:
    """Held for a whole run by its trainer (rank 0 under DDP); a second trainer gets one line and touches nothing."""

    def __init__(self, run_dir: Path, warn: Callable[[str], None] = lambda s: None) -> None:
        self.run_dir, self.warn = Path(run_dir), warn
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> RunDirLock:
        self._created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.run_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            self._remove_if_created()
            raise UserError(f"cannot create the run dir {self.run_dir}: {describe_os_error(e)}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(self._fd)
            self._close()
            raise UserError(f"{self.run_dir} is in use by another trainer ({holder}); wait for it to finish, or stop "
                            "it first (Ctrl-C or kill saves it, then --resume continues)") from None
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
            self.warn(f"warning: cannot lock {self.run_dir / LOCK} ({e.strerror}; the filesystem has no working "
                      "locks): nothing stops a second trainer from using this run dir at the same time")
            return self
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._close()  # closing the descriptor releases the lock
        self._remove_if_created()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _remove_if_created(self) -> None:
        """A run dir this lock created and nothing else used goes again, so a failed start leaves nothing behind."""
        if not self._created:
            return
        try:
            if [p.name for p in self.run_dir.iterdir()] in ([], [LOCK]):
                (self.run_dir / LOCK).unlink(missing_ok=True)
                self.run_dir.rmdir()
        except OSError:
            pass


@contextmanager
def hold_run_dir(run_dir: Path, world: World, warn: Callable[[str], None]) -> Iterator[None]:
    """The run dir's lock for the whole block, held by the main process; every process gives up if it cannot."""
    lock, failure = RunDirLock(run_dir, warn) if world.is_main else None, None
    if lock is not None:
        try:
            lock.__enter__()
        except UserError as e:
            lock, failure = None, e
    if world.agree(int(failure is not None)):  # the other processes learn of it here, instead of hanging
        raise failure or UserError(f"the main process could not lock {run_dir}; it says why")
    try:
        yield
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def _read_holder(fd: int) -> str:
    """Who holds the lock, as its file says ("pid N on HOST"); it may not have written it yet."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not said who it is yet"
