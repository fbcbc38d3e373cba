"""The run dir: --overwrite removes only charrnn's files, resume checks the run's identity, leftovers go."""

import errno
import shutil
from pathlib import Path

import pytest

from charrnn.config import load_config
from charrnn.errors import UserError
from charrnn.training.loop import train
from tests.helpers import TINY_CONFIG, last, resume


def config(corpus, *extra):
    return load_config(TINY_CONFIG, [f"data.path='{corpus}'", "train.device='cpu'", "train.max_steps=10", *extra])


def test_overwrite_removes_only_what_charrnn_wrote(tmp_path, corpus_file):
    run = tmp_path / "r"
    train(config(corpus_file, "train.keep_last=1"), run)
    mine = [run / "notes.txt", run / "checkpoints" / "other.bin", run / "tb" / "mine.txt"]
    for path in mine:
        path.write_text("the user's")
    train(config(corpus_file), run, overwrite=True)
    assert all(p.read_text() == "the user's" for p in mine)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt", "other.bin"]
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1


def test_a_last_pt_from_another_run_is_refused_and_nothing_is_touched(tmp_path, corpus_file):
    train(config(corpus_file), tmp_path / "a")
    train(config(corpus_file), tmp_path / "b")
    best = (tmp_path / "a" / "checkpoints" / "best.pt").read_bytes()
    shutil.copy(tmp_path / "b" / "checkpoints" / "last.pt", tmp_path / "a" / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match="was written by another run"):
        resume(tmp_path / "a", ["train.max_steps=20"])
    assert (tmp_path / "a" / "checkpoints" / "best.pt").read_bytes() == best


def test_stale_temporaries_from_a_kill_are_removed_on_resume(tmp_path, corpus_file):
    run = tmp_path / "r"
    train(config(corpus_file), run)
    stale = run / "checkpoints" / ".last.pt.999999999.abcd.tmp"
    stale.write_bytes(b"x" * 1000)  # what a kill -9 in the middle of a save leaves
    resume(run, ["train.max_steps=20"])
    assert not stale.exists()
    assert last(run).run.step == 20


def test_a_run_dir_that_cannot_be_created_is_one_line_and_nothing_is_left(tmp_path, corpus_file, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot create the run dir .*file/r"):
        train(config(corpus_file), blocker / "r")

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(UserError, match="Read-only file system; choose a writable place"):
        train(config(corpus_file), tmp_path / "ro")


def test_a_full_disk_while_writing_config_toml_leaves_no_empty_file(tmp_path, corpus_file, monkeypatch):
    from charrnn import files

    def disk_full(path, binary=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "temp_beside", disk_full)
    with pytest.raises(UserError, match="No space left on device"):
        train(config(corpus_file), tmp_path / "r")
    assert not (tmp_path / "r").exists()  # so the next try needs no --overwrite


def test_tensorboard_failing_mid_run_warns_and_the_run_still_saves(tmp_path, corpus_file, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", broken)
    messages = []
    result = train(config(corpus_file), tmp_path / "r", echo=messages.append)
    assert result.step == 10
    assert last(tmp_path / "r").run.step == 10
    assert sum("cannot write TensorBoard" in m for m in messages) == 1
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 2  # the other sink still works
