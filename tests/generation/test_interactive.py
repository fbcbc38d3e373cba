"""`charrnn sample --interactive` on a real pseudo-terminal and on piped input, and its : commands."""

import os
import pty
import select
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import charrnn
from charrnn.cli import main
from charrnn.generation.interactive import HELP, Settings, command
from tests.helpers import ROOT, run_cli

# Open the pty by name in the new session, which makes it the controlling terminal: then a typed
# Ctrl-C reaches the process as SIGINT, as in a real terminal. SIGINT's default comes back first: a suite
# started in the background by a script (`... &`) runs with SIGINT ignored, which every child inherits, and
# Python keeps an ignored SIGINT ignored, so no Ctrl-C would ever reach the session.
BOOT = ("import os, signal, sys; os.close(os.open(os.ttyname(0), os.O_RDWR)); "
        "signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.executable, [sys.executable, '-m', 'charrnn', *sys.argv[1:]])")


class Terminal:
    """`charrnn sample --interactive` on a pseudo-terminal: type into it, read what it shows."""

    def __init__(self, *args: object) -> None:
        self.fd, child = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-c", BOOT, "sample", *map(str, args), "--interactive"],
                                     stdin=child, stdout=child, stderr=child, cwd=ROOT, start_new_session=True)
        os.close(child)
        self.seen = b""

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def read_until(self, marker: bytes, timeout: float = 60) -> bytes:
        """Everything shown from the last marker up to and including the next `marker`."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen.replace(b"\r\n", b"\n"):  # the terminal shows newlines as CR LF
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {marker!r} within {timeout} s; the terminal shows {self.seen[-2000:]!r}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the process has exited and closed its end
                chunk = b""
            if not chunk:
                raise AssertionError(f"exited before {marker!r}; the terminal shows {self.seen[-2000:]!r}")
            self.seen += chunk
        shown, _, self.seen = self.seen.replace(b"\r\n", b"\n").partition(marker)
        return shown + marker

    def exit_code(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.fd)


@pytest.fixture
def terminal():
    made = []

    def start(*args: object) -> Terminal:
        made.append(Terminal(*args))
        return made[-1]

    yield start
    for t in made:
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait()


def test_a_session_streams_continuations_changes_settings_and_ends_on_ctrl_d(tiny_run, terminal):
    model = charrnn.load(tiny_run, device="cpu")
    term = terminal(tiny_run, "-n", 30, "--seed", 0)
    assert b"length 30, temperature 1.0" in term.read_until(b"> ")
    term.type(b"def \n")
    shown = term.read_until(b"> ")
    assert shown.startswith(b"def \ndef ")  # the echo of what was typed, then the continuation
    term.type(b":t 0\n")
    assert b"temperature 0.0" in term.read_until(b"> ")
    term.type(b":n 12\n")
    assert b"length 12" in term.read_until(b"> ")
    term.type(b"class\\n \n")  # \n in a prime is a newline
    assert term.read_until(b"> ").endswith(("class\n " + model.generate("class\n ", 12, temperature=0) + "\n> ")
                                           .encode())
    term.type(b"\x04")  # Ctrl-D
    assert term.exit_code() == 0


def test_ctrl_c_at_the_prompt_exits_cleanly(tiny_run, terminal):
    term = terminal(tiny_run)
    term.read_until(b"> ")
    # A signal that lands between the prompt and input()'s blocking read waits for the next key (CPython's
    # readline loop): a person is never that fast, a test can be.
    time.sleep(0.3)
    term.type(b"\x03")
    assert term.exit_code() == 0
    assert b"Traceback" not in term.seen
    assert b"aborted" not in term.seen


@pytest.mark.slow  # once, on a loaded machine, the Ctrl-C ended the session instead: see the closing note
def test_ctrl_c_while_streaming_stops_the_continuation_only(tiny_run, terminal):
    term = terminal(tiny_run, "-n", 10_000_000)
    term.read_until(b"> ")
    term.type(b"def \n")
    term.read_until(b"def \ndef ")
    term.type(b"\x03")
    term.read_until(b" [stopped]\n> ")  # the sampled text itself may hold "> ": wait for the whole marker
    term.type(b"\x04")
    assert term.exit_code() == 0


def test_piped_input_runs_the_same_loop_reproducibly(tiny_run):
    session = b"def \n:n 10\n:t 0.5\n:k 3\n:p 0.9\n:t hot\n:nope\nimport \n"
    first = run_cli("sample", tiny_run, "--interactive", "-n", 20, "--seed", 7, input=session)
    again = run_cli("sample", tiny_run, "--interactive", "-n", 20, "--seed", 7, input=session)
    assert first.stdout == again.stdout  # a seed makes a whole session reproducible
    out = first.stdout.decode()
    assert "length 10, temperature 0.5, top_k 3, top_p 0.9" in out
    assert ":t needs a number, e.g. :t 0.8" in out
    assert "unknown command ':nope'" in out
    continuation = out.split("> import ")[1].split("\n> ")[0]
    assert len(continuation) == 10


def test_commands_validate_their_values():
    settings = Settings(length=100)
    assert command(settings, ":t 0.3") == (Settings(length=100, temperature=0.3), "length 100, temperature 0.3, "
                                                                                 "top_k 0, top_p 1.0")
    assert command(settings, ":help") == (settings, HELP)
    new, message = command(settings, ":n -5")
    assert new == settings
    assert message == "error: length must be >= 0, got -5; kept length 100"
    new, message = command(settings, ":p 0")
    assert new == settings
    assert "top-p must be in (0, 1]" in message
    assert command(settings, ":k many")[1] == ":k needs an integer, e.g. :k 300"


def test_interactive_refuses_options_it_cannot_use(tiny_run):
    result = CliRunner().invoke(main, ["sample", str(tiny_run), "--interactive", "--prime", "def", "--beam-width", 2])
    assert result.exit_code == 1
    assert "--interactive cannot be combined with --prime, --beam-width" in result.output
