"""One trainer per run dir: a second trainer is refused while the first runs, and a dead one never blocks."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from charrnn.errors import UserError
from charrnn.training.distributed import World
from charrnn.training.lock import LOCK, RunDirLock, hold_run_dir
from tests.helpers import ROOT, TINY_CONFIG, last, run_cli

SETTINGS = ["--config", TINY_CONFIG, "--device", "cpu", "--max-steps", "200", "--set", "train.checkpoint_every=20"]


def start_trainer(corpus, run_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus), "--run-dir", str(run_dir),
                             *map(str, SETTINGS)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(path, proc, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def snapshot(run_dir) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_second_trainer_is_refused_and_the_live_run_is_untouched(tmp_path, corpus_file):
    run_dir = tmp_path / "r"
    live = start_trainer(corpus_file, run_dir)
    try:
        wait_for(run_dir / "checkpoints" / "last.pt", live)
        live.send_signal(signal.SIGSTOP)  # hold it still, so its files can be compared before and after
        before = snapshot(run_dir)
        for args in (["train", corpus_file, "--run-dir", run_dir, "--overwrite", *SETTINGS],
                     ["train", "--resume", run_dir, "--set", "train.max_steps=400"]):
            refused = run_cli(*args, check=False)
            assert refused.returncode == 1
            message = refused.stderr.decode()
            assert f"is in use by another trainer (pid {live.pid} on " in message
            assert "Traceback" not in message
            assert snapshot(run_dir) == before  # nothing read for writing, nothing deleted
        sample = run_cli("sample", run_dir, "-n", "20", "--seed", "1")  # a reader never blocks on the lock
        assert len(sample.stdout) > 0
        assert snapshot(run_dir) == before
    finally:
        live.send_signal(signal.SIGCONT)
    _, err = live.communicate(timeout=120)
    assert live.returncode == 0, err.decode()
    alone = tmp_path / "alone"  # the same run with nobody else around: the live run must end bitwise the same
    run_cli("train", corpus_file, "--run-dir", alone, *SETTINGS)
    a, b = last(run_dir), last(alone)
    assert a.run.step == 200
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    steps = [line.split(",")[0] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps))  # no step logged twice


def test_after_kill_9_the_next_resume_starts_at_once(tmp_path, corpus_file):
    run_dir = tmp_path / "r"
    live = start_trainer(corpus_file, run_dir)
    wait_for(run_dir / "checkpoints" / "last.pt", live)
    live.kill()
    live.wait(timeout=30)
    resumed = run_cli("train", "--resume", run_dir, "--set", "train.max_steps=40", check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert last(run_dir).run.step == 40


def test_the_lock_names_its_holder_and_is_released_on_exit(tmp_path):
    with RunDirLock(tmp_path / "r"):
        assert (tmp_path / "r" / LOCK).read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
        with pytest.raises(UserError, match=rf"is in use by another trainer \(pid {os.getpid()} on "):
            with RunDirLock(tmp_path / "r"):  # a second open file description: flock refuses it too
                pass
    with RunDirLock(tmp_path / "r"):  # released: it can be taken again
        pass


def test_a_run_dir_the_lock_created_goes_again_when_nothing_was_written(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunDirLock(tmp_path / "new" / "r"):
            assert (tmp_path / "new" / "r" / LOCK).exists()
            raise ZeroDivisionError
    assert not (tmp_path / "new" / "r").exists()


def test_a_filesystem_without_locks_warns_once_and_goes_on(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(37, "No locks available")  # ENOLCK, as some network mounts answer

    monkeypatch.setattr("charrnn.training.lock.fcntl.flock", no_locks)
    warnings = []
    with RunDirLock(tmp_path / "r", warnings.append):
        pass
    assert len(warnings) == 1
    assert "has no working locks" in warnings[0]


def test_only_the_main_process_takes_the_lock(tmp_path):
    with RunDirLock(tmp_path / "r"):  # another trainer holds it; a non-main rank neither takes nor waits for it
        with hold_run_dir(tmp_path / "r", World(torch.device("cpu"), rank=1, size=1), print):
            pass
