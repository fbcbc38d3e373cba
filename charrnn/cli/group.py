"""The `charrnn` command group: one-line errors instead of tracebacks, exit statuses, and the shared helpers."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from charrnn import __version__
from charrnn.config import MAX_INT
from charrnn.errors import UserError
from charrnn.files import describe_os_error


class _Group(click.Group):
    """Turns library errors into one-line messages and Ctrl-C into exit status 130, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\naborted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # e.g. `charrnn sample ... | head`: the reader has all it wanted
            _discard_stdout()
            sys.exit(0)
        except OSError as e:
            if e.filename is not None:  # a file the command used, which no check above foresaw: name it
                note(f"Error: {e.filename}: {describe_os_error(e)}")
                sys.exit(1)
            _discard_stdout()  # stdout on a full disk, a closed terminal: nothing more can be shown there
            note(f"Error: cannot write the output: {e.strerror or e}")
            sys.exit(1)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit has nowhere to fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}  # the shell's 128 + signal number


def note(message: str) -> None:
    """A message on stderr; if stderr is full or closed, the message is lost but the work goes on."""
    try:
        click.echo(message, err=True)
    except OSError:
        pass


def is_utf8(text: str) -> bool:
    """False for a path that held undecodable bytes (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def on_terminal() -> bool:
    """Progress bars only on a terminal: in logs and pipes they are noise."""
    return sys.stderr.isatty()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charrnn")
def main() -> None:
    """charrnn: train character-level language models (LSTM, GRU or RNN) on any text, and sample from them."""


def refuse_combined(option: str, given: bool, *others: str) -> None:
    """UserError when `option` is given together with any of the `others` (parameter names) given explicitly."""
    ctx = click.get_current_context()
    clash = [f"--{name.replace('_', '-')}" for name in others
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given and clash:
        raise UserError(f"{option} cannot be combined with {', '.join(clash)}")


def count(minimum: int = 0, maximum: int = MAX_INT) -> click.IntRange:
    """An integer option in [minimum, maximum]; click names the option when a value is outside."""
    return click.IntRange(minimum, maximum)


class FiniteFloat(click.FloatRange):
    """A float option in a range that also refuses nan and inf, which every comparison of FloatRange lets through."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '10m', '1h30m', '1.5h' or '2m30s'; anything else is a ValueError."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.fullmatch(text)
        if not text or match is None:
            raise ValueError(f"{text!r} is not a duration such as 90, 90s, 10m or 1h30m") from None
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = 3600 * hours + 60 * minutes + secs
    if not 0 <= seconds < math.inf:
        raise ValueError(f"{text!r} is not a duration of zero or more seconds")
    return seconds


class Duration(click.ParamType):
    """Seconds, or a duration such as 90s, 10m or 1h30m."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


# What several commands take, spelled once.
checkpoint_argument = click.argument("checkpoint", type=click.Path(path_type=Path), metavar="CKPT_OR_RUN_DIR")
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
