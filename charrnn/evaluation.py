"""Loss and bits per character over a whole split or any text file, carrying the hidden state."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from charrnn.batching import Streams, fit_batch
from charrnn.checkpoint import load_model
from charrnn.corpus import encode_file
from charrnn.distributed import Context, autocast, resolve_device
from charrnn.model import CharLSTM, cross_entropy


@dataclass(frozen=True)
class EvalResult:
    loss: float  # nats per character
    chars: int  # characters scored
    skipped: int  # characters outside the vocabulary, left out

    @property
    def bpc(self) -> float:
        return self.loss / math.log(2)


@torch.no_grad()
def evaluate(model: CharLSTM, streams: Streams, ctx: Context, precision: str = "fp32",
             progress: bool = False) -> tuple[float, int]:
    """Mean loss (nats/char) over every window of `streams`; summed over all processes."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=ctx.device)
    hidden = None
    for index in tqdm(range(len(streams)), desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
        x, y = (t.to(ctx.device, non_blocking=True) for t in streams.window(index))
        with autocast(ctx.device, precision):
            logits, hidden = model(x, hidden)
        total += cross_entropy(logits, y, reduction="sum").double()
    count = ctx.sum(torch.tensor(streams.chars_per_epoch, device=ctx.device))
    model.train(was_training)
    return ctx.sum(total).item() / count.item(), int(count.item())


def evaluate_file(checkpoint: Path, text_file: Path, device: str = "auto", progress: bool = False) -> EvalResult:
    """Score a text file with a checkpoint; characters outside its vocabulary are skipped and counted."""
    ctx = Context(resolve_device(device))
    model, vocab, state = load_model(checkpoint, ctx.device)
    train_cfg, data_cfg = state["config"]["train"], state["config"]["data"]
    ids, skipped = encode_file(text_file, vocab, data_cfg["encoding"])
    batch, seq, _ = fit_batch(len(ids), train_cfg["batch_size"], train_cfg["seq_len"], "evaluation")
    loss, chars = evaluate(model, Streams.of(ids, batch, seq), ctx, progress=progress)
    return EvalResult(loss, chars, skipped)
