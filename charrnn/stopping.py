"""When a run stops: its step and epoch limits, its time budget, and signals, agreed on by every process."""

from __future__ import annotations

import math
from collections.abc import Callable

from charrnn.checkpoint import RunState
from charrnn.config import TrainConfig
from charrnn.distributed import Context
from charrnn.signals import Stopped, StopSignals

SIGNALS = ("SIGINT", "SIGTERM")
# Why a run stops, as codes that processes can agree on with one all-reduce (MAX): signals win.
STOP_CODES: list[str | None] = [None, "max_steps", "max_epochs", "time_budget", "SIGTERM", "SIGINT"]


def limit_reached(tc: TrainConfig, state: RunState, epoch_windows: int) -> str | None:
    """The deterministic limits: every process reaches the same answer at the same step without talking."""
    if state.step >= tc.max_steps:
        return "max_steps"
    if tc.max_epochs and state.epoch + state.window / epoch_windows >= tc.max_epochs:
        return "max_epochs"
    return None


def stop_reason(tc: TrainConfig, state: RunState, epoch_windows: int, signals: StopSignals, ctx: Context,
                 eval_reserve: float) -> str | None:
    """Why to stop now, if at all. Deterministic limits come first, so that every process takes the same path."""
    limit = limit_reached(tc, state, epoch_windows)
    if limit is not None:
        return limit
    # Clocks and signals differ between processes: with several, they count only at log steps, agreed on by all.
    if ctx.enabled and state.step % tc.log_every:
        return None
    over_budget = tc.time_budget and state.elapsed + eval_reserve >= tc.time_budget  # keep time for the final eval
    reason = signals.received or ("time_budget" if over_budget else None)
    return STOP_CODES[ctx.agree(STOP_CODES.index(reason))]


def stop_check(signals: StopSignals, ctx: Context) -> Callable[[], None]:
    """What a long collective operation polls: with several processes, they give up together or not at all."""
    if not ctx.enabled:
        return signals.check

    def check() -> None:
        code = ctx.agree(STOP_CODES.index(signals.received))
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
