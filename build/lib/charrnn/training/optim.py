"""AdamW and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from charrnn.config import TrainConfig
from charrnn.model import CharRNN


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warmup over warmup_steps, then cosine (or constant) decay to lr * min_lr_ratio.

    `progress` in [0, 1] is how far the run is: by steps, or by time under a time budget.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: CharRNN, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW that decays matrices only: biases are few, and decaying them only hurts."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=device.type == "cuda")
