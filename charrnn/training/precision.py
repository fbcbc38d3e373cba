"""train.precision = "auto" on a CPU: time a few training steps of the run's own shape in fp32 and in bf16, and
train in the faster.

Whether bf16 pays depends on the CPU (AMX tiles, AVX-512 BF16, or neither, where it is emulated), on torch's
oneDNN and on the shape, so the choice is measured rather than read off a CPU flag. The timings come from
`charrnn.training.throughput`, which caches them per CPU, torch version, thread count and shape, so a second
run of the same shape (or one the planner measured) starts at once. On CUDA, auto means bf16 where the card
has it (see `charrnn.devices.resolve_precision`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.config import ModelConfig
from charrnn.devices import resolve_precision
from charrnn.training.throughput import step_seconds

MARGIN = 1.05  # bf16 must beat fp32 by this much: within timing noise, fp32 (exact) wins


@dataclass(frozen=True)
class Choice:
    precision: str  # 'fp32', 'bf16' or 'fp16'
    why: str  # for the user: what decided it


def choose_precision(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                     device: torch.device) -> Choice:
    """The precision a run trains in: `precision` itself unless it is 'auto'."""
    resolved = resolve_precision(precision, device, model_cfg.cell)
    if precision != "auto" or device.type != "cpu" or resolved == "fp32":
        reasons = {"cuda": {"bf16": "the card runs bf16", "fp32": "the card has no bf16"},
                   "cpu": {"fp32": "no bf16 kernel for this cell on this CPU"}}
        why = reasons.get(device.type, {}).get(resolved, "") if precision == "auto" else ""
        return Choice(resolved, why)
    fp32, cached_fp32 = step_seconds("fp32", model_cfg, vocab_size, batch_size, seq_len, device)
    bf16, cached_bf16 = step_seconds("bf16", model_cfg, vocab_size, batch_size, seq_len, device)
    return decide(fp32 / bf16, "cached" if cached_fp32 and cached_bf16 else "measured")


def decide(ratio: float, how: str) -> Choice:
    """`ratio` is bf16's speed as a multiple of fp32's."""
    return Choice("bf16" if ratio >= MARGIN else "fp32", f"{how}: bf16 trains this shape at {ratio:.2f}x fp32's speed")
