"""A run directory's layout, and the rules that keep a user's files safe in it.

    RUN_DIR/
      .lock                  held by the trainer for the whole run (see `charrnn.training.lock`)
      run.json               the run's identity: resume refuses checkpoints written by another run
      config.toml            the resolved config
      checkpoints/last.pt    the latest state, written every train.checkpoint_every steps and at the end
      checkpoints/best.pt    the best validation loss so far
      checkpoints/step-N.pt  the last train.keep_last periodic copies
      metrics.jsonl          one JSON object per logged step
      tb/                    TensorBoard events
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from charrnn.checkpoint import BEST, LAST, checkpoint_dir, is_periodic
from charrnn.errors import UserError
from charrnn.files import describe_os_error, remove_stale_temps, write_atomic

CONFIG, METRICS, TENSORBOARD, IDENTITY = "config.toml", "metrics.jsonl", "tb", "run.json"


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds (part of) a charrnn run; empty folders left by a failed start do not count."""
    run_dir = Path(run_dir)
    if any((run_dir / name).exists() for name in (CONFIG, METRICS, IDENTITY)):
        return True
    return any((run_dir / name).is_dir() and any((run_dir / name).iterdir()) for name in ("checkpoints", TENSORBOARD))


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
    ancestor = run_dir.absolute()
    while not ancestor.exists():  # the folder that will hold the new run dir must be a writable directory
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        why = "is not a directory" if not ancestor.is_dir() else "is not writable"
        raise UserError(f"cannot create the run dir {run_dir}: {ancestor} {why}")


def clear_run(run_dir: Path) -> None:
    """Remove a previous run's files for --overwrite: only the files charrnn writes, never a user's."""
    checkpoints = checkpoint_dir(run_dir)
    doomed = [run_dir / CONFIG, run_dir / METRICS, run_dir / IDENTITY]
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


def prepare(run_dir: Path, run_id: str, config_toml: str, *, fresh: bool, overwrite: bool) -> None:
    """Create the run dir (clearing charrnn's old files for --overwrite), record which run owns it, write its config.

    A failure here leaves no half-made run behind that a retry would need --overwrite for.
    """
    created = not run_dir.exists()
    try:
        if fresh and overwrite:
            clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run dir {run_dir}: {describe_os_error(e)}") from None
    for folder in (run_dir, checkpoint_dir(run_dir)):
        remove_stale_temps(folder)  # left by a kill -9 in the middle of a write
    try:
        if fresh or not (run_dir / IDENTITY).exists():
            write_atomic(run_dir / IDENTITY, json.dumps({"run_id": run_id}) + "\n")
        write_atomic(run_dir / CONFIG, config_toml)
    except UserError:
        if fresh:
            for name in (IDENTITY, CONFIG):
                (run_dir / name).unlink(missing_ok=True)
        if created:
            run_dir.rmdir()
        raise


def check_identity(run_dir: Path, run_id: str) -> None:
    """Refuse to resume from a checkpoint that another run wrote (e.g. a last.pt copied in by hand)."""
    path = run_dir / IDENTITY
    if not path.exists():
        return  # a run dir from before run ids: it takes the checkpoint's
    try:
        own = json.loads(path.read_text(encoding="utf-8"))["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is damaged; it should hold {{\"run_id\": \"{run_id}\"}}") from None
    if own != run_id:
        raise UserError(f"{checkpoint_dir(run_dir) / LAST} was written by another run (run id {run_id[:8] or '?'}, "
                        f"this run dir belongs to {own[:8]}); resume that run in its own dir instead")
