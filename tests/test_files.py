"""The small files users hand us and the ones we write: one-line errors, and atomic writes that never tear."""

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn import files
from charrnn.errors import UserError
from charrnn.files import (
    describe_os_error,
    pid_alive,
    read_text,
    remove_stale_temps,
    require_file,
    temp_beside,
    write_atomic,
)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(proc.stdout)


def test_require_file_accepts_a_regular_file(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert require_file(tmp_path / "a.txt") is None


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "prime file not found: {p}"),
    (lambda p: p.mkdir(), "prime file {p} is a directory; give a file"),
    (lambda p: os.mkfifo(p), "prime file {p} is not a regular file"),  # never opened: that would block
    (lambda p: p.symlink_to(p), "cannot read prime file {p}: Too many levels of symbolic links"),
])
def test_require_file_refuses_what_is_not_a_regular_file_in_one_line_that_names_it(tmp_path, make, message):
    path = tmp_path / "p"
    make(path)
    with pytest.raises(UserError) as e:
        require_file(path, "prime file")
    assert str(e.value) == message.format(p=path)


def test_a_path_through_a_file_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"cannot read file .*f/x: Not a directory"):
        require_file(tmp_path / "f" / "x")


def test_read_text_reads_and_names_the_file_in_its_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("é = 1\n", encoding="utf-8")
    assert read_text(path, "config file") == "é = 1\n"
    path.write_bytes(b"ok \xff")
    with pytest.raises(UserError, match=rf"^config file {path} is not valid utf-8 \(byte offset 3\)$"):
        read_text(path, "config file")
    assert read_text(path, encoding="latin-1") == "ok \xff"
    with pytest.raises(UserError, match="config file not found"):
        read_text(tmp_path / "missing.toml", "config file")


def test_read_text_turns_an_os_error_into_one_line(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("x")

    def broken(self, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_text", broken)
    with pytest.raises(UserError, match=rf"^cannot read config file {path}: Input/output error$"):
        read_text(path, "config file")


@pytest.mark.parametrize("data, expected", [("héllo\n", "héllo\n".encode()), (b"\x00\xff raw", b"\x00\xff raw"),
                                            (lambda f: f.write(b"from a writer"), b"from a writer")],
                         ids=["text", "bytes", "callable"])
def test_write_atomic_writes_text_as_utf8_bytes_as_they_are_and_lets_a_function_write(tmp_path, data, expected):
    path = tmp_path / "out"
    path.write_text("the old content")
    write_atomic(path, data)
    assert path.read_bytes() == expected
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp file beside it


def test_write_atomic_gives_the_mode_open_would(tmp_path):
    old = os.umask(0o027)
    files._umask.cache_clear()
    try:
        write_atomic(tmp_path / "out", "x")
    finally:
        os.umask(old)
        files._umask.cache_clear()
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o640  # not mkstemp's private 0o600


def test_a_failed_write_keeps_the_old_file_leaves_no_temp_and_says_so(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"the good checkpoint")

    def disk_full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError) as e:
        write_atomic(path, disk_full, what="checkpoint")
    assert str(e.value) == (f"cannot write checkpoint {path}: No space left on device; free some space; "
                            "the previous checkpoint is kept")
    assert path.read_bytes() == b"the good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_failed_first_write_leaves_nothing_and_does_not_speak_of_a_previous_file(tmp_path):
    def read_only(f):
        raise OSError(errno.EROFS, "Read-only file system")

    with pytest.raises(UserError) as e:
        write_atomic(tmp_path / "new.json", read_only)
    assert str(e.value) == f"cannot write {tmp_path / 'new.json'}: Read-only file system; choose a writable place"
    assert not list(tmp_path.iterdir())


def test_any_other_error_while_writing_still_removes_the_temp(tmp_path):
    def buggy(f):
        f.write(b"half")
        raise ValueError("a bug in the writer")

    with pytest.raises(ValueError, match="a bug in the writer"):
        write_atomic(tmp_path / "out", buggy)
    assert not list(tmp_path.iterdir())


def test_write_atomic_makes_missing_folders_only_when_asked(tmp_path):
    path = tmp_path / "a" / "b" / "page.html"
    with pytest.raises(UserError, match=r"cannot write page .*page.html: No such file or directory$"):
        write_atomic(path, "x", what="page")
    assert not (tmp_path / "a").exists()
    write_atomic(path, "x", make_parent=True)
    assert path.read_text() == "x"


def test_a_temp_file_sits_beside_its_target_and_names_this_process(tmp_path):
    fd, name = temp_beside(tmp_path / "last.pt")
    os.close(fd)
    tmp = Path(name)
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(f".last.pt.{os.getpid()}.")
    assert tmp.name.endswith(".tmp")


def test_stale_temps_of_dead_processes_go_and_everything_else_stays(tmp_path):
    dead, live = dead_pid(), os.getpid()
    stale = [tmp_path / f".last.pt.{dead}.k3j2.tmp", tmp_path / f".metrics.jsonl.{dead}.x.tmp"]
    kept = [tmp_path / f".last.pt.{live}.a1b2.tmp",  # a save in progress in a running process
            tmp_path / f"last.pt.{dead}.k3j2.tmp",  # not hidden: not one of ours
            tmp_path / ".notes.tmp",  # too few parts to name a process
            tmp_path / f".{dead}.k3j2.tmp",  # no file name before the pid: not temp_beside's
            tmp_path / ".last.pt.pid.k3j2.tmp",  # no pid where the pid goes
            tmp_path / f".last.pt.{dead}.k3j2.bak",  # not a .tmp
            tmp_path / "last.pt"]
    for path in stale + kept:
        path.write_text("x")
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_remove_stale_temps_of_a_missing_folder_does_nothing(tmp_path):
    assert remove_stale_temps(tmp_path / "missing") is None


def test_pid_alive_tells_a_running_process_from_one_that_exited():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert pid_alive(1)  # init: alive, even where we may not signal it (PermissionError)


@pytest.mark.parametrize("code, expected", [
    (errno.ENOSPC, "No space left on device; free some space"),
    (errno.EROFS, "Read-only file system; choose a writable place"),
    (errno.EACCES, "Permission denied; check the permissions"),
    (errno.EIO, "Input/output error"),
])
def test_os_errors_are_described_in_words_with_a_hint_for_the_common_ones(code, expected):
    assert describe_os_error(OSError(code, os.strerror(code))) == expected
