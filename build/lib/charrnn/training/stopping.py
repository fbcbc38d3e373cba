"""When a run stops: its step and epoch limits, its time budget, and signals, agreed on by every process.

Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal, a dropped ssh session) are a request to
stop cleanly: long operations poll it and give up within a moment, and the run saves before it
exits. A second Ctrl-C aborts at once, without saving.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from typing import Any

from charrnn.config import TrainConfig
from charrnn.training.distributed import World
from charrnn.training.state import RunState

INTERRUPTS = ("SIGINT", "SIGTERM", "SIGHUP")  # the signals that stop a run, which saves first
# Why a run stops, as codes that processes can agree on with one all-reduce (MAX): signals win.
STOP_CODES: list[str | None] = [None, "max_steps", "max_epochs", "time_budget", "SIGHUP", "SIGTERM", "SIGINT"]


class Stopped(Exception):
    """A long operation gave up because one of INTERRUPTS arrived; the argument is the signal's name."""


class StopSignals:
    """The first of INTERRUPTS asks the run to stop; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def check(self) -> None:
        """Raise `Stopped` when a signal has arrived: call it between small pieces of a long operation."""
        if self.received:
            raise Stopped(self.received)

    def __enter__(self) -> StopSignals:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def limit_reached(tc: TrainConfig, state: RunState, epoch_windows: int) -> str | None:
    """The deterministic limits: every process reaches the same answer at the same step without talking."""
    if state.step >= tc.max_steps:
        return "max_steps"
    if tc.max_epochs and state.epoch + state.window / epoch_windows >= tc.max_epochs:
        return "max_epochs"
    return None


def stop_reason(tc: TrainConfig, state: RunState, epoch_windows: int, signals: StopSignals, world: World,
                 eval_reserve: float) -> str | None:
    """Why to stop now, if at all. Deterministic limits come first, so that every process takes the same path."""
    limit = limit_reached(tc, state, epoch_windows)
    if limit is not None:
        return limit
    # Clocks and signals differ between processes: with several, they count only at log steps, agreed on by all.
    if world.enabled and state.step % tc.log_every:
        return None
    # Keep time for the final evaluation; a run takes its first step whatever the budget, so it always has a model.
    over_budget = tc.time_budget and state.step > 0 and state.elapsed + eval_reserve >= tc.time_budget
    reason = signals.received or ("time_budget" if over_budget else None)
    return STOP_CODES[world.agree(STOP_CODES.index(reason))]


def stop_check(signals: StopSignals, world: World) -> Callable[[], None]:
    """What a long collective operation polls: with several processes, they give up together or not at all."""
    if not world.enabled:
        return signals.check

    def check() -> None:
        code = world.agree(STOP_CODES.index(signals.received))
        if code:
            raise Stopped(STOP_CODES[code])

    return check


def expected_steps(tc: TrainConfig, state: RunState, epoch_windows: int, steps_per_sec: float | None) -> int:
    """Where the run will stop, for the progress bar's total and ETA."""
    total = tc.max_steps
    if tc.max_epochs:
        total = min(total, math.ceil(tc.max_epochs * epoch_windows))
    if tc.time_budget and steps_per_sec:
        total = min(total, state.step + int((tc.time_budget - state.elapsed) * steps_per_sec))
    return max(total, state.step)
