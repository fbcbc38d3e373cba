"""Loss and bits per character over a split or any text file, carrying the hidden state."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from charrnn.batching import Streams
from charrnn.checkpoint import load_model
from charrnn.corpus import encode_file
from charrnn.devices import resolve_device
from charrnn.distributed import Context
from charrnn.errors import UserError
from charrnn.metrics import bpc
from charrnn.model import CharRNN, cross_entropy, eval_mode

FILE_SEQ_LEN = 512  # window length when scoring a file; with the state carried it changes nothing but speed


@dataclass(frozen=True)
class EvalResult:
    loss: float  # nats per character
    chars: int  # characters scored
    skipped: int  # characters outside the vocabulary, left out

    @property
    def bpc(self) -> float:
        return bpc(self.loss)


@torch.no_grad()
def evaluate(model: CharRNN, streams: Streams, ctx: Context, *, windows: int | None = None, progress: bool = False,
             check: Callable[[], None] = lambda: None) -> tuple[float, int]:
    """Mean fp32 loss (nats/char) over the first `windows` windows of `streams` (all when None), summed over ranks.

    `check` runs before each window and may raise `Stopped` to abandon the evaluation.
    """
    count = len(streams) if windows is None else min(windows, len(streams))
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    scored = 0
    hidden = None
    with eval_mode(model):
        for index in tqdm(range(count), desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
            check()
            x, y = (t.to(ctx.device, non_blocking=True) for t in streams.window(index))
            logits, hidden = model(x, hidden)
            total += cross_entropy(logits, y, reduction="sum").double()
            scored += y.numel()
    chars = ctx.sum(torch.tensor(scored, device=ctx.device))
    return ctx.sum(total).item() / chars.item(), int(chars.item())


@torch.no_grad()
def score_ids(model: CharRNN, ids: Tensor, skip: int = 0, seq_len: int = FILE_SEQ_LEN) -> float:
    """Total nats of the targets of (N,) ids read as one stream with the state carried, leaving out the first `skip`."""
    inputs, targets = ids[:-1], ids[1:]
    total = torch.zeros((), dtype=torch.float64, device=ids.device)
    hidden = None
    with eval_mode(model):
        for start in range(0, len(inputs), seq_len):
            window = slice(start, start + seq_len)
            logits, hidden = model(inputs[None, window], hidden)  # (1, T, V)
            losses = cross_entropy(logits, targets[None, window], reduction="none")  # (T,)
            total += losses[max(skip - start, 0):].sum(dtype=torch.float64)
    return total.item()


def evaluate_file(checkpoint: Path, text_file: Path, device: str = "auto", streams: int = 1,
                  progress: bool = False) -> EvalResult:
    """Score a text file with a checkpoint as `streams` parallel streams (1: exact, the state carried throughout).

    Characters outside the vocabulary are skipped and counted. The result never depends on how the model was trained.
    """
    if streams < 1:
        raise UserError(f"--streams must be >= 1, got {streams}")
    ctx = Context(resolve_device(device))
    loaded = load_model(checkpoint, ctx.device)
    ids, skipped = encode_file(text_file, loaded.vocab, loaded.config.data.encoding)
    if len(ids) < 2:
        raise UserError(f"{text_file} has {len(ids)} character(s) the model knows, too few to score"
                        + (f" ({skipped:,} skipped: not in the model's vocabulary)" if skipped else ""))
    streams = min(streams, len(ids) - 1)
    seq_len = min(FILE_SEQ_LEN, math.ceil((len(ids) - 1) / streams))
    loss, chars = evaluate(loaded.model, Streams.of(ids, streams, seq_len), ctx, progress=progress)
    return EvalResult(loss, chars, skipped)
