"""The training step: one window of truncated BPTT, AdamW, gradient clipping, and the scalars it logs."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from charrnn.checkpoint import LAST, checkpoint_dir
from charrnn.config import TrainConfig
from charrnn.devices import autocast
from charrnn.errors import UserError
from charrnn.model import Hidden, bpc, detach
from charrnn.training.build import Parts
from charrnn.training.distributed import World
from charrnn.training.optim import lr_at
from charrnn.training.state import RunState


def train_step(parts: Parts, tc: TrainConfig, state: RunState, hidden: Hidden,
               world: World) -> tuple[Tensor, Tensor, Hidden]:
    """One optimizer step on the next window; returns the loss, the pre-clip gradient norm and the new state."""
    progress = max(state.step / tc.max_steps, state.elapsed / tc.time_budget if tc.time_budget else 0.0)
    for group in parts.optimizer.param_groups:
        group["lr"] = lr_at(tc, state.step, progress)
    x, y = parts.train.window(state.window)  # (B, T) each; copies the window out of the memory map
    if world.device.type == "cuda":
        x, y = (t.pin_memory().to(world.device, non_blocking=True) for t in (x, y))
    with autocast(world.device, parts.precision):
        loss, hidden = parts.net(x, hidden, y)
    hidden = reset_some(detach(hidden), tc.reset_every, state.step, parts.reset_offsets)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    parts.scaler.unscale_(parts.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), tc.grad_clip or math.inf)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return loss.detach(), norm.detach(), hidden


def reset_some(hidden: Hidden, every: int, step: int, offsets: Tensor) -> Hidden:
    """Zero the state of the streams whose turn it is (see train.reset_every)."""
    if not every:
        return hidden
    keep = ((step + 1 + offsets) % every != 0).to(hidden[0].dtype)[None, :, None]  # (1, B, 1)
    return tuple(t * keep for t in hidden)


def train_scalars(pending: list[tuple[Tensor, Tensor]], seconds: float, parts: Parts, tc: TrainConfig,
                  state: RunState, world: World, run_dir: Path) -> dict[str, float]:
    """Train scalars over the steps since the last log; a NaN or inf loss stops the run."""
    values = torch.stack([torch.stack(p).float() for p in pending])  # (steps, 2): loss, pre-clip grad norm
    values = (world.sum(values) / world.size).tolist()  # one host sync
    for offset, (loss, _) in enumerate(values):
        if not math.isfinite(loss):
            diverged(f"the loss became {loss} at step {state.step - len(values) + offset + 1}", tc, run_dir)
    losses, norms = [v[0] for v in values], [v[1] for v in values]
    chars = len(values) * parts.train.batch_size * world.size * parts.train.seq_len
    loss = sum(losses) / len(losses)
    return {"train/loss": loss, "train/bpc": bpc(loss), "train/lr": parts.optimizer.param_groups[0]["lr"],
            "train/grad_norm": sum(norms) / len(norms), "train/grad_norm_max": max(norms),
            "train/clip_frac": sum(n > tc.grad_clip for n in norms) / len(norms) if tc.grad_clip else 0.0,
            "train/chars_per_sec": chars / max(seconds, 1e-9)}


def diverged(what: str, tc: TrainConfig, run_dir: Path) -> None:
    """Stop a run whose loss or weights went non-finite, saying how to go on."""
    lower = f"--set train.lr={tc.lr / 4:g}"
    if (checkpoint_dir(run_dir) / LAST).is_file():
        advice = f"The last good checkpoint is kept: resume with a lower lr, e.g. charrnn train --resume {run_dir}"
    else:
        advice = "No checkpoint was written yet: start again with a lower lr, e.g."
    raise UserError(f"{what}; stopped. {advice} {lower}")
