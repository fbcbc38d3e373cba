"""Probes: per-character labels of what a text is doing, and the cell that tracks each one best.

A probe gives every character of a text a value, read as the state *after* that character, the
moment the network's state after reading it is recorded. A binary probe is 0 or 1; a counter is
a whole number. The built-in probes:

- in_quote (binary): inside a double quote. A straight `"` toggles it; `“` turns it on and `”`
  off. The opening quote is inside, the closing one outside. A blank line (a newline right after a
  newline) turns it off, because prose leaves a quote open at the end of a paragraph when the
  speech goes on in the next, which opens it again.
- line_position (counter): characters read since the last newline: 0 at a newline, 1 at the first
  character of a line.
- bracket_depth (counter): how many of `(`, `[`, `{` are open, of any kind: an opening bracket
  counts itself, a closing one does not; a closing bracket with none open is ignored.
- indent_depth (counter): the leading spaces and tabs of the current line read so far, one per
  character: it grows through the indentation, then holds to the end of the line; 0 at a newline.
- in_comment (binary): inside a comment: `#` or `//` to the end of the line, or `/* ... */`. It is
  on from the character that makes the comment certain (the `#`, the second `/` of `//`, the `*`
  of `/*`) to the last character before the line's newline, or through the `*` of `*/`. Markers
  are found anywhere, inside string literals too, and `//` is taken for a comment even in Python.

The code probes, in_string, in_if and if_body_depth, are defined in `charrnn.inspection.code`.

A user probe `NAME=REGEX` is binary: 1 on every character inside a match of the regex (Python's
`re` syntax, searched over the whole text; empty matches mark nothing).

Scoring ranks every cell of every layer and signal (see `charrnn.inspection.activations.RECORDED`) by how
well its value separates or follows the probe: a sign-free AUROC, max(AUC, 1 - AUC), for a binary
probe, and |Spearman's rho| for a counter. Both depend only on the order of the values, so a cell
scores the same whatever its scale, offset or sign. The best cell is chosen on the first half of
the text and its score reported on the second half, so that taking the maximum over thousands of
cells does not flatter it. The same selection and score on a randomly initialised model of the
same shape is the control: what the architecture and the current character give for free. The
evidence of a cell is the margin, score - control, and results are shown sorted by it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from charrnn.errors import UserError
from charrnn.inspection.activations import Activations
from charrnn.inspection.code import code_probes

BINARY, COUNTER = "binary", "counter"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Probe:
    name: str
    kind: str  # BINARY or COUNTER
    values: np.ndarray  # (T,) int64: the probe's value after each character


@dataclass(frozen=True)
class Result:
    """A probe's best cell, chosen on the first half of the text, and its scores on the second half."""

    name: str
    kind: str
    layer: int | None = None
    cell: int | None = None
    signal: str | None = None
    score: float | None = None  # held out; None when undefined (see `note`)
    control: float | None = None  # the same selection and score on a randomly initialised model
    note: str = ""  # why a score is undefined

    @property
    def margin(self) -> float | None:
        """score - control: how much better than the current character alone predicts it (see docs/visualize.md)."""
        return None if self.score is None or self.control is None else self.score - self.control

    def to_dict(self) -> dict[str, object]:
        def rounded(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {"name": self.name, "kind": self.kind, "layer": self.layer, "cell": self.cell, "signal": self.signal,
                "score": rounded(self.score), "control": rounded(self.control), "margin": rounded(self.margin),
                "note": self.note or None}


def in_quote(text: str) -> np.ndarray:
    """1 inside a double-quoted span, see the module doc."""
    out = np.zeros(len(text), np.int64)
    inside, previous = 0, ""
    for i, ch in enumerate(text):
        if ch == '"':
            inside ^= 1
        elif ch == "\u201c":
            inside = 1
        elif ch == "\u201d" or (ch == "\n" and previous == "\n"):
            inside = 0
        out[i], previous = inside, ch
    return out


def line_position(text: str) -> np.ndarray:
    """Characters since the last newline: 0 at a newline, 1 at the first character of a line."""
    index = np.arange(len(text))
    newline = np.frombuffer(text.encode("utf-32-le"), np.uint32) == ord("\n")
    return index - np.maximum.accumulate(np.where(newline, index, -1))


def bracket_depth(text: str) -> np.ndarray:
    """Open brackets of any kind; a closing bracket with none open is ignored."""
    steps = np.array([1 if ch in "([{" else -1 if ch in ")]}" else 0 for ch in text], np.int64)
    total = np.cumsum(steps)
    # A walk held at 0 from below: subtract the lowest point it has reached so far (if below 0).
    return total - np.minimum(0, np.minimum.accumulate(total)) if len(text) else total


def indent_depth(text: str) -> np.ndarray:
    """Leading spaces and tabs of the current line read so far; 0 at a newline."""
    out = np.zeros(len(text), np.int64)
    depth, leading = 0, True
    for i, ch in enumerate(text):
        if ch == "\n":
            depth, leading = 0, True
        elif leading and ch in " \t":
            depth += 1
        else:
            leading = False
        out[i] = depth
    return out


def in_comment(text: str) -> np.ndarray:
    """1 inside a `#`, `//` or `/* */` comment, see the module doc."""
    out = np.zeros(len(text), np.int64)
    state, opened, previous = "", -1, ""  # state: "", "line" or "block"; opened: index of the block's `*`
    for i, ch in enumerate(text):
        if state == "line" and ch == "\n":
            state = ""
        elif state == "block" and ch == "/" and previous == "*" and i - 1 > opened:
            state, ch = "", ""  # the closing `/` cannot also begin a comment: `*//` holds no `//`
        elif not state and (ch == "#" or (ch == "/" and previous == "/")):
            state = "line"
        elif not state and ch == "*" and previous == "/":
            state, opened = "block", i
        out[i] = state != ""
        previous = ch
    return out


BUILTIN: dict[str, tuple[str, Callable[[str], np.ndarray]]] = {
    "in_quote": (BINARY, in_quote),
    "line_position": (COUNTER, line_position),
    "bracket_depth": (COUNTER, bracket_depth),
    "indent_depth": (COUNTER, indent_depth),
    "in_comment": (BINARY, in_comment),
}


def parse_probe(spec: str) -> tuple[str, re.Pattern[str]]:
    """'NAME=REGEX' -> (name, compiled regex); a UserError names what is wrong."""
    name, sep, pattern = spec.partition("=")
    if not sep or not _NAME.fullmatch(name):
        raise UserError(f"{spec!r} is not NAME=REGEX, with NAME a word such as in_if")
    if name in BUILTIN or name in CODE:
        raise UserError(f"{spec!r}: {name} is a built-in probe; choose another name")
    try:
        return name, re.compile(pattern)
    except re.error as e:
        raise UserError(f"{spec!r}: invalid regex: {e}") from None


def regex_values(pattern: re.Pattern[str], text: str) -> np.ndarray:
    """1 on every character inside a match of `pattern`."""
    out = np.zeros(len(text), np.int64)
    for match in pattern.finditer(text):
        out[match.start() : match.end()] = 1
    return out


CODE = {"in_string": BINARY, "in_if": BINARY, "if_body_depth": COUNTER}  # see charrnn.inspection.code


def make_probes(text: str, user: dict[str, re.Pattern[str]] | None = None, language: str | None = None,
                before: str = "") -> list[Probe]:
    """The built-in probes, then the user's regex probes, on `text`.

    The code probes read `text` as `language`, after `before` (the file up to `text`): a stretch that
    starts inside a docstring must know it does.
    """
    probes = [Probe(name, kind, fn(text)) for name, (kind, fn) in BUILTIN.items()]
    code = code_probes(before + text, language)  # one pass of the tokenizer for all three
    probes += [Probe(name, kind, code[name][len(before) :]) for name, kind in CODE.items()]
    return probes + [Probe(name, BINARY, regex_values(pattern, text)) for name, pattern in (user or {}).items()]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..T down each column of (T, N) values (or of a (T,) vector), ties sharing their average rank."""
    rows = np.ascontiguousarray(np.atleast_2d(values.T))  # (N, T): sorting along the last axis is contiguous
    count, length = rows.shape
    flat = np.argsort(rows, axis=1) + (np.arange(count) * length)[:, None]  # indices into rows.ravel()
    ordered = rows.ravel().take(flat)
    ranks = np.tile(np.arange(1, length + 1, dtype=np.float32), (count, 1))  # exact up to 2**23
    first = np.ones(rows.shape, bool)  # the first of each run of equal values
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    tied = ~first.all(axis=1)
    if tied.any():  # a run of equal values from position s to e shares the rank (s + e) / 2 + 1
        first = first[tied]
        last = np.ones(first.shape, bool)
        last[:, :-1] = first[:, 1:]
        index = np.arange(length, dtype=np.float32)
        start = np.maximum.accumulate(np.where(first, index, 0), axis=1)
        end = np.minimum.accumulate(np.where(last, index, length - 1)[:, ::-1], axis=1)[:, ::-1]
        ranks[tied] = (start + end) / 2 + 1
    out = np.empty(count * length, np.float32)
    out[flat.ravel()] = ranks.ravel()
    out = out.reshape(count, length)
    return out.T if values.ndim > 1 else out[0]


def scores(ranks: np.ndarray, probe: np.ndarray, kind: str) -> np.ndarray | None:
    """Each column's sign-free AUROC (binary) or |Spearman rho| (counter) against `probe`; None when it is constant.

    `ranks` is `average_ranks` of the (T, N) activations; `probe` is (T,).
    """
    count = len(probe)
    if count == 0 or (probe == probe[0]).all():
        return None
    if kind == BINARY:
        positive = probe.astype(bool)
        n1 = int(positive.sum())
        n0 = count - n1
        auc = (positive.astype(np.float64) @ ranks - n1 * (n1 + 1) / 2) / (n1 * n0)  # Mann-Whitney U / (n1 n0)
        return np.maximum(auc, 1 - auc)
    target = average_ranks(probe.astype(np.float64))
    target -= target.mean()
    centred = ranks - (count + 1) / 2  # average ranks always sum to T (T + 1) / 2, ties or not
    norm = np.sqrt((centred**2).sum(axis=0)) * np.sqrt((target**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.abs(target @ centred) / norm
    return np.nan_to_num(rho)  # a constant cell has no correlation


def rank_probes(acts: Activations, probes: list[Probe], control: Activations | None = None) -> list[Result]:
    """Each probe's best cell on the first half of the text, scored on the second half (and on `control`)."""
    half = len(acts.probs) // 2
    picks = _pick_best(acts, probes, half)
    control_picks = _pick_best(control, probes, half) if control is not None else {}
    results = []
    for probe in probes:
        held_out = probe.values[half:]
        note = _undefined(probe.values, held_out, half)
        if note:
            results.append(Result(probe.name, probe.kind, note=note))
            continue
        signal, layer, cell = picks[probe.name]
        score = _held_out_score(acts, (signal, layer, cell), held_out, half, probe.kind)
        control_score = None
        if probe.name in control_picks:
            control_score = _held_out_score(control, control_picks[probe.name], held_out, half, probe.kind)
        results.append(Result(probe.name, probe.kind, layer, cell, signal, score, control_score))
    return results


def _undefined(values: np.ndarray, held_out: np.ndarray, half: int) -> str:
    if not values.any():
        return "never fires on the text"
    if (values == values[0]).all():
        return "constant on the whole text"
    if (values[:half] == values[0]).all():
        return "constant on the first half, where the cell is chosen"
    if (held_out == held_out[0]).all():
        return "constant on the second half, where the cell is scored"
    return ""


def _pick_best(acts: Activations, probes: list[Probe], half: int) -> dict[str, tuple[str, int, int]]:
    """probe name -> (signal, layer, cell) of the best first-half score, over every signal, layer and cell."""
    best: dict[str, tuple[float, tuple[str, int, int]]] = {}
    for signal, values in acts.signals.items():
        for layer in range(values.shape[0]):
            ranks = average_ranks(values[layer, :half].astype(np.float32))  # (half, H)
            for probe in probes:
                found = scores(ranks, probe.values[:half], probe.kind)
                if found is None:
                    continue
                cell = int(np.argmax(found))
                if probe.name not in best or found[cell] > best[probe.name][0]:
                    best[probe.name] = (float(found[cell]), (signal, layer, cell))
    return {name: where for name, (_, where) in best.items()}


def _held_out_score(acts: Activations, where: tuple[str, int, int], held_out: np.ndarray, half: int,
                    kind: str) -> float:
    signal, layer, cell = where
    column = acts.signals[signal][layer, half:, cell].astype(np.float32)[:, None]  # (T - half, 1)
    return float(scores(average_ranks(column), held_out, kind)[0])
