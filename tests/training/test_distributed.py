"""torchrun with 2 CPU processes (gloo) trains the same model as one process with the same global batch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, last, run_cli

# The first leg stops inside the warmup, so its shorter max_steps does not change the lr schedule.
SETTINGS = ["--config", str(ROOT / "configs" / "tiny.toml"), "--device", "cpu", "--set", "model.dropout=0.0",
            "--set", "train.eval_every=4", "--set", "train.checkpoint_every=4", "--set", "train.log_every=4",
            "--set", "train.lr=1e-3"]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(*target: object) -> subprocess.CompletedProcess:
    """torchrun with 2 CPU processes of one thread each, running `target`: a script and its arguments, or -m."""
    return subprocess.run([*TORCHRUN, *map(str, target)], cwd=ROOT, capture_output=True, env=ONE_THREAD,
                          timeout=300)  # a hang fails, not stalls


def torchrun(*args: object) -> None:
    result = launch("-m", "charrnn", *args)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


# An adaptive head over 80 of textwrap.py's 88 symbols: most steps of a process bring none of the 8 rarest, and
# its rare cluster then has no gradient there, which DDP must be told to expect.
@pytest.mark.parametrize("head", [[], ["--set", "model.head_cutoff=80"]], ids=["full", "adaptive"])
def test_two_processes_match_one_and_resume(tmp_path, corpus_file, head):
    run_cli("train", corpus_file, "--run-dir", tmp_path / "single", *SETTINGS, *head, "--max-steps", 8)
    torchrun("train", corpus_file, "--run-dir", tmp_path / "ddp", *SETTINGS, *head, "--max-steps", 4)
    torchrun("train", "--resume", tmp_path / "ddp", "--max-steps", 8)
    single, ddp = last(tmp_path / "single"), last(tmp_path / "ddp")
    assert ddp.run.step == 8
    for key, value in single.model.items():  # Adam turns float noise into ~lr-sized steps: a loose atol
        torch.testing.assert_close(ddp.model[key], value, rtol=1e-3, atol=2e-4)
    assert abs(ddp.run.val_loss - single.run.val_loss) < 1e-4
    torch.testing.assert_close(ddp.run.hidden[0], single.run.hidden[0], rtol=1e-3, atol=2e-4)
    logged = [line for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    expected = [line for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(logged, expected, strict=True):  # the logged loss is the mean over all processes
        a, b = json.loads(a), json.loads(b)
        assert a["step"] == b["step"]
        assert abs(a["train/loss"] - b["train/loss"]) < 1e-4
    assert ddp.run.hidden[0].shape == single.run.hidden[0].shape  # saved for all streams, whatever the world size


def worker_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with LOCAL_RANK=`rank`, from /proc."""
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and f"LOCAL_RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.parametrize("delay", [pytest.param(0.0, marks=pytest.mark.slow), 0.7])  # last steps; final validation
def test_a_signal_to_one_rank_only_never_hangs_the_others(tmp_path, corpus_file, delay):
    corpus = tmp_path / "c.txt"
    corpus.write_text(corpus_file.read_text() * 12)  # ~240 KB: half of it a long final validation
    proc = subprocess.Popen([*TORCHRUN, "-m", "charrnn", "train", str(corpus), "--run-dir", str(tmp_path / "ddp"),
                             *SETTINGS, "--max-steps", "6", "--set", "data.val_fraction=0.5", "--set",
                             "train.eval_chars=0", "--set", "model.hidden_size=256"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ONE_THREAD)
    metrics = tmp_path / "ddp" / "metrics.jsonl"
    while not (metrics.exists() and metrics.read_text()):  # step 4 is logged, with its validation
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    time.sleep(delay)
    os.kill(worker_pid(proc.pid, 1), signal.SIGTERM)
    _, err = proc.communicate(timeout=120)  # before the fix, rank 0 could wait in a collective forever
    assert proc.returncode != 0, err.decode()[-3000:]
    assert b'charrnn/' not in err, err.decode()[-3000:]  # torchrun reports; we don't crash
    saved = last(tmp_path / "ddp")
    assert 5 <= saved.run.step <= 6
    assert len(saved.run.rng) == 2
    assert saved.run.val_loss is not None


WORKER = r"""
import os, sys, torch
from charrnn.training.distributed import setup, teardown
world = setup("cpu")
torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))  # as build() wraps the model
teardown(world)
names = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
sys.stdout.write(f"rank {world.rank} threads after teardown: {sorted(names)}\n")  # one write: the ranks share a pipe
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads from /proc (Linux)")
def test_no_gloo_thread_outlives_teardown(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = launch(script)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    lines = [line for line in result.stdout.decode().splitlines() if "threads after teardown" in line]
    assert len(lines) == 2
    for line in lines:  # a group still alive keeps its threads to interpreter exit, where they can abort the run
        assert "gloo" not in line, line


WATCHER = r"""
import gc, sys, torch, torch.distributed as dist
import charrnn.training.loop
from charrnn.cli import main
from charrnn.errors import UserError

destroy = dist.destroy_process_group


def watched(*args, **kwargs):
    alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    sys.stdout.write(f"DDP models alive as the group goes: {alive}\n")  # one write: the ranks share a pipe
    destroy(*args, **kwargs)


def fail(self, *args, **kwargs):
    raise UserError("the disk is full")


dist.destroy_process_group = watched
if sys.argv.pop(1) == "fail":
    charrnn.training.loop._Loop.run = fail
main()
"""


@pytest.mark.parametrize("ending", ["finish", "fail"])
def test_the_ddp_model_is_gone_before_its_group(tmp_path, corpus_file, ending):
    # DDP's reducer, were it the group's last holder, would join gloo's threads holding the GIL that a gloo thread
    # releasing a finished collective's tensors waits for: a run that hung at its very end, now and then.
    script = tmp_path / "watcher.py"
    script.write_text(WATCHER)
    result = launch(script, ending, "train", corpus_file, "--run-dir", tmp_path / "ddp", *SETTINGS, "--max-steps", 2)
    assert (result.returncode != 0) == (ending == "fail"), result.stderr.decode()[-3000:]
    lines = [line for line in result.stdout.decode().splitlines() if "as the group goes" in line]
    assert lines == ["DDP models alive as the group goes: 0"] * 2, result.stdout.decode()
