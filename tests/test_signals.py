"""Interrupting real training processes: SIGINT/SIGTERM save and resume exactly; kill -9 never corrupts."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from charrnn.checkpoint import load_run
from tests.helpers import ROOT, last, run_cli

SETTINGS = ["--config", str(ROOT / "configs" / "tiny.toml"), "--device", "cpu", "--max-steps", "60",
            "--set", "train.checkpoint_every=25", "--set", "model.dropout=0.1", "--set", "model.hidden_size=48"]


def start(corpus, run_dir, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "charrnn", "train", str(corpus), "--run-dir", str(run_dir),
                             *SETTINGS, *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_step(run_dir, step, proc, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            if lines and json.loads(lines[-1])["step"] >= step:
                return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError(f"never reached step {step}")


def final_weights(run_dir):
    return last(run_dir).model


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, corpus_file):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    run_cli("train", corpus_file, "--run-dir", run_dir, *SETTINGS)
    return run_dir


@pytest.mark.parametrize("sig, code", [pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow),
                                       (signal.SIGTERM, 143)])  # SIGINT's resume is also tested in-process
def test_signal_saves_and_resume_matches_an_uninterrupted_run(tmp_path, corpus_file, uninterrupted, sig, code):
    run_dir = tmp_path / "run"
    proc = start(corpus_file, run_dir)
    wait_for_step(run_dir, 10, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    assert f"continue with: charrnn train --resume {run_dir}" in err.decode()
    stopped = last(run_dir).run.step
    assert 10 <= stopped < 60
    run_cli("train", "--resume", run_dir)
    expected, got = final_weights(uninterrupted), final_weights(run_dir)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 60


def test_second_ctrl_c_aborts_at_once_leaving_the_checkpoint_intact(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    proc = start(corpus_file, run_dir, "--set", "train.checkpoint_every=1")
    wait_for_step(run_dir, 5, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and b"Traceback" not in err
    assert last(run_dir).run.step >= 5


def test_kill_9_at_random_moments_never_leaves_an_unloadable_checkpoint(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    loaded = 0
    for _ in range(4):
        has_ckpt = (run_dir / "checkpoints" / "last.pt").exists()
        extra = ["--resume", str(run_dir)] if has_ckpt else ["--overwrite"]
        args = ["train", *(extra if has_ckpt else [str(corpus_file), "--run-dir", str(run_dir), *extra]), *SETTINGS,
                "--max-steps", "100000", "--set", "train.checkpoint_every=1", "--set", "model.hidden_size=256"]
        proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_step(run_dir, 1, proc) if not has_ckpt else None  # a fresh run: let it save once first
        time.sleep(rng.uniform(0.2, 2.0))
        proc.kill()
        proc.wait()
        for path in (run_dir / "checkpoints").glob("*.pt") if (run_dir / "checkpoints").exists() else []:
            load_run(path)  # raises if torn
            loaded += 1
    assert loaded > 0


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    """About 1 MB of Python, from the standard library every machine has."""
    import sysconfig
    from pathlib import Path

    text, files = "", sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    for path in files:
        text += path.read_text(encoding="utf-8", errors="replace")
        if len(text) > 1_000_000:
            break
    path = tmp_path_factory.mktemp("big") / "stdlib.py.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("delay", [1.0, 2.5, 6.0])  # starting; encoding or early steps; a long validation
def test_sigterm_stops_a_run_with_long_validations_at_once(tmp_path, big_corpus, delay):
    run_dir = tmp_path / "run"
    # Half a megabyte of validation on a 1x512 model takes many seconds per evaluation, from step 2 on.
    proc = start(big_corpus, run_dir, "--set", "data.val_fraction=0.5", "--set", "train.eval_chars=0",
                 "--set", "train.eval_every=2", "--set", "train.checkpoint_every=1", "--set", "model.num_layers=1",
                 "--set", "model.hidden_size=512", "--set", "train.batch_size=16")
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=120)
    waited = time.monotonic() - sent
    # Before charrnn has started its work the default action ends the process: nothing was written then.
    assert proc.returncode == 143 or (proc.returncode == -signal.SIGTERM and not run_dir.exists()), err.decode()
    assert b"Traceback" not in err
    assert waited < 10, f"took {waited:.1f}s to stop"  # a validation alone takes far longer than this
    if (run_dir / "checkpoints" / "last.pt").exists():
        saved = last(run_dir)
        assert saved.run.step >= 1 and saved.run.val_loss is None  # the abandoned validation left no trace
