"""The checkpoint format, and the only place that calls torch.save / torch.load.

A checkpoint is one file: a dict of tensors and plain Python types, written atomically (temp
file, fsync, rename) and read back with `weights_only=True`, so loading one never runs code
from it. It is loaded as a memory map, so inference (`load_model`) reads the weights and never
materialises the optimizer state that sits beside them.

    {"format_version": 2, "config": {...}, "vocab": str, "byte_level": bool,
     "model": state_dict, "optimizer": state_dict, "scaler": state_dict, "run": RunState as a dict}
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from charrnn.config import Config, from_dict
from charrnn.corpus import Vocab
from charrnn.errors import UserError
from charrnn.files import describe_os_error, require_file, temp_beside
from charrnn.metrics import bpc
from charrnn.model import CharRNN, Hidden

FORMAT_VERSION = 2
READS = (1, 2)  # format 1 (charrnn 0.1) kept the run state at the top level; it is upgraded on load
LAST, BEST = "last.pt", "best.pt"
_PERIODIC = re.compile(r"step-\d+\.pt")
_TOP = ("config", "vocab", "byte_level", "model", "optimizer", "scaler", "run")


@dataclass
class RunState:
    """Where a run is, beside its weights and optimizer: everything else a resume needs."""

    run_id: str  # which run wrote this; resume refuses a checkpoint from another run
    corpus_hash: str  # BLAKE2b of the corpus bytes; resume refuses other text
    step: int = 0
    epoch: int = 0
    window: int = 0  # the next window to train on within the epoch
    elapsed: float = 0.0  # seconds of training (evaluation, sampling and saving excluded)
    best_val_loss: float = math.inf
    val_loss: float | None = None
    hidden: Hidden = ()  # carried state of every stream (all processes), on the CPU
    rng: list[dict[str, Any]] = field(default_factory=list)  # one entry per process


@dataclass(frozen=True)
class Saved:
    """A checkpoint read for resuming: the run's config, vocabulary, state dicts and position."""

    path: Path
    config: Config
    vocab: Vocab
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    run: RunState


@dataclass(frozen=True)
class Loaded:
    """A checkpoint read for inference: the model (in eval mode) with its vocabulary and config."""

    path: Path
    model: CharRNN
    vocab: Vocab
    config: Config
    run: RunState


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def resolve(path: Path) -> Path:
    """A checkpoint file, or a run dir meaning its best.pt (or last.pt when there is no best yet)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (checkpoint_dir(path) / name).is_file():
                return checkpoint_dir(path) / name
        raise UserError(f"{path} holds no checkpoints/{BEST} or checkpoints/{LAST}")
    require_file(path, "checkpoint")
    return path


def save_run(path: Path, *, config: Config, vocab: Vocab, model: CharRNN, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, run: RunState) -> None:
    """Write a resumable checkpoint of the run atomically to `path`."""
    _write(path, {"format_version": FORMAT_VERSION, "config": config.to_dict(), "vocab": vocab.chars,
                  "byte_level": vocab.byte_level, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scaler": scaler.state_dict(), "run": asdict(run)})


def load_run(path: Path) -> Saved:
    """Read a checkpoint (or a run dir's best.pt) for resuming; its tensors stay on the CPU."""
    path = resolve(path)
    state = _read(path)
    return Saved(path, _config(state, path), Vocab(state["vocab"], state["byte_level"]), state["model"],
                 state["optimizer"], state["scaler"], _run_state(state["run"], path))


def load_model(path: Path, device: torch.device | str = "cpu") -> Loaded:
    """The model of a checkpoint (or run dir), in eval mode on `device`; the optimizer state is never read."""
    path = resolve(path)
    state = _read(path)
    config = _config(state, path)
    vocab = Vocab(state["vocab"], state["byte_level"])
    model = CharRNN(vocab.size, config.model)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError) as e:
        raise UserError(f"{path}: its weights do not fit its config ({str(e).splitlines()[0]})") from None
    model = model.to(device).eval()
    model.rnn.flatten_parameters()  # one contiguous weight buffer for cuDNN
    return Loaded(path, model, vocab, config, _run_state(state["run"], path))


def is_periodic(name: str) -> bool:
    """Whether a file name is one of the periodic step-N.pt copies."""
    return _PERIODIC.fullmatch(name) is not None


def save_periodic(run_dir: Path, step: int, write: Any, keep_last: int) -> None:
    """Keep a copy as step-N.pt (written by `write(path)`) and delete all but the newest `keep_last`."""
    folder = checkpoint_dir(run_dir)
    write(folder / f"step-{step:08d}.pt")
    kept = sorted((p for p in folder.iterdir() if is_periodic(p.name)), key=lambda p: p.name)
    for old in kept[:-keep_last]:
        old.unlink(missing_ok=True)


def describe(path: Path) -> list[str]:
    """Human-readable summary of a checkpoint: config, vocabulary, size, progress."""
    loaded = load_model(path, "cpu")
    run, vocab = loaded.run, loaded.vocab
    best = run.best_val_loss
    shown = "".join(c if c.isprintable() and c != " " else repr(c)[1:-1] or "?" for c in vocab.chars[:80])
    lines = [f"checkpoint:  {loaded.path}",
             f"cell:        {loaded.config.model.cell} ({loaded.config.model.num_layers} x "
             f"{loaded.config.model.hidden_size})",
             f"step:        {run.step} (epoch {run.epoch}, window {run.window})",
             f"best val:    {best:.4f} nats/char ({bpc(best):.4f} bpc)" if math.isfinite(best)
             else "best val:    (not evaluated yet)",
             f"parameters:  {loaded.model.num_params():,}",
             f"vocabulary:  {vocab.size} {'bytes' if vocab.byte_level else 'characters'}: {shown}"
             + (" ..." if vocab.size > 80 else ""),
             f"corpus hash: {run.corpus_hash[:16]}",
             "config:"]
    return lines + ["  " + line for line in loaded.config.to_toml().splitlines()]


def _write(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to a temp file beside `path`, fsync it, then atomically replace `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_beside(path, binary=True)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise UserError(f"cannot write checkpoint {path}: {describe_os_error(e)}; "
                        "the previous checkpoint is kept") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, memory-mapped on the CPU, upgraded to the current format."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EIO):
            raise UserError(f"cannot read checkpoint {path}: {e.strerror}") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt)") from None
    except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere inside the unpickler
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            raise UserError(f"{path} holds objects other than tensors and plain Python types; "
                            "refusing to load it (nothing in it was run)") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt)") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise UserError(f"{path} is not a charrnn checkpoint")
    version = state["format_version"]
    if version not in READS:
        raise UserError(f"{path} has checkpoint format {version!r}; this charrnn reads formats "
                        f"{', '.join(map(str, READS))}")
    if version == 1:
        state = _upgrade_v1(state)
    missing = [key for key in _TOP if key not in state]
    if missing:
        raise UserError(f"{path} is a damaged charrnn checkpoint: it lacks {', '.join(missing)}")
    return state


def _upgrade_v1(state: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the run's position at the top level and had no run id."""
    run_keys = {f.name for f in fields(RunState)} - {"run_id"}
    run = {key: state[key] for key in run_keys if key in state}
    return {**{k: v for k, v in state.items() if k not in run_keys}, "run": {"run_id": "", **run}}


def _config(state: dict[str, Any], path: Path) -> Config:
    try:
        return from_dict(state["config"])
    except UserError as e:
        raise UserError(f"{path} holds a config this charrnn cannot use: {e}") from None


def _run_state(run: Any, path: Path) -> RunState:
    try:
        state = RunState(**run)
    except TypeError:
        raise UserError(f"{path} is a damaged charrnn checkpoint: its run state is malformed") from None
    state.hidden = tuple(state.hidden)
    return state
