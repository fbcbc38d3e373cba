"""What the training loop keeps between the steps of one session: the carried state, the train scalars not yet
logged, the clock of training time, and why the run stops once that is decided."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from torch import Tensor

from charrnn.model import Hidden
from charrnn.training.state import RunState


class Clock:
    """Seconds spent inside `running()`: training time, without evaluating, sampling or saving."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds += time.monotonic() - start


@dataclass
class Session:
    """What the loop keeps between steps of this session, beside the run's own position (RunState)."""

    state: RunState
    hidden: Hidden  # this process's streams' carried state
    first_step: int  # where this session started: before it moves, there is nothing new to log or save
    wall_start: float  # time.monotonic() at which the run's elapsed time would have been 0
    clock: Clock = field(default_factory=Clock)
    pending: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (loss, grad norm) since the last log
    logged_at: float = 0.0  # clock.seconds at the last log
    eval_seconds: float = 0.0  # the last evaluation's length: the budget keeps that much for the final one
    stop: str | None = None  # why the run stops, once it is decided

    @property
    def moved(self) -> bool:
        return self.state.step > self.first_step

    def every(self, n: int) -> bool:
        """Whether this step is one of every `n` (never at the session's first, nor when `n` is 0)."""
        return self.moved and n > 0 and self.state.step % n == 0
