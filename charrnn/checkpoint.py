"""The only place that calls torch.save / torch.load.

A checkpoint is a dict of tensors and plain Python types (config dict, vocabulary string,
format version), written atomically and read back with `weights_only=True`, so loading one
never runs code from it.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from charrnn.config import from_dict
from charrnn.corpus import Vocab
from charrnn.errors import UserError
from charrnn.model import CharLSTM

FORMAT_VERSION = 1
LAST, BEST = "last.pt", "best.pt"
_PERIODIC = re.compile(r"step-(\d+)\.pt$")


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
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    return path


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to a temp file beside `path`, fsync it, then atomically replace `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save({**state, "format_version": FORMAT_VERSION}, f)
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
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}; "
                        "the previous checkpoint is kept") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint (or a run dir's best.pt) onto `device`, refusing anything but plain data."""
    path = resolve(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except OSError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere inside the unpickler
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            raise UserError(f"{path} holds objects other than tensors and plain Python types; "
                            "refusing to load it (nothing in it was run)") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or corrupt)") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise UserError(f"{path} is not a charrnn checkpoint")
    if state["format_version"] != FORMAT_VERSION:
        raise UserError(f"{path} has checkpoint format {state['format_version']}; "
                        f"this charrnn reads format {FORMAT_VERSION}")
    return state


def save_periodic(run_dir: Path, step: int, state: dict[str, Any], keep_last: int) -> None:
    """Keep a copy as step-N.pt and delete all but the newest `keep_last` of them."""
    folder = checkpoint_dir(run_dir)
    save_checkpoint(folder / f"step-{step:08d}.pt", state)
    kept = sorted((p for p in folder.iterdir() if _PERIODIC.match(p.name)), key=lambda p: p.name)
    for old in kept[:-keep_last]:
        old.unlink(missing_ok=True)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[CharLSTM, Vocab, dict[str, Any]]:
    """The model and vocabulary of a checkpoint (or run dir), ready for inference on `device`."""
    state = load_checkpoint(path, device)
    cfg = from_dict(state["config"])
    vocab = Vocab(state["vocab"], state["byte_level"])
    model = CharLSTM(vocab.size, cfg.model)
    model.load_state_dict(state["model"])
    model = model.to(device).eval()
    model.lstm.flatten_parameters()
    return model, vocab, state


def describe(path: Path) -> list[str]:
    """Human-readable summary of a checkpoint: config, vocabulary, size, progress."""
    model, vocab, state = load_model(path, "cpu")
    best = state["best_val_loss"]
    shown = "".join(c if c.isprintable() and c != " " else repr(c)[1:-1] or "?" for c in vocab.chars[:80])
    lines = [f"checkpoint:  {resolve(path)}",
             f"step:        {state['step']} (epoch {state['epoch']}, window {state['window']})",
             f"best val:    {best:.4f} nats/char ({best / math.log(2):.4f} bpc)" if math.isfinite(best)
             else "best val:    (not evaluated yet)",
             f"parameters:  {model.num_params():,}",
             f"vocabulary:  {vocab.size} {'bytes' if vocab.byte_level else 'characters'}: {shown}"
             + (" ..." if vocab.size > 80 else ""),
             f"corpus hash: {state['corpus_hash'][:16]}",
             "config:"]
    return lines + ["  " + line for line in from_dict(state["config"]).to_toml().splitlines()]
