"""The checkpoint format, and the only place that calls torch.save / torch.load.

A checkpoint is one file: a dict of tensors and plain Python types, written atomically (temp
file, fsync, rename) and read back with `weights_only=True`, so loading one never runs code
from it. It is loaded as a memory map, so inference (`load_model`) reads the weights and never
materialises the optimizer state that sits beside them.

    {"format_version": 2, "config": {...}, "vocab": str, "byte_level": bool,
     "model": state_dict, "optimizer": state_dict, "scaler": state_dict, "run": {...}}

"run" is the training loop's position (`charrnn.training.state.RunState` as a dict): plain values
and tensors, which this module stores and reads back without interpreting, except to describe it.
Format 1 (charrnn 0.1.0) kept those values at the top level; it is upgraded when read.
"""

from __future__ import annotations

import errno
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from charrnn.config import Config, from_dict
from charrnn.errors import UserError
from charrnn.files import require_file, write_atomic
from charrnn.model import CharRNN, bpc
from charrnn.vocab import Vocab

FORMAT_VERSION = 2
READS = (1, 2)  # format 1 (charrnn 0.1) kept the run state at the top level; it is upgraded on load
LAST, BEST = "last.pt", "best.pt"
_PERIODIC = re.compile(r"step-\d+\.pt")
_TOP = ("config", "vocab", "byte_level", "model", "optimizer", "scaler", "run")
# What format 1 kept at the top level and format 2 keeps under "run" (format 1 had no run id).
_V1_RUN_KEYS = ("corpus_hash", "step", "epoch", "window", "elapsed", "best_val_loss", "val_loss", "hidden", "rng")


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint read for resuming: the run's config, vocabulary, state dicts and loop position."""

    path: Path
    config: Config
    vocab: Vocab
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    run: dict[str, Any]  # the loop's position, as `save_run` was given it


@dataclass(frozen=True)
class ModelCheckpoint:
    """A checkpoint read for inference: the model (in eval mode) with its vocabulary and config."""

    path: Path
    model: CharRNN
    vocab: Vocab
    config: Config
    run: dict[str, Any]


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
             scaler: torch.amp.GradScaler, run: dict[str, Any]) -> None:
    """Write a resumable checkpoint of the run atomically to `path`; `run` holds tensors and plain values only."""
    if not isinstance(run, dict):  # an object would pickle its class, which weights_only loading refuses
        raise TypeError(f"run must be a dict of tensors and plain values, not {type(run).__name__}")
    state = {"format_version": FORMAT_VERSION, "config": config.to_dict(), "vocab": vocab.chars,
             "byte_level": vocab.byte_level, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "run": run}
    write_atomic(path, lambda f: torch.save(state, f), "checkpoint", make_parent=True)


def load_run(path: Path) -> RunCheckpoint:
    """Read a checkpoint (or a run dir's best.pt) for resuming; its tensors stay on the CPU."""
    path = resolve(path)
    state = _read(path)
    return RunCheckpoint(path, _config(state, path), Vocab(state["vocab"], state["byte_level"]), state["model"],
                         state["optimizer"], state["scaler"], state["run"])


def load_model(path: Path, device: torch.device | str = "cpu") -> ModelCheckpoint:
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
    return ModelCheckpoint(path, model, vocab, config, state["run"])


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
    best = run.get("best_val_loss", math.inf)
    shown = "".join(c if c.isprintable() and c != " " else repr(c)[1:-1] or "?" for c in vocab.chars[:80])
    lines = [f"checkpoint:  {loaded.path}",
             f"cell:        {loaded.config.model.cell} ({loaded.config.model.num_layers} x "
             f"{loaded.config.model.hidden_size})",
             f"step:        {run.get('step', 0)} (epoch {run.get('epoch', 0)}, window {run.get('window', 0)})",
             f"best val:    {best:.4f} nats/char ({bpc(best):.4f} bpc)" if math.isfinite(best)
             else "best val:    (not evaluated yet)",
             f"parameters:  {loaded.model.num_params():,}",
             f"vocabulary:  {vocab.size} {'bytes' if vocab.byte_level else 'characters'}: {shown}"
             + (" ..." if vocab.size > 80 else ""),
             f"corpus hash: {str(run.get('corpus_hash', ''))[:16]}",
             "config:"]
    return lines + ["  " + line for line in loaded.config.to_toml().splitlines()]


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
    if not missing and not isinstance(state["run"], dict):
        missing = ["a run state"]
    if missing:
        raise UserError(f"{path} is a damaged charrnn checkpoint: it lacks {', '.join(missing)}")
    return state


def _upgrade_v1(state: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the run's position at the top level and had no run id."""
    run = {key: state[key] for key in _V1_RUN_KEYS if key in state}
    return {**{k: v for k, v in state.items() if k not in _V1_RUN_KEYS}, "run": {"run_id": "", **run}}


# Keys added since a release saved checkpoints, with the value that gives what that release did: a run saved before
# data.split held out the corpus's tail, and one saved before train.eval_streams validated on the batch's streams.
_ADDED = (("data", "split", "tail"), ("train", "eval_streams", 0))


def _config(state: dict[str, Any], path: Path) -> Config:
    config = state["config"]
    for section, key, then in _ADDED:
        if isinstance(config, dict) and isinstance(config.get(section), dict) and key not in config[section]:
            config = {**config, section: {**config[section], key: then}}
    try:
        return from_dict(config)
    except UserError as e:
        raise UserError(f"{path} holds a config this charrnn cannot use: {e}") from None
