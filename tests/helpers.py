"""Helpers shared by the tests: paths, the CLI in a subprocess, and checkpoint shortcuts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from charrnn.checkpoint import Saved, load_run
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
