"""Ctrl-C and SIGTERM as a request to stop cleanly: long operations poll it and give up within a moment."""

from __future__ import annotations

import signal
from typing import Any


class Stopped(Exception):
    """A long operation gave up because SIGINT or SIGTERM arrived; the argument is the signal's name."""


class StopSignals:
    """The first SIGINT/SIGTERM asks the run to stop; a second SIGINT aborts at once."""

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
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
