"""Helpers shared by the tests: paths, the CLI in a subprocess, and checkpoint shortcuts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from charrnn.checkpoint import Saved, load_run
from charrnn.config import ModelConfig
from charrnn.model import CharRNN
from charrnn.train import TrainResult, open_resume, resume_config, train

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


def last(run_dir: Path) -> Saved:
    """The run's checkpoints/last.pt."""
    return load_run(Path(run_dir) / "checkpoints" / "last.pt")


def resume(run_dir: Path, overrides: tuple[str, ...] | list[str] = (), **kwargs) -> TrainResult:
    """Continue a run as `charrnn train --resume RUN_DIR --set ...` does."""
    saved = open_resume(run_dir)
    return train(resume_config(saved, overrides), run_dir, resume=saved, **kwargs)


def random_model(vocab_size: int, cell: str = "lstm", seed: int = 0, sharpness: float = 1.0) -> CharRNN:
    """An untrained 2 x 32 model in eval mode; `sharpness` scales the head so its predictions are confident."""
    torch.manual_seed(seed)
    model = CharRNN(vocab_size, ModelConfig(cell=cell, embed_dim=8, hidden_size=32, num_layers=2)).eval()
    with torch.no_grad():
        model.head.weight.mul_(sharpness)
    return model
