"""The training loop: truncated BPTT with AdamW, warmup + cosine lr, gradient clipping, and periodic
evaluation, samples and checkpoints. It owns the step, the data position and the hidden state."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from charrnn import checkpoint, rundir
from charrnn.batching import Streams, fit_batch
from charrnn.checkpoint import RunState, Saved
from charrnn.config import Config, TrainConfig
from charrnn.corpus import Corpus, Vocab, load_corpus
from charrnn.devices import autocast, available_memory, resolve_precision
from charrnn.distributed import Context, gather_rng, restore_rng, setup, teardown
from charrnn.errors import UserError
from charrnn.evaluation import evaluate
from charrnn.metrics import MetricsLogger, NullLogger, bpc
from charrnn.model import CharRNN, Hidden, cross_entropy, detach, training_bytes
from charrnn.optim import lr_at, make_optimizer
from charrnn.sampling import sample_text
from charrnn.signals import Stopped, StopSignals
from charrnn.stopping import SIGNALS, expected_steps, limit_reached, stop_check, stop_reason

SAMPLE_TEMPERATURE = 0.8  # for the samples logged to TensorBoard: cooler than 1, still varied
# Settings a resumed run may change; anything else would make the saved state meaningless.
RESUMABLE = {"train." + k for k in ("lr", "min_lr_ratio", "weight_decay", "warmup_steps", "schedule",
                                    "grad_clip", "max_steps", "max_epochs", "time_budget", "eval_every",
                                    "eval_chars", "checkpoint_every", "keep_last", "sample_every",
                                    "sample_length", "log_every", "device", "precision")} | {"data.path"}
@dataclass(frozen=True)
class TrainResult:
    step: int
    best_val_loss: float
    val_loss: float | None  # at the end; None when interrupted before a final evaluation
    stopped_by: str  # max_steps, max_epochs, time_budget, SIGINT or SIGTERM
    run_dir: Path
    chars_per_sec: float  # training throughput of this session, evaluation and saving excluded

    @property
    def interrupted(self) -> bool:
        return self.stopped_by in SIGNALS


def open_resume(run_dir: Path) -> Saved:
    """The last checkpoint of `run_dir`, read once for `resume_config` and `train(resume=...)`."""
    path = checkpoint.checkpoint_dir(run_dir) / checkpoint.LAST
    if not path.is_file():
        raise UserError(f"nothing to resume in {run_dir}: no checkpoints/{checkpoint.LAST}")
    return checkpoint.load_run(path)


def resume_config(saved: Saved, overrides: Sequence[str] = (), values: Mapping[str, Any] | None = None) -> Config:
    """The saved config with `overrides` and dotted `values`, refusing changes that would break the run."""
    cfg = saved.config.with_overrides(overrides, values)
    old, new = saved.config.to_dict(), cfg.to_dict()
    for section, values in new.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            if value != old[section][key] and name not in RESUMABLE:
                raise UserError(f"cannot change {name} when resuming ({old[section][key]!r} -> {value!r}); "
                                "start a new run instead")
    return cfg


def train(cfg: Config, run_dir: Path, *, resume: Saved | None = None, overwrite: bool = False,
          echo: Callable[[str], None] = lambda s: None, progress: bool = True) -> TrainResult:
    """Train (or resume) a run in `run_dir`; messages go to `echo`, the progress bar to stderr.

    A signal while the corpus is being encoded raises `Stopped` (nothing has been written yet).
    """
    run_dir = Path(run_dir)
    rundir.check_run_dir(run_dir, resume is not None, overwrite)
    ctx = setup(cfg.train.device)
    try:
        if cfg.train.precision == "fp16" and ctx.device.type != "cuda":
            raise UserError(f"train.precision fp16 needs CUDA; use bf16 or fp32 on {ctx.device}")
        _check_memory(cfg, 1, cfg.train.batch_size // ctx.world_size, cfg.train.seq_len, ctx)  # before encoding
        with StopSignals() as signals:
            corpus = load_corpus(Path(cfg.data.path), cfg.data.encoding, include=cfg.data.include,
                                 exclude=cfg.data.exclude, skip_dir=_skip_dir(run_dir), verify=resume is not None,
                                 progress=progress and ctx.is_main, check=signals.check)
            return _run(cfg, run_dir, ctx, corpus, resume, overwrite, echo if ctx.is_main else (lambda s: None),
                        progress and ctx.is_main, signals)
    finally:
        teardown(ctx)


def _skip_dir(run_dir: Path) -> Callable[[Path], bool]:
    """Directories a corpus leaves out: this run's own, and every other charrnn run dir inside it."""
    own = run_dir.resolve()
    return lambda d: d.resolve() == own or rundir.is_run_dir(d)


@dataclass(frozen=True)
class _Parts:
    """The objects of one run; its position lives in RunState."""

    model: CharRNN  # the raw module: what is saved, sampled and evaluated
    net: torch.nn.Module  # what trains: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: str  # train.precision with 'auto' resolved for this device: 'fp32', 'bf16' or 'fp16'
    vocab: Vocab
    train: Streams  # this process's rows
    val: Streams
    val_windows: int  # validation scores this many windows of `val` (train.eval_chars)
    reset_offsets: Tensor  # (B,) each stream's phase for train.reset_every


class _Clock:
    """Seconds spent inside `running()`: training time, without evaluating, sampling or saving."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds += time.monotonic() - start


def _run(cfg: Config, run_dir: Path, ctx: Context, corpus: Corpus, resume: Saved | None, overwrite: bool,
         echo: Callable[[str], None], progress: bool, signals: StopSignals) -> TrainResult:
    tc = cfg.train
    _report_corpus(corpus, echo)
    parts = _build(cfg, ctx, corpus, echo)
    if tc.precision == "auto":
        echo(f"train.precision auto: {parts.precision} on {ctx.device}")
    if resume is None:
        state = RunState(run_id=_agreed_run_id(ctx), corpus_hash=corpus.content_hash)
        torch.manual_seed(tc.seed + ctx.rank)  # dropout masks differ between processes
    else:
        state = _restore(resume, parts, corpus, ctx, tc, run_dir)
    global_batch = parts.train.batch_size * ctx.world_size
    hidden = (tuple(t[:, ctx.rows(global_batch)].to(ctx.device) for t in state.hidden) if state.hidden
              else parts.model.init_hidden(parts.train.batch_size, ctx.device))
    if ctx.is_main:
        rundir.prepare(run_dir, state.run_id, cfg.to_toml(), fresh=resume is None, overwrite=overwrite)
    ctx.barrier()
    logger = MetricsLogger(run_dir, state.step if resume else None, warn=echo) if ctx.is_main else NullLogger()
    poll = stop_check(signals, ctx)
    bar = tqdm(total=expected_steps(tc, state, len(parts.train), None), initial=state.step, unit="step",
               disable=not progress, dynamic_ncols=True, desc="train")
    clock, first_step = _Clock(), state.step
    wall_start = time.monotonic() - state.elapsed
    pending: list[tuple[Tensor, Tensor]] = []  # (loss, pre-clip grad norm) of each step since the last log
    logged_at, eval_seconds, stop = 0.0, 0.0, None
    try:
        while True:
            state.elapsed = time.monotonic() - wall_start
            stop = stop or stop_reason(tc, state, len(parts.train), signals, ctx, eval_seconds)
            last_step = stop is not None
            interrupted = stop in SIGNALS
            moved = state.step > first_step  # at the start of a session there is nothing new to log or save

            def every(n: int) -> bool:
                return moved and n > 0 and state.step % n == 0  # noqa: B023 - used within this iteration

            # once in a while: the train scalars (always before an evaluation or a save, to catch a NaN). A signal
            # leaves the partial interval unlogged, so a resumed run logs exactly what an uninterrupted one does.
            record: dict[str, float] = {}  # what metrics.jsonl and TensorBoard get for this step
            due = (last_step and not interrupted) or any(map(every, (tc.log_every, tc.eval_every, tc.checkpoint_every)))
            if pending and due:
                record = _train_scalars(pending, clock.seconds - logged_at, parts, tc, state, ctx, run_dir)
                pending, logged_at = [], clock.seconds
                bar.total = expected_steps(tc, state, len(parts.train), bar.format_dict["rate"])

            # once in a while: evaluate (the final evaluation too, unless a signal stopped the run)
            improved = False
            if moved and not interrupted and (last_step or every(tc.eval_every)):
                tick = time.monotonic()
                try:
                    # in fp32 whatever train.precision says: sample and eval run the fp32 weights so too
                    val_loss, _ = evaluate(parts.model, parts.val, ctx, windows=parts.val_windows, check=poll)
                except Stopped as e:  # abandoned, so not recorded; the state is still that of the last step
                    stop, last_step = e.args[0], True
                else:
                    improved = val_loss < state.best_val_loss
                    state.val_loss, state.best_val_loss = val_loss, min(val_loss, state.best_val_loss)
                    record.update({"val/loss": val_loss, "val/bpc": bpc(val_loss)})
                eval_seconds = time.monotonic() - tick
            if record:
                logger.log(state.step, record)
                bar.set_postfix_str(_postfix(record, state), refresh=False)

            # once in a while: a sample for TensorBoard (main process only; a signal abandons it)
            if every(tc.sample_every) and ctx.is_main and stop not in SIGNALS:
                try:
                    text = sample_text(parts.model, parts.vocab, "", tc.sample_length, SAMPLE_TEMPERATURE,
                                       tc.seed + state.step, check=signals.check)
                except Stopped:
                    pass  # the next loop iteration stops the run
                else:
                    logger.text(state.step, "samples", text)

            # save: periodically, on improvement, and at the end
            if moved and (last_step or improved or every(tc.checkpoint_every)):
                _save(run_dir, cfg, parts, state, hidden, ctx, best=improved,
                      periodic=every(tc.checkpoint_every) and tc.keep_last > 0)

            if last_step:
                break

            with clock.running():
                loss, norm, hidden = _train_step(parts, tc, state, hidden, ctx)
            pending.append((loss, norm))
            bar.update(1)
            state.step += 1
            state.window += 1
            if state.window == len(parts.train):  # a new epoch starts every stream from its beginning
                state.epoch, state.window = state.epoch + 1, 0
                hidden = parts.model.init_hidden(parts.train.batch_size, ctx.device)
    finally:
        bar.close()
        logger.close()
    if interrupted:
        echo(f"{stop}: saved step {state.step} to {checkpoint.checkpoint_dir(run_dir) / checkpoint.LAST}; "
             f"continue with: charrnn train --resume {run_dir}")
    chars = (state.step - first_step) * global_batch * parts.train.seq_len
    return TrainResult(state.step, state.best_val_loss, None if interrupted else state.val_loss, stop, run_dir,
                       chars / max(clock.seconds, 1e-9))


def _agreed_run_id(ctx: Context) -> str:
    """A new run id, the same in every process."""
    ids = [uuid.uuid4().hex]
    if ctx.enabled:
        torch.distributed.broadcast_object_list(ids, src=0)
    return ids[0]


def _report_corpus(corpus: Corpus, echo: Callable[[str], None]) -> None:
    if corpus.encode_seconds:
        mb = corpus.size_bytes / 1e6
        echo(f"encoded {mb:,.1f} MB into {len(corpus.ids):,} ids over {corpus.vocab.size} symbols in "
             f"{corpus.encode_seconds:.2f}s ({mb / corpus.encode_seconds:,.1f} MB/s, both passes); "
             + ("cached" if corpus.cached else "not cached (the cache dir is not writable)"))
    for note in corpus.notes:
        echo(note)


def _build(cfg: Config, ctx: Context, corpus: Corpus, echo: Callable[[str], None]) -> _Parts:
    """Split the corpus into streams and build the model, optimizer and loss scaler."""
    tc, world = cfg.train, ctx.world_size
    split = int(len(corpus.ids) * (1 - cfg.data.val_fraction))
    train_ids, val_ids = corpus.ids[:split], corpus.ids[split:]
    if tc.batch_size % world:
        raise UserError(f"train.batch_size {tc.batch_size} must be divisible by the {world} processes")
    batch, seq_len, warning = fit_batch(len(train_ids), tc.batch_size, tc.seq_len, "train", world)
    val_batch, val_seq_len, val_warning = fit_batch(len(val_ids), batch, seq_len, "validation", world)
    for w in (warning, val_warning):
        if w:
            echo("warning: " + w)
    # train.eval_chars caps each validation at the first windows of every stream: the same text every time.
    val_windows = math.ceil(tc.eval_chars / (val_batch * val_seq_len)) if tc.eval_chars else None
    _check_memory(cfg, corpus.vocab.size, batch // world, seq_len, ctx)
    global_index = torch.arange(batch)[ctx.rows(batch)]
    torch.manual_seed(tc.seed)  # the same initial weights in every process
    model = CharRNN(corpus.vocab.size, cfg.model).to(ctx.device)
    model.rnn.flatten_parameters()  # one contiguous weight buffer for cuDNN
    net = model
    if ctx.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    precision = resolve_precision(tc.precision, ctx.device)
    return _Parts(
        model=model, net=net, optimizer=make_optimizer(model, tc, ctx.device),
        # cuDNN's LSTM runs in fp16 under autocast even when bf16 is asked for, so both need loss scaling.
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=ctx.device.type == "cuda" and precision != "fp32"),
        precision=precision, vocab=corpus.vocab, train=Streams.of(train_ids, batch, seq_len, ctx.rows(batch)),
        val=Streams.of(val_ids, val_batch, val_seq_len, ctx.rows(val_batch)), val_windows=val_windows,
        reset_offsets=(global_index * max(tc.reset_every, 1) // batch).to(ctx.device))


def _check_memory(cfg: Config, vocab_size: int, batch_size: int, seq_len: int, ctx: Context) -> None:
    """Refuse a model that cannot fit before allocating it, naming the estimate."""
    need, free = training_bytes(vocab_size, cfg.model, batch_size, seq_len), available_memory(ctx.device)
    if free is not None and need > free:
        m = cfg.model
        raise UserError(f"a {m.num_layers} x {m.hidden_size} {m.cell} (embed_dim {m.embed_dim}) needs about "
                        f"{need / 2**30:,.1f} GiB to train, but {ctx.device} has {free / 2**30:,.1f} GiB free; "
                        "use a smaller model.hidden_size, model.num_layers or model.embed_dim")


def _restore(saved: Saved, parts: _Parts, corpus: Corpus, ctx: Context, tc: TrainConfig, run_dir: Path) -> RunState:
    """Load the saved weights, optimizer and RNG into the run's objects; the saved position comes back."""
    state = saved.run
    rundir.check_identity(run_dir, state.run_id)
    state.run_id = state.run_id or _agreed_run_id(ctx)  # format 1 checkpoints had none
    if state.corpus_hash != corpus.content_hash:
        raise UserError(f"{corpus.path} is not the text this run was trained on (its content hash differs); "
                        "resume needs the same corpus")
    limit = limit_reached(tc, state, len(parts.train))
    if limit is not None:
        raise UserError(f"{run_dir} already stopped at step {state.step} by its {limit} limit; raise it to "
                        f"continue, e.g. --max-steps {tc.max_steps * 2}")
    parts.model.load_state_dict(saved.model)
    parts.optimizer.load_state_dict(saved.optimizer)
    parts.scaler.load_state_dict(saved.scaler)
    if len(state.rng) == ctx.world_size:
        restore_rng(state.rng[ctx.rank], ctx)
    else:  # a different number of processes: fresh, but still seeded, dropout masks
        torch.manual_seed(tc.seed + ctx.rank + 1_000_003 * state.step)
    return state


def _train_step(parts: _Parts, tc: TrainConfig, state: RunState, hidden: Hidden,
                ctx: Context) -> tuple[Tensor, Tensor, Hidden]:
    """One optimizer step on the next window; returns the loss, the pre-clip gradient norm and the new state."""
    progress = max(state.step / tc.max_steps, state.elapsed / tc.time_budget if tc.time_budget else 0.0)
    for group in parts.optimizer.param_groups:
        group["lr"] = lr_at(tc, state.step, progress)
    x, y = parts.train.window(state.window)  # (B, T) each; copies the window out of the memory map
    if ctx.device.type == "cuda":
        x, y = x.pin_memory().to(ctx.device, non_blocking=True), y.pin_memory().to(ctx.device, non_blocking=True)
    with autocast(ctx.device, parts.precision):
        logits, hidden = parts.net(x, hidden)
        loss = cross_entropy(logits, y)
    hidden = _reset_some(detach(hidden), tc.reset_every, state.step, parts.reset_offsets)
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    parts.scaler.unscale_(parts.optimizer)
    norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), tc.grad_clip or math.inf)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    return loss.detach(), norm.detach(), hidden


def _reset_some(hidden: Hidden, every: int, step: int, offsets: Tensor) -> Hidden:
    """Zero the state of the streams whose turn it is (see train.reset_every)."""
    if not every:
        return hidden
    keep = ((step + 1 + offsets) % every != 0).to(hidden[0].dtype)[None, :, None]  # (1, B, 1)
    return tuple(t * keep for t in hidden)


def _train_scalars(pending: list[tuple[Tensor, Tensor]], seconds: float, parts: _Parts, tc: TrainConfig,
                   state: RunState, ctx: Context, run_dir: Path) -> dict[str, float]:
    """Train scalars over the steps since the last log; a NaN or inf loss stops the run."""
    values = torch.stack([torch.stack(p).float() for p in pending])  # (steps, 2): loss, pre-clip grad norm
    values = (ctx.sum(values) / ctx.world_size).tolist()  # one host sync
    for offset, (loss, _) in enumerate(values):
        if not math.isfinite(loss):
            _diverged(f"the loss became {loss} at step {state.step - len(values) + offset + 1}", tc, run_dir)
    losses, norms = [v[0] for v in values], [v[1] for v in values]
    chars = len(values) * parts.train.batch_size * ctx.world_size * parts.train.seq_len
    loss = sum(losses) / len(losses)
    return {"train/loss": loss, "train/bpc": bpc(loss), "train/lr": parts.optimizer.param_groups[0]["lr"],
            "train/grad_norm": sum(norms) / len(norms), "train/grad_norm_max": max(norms),
            "train/clip_frac": sum(n > tc.grad_clip for n in norms) / len(norms) if tc.grad_clip else 0.0,
            "train/chars_per_sec": chars / max(seconds, 1e-9)}


def _diverged(what: str, tc: TrainConfig, run_dir: Path) -> None:
    last = checkpoint.checkpoint_dir(run_dir) / checkpoint.LAST
    lower = f"--set train.lr={tc.lr / 4:g}"
    if last.is_file():
        advice = f"The last good checkpoint is kept: resume with a lower lr, e.g. charrnn train --resume {run_dir}"
    else:
        advice = "No checkpoint was written yet: start again with a lower lr, e.g."
    raise UserError(f"{what}; stopped. {advice} {lower}")


def _save(run_dir: Path, cfg: Config, parts: _Parts, state: RunState, hidden: Hidden, ctx: Context, *,
          best: bool, periodic: bool) -> None:
    """Write last.pt (and best.pt, step-N.pt); collective, so every process calls it."""
    if not all(bool(p.isfinite().all()) for p in parts.model.parameters()):
        _diverged(f"the weights hold NaN or inf at step {state.step}", cfg.train, run_dir)
    snapshot = replace(state, hidden=tuple(ctx.gather_rows(t, dim=1).cpu() for t in hidden), rng=gather_rng(ctx))

    def write(path: Path) -> None:
        checkpoint.save_run(path, config=cfg, vocab=parts.vocab, model=parts.model, optimizer=parts.optimizer,
                            scaler=parts.scaler, run=snapshot)

    if ctx.is_main:
        folder = checkpoint.checkpoint_dir(run_dir)
        write(folder / checkpoint.LAST)
        if best:
            write(folder / checkpoint.BEST)
        if periodic:
            checkpoint.save_periodic(run_dir, state.step, write, cfg.train.keep_last)
    ctx.barrier()  # no process may exit (and have torchrun stop the others) while the main one writes


def _postfix(scalars: dict[str, float], state: RunState) -> str:
    parts = []
    if "train/loss" in scalars:
        parts.append(f"loss {scalars['train/loss']:.3f}")
    if state.val_loss is not None:
        parts.append(f"val {state.val_loss:.3f}")
    if "train/chars_per_sec" in scalars:
        parts.append(f"{scalars['train/chars_per_sec']:,.0f} chars/s")
    return ", ".join(parts)
