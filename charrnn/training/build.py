"""Setting a run up: the corpus split into streams, the model, optimizer and loss scaler, and a resume's state."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from charrnn.config import Config, TrainConfig
from charrnn.data.batching import Streams, fit_batch
from charrnn.data.encoding import Corpus
from charrnn.data.split import Split
from charrnn.devices import available_memory, check_precision
from charrnn.errors import UserError
from charrnn.model import CharRNN, adaptive, training_bytes
from charrnn.training import rundir
from charrnn.training.distributed import World, restore_rng
from charrnn.training.optim import load_moments, make_optimizer
from charrnn.training.precision import Choice, choose_precision
from charrnn.training.resume import Resume
from charrnn.training.state import RunState
from charrnn.training.stopping import limit_reached
from charrnn.vocab import Vocab


@dataclass(frozen=True)
class Parts:
    """The objects of one run; its position lives in RunState."""

    model: CharRNN  # the raw module: what is saved, sampled and evaluated
    net: torch.nn.Module  # what trains: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: str  # train.precision with 'auto' resolved for this device: 'fp32', 'bf16' or 'fp16'
    precision_why: str  # what decided 'auto', for the user
    vocab: Vocab
    train: Streams  # this process's rows
    val: Streams
    val_windows: int | None  # validation scores this many windows of `val` (train.eval_chars); None: all
    reset_offsets: Tensor  # (B,) each stream's phase for train.reset_every


# Validation's window where train.eval_streams sets its streams: the presets', so that a run of any window scores
# exactly train.eval_chars (rounded up to whole windows) of the same text.
VAL_SEQ_LEN = 100


@dataclass(frozen=True)
class StreamShapes:
    """How a split is cut into streams: training's batch and window, and validation's."""

    batch: int
    seq_len: int
    val_batch: int
    val_seq_len: int
    val_windows: int | None  # validation scores this many windows of every stream (train.eval_chars); None: all
    warnings: tuple[str, ...]

    def val_streams(self, split: Split, rows: slice = slice(None)) -> Streams:
        """The validation streams, as every evaluation of the run reads them."""
        return Streams.of(split.val, self.val_batch, self.val_seq_len, rows)


def stream_shapes(tc: TrainConfig, split: Split, processes: int = 1) -> StreamShapes:
    """Training's batch and window that fit the split (shrunk, with a warning, when it is short), and validation's:
    `train.eval_streams` streams of VAL_SEQ_LEN, fewer where the split is short (0: the batch's, as training's)."""
    if tc.batch_size % processes:
        raise UserError(f"train.batch_size {tc.batch_size} must be divisible by the {processes} processes")
    batch, seq_len, warning = fit_batch(len(split.train), tc.batch_size, tc.seq_len, "train", processes)
    if tc.eval_streams:  # the same streams for any batch, window and number of processes (`World.rows`)
        val_batch, val_seq_len, _ = fit_batch(len(split.val), tc.eval_streams, VAL_SEQ_LEN, "validation")
        if val_batch < processes:  # a split too short for a stream each
            val_batch, val_seq_len, _ = fit_batch(len(split.val), processes, VAL_SEQ_LEN, "validation", processes)
        val_warning = ""  # a split too short for them is scored whole in fewer: nothing the user chose has changed
    else:
        val_batch, val_seq_len, val_warning = fit_batch(len(split.val), batch, seq_len, "validation", processes)
    # train.eval_chars caps each validation at the first windows of every stream: the same text every time.
    val_windows = math.ceil(tc.eval_chars / (val_batch * val_seq_len)) if tc.eval_chars else None
    warnings = tuple(w for w in (warning, val_warning) if w)
    return StreamShapes(batch, seq_len, val_batch, val_seq_len, val_windows, warnings)


def build(cfg: Config, world: World, corpus: Corpus, split: Split, echo: Callable[[str], None]) -> Parts:
    """Cut the split corpus into streams and build the model, optimizer and loss scaler."""
    tc = cfg.train
    shapes = stream_shapes(tc, split, world.size)
    for w in shapes.warnings:
        echo("warning: " + w)
    batch, seq_len = shapes.batch, shapes.seq_len
    check_memory(cfg, corpus.vocab.size, batch // world.size, seq_len, world)
    choice = _agreed_precision(cfg, corpus.vocab.size, batch // world.size, seq_len, world)
    precision = choice.precision
    check_precision(precision, world.device, cfg.model.cell)
    torch.manual_seed(tc.seed)  # the same initial weights in every process
    model = CharRNN(corpus.vocab.size, cfg.model, symbol_counts(split.train, corpus.vocab.size)
                    if adaptive(corpus.vocab.size, cfg.model) else None).to(world.device)
    model.rnn.flatten_parameters()  # one contiguous weight buffer for cuDNN
    net = model
    if world.enabled:  # an adaptive head's rare cluster has no gradient in a step without a rare symbol
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None,
            find_unused_parameters=model.adaptive)
    global_index = torch.arange(batch)[world.rows(batch)]
    return Parts(
        model=model, net=net, optimizer=make_optimizer(model, tc, world.device),
        # cuDNN's LSTM runs in fp16 under autocast even when bf16 is asked for, so both need loss scaling.
        scaler=torch.amp.GradScaler(world.device.type, enabled=world.device.type == "cuda" and precision != "fp32"),
        precision=precision, precision_why=choice.why, vocab=corpus.vocab,
        train=Streams.of(split.train, batch, seq_len, world.rows(batch)),
        val=shapes.val_streams(split, world.rows(shapes.val_batch)), val_windows=shapes.val_windows,
        reset_offsets=(global_index * max(tc.reset_every, 1) // batch).to(world.device))


def symbol_counts(train: np.ndarray, vocab_size: int) -> Tensor:
    """How often each symbol occurs in the training split: the order an adaptive head ranks them in."""
    return torch.from_numpy(np.bincount(train, minlength=vocab_size).astype(np.int64))


def _agreed_precision(cfg: Config, vocab_size: int, batch_size: int, seq_len: int, world: World) -> Choice:
    """train.precision for this run; under DDP the main process measures 'auto' and the others take its word."""
    tc = cfg.train
    choice = choose_precision(tc.precision, cfg.model, vocab_size, batch_size, seq_len, world.device) \
        if world.is_main or tc.precision != "auto" else None
    if world.enabled and tc.precision == "auto":
        bf16 = world.agree(int(choice is not None and choice.precision == "bf16"))
        choice = Choice("bf16" if bf16 else "fp32", choice.why if choice is not None else "")
    assert choice is not None
    return choice


def check_memory(cfg: Config, vocab_size: int, batch_size: int, seq_len: int, world: World) -> None:
    """Refuse a model that cannot fit before allocating it, naming the estimate."""
    need, free = training_bytes(vocab_size, cfg.model, batch_size, seq_len), available_memory(world.device)
    if free is not None and need > free:
        m = cfg.model
        raise UserError(f"a {m.num_layers} x {m.hidden_size} {m.cell} (embed_dim {m.embed_dim}) needs about "
                        f"{need / 2**30:,.1f} GiB to train, but {world.device} has {free / 2**30:,.1f} GiB free; "
                        "use a smaller model.hidden_size, model.num_layers or model.embed_dim")


def restore(resume: Resume, parts: Parts, corpus: Corpus, world: World, tc: TrainConfig, run_dir: Path) -> RunState:
    """Load the saved weights, optimizer and RNG into the run's objects; the saved position comes back."""
    state, saved = resume.state, resume.checkpoint
    rundir.check_identity(run_dir, state.run_id)
    state.run_id = state.run_id or agreed_run_id(world)  # format 1 checkpoints had none
    if state.corpus_hash != corpus.content_hash:
        raise UserError(f"{corpus.path} is not the text this run was trained on (its content hash differs); "
                        "resume needs the same corpus")
    limit = limit_reached(tc, state, len(parts.train))
    if limit is not None:
        raise UserError(f"{run_dir} already stopped at step {state.step} by its {limit} limit; raise it to "
                        f"continue, e.g. --max-steps {tc.max_steps * 2}")
    parts.model.load_state_dict(saved.model)
    load_moments(parts.optimizer, saved.optimizer)
    parts.scaler.load_state_dict(saved.scaler)
    if len(state.rng) == world.size:
        restore_rng(state.rng[world.rank], world)
    else:  # a different number of processes: fresh, but still seeded, dropout masks
        torch.manual_seed(tc.seed + world.rank + 1_000_003 * state.step)
    return state


def agreed_run_id(world: World) -> str:
    """A new run id, the same in every process."""
    ids = [uuid.uuid4().hex]
    if world.enabled:
        torch.distributed.broadcast_object_list(ids, src=0)
    return ids[0]


def skip_dir(run_dir: Path) -> Callable[[Path], bool]:
    """Directories a corpus leaves out: this run's own, and every other charrnn run dir inside it."""
    own = run_dir.resolve()
    return lambda d: d.resolve() == own or rundir.is_run_dir(d)


def report_corpus(corpus: Corpus, echo: Callable[[str], None]) -> None:
    """How the corpus was encoded (when it was), and what was left out of it."""
    if corpus.encode_seconds:
        mb = corpus.size_bytes / 1e6
        echo(f"encoded {mb:,.1f} MB into {len(corpus.ids):,} ids over {corpus.vocab.size} symbols in "
             f"{corpus.encode_seconds:.2f}s ({mb / corpus.encode_seconds:,.1f} MB/s, both passes); "
             + ("cached" if corpus.cached else "not cached (the cache dir is not writable)"))
    for note in corpus.notes:
        echo(note)
