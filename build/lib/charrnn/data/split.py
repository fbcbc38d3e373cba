"""The train/validation split: one rule, used by training, evaluation and inspection alike."""

from __future__ import annotations

import numpy as np


def split_point(num_ids: int, val_fraction: float) -> int:
    """Where validation starts: the last `val_fraction` of the corpus is held out."""
    return int(num_ids * (1 - val_fraction))


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(N,) ids -> the training ids and the validation ids, views of `ids`."""
    split = split_point(len(ids), val_fraction)
    return ids[:split], ids[split:]
