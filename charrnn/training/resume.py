"""Which config a run starts or continues with: the one owner of "resume with overrides", for the CLI and the API."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.checkpoint import LAST, RunCheckpoint, checkpoint_dir, load_run
from charrnn.config import Config, check_resumable, load_config
from charrnn.errors import UserError
from charrnn.training.plan import check_budget, free_keys, given_keys
from charrnn.training.state import RunState


@dataclass(frozen=True)
class Resume:
    """A run to continue: its last checkpoint, the position it stopped at, and the config it goes on with."""

    checkpoint: RunCheckpoint
    state: RunState
    config: Config
    stamp: tuple[int, int, int]  # last.pt's inode, size and mtime when it was read

    def changed(self) -> bool:
        """Whether last.pt was replaced since it was read (by a trainer that was still running then)."""
        return _stamp(self.checkpoint.path) != self.stamp


def open_resume(run_dir: Path, overrides: Sequence[str] = (), values: Mapping[str, Any] | None = None) -> Resume:
    """The last checkpoint of `run_dir` with `overrides` and dotted `values` applied to its config.

    Only keys marked resumable in `charrnn.config` may change: anything else is refused in one line.
    """
    path = checkpoint_dir(run_dir) / LAST
    if not path.is_file():
        raise UserError(f"nothing to resume in {run_dir}: no checkpoints/{LAST}")
    stamp = _stamp(path)
    saved = load_run(path)
    cfg = saved.config.with_overrides(overrides, values)
    check_resumable(saved.config, cfg)
    return Resume(saved, RunState.from_dict(saved.run, saved.path), cfg, stamp)


def _stamp(path: Path) -> tuple[int, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def run_config(run_dir: Path | None, *, resume: bool, config: Path | Config | None = None,
               overrides: Sequence[str] = (), values: Mapping[str, Any] | None = None
               ) -> tuple[Config, Resume | None, tuple[str, ...]]:
    """The config a run in `run_dir` trains with, the run it continues when `resume` is set, and the keys a new
    run's plan fills (those of `charrnn.training.plan.PLANNED` that neither `config` nor the overrides set)."""
    if run_dir is None:
        raise UserError("missing --run-dir (or --resume RUN_DIR)")
    if resume:
        if config is not None:
            raise UserError("--config cannot be combined with --resume: the run keeps its own config; "
                            "use --set to change its length or logging")
        found = open_resume(run_dir, overrides, values)
        return found.config, found, ()
    cfg = config.with_overrides(overrides, values) if isinstance(config, Config) else \
        load_config(config, overrides, values)
    if not cfg.data.path:
        raise UserError("missing CORPUS: the text file or directory to train on (or data.path in --config)")
    free = free_keys(cfg, given_keys(config, overrides, values))
    if free:
        check_budget(cfg.train.time_budget)  # before anything is read or written
    return cfg, None, free
