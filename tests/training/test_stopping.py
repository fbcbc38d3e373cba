"""When a run stops: its limits, its time budget and signals, agreed on by every process; and real processes
interrupted: SIGINT/SIGTERM save and resume exactly, kill -9 never corrupts."""

import json
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest
import torch

from charrnn.checkpoint import load_run
from charrnn.config import TrainConfig
from charrnn.training.distributed import World
from charrnn.training.state import RunState
from charrnn.training.stopping import (
    STOP_CODES,
    Stopped,
    StopSignals,
    expected_steps,
    limit_reached,
    stop_check,
    stop_reason,
)
from tests.helpers import ROOT, last, run_cli

ONE = World(torch.device("cpu"))


@dataclass
class Peers:
    """Stands in for a World of several processes: `agree` takes the MAX with what the others propose."""

    others: int = 0  # the largest stop code of the other processes
    enabled: bool = True

    def agree(self, code: int) -> int:
        return max(code, self.others)


def at(step: int = 0, epoch: int = 0, window: int = 0, elapsed: float = 0.0) -> RunState:
    return RunState("run", "hash", step=step, epoch=epoch, window=window, elapsed=elapsed)


def received(name: str | None) -> StopSignals:
    signals = StopSignals()
    signals.received = name
    return signals


def test_limit_reached_is_max_steps_then_max_epochs():
    tc = TrainConfig(max_steps=100, max_epochs=1.5)
    assert limit_reached(tc, at(step=99, epoch=1, window=4), epoch_windows=10) is None
    assert limit_reached(tc, at(step=99, epoch=1, window=5), epoch_windows=10) == "max_epochs"  # 1.5 epochs
    assert limit_reached(tc, at(step=100, epoch=1, window=5), epoch_windows=10) == "max_steps"
    assert limit_reached(TrainConfig(max_steps=100), at(step=99, epoch=50), epoch_windows=10) is None  # 0: no limit


def test_stop_reason_keeps_time_for_the_final_evaluation():
    tc = TrainConfig(max_steps=1000, time_budget=10.0)
    assert stop_reason(tc, at(step=5, elapsed=7.9), 10, received(None), ONE, eval_reserve=2.0) is None
    assert stop_reason(tc, at(step=5, elapsed=8.0), 10, received(None), ONE, eval_reserve=2.0) == "time_budget"
    assert stop_reason(tc, at(step=5, elapsed=9.5), 10, received(None), ONE, eval_reserve=0.0) is None
    no_budget = TrainConfig(max_steps=1000)
    assert stop_reason(no_budget, at(step=5, elapsed=1e9), 10, received(None), ONE, eval_reserve=2.0) is None


def test_a_run_takes_its_first_step_whatever_the_budget():
    tc = TrainConfig(max_steps=1000, time_budget=1.0)
    assert stop_reason(tc, at(step=0, elapsed=5.0), 10, received(None), ONE, eval_reserve=2.0) is None
    assert stop_reason(tc, at(step=1, elapsed=5.0), 10, received(None), ONE, eval_reserve=2.0) == "time_budget"


def test_signals_win_over_the_time_budget_and_limits_win_over_signals():
    tc = TrainConfig(max_steps=100, time_budget=10.0)
    assert stop_reason(tc, at(step=5, elapsed=20.0), 10, received("SIGTERM"), ONE, eval_reserve=0.0) == "SIGTERM"
    assert stop_reason(tc, at(step=5), 10, received("SIGHUP"), ONE, eval_reserve=0.0) == "SIGHUP"
    # deterministic limits first: every process reaches them at the same step without talking
    assert stop_reason(tc, at(step=100), 10, received("SIGINT"), ONE, eval_reserve=0.0) == "max_steps"


def test_with_several_processes_clocks_and_signals_count_only_at_log_steps_and_are_agreed_on():
    tc = TrainConfig(max_steps=100, log_every=10, time_budget=10.0)
    assert stop_reason(tc, at(step=15), 10, received("SIGINT"), Peers(), eval_reserve=0.0) is None
    assert stop_reason(tc, at(step=20), 10, received("SIGINT"), Peers(), eval_reserve=0.0) == "SIGINT"
    sigterm_elsewhere = Peers(others=STOP_CODES.index("SIGTERM"))
    assert stop_reason(tc, at(step=20), 10, received(None), sigterm_elsewhere, eval_reserve=0.0) == "SIGTERM"
    # the highest code wins: a signal here beats another process's time budget
    budget_elsewhere = Peers(others=STOP_CODES.index("time_budget"))
    assert stop_reason(tc, at(step=20), 10, received("SIGHUP"), budget_elsewhere, eval_reserve=0.0) == "SIGHUP"
    assert stop_reason(tc, at(step=100), 10, received(None), Peers(), eval_reserve=0.0) == "max_steps"  # any step


def test_expected_steps_is_the_nearest_limit_and_never_behind_the_run():
    assert expected_steps(TrainConfig(max_steps=500), at(), 10, None) == 500
    assert expected_steps(TrainConfig(max_steps=500, max_epochs=0.55), at(), 10, None) == 6  # ceil(5.5)
    budget = TrainConfig(max_steps=500, time_budget=100.0)
    assert expected_steps(budget, at(step=10, elapsed=40.0), 10, steps_per_sec=2.0) == 130  # 10 + 60 s * 2/s
    assert expected_steps(budget, at(step=10, elapsed=40.0), 10, steps_per_sec=None) == 500  # no rate yet
    assert expected_steps(budget, at(step=300, elapsed=150.0), 10, steps_per_sec=2.0) == 300


def test_stop_signals_record_the_first_signal_and_check_raises_stopped_with_its_name():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopSignals() as signals:
        assert signals.check() is None
        signal.raise_signal(signal.SIGTERM)
        assert signals.received == "SIGTERM"
        with pytest.raises(Stopped) as e:
            signals.check()
        assert e.value.args == ("SIGTERM",)
    assert {sig: signal.getsignal(sig) for sig in before} == before  # the previous handlers are back


def test_sighup_asks_to_stop_like_sigterm():
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGHUP)
    assert signals.received == "SIGHUP"


def test_a_second_ctrl_c_aborts_at_once():
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGINT)
        assert signals.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def test_outside_the_main_thread_signals_are_left_alone():
    before, errors = signal.getsignal(signal.SIGTERM), []

    def enter() -> None:
        try:
            with StopSignals():
                assert signal.getsignal(signal.SIGTERM) is before
        except BaseException as e:  # reported to the main thread
            errors.append(e)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert errors == []


def test_stop_check_of_one_process_is_the_signals_own_check_and_of_several_agrees():
    signals = received(None)
    assert stop_check(signals, ONE) == signals.check
    assert stop_check(signals, Peers())() is None
    with pytest.raises(Stopped, match="SIGINT"):
        stop_check(signals, Peers(others=STOP_CODES.index("SIGINT")))()  # another process was interrupted


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
    assert steps == sorted(set(steps))
    assert steps[-1] == 60


def test_second_ctrl_c_aborts_at_once_leaving_the_checkpoint_intact(tmp_path, corpus_file):
    run_dir = tmp_path / "run"
    proc = start(corpus_file, run_dir, "--set", "train.checkpoint_every=1")
    wait_for_step(run_dir, 5, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in err
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
        saved = last(run_dir)  # step 0 when the signal came before the first step
        assert saved.run.val_loss is None  # the abandoned validation left no trace
