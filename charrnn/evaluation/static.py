"""Loss and bits per character over a split or any text file, carrying the hidden state."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from charrnn.checkpoint import ModelCheckpoint, load_model
from charrnn.config import TrainConfig
from charrnn.data.batching import Streams
from charrnn.data.encoding import load_model_and_text
from charrnn.data.split import Split, split_of
from charrnn.devices import resolve_device
from charrnn.errors import UserError
from charrnn.evaluation.baselines import SCORED_CHARS, Baselines, baselines, compressor_bpc
from charrnn.evaluation.corpus import run_corpus
from charrnn.model import CharRNN, bpc, eval_mode
from charrnn.training.build import stream_shapes
from charrnn.training.distributed import World
from charrnn.vocab import Vocab

FILE_SEQ_LEN = 512  # window length when scoring a file; with the state carried it changes nothing but speed


@dataclass(frozen=True)
class EvalResult:
    loss: float  # nats per character
    chars: int  # characters scored
    skipped: int  # characters outside the vocabulary, left out
    baselines: Baselines | None = None  # the simple baselines on the same text, when asked for
    notes: tuple[str, ...] = ()  # why a baseline is missing or capped

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
            loss, hidden = model(x, hidden, y, reduction="sum")
            total += loss.double()
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
            losses, hidden = model(inputs[None, window], hidden, targets[None, window], reduction="none")  # (T,)
            total += losses[max(skip - start, 0):].sum(dtype=torch.float64)
    return total.item()


def evaluate_file(checkpoint: Path, text_file: Path, device: str = "auto", streams: int = 1,
                  progress: bool = False, with_baselines: bool = False) -> EvalResult:
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
    if not with_baselines:
        return EvalResult(loss, chars, found.skipped)
    return EvalResult(loss, chars, found.skipped, *file_baselines(found.loaded, found.ids))


def evaluate_split(checkpoint: Path, device: str = "auto", *, with_baselines: bool = True,
                   progress: bool = False) -> EvalResult:
    """Score the run's validation split exactly as its training scored it (the rule it recorded, train.eval_chars)."""
    world = World(resolve_device(device))
    loaded = load_model(checkpoint, world.device)
    corpus = run_corpus(loaded.config, loaded.vocab, "scoring the validation split reads")
    if loaded.run.get("corpus_hash") not in (None, "", corpus.content_hash):
        raise UserError(f"{corpus.path} has changed since training (its content hash differs), so its validation "
                        "split is not the run's; give FILE to score a file")
    split = split_of(corpus, loaded.config.data)
    shapes = stream_shapes(loaded.config.train, split)
    loss, chars = evaluate(loaded.model, shapes.val_streams(split), world, windows=shapes.val_windows,
                           progress=progress)
    found = split_baselines(loaded.config.train, split, loaded.vocab) if with_baselines else None
    return EvalResult(loss, chars, 0, found, found.notes if found else ())


def split_baselines(tc: TrainConfig, split: Split, vocab: Vocab) -> Baselines:
    """The baselines on the text a run's validation scores (all of its streams), trained on its training split."""
    shapes = stream_shapes(tc, split)
    return baselines_of(split.train, shapes.val_streams(split).read_ids(shapes.val_windows), vocab)


def file_baselines(loaded: ModelCheckpoint, ids: np.ndarray) -> tuple[Baselines, tuple[str, ...]]:
    """Baselines on a file's ids: the n-gram and unigram trained on the run's training split, when it is there."""
    try:
        corpus = run_corpus(loaded.config, loaded.vocab, "the n-gram and unigram baselines train on")
    except UserError as e:
        capped = ids[:SCORED_CHARS]
        bpc = compressor_bpc(_text_bytes(capped, loaded.vocab), len(capped))
        return Baselines(bpc, (), 0), (f"{e}: compressors only",)
    found = baselines_of(split_of(corpus, loaded.config.data).train, ids, loaded.vocab)
    return found, found.notes


def baselines_of(train: np.ndarray, scored: np.ndarray, vocab: Vocab) -> Baselines:
    """Every baseline of `charrnn.evaluation.baselines`, trained on `train`, on the text of `scored`."""
    return baselines(train, scored, vocab.size, lambda ids: _text_bytes(ids, vocab))


def _text_bytes(ids: np.ndarray, vocab: Vocab) -> bytes:
    return vocab.to_bytes(vocab.decode(ids.tolist()))


def summary(model_bpc: float, found: Baselines) -> str:
    """`model 2.09 bpc · 6-gram KN 2.52 · xz 2.95 · unigram 4.77`: the model first, then the baselines, best first."""
    ranked = sorted(found.bpc.items(), key=lambda item: item[1])
    return " · ".join([f"model {model_bpc:.2f} bpc", *(f"{name} {value:.2f}" for name, value in ranked)])
