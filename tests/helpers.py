"""Helpers shared by the tests: paths, the CLI in a subprocess, and checkpoint shortcuts."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from charrnn.checkpoint import RunCheckpoint, load_run
from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.training.loop import TrainResult, train
from charrnn.training.resume import open_resume
from charrnn.training.state import RunState

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TINY_CONFIG = ROOT / "configs" / "tiny.toml"


def run_cli(*args: object, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """`python -m charrnn ARGS` in a subprocess, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], capture_output=True, cwd=ROOT,
                            **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"charrnn {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stderr.decode(errors='replace')}")
    return result


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


def random_model(vocab_size: int, cell: str = "lstm", seed: int = 0, sharpness: float = 1.0) -> CharRNN:
    """An untrained 2 x 32 model in eval mode; `sharpness` scales the head so its predictions are confident."""
    torch.manual_seed(seed)
    model = CharRNN(vocab_size, ModelConfig(cell=cell, embed_dim=8, hidden_size=32, num_layers=2)).eval()
    with torch.no_grad():
        model.head.weight.mul_(sharpness)
    return model
