"""`charrnn visualize`: find the cells that track quotes, lines and brackets, and write a page to browse them.

The model reads a stretch of text with its state carried, warmed up on the WARMUP_CHARS before it.
Every probe (see `charrnn.inspection.probes`) gets its best cell, chosen on the first half and scored on the
second, beside the same figure for a randomly initialised model of the same shape: the control,
which shows how much of a score the architecture and the text give for free. The page is one
HTML file with its CSS, script and data inline, so it opens offline and can be mailed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn.checkpoint import checkpoint_dir, resolve
from charrnn.config import Config
from charrnn.data.encoding import load_model_and_text
from charrnn.devices import resolve_device
from charrnn.errors import UserError
from charrnn.inspection.activations import Activations, record
from charrnn.inspection.code import language_of
from charrnn.inspection.probes import Probe, Result, make_probes, rank_probes
from charrnn.model import CharRNN, Hidden
from charrnn.vocab import Vocab

DEFAULT_CHARS = 20_000
WARMUP_CHARS = 1_000  # characters before --offset read first, so the page does not open on a blank state
CONTROL_SEED = 0
GUESS_CHARS = 100_000  # characters of the file that a guess of its language reads


@dataclass(frozen=True)
class Visualization:
    """A model's activations over a text, with every probe's ranking."""

    checkpoint: Path
    text_file: Path
    model: CharRNN
    vocab: Vocab
    config: Config  # the run's, which says what its corpus and split were
    text: str
    ids: np.ndarray  # (T,) the text's ids
    offset: int  # where the text starts in the file, in characters the model knows
    skipped: int  # characters of the file outside the vocabulary, left out
    start: Hidden | None  # the state before the text's first character (None: blank)
    acts: Activations
    surprisal: np.ndarray  # (T,) bits: -log2 p of each character given the ones before; NaN for the first, cold
    language: str | None  # how the code probes read the text: 'python', 'c', or None for prose
    probes: list[Probe]  # in the order of `results`: largest margin first
    results: list[Result]


def visualize(checkpoint: Path, text_file: Path, *, chars: int = DEFAULT_CHARS, offset: int = 0,
              device: str = "auto", user_probes: dict[str, re.Pattern[str]] | None = None,
              language: str | None = None) -> Visualization:
    """Run the checkpoint and a random-init control over `chars` characters of `text_file` from `offset`.

    The offset counts characters the model knows: those outside its vocabulary are left out first.
    `language` ('python' or 'c') is how the code probes read the text; by default the file's name says.
    """
    if chars < 1:
        raise UserError(f"--chars must be >= 1, got {chars}")
    if offset < 0:
        raise UserError(f"--offset must be >= 0, got {offset}")
    chars, offset = min(chars, 2**62), min(offset, 2**62)  # numpy indexes with 64-bit integers; no text is longer
    found = load_model_and_text(checkpoint, text_file, resolve_device(device), min_chars=1, purpose="visualize")
    loaded, ids, skipped = found.loaded, found.ids, found.skipped
    if offset >= len(ids):
        raise UserError(f"--offset {offset:,} is past the end of {text_file} ({len(ids):,} characters the model knows)")
    prefix, window = ids[max(0, offset - WARMUP_CHARS) : offset], ids[offset : offset + chars]
    state, first = _warm(loaded.model, prefix)
    text = loaded.vocab.decode(window.tolist())
    sample = text if len(text) >= GUESS_CHARS else loaded.vocab.decode(ids[:GUESS_CHARS].tolist())
    language = language_of(text_file, sample, language)  # guessed from more of the file than a short window
    before = loaded.vocab.decode(ids[:offset].tolist()) if language is not None else ""
    acts, probes, results = probe_text(loaded.model, window, text, language, user_probes, prefix, before, state)
    return Visualization(loaded.path, Path(text_file), loaded.model, loaded.vocab, loaded.config, text, window, offset,
                         skipped, state, acts, _surprisal(acts.probs, window, first), language, probes, results)


def probe_text(model: CharRNN, ids: np.ndarray, text: str, language: str | None,
               user_probes: dict[str, re.Pattern[str]] | None = None,
               prefix: np.ndarray | None = None, before: str = "",
               state: Hidden | None = None) -> tuple[Activations, list[Probe], list[Result]]:
    """The model's activations over `text` (its `ids`, read after `prefix`, which left it in `state` when the
    caller has warmed it already), and every probe's ranking beside the random-init control's, largest margin
    first; `before` is the file's text before `text`."""
    prefix = np.zeros(0, np.int64) if prefix is None else prefix
    acts = record(model, ids, state if state is not None else _warm(model, prefix)[0])
    control_model = _control(model)
    control = record(control_model, ids, _warm(control_model, prefix)[0], dtype=np.float16)  # half the memory
    probes = make_probes(text, user_probes, language, before)
    probes, results = by_margin(probes, rank_probes(acts, probes, control))
    return acts, probes, results


@torch.no_grad()
def _warm(model: CharRNN, prefix: np.ndarray) -> tuple[Hidden | None, np.ndarray | None]:
    """The state after reading `prefix` (None when empty) and its distribution of the next character."""
    if len(prefix) == 0:
        return None, None
    ids = torch.as_tensor(prefix.astype(np.int64), device=model.embed.weight.device)
    logits, hidden = model(ids[None])  # (1, T, V)
    return hidden, logits[0, -1].float().softmax(-1).cpu().numpy()


def _control(model: CharRNN) -> CharRNN:
    """A randomly initialised model of the same shape, the same for every run (and leaving torch's RNG as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(CONTROL_SEED)
        control = CharRNN(model.vocab_size, model.cfg)
    return control.to(model.embed.weight.device).eval()


def _surprisal(probs: np.ndarray, ids: np.ndarray, first: np.ndarray | None) -> np.ndarray:
    """(T,) bits of each character given those before it; NaN for the first when nothing came before."""
    out = np.full(len(ids), np.nan)
    seen = probs[np.arange(len(ids) - 1), ids[1:]]
    out[1:] = -np.log2(np.maximum(seen, 1e-30))
    if first is not None:
        out[0] = -math.log2(max(float(first[ids[0]]), 1e-30))
    return out


def by_margin(probes: list[Probe], results: list[Result]) -> tuple[list[Probe], list[Result]]:
    """Probes and their results, largest margin first; those without a control, then the undefined, last."""
    def key(pair: tuple[Probe, Result]) -> tuple[int, float]:
        result = pair[1]
        if result.margin is not None:
            return 0, -result.margin
        return (1, -result.score) if result.score is not None else (2, 0.0)

    pairs = sorted(zip(probes, results, strict=True), key=key)
    return [p for p, _ in pairs], [r for _, r in pairs]


def default_out(checkpoint: Path) -> Path:
    """visualize.html in the run dir: the one given, or the one holding the checkpoint file."""
    path = resolve(checkpoint)
    run_dir = path.parent.parent if path.parent.name == checkpoint_dir(Path()).name else path.parent
    return run_dir / "visualize.html"


def ranking(vis: Visualization) -> dict[str, object]:
    """What `--json` writes: each probe's held-out score and control, and what was read."""
    return {"probes": [r.to_dict() for r in vis.results], "chars": len(vis.text), "offset": vis.offset,
            "skipped": vis.skipped, "bpc": mean_bits(vis.surprisal), "language": vis.language,
            "checkpoint": str(vis.checkpoint),
            "text_file": str(vis.text_file)}


def format_table(results: list[Result]) -> list[str]:
    """The ranking as aligned text lines, a header first."""
    lines = [f"{'probe':<16}{'kind':<9}{'layer':>5}{'cell':>6}  {'signal':<8}{'score':>7}{'control':>9}"
             f"{'margin':>8}"]
    for r in results:
        if r.score is None:
            lines.append(f"{r.name:<16}{r.kind:<9}{'-':>5}{'-':>6}  {'-':<8}{'-':>7}{'-':>9}{'-':>8}  ({r.note})")
            continue
        control = "-" if r.control is None else f"{r.control:.3f}"
        margin = "-" if r.margin is None else f"{r.margin:+.3f}"
        lines.append(f"{r.name:<16}{r.kind:<9}{r.layer:>5}{r.cell:>6}  {r.signal:<8}{r.score:>7.3f}{control:>9}"
                     f"{margin:>8}")
    return lines


def mean_bits(surprisal: np.ndarray) -> float | None:
    """Bits per character over the characters whose surprisal is known."""
    known = surprisal[~np.isnan(surprisal)]
    return round(float(known.mean()), 4) if len(known) else None
