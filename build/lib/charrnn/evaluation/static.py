"""Loss and bits per character over a split or any text file, carrying the hidden state."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from charrnn.data.batching import Streams
from charrnn.data.encoding import load_model_and_text
from charrnn.devices import resolve_device
from charrnn.errors import UserError
from charrnn.model import CharRNN, bpc, cross_entropy, eval_mode
from charrnn.training.distributed import World

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
def evaluate(model: CharRNN, streams: Streams, world: World, *, windows: int | None = None, progress: bool = False,
             check: Callable[[], None] = lambda: None) -> tuple[float, int]:
    """Mean fp32 loss (nats/char) over the first `windows` windows of `streams` (all when None), summed over ranks.

    `check` runs before each window and may raise `Stopped` to abandon the evaluation.
    """
    count = len(streams) if windows is None else min(windows, len(streams))
    total = torch.zeros((), dtype=torch.float64, device=world.device)
    scored = 0
    hidden = None
    with eval_mode(model):
        for index in tqdm(range(count), desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
            check()
            x, y = (t.to(world.device, non_blocking=True) for t in streams.window(index))
            logits, hidden = model(x, hidden)
            total += cross_entropy(logits, y, reduction="sum").double()
            scored += y.numel()
    chars = world.sum(torch.tensor(scored, device=world.device))
    return world.sum(total).item() / chars.item(), int(chars.item())


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
    world = World(resolve_device(device))
    found = load_model_and_text(checkpoint, text_file, world.device)
    streams = min(streams, len(found.ids) - 1)
    seq_len = min(FILE_SEQ_LEN, math.ceil((len(found.ids) - 1) / streams))
    loss, chars = evaluate(found.loaded.model, Streams.of(found.ids, streams, seq_len), world, progress=progress)
    return EvalResult(loss, chars, found.skipped)
