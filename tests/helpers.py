"""Helpers shared by the tests: paths, the CLI in a subprocess, checkpoint shortcuts and the one tiny-model factory."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from charrnn.checkpoint import RunCheckpoint, load_run
from charrnn.config import Config, ModelConfig, load_config
from charrnn.data.encoding import Corpus
from charrnn.model import CharRNN
from charrnn.training.loop import TrainResult, train
from charrnn.training.resume import open_resume
from charrnn.training.state import RunState

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_CONFIG = ROOT / "configs" / "tiny.toml"
# A 2 x 32 LSTM that trains 40 steps on the corpus_file fixture in a few seconds, evaluating and saving every 10.
FAST = ["model.embed_dim=16", "model.hidden_size=32", "model.num_layers=2", "train.batch_size=16",
        "train.seq_len=64", "train.lr=1e-2", "train.warmup_steps=5", "train.max_steps=40", "train.eval_every=10",
        "train.checkpoint_every=10", "train.sample_every=20", "train.sample_length=40", "train.log_every=5",
        "train.device='cpu'", "model.dropout=0.1"]


def run_cli(*args: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """`python -m charrnn ARGS` in a subprocess, as a user runs it."""
    return _checked(subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], capture_output=True,
                                   cwd=ROOT, **kwargs), check)


def invoke(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    """`charrnn ARGS` in this process (no second torch import): for tests of what a command prints and returns,
    not of how a process starts, exits or takes signals, which `run_cli` shows."""
    from click.testing import CliRunner

    from charrnn.cli import main

    got = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return _checked(subprocess.CompletedProcess(["charrnn", *map(str, args)], got.exit_code, got.stdout_bytes,
                                                got.stderr_bytes), check)


def _checked(result: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, result.args))} exited {result.returncode}:\n"
                             f"{result.stderr.decode(errors='replace')}")
    return result


def fast_config(corpus: Path, *extra: str) -> Config:
    """FAST on `corpus`, with `extra` overrides after it."""
    return load_config(None, [*FAST, f"data.path='{corpus}'", *extra])


def steps_logged(run_dir: Path) -> list[int]:
    """The steps of metrics.jsonl's records, in order."""
    return [json.loads(line)["step"] for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def text_of(corpus: Corpus) -> str:
    """A loaded corpus as text again: its ids decoded."""
    return corpus.vocab.decode(corpus.ids.tolist())


def read_run(path: Path) -> RunCheckpoint:
    """A checkpoint read for resuming, with its run state as a `RunState` (attributes, not keys)."""
    saved = load_run(path)
    return replace(saved, run=RunState.from_dict(saved.run, saved.path))


def last(run_dir: Path) -> RunCheckpoint:
    """The run's checkpoints/last.pt, its run state as a `RunState`."""
    return read_run(Path(run_dir) / "checkpoints" / "last.pt")


def resume(run_dir: Path, overrides: tuple[str, ...] | list[str] = (), **kwargs) -> TrainResult:
    """Continue a run as `charrnn train --resume RUN_DIR --set ...` does."""
    found = open_resume(run_dir, overrides)
    return train(found.config, run_dir, resume=found, **kwargs)


def random_model(vocab_size: int, cell: str = "lstm", *, seed: int = 0, embed_dim: int = 8, hidden_size: int = 32,
                 num_layers: int = 2, dropout: float = 0.0, embed_dropout: float = 0.0, weight_dropout: float = 0.0,
                 head_cutoff: int = 0, jitter: float = 0.0, sharpness: float = 1.0, training: bool = False,
                 counts: torch.Tensor | None = None) -> CharRNN:
    """The tests' one tiny-model factory: an untrained CharRNN (2 x 32 unless told), built after seeding torch.

    `jitter` adds that much Gaussian noise to every parameter (GRU and RNN biases start at zero: with it, every
    weight counts); `sharpness` scales the head so that the predictions are confident. In eval mode unless `training`.
    """
    torch.manual_seed(seed)
    cfg = ModelConfig(cell=cell, embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout,
                      embed_dropout=embed_dropout, weight_dropout=weight_dropout, head_cutoff=head_cutoff)
    model = CharRNN(vocab_size, cfg, counts).train(training)
    with torch.no_grad():
        if jitter:
            for param in model.parameters():
                param.add_(jitter * torch.randn_like(param))
        model.head.weight.mul_(sharpness)
    return model
