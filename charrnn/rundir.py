"""A run directory's layout, and the rules that keep a user's files safe in it.

    RUN_DIR/
      config.toml            the resolved config
      checkpoints/last.pt    the latest state, written every train.checkpoint_every steps and at the end
      checkpoints/best.pt    the best validation loss so far
      checkpoints/step-N.pt  the last train.keep_last periodic copies
      metrics.jsonl          one JSON object per logged step
      tb/                    TensorBoard events
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from charrnn.checkpoint import BEST, LAST, checkpoint_dir, is_periodic
from charrnn.errors import UserError

CONFIG, METRICS, TENSORBOARD = "config.toml", "metrics.jsonl", "tb"
_MARKERS = (CONFIG, METRICS, "checkpoints", TENSORBOARD)


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds (part of) a charrnn run."""
    return any((Path(run_dir) / name).exists() for name in _MARKERS)


def is_run_dir(path: Path) -> bool:
    """Whether `path` looks like a charrnn run dir: its config.toml beside its checkpoints or metrics."""
    return (path / CONFIG).is_file() and ((path / "checkpoints").is_dir() or (path / METRICS).is_file())


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to start where it would mix runs or lose one; nothing is touched here."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: pick one")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} is a file")
    if not resume and holds_run(run_dir) and not overwrite:
        raise UserError(f"{run_dir} already holds a run: pass --resume to continue it "
                        "or --overwrite to start over")


def clear_run(run_dir: Path) -> None:
    """Remove a previous run's files for --overwrite: only the files charrnn writes, never a user's."""
    checkpoints = checkpoint_dir(run_dir)
    doomed = [run_dir / CONFIG, run_dir / METRICS]
    if checkpoints.is_dir():
        doomed += [p for p in checkpoints.iterdir() if p.name in (LAST, BEST) or is_periodic(p.name)]
    tb = run_dir / TENSORBOARD
    if tb.is_dir():
        doomed += [p for p in tb.iterdir() if p.name.startswith("events.out.tfevents.")]
    for path in doomed:
        path.unlink(missing_ok=True)
    for folder in (checkpoints, tb):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file so that a full disk leaves the old file (or none), never a torn one."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
