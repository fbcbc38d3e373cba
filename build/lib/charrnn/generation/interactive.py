"""`charrnn sample --interactive`: type a prime, watch its continuation stream, change settings with `:` commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import BinaryIO, Protocol

from charrnn.errors import UserError
from charrnn.generation.sampling import check_sampling_options
from charrnn.vocab import Vocab


class Streamer(Protocol):
    """What the prompt needs of a model (`charrnn.api.CharModel` is one); its repr opens the session."""

    vocab: Vocab

    def stream(self, prime: str, length: int, temperature: float, top_k: int, top_p: float,
               seed: int | None) -> Iterator[str]: ...

HELP = """\
Type a prime and press Enter to see it continued; \\n in a prime is a newline, an empty line starts afresh.
  :t T    temperature (0 = greedy)      :n N    characters per continuation
  :k K    top-k (0 = no limit)          :p P    top-p (1 = no limit)
  :help   this text                     :q      quit (so do Ctrl-D and Ctrl-C at the prompt)
Ctrl-C while a continuation streams stops it."""

COMMANDS = {":t": ("temperature", float), ":n": ("length", int), ":k": ("top_k", int), ":p": ("top_p", float)}


@dataclass(frozen=True)
class Settings:
    """What each continuation uses; `:` commands replace one field at a time."""

    length: int = 500
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def describe(self) -> str:
        return ", ".join(f"{key} {value}" for key, value in asdict(self).items())


def run(model: Streamer, settings: Settings, out: BinaryIO, seed: int | None = None,
        read: Callable[[str], str] = input) -> None:
    """The prompt loop, until end of input, Ctrl-C at the prompt, or `:q`; a `seed` makes the session reproducible."""
    if sys.stdin.isatty():
        import readline  # noqa: F401 - gives input() line editing and history

    def say(text: str) -> None:
        out.write(text.encode() + b"\n")
        out.flush()

    say(f"{model!r}\n{settings.describe()}; :help for commands, Ctrl-D to quit")
    turn = 0
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):
            say("")
            return
        if line.strip() in (":q", ":quit"):
            return
        if line.startswith(":"):
            settings, message = command(settings, line)
            say(message)
            continue
        prime = line.replace("\\n", "\n")
        try:
            chars = model.stream(prime, **asdict(settings), seed=None if seed is None else seed + turn)
        except UserError as e:
            say(f"error: {e}")
            continue
        turn += 1
        out.write(model.vocab.to_bytes(prime))
        try:
            for char in chars:
                out.write(model.vocab.to_bytes(char))
                out.flush()
        except KeyboardInterrupt:
            out.write(b" [stopped]")
        say("")


def command(settings: Settings, line: str) -> tuple[Settings, str]:
    """Apply one `:` command; returns the new settings and what to tell the user."""
    name, _, arg = line.strip().partition(" ")
    if name in (":help", ":h", ":?"):
        return settings, HELP
    if name not in COMMANDS:
        return settings, f"unknown command {name!r}; :help lists them"
    field, kind = COMMANDS[name]
    try:
        new = replace(settings, **{field: kind(arg)})
        check_sampling_options(new.length, new.temperature, new.top_k, new.top_p)
    except ValueError:
        return settings, f"{name} needs {'an integer' if kind is int else 'a number'}, e.g. {name} " + (
            "300" if kind is int else "0.8")
    except UserError as e:
        return settings, f"error: {str(e).replace('--', '')}; kept {field} {getattr(settings, field)}"
    return new, new.describe()
