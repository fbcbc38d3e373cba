"""Where a run is: the loop's position beside its weights and optimizer, saved in every checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charrnn.errors import UserError
from charrnn.model import Hidden


@dataclass
class RunState:
    """Everything a resume needs beside the weights, the optimizer and the config."""

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

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values only, as a checkpoint stores them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, run: dict[str, Any], path: Path) -> RunState:
        """The state a checkpoint at `path` holds; a malformed one is a one-line error."""
        try:
            state = cls(**run)
            state.hidden = tuple(state.hidden)
        except TypeError:
            raise UserError(f"{path} is a damaged charrnn checkpoint: its run state is malformed") from None
        return state
