"""The training loop: truncated BPTT with AdamW, warmup + cosine lr, clipping, and periodic
evaluation, samples and checkpoints. It owns the step, the data position and the hidden state."""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from charrnn import checkpoint
from charrnn.batching import Streams, fit_batch
from charrnn.config import Config, from_dict
from charrnn.corpus import Corpus, Vocab, load_corpus
from charrnn.distributed import Context, autocast, setup, teardown
from charrnn.errors import UserError
from charrnn.evaluation import evaluate
from charrnn.metrics import MetricsLogger
from charrnn.model import CharLSTM, Hidden, cross_entropy, detach
from charrnn.optim import lr_at, make_optimizer
from charrnn.sampling import sample_text
from charrnn.signals import StopSignals

LN2 = math.log(2)
SAMPLE_TEMPERATURE = 0.8  # for the samples logged to TensorBoard: cooler than 1, still varied
# Settings a resumed run may change; anything else would make the saved state meaningless.
RESUMABLE = {"train." + k for k in ("lr", "min_lr_ratio", "weight_decay", "warmup_steps", "schedule",
                                    "grad_clip", "max_steps", "max_epochs", "time_budget", "eval_every",
                                    "checkpoint_every", "keep_last", "sample_every", "sample_length",
                                    "log_every", "device", "precision")} | {"data.path"}
_RUN_FILES = ("config.toml", "metrics.jsonl", "checkpoints", "tb")


@dataclass(frozen=True)
class TrainResult:
    step: int
    best_val_loss: float
    val_loss: float | None  # at the end; None when interrupted before a final evaluation
    stopped_by: str  # max_steps, max_epochs, time_budget, SIGINT or SIGTERM
    run_dir: Path


def resume_config(run_dir: Path, overrides: Sequence[str]) -> Config:
    """The saved config of `run_dir` with `overrides`, refusing changes that would break the run."""
    path = checkpoint.checkpoint_dir(run_dir) / checkpoint.LAST
    if not path.is_file():
        raise UserError(f"nothing to resume in {run_dir}: no checkpoints/{checkpoint.LAST}")
    saved = from_dict(checkpoint.load_checkpoint(path)["config"])
    cfg = saved.with_overrides(overrides)
    old, new = saved.to_dict(), cfg.to_dict()
    for section, values in new.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            if value != old[section][key] and name not in RESUMABLE:
                raise UserError(f"cannot change {name} when resuming ({old[section][key]!r} -> {value!r}); "
                                "start a new run instead")
    return cfg


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: pick one")
    if not resume and run_dir.exists() and any((run_dir / name).exists() for name in _RUN_FILES):
        if not overwrite:
            raise UserError(f"{run_dir} already holds a run: pass --resume to continue it "
                            "or --overwrite to start over")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} is a file")


def _clear_run(run_dir: Path) -> None:
    """Remove a previous run's files (only ours) for --overwrite."""
    for name in _RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _rng_state(ctx: Context) -> dict[str, Any]:
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if ctx.device.type == "cuda" else []}


def _set_rng_state(state: dict[str, Any], ctx: Context) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if ctx.device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_finite(model: CharLSTM) -> bool:
    return bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all())


def train(cfg: Config, run_dir: Path, *, resume: bool = False, overwrite: bool = False,
          echo: Callable[[str], None] = lambda s: None, progress: bool = True) -> TrainResult:
    """Train (or resume) a run in `run_dir`; messages go to `echo`, the progress bar to stderr."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir, resume, overwrite)
    ctx = setup(cfg.train.device)
    try:
        if cfg.train.precision != "fp32" and ctx.device.type != "cuda":
            raise UserError(f"train.precision {cfg.train.precision} needs CUDA; use fp32 on {ctx.device}")
        corpus = load_corpus(Path(cfg.data.path), cfg.data.encoding, progress=progress and ctx.is_main)
        return _Trainer(cfg, run_dir, ctx, corpus, resume, overwrite, echo if ctx.is_main else (lambda s: None),
                        progress and ctx.is_main).run()
    finally:
        teardown(ctx)


class _Trainer:
    """One run's objects and position; `run()` is the loop."""

    def __init__(self, cfg: Config, run_dir: Path, ctx: Context, corpus: Corpus, resume: bool,
                 overwrite: bool, echo: Callable[[str], None], progress: bool) -> None:
        self.cfg, self.tc, self.run_dir, self.ctx = cfg, cfg.train, run_dir, ctx
        self.echo, self.progress = echo, progress
        self.vocab: Vocab = corpus.vocab
        self.corpus_hash = corpus.content_hash
        if corpus.encode_seconds:
            mb = corpus.size_bytes / 1e6
            echo(f"encoded {mb:,.1f} MB into {len(corpus.ids):,} ids over {corpus.vocab.size} symbols in "
                 f"{corpus.encode_seconds:.2f}s ({mb / corpus.encode_seconds:,.1f} MB/s, both passes); cached")
        if corpus.skipped:
            echo(f"skipped {len(corpus.skipped)} binary or undecodable file(s), e.g. {corpus.skipped[0]}")
        split = int(len(corpus.ids) * (1 - cfg.data.val_fraction))
        train_ids, val_ids = corpus.ids[:split], corpus.ids[split:]
        world = ctx.world_size
        if self.tc.batch_size % world:
            raise UserError(f"train.batch_size {self.tc.batch_size} must be divisible by the {world} processes")
        batch, seq, warn = fit_batch(len(train_ids), self.tc.batch_size, self.tc.seq_len, "train", world)
        val_batch, val_seq, val_warn = fit_batch(len(val_ids), batch, seq, "validation", world)
        for w in (warn, val_warn):
            if w:
                echo("warning: " + w)
        self.batch_size = batch
        self.streams = Streams.of(train_ids, batch, seq, ctx.rows(batch))
        global_index = torch.arange(batch)[ctx.rows(batch)]
        self.reset_offsets = (global_index * max(self.tc.reset_every, 1) // batch).to(ctx.device)
        self.val_streams = Streams.of(val_ids, val_batch, val_seq, ctx.rows(val_batch))

        state = checkpoint.load_checkpoint(checkpoint.checkpoint_dir(run_dir) / checkpoint.LAST,
                                           ctx.device) if resume else None
        if state is not None and state["corpus_hash"] != corpus.content_hash:
            raise UserError(f"{cfg.data.path} is not the text this run was trained on (its content hash "
                            "differs); resume needs the same corpus")
        torch.manual_seed(self.tc.seed)  # the same initial weights in every process
        self.model = CharLSTM(self.vocab.size, cfg.model).to(ctx.device)
        self.optimizer = make_optimizer(self.model, self.tc, ctx.device)
        # cuDNN's LSTM runs in fp16 under autocast even when bf16 is asked for, so both need loss scaling.
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.tc.precision != "fp32")
        self.step = self.epoch = self.window = 0
        self.elapsed, self.best_val, self.val_loss = 0.0, math.inf, None
        self.hidden = self.model.init_hidden(self.streams.batch_size, ctx.device)
        torch.manual_seed(self.tc.seed + ctx.rank)  # dropout masks differ between processes
        if state is not None:
            self._restore(state)
            if self._limit_reached(0.0):
                raise UserError(f"{run_dir} already stopped at step {self.step} by its "
                                f"{self._limit_reached(0.0)} limit; raise it to continue, e.g. --max-steps "
                                f"{self.tc.max_steps * 2}")

        if not resume:
            if overwrite:
                _clear_run(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        if ctx.is_main:
            (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
            self.logger = MetricsLogger(run_dir, self.step if resume else None)
        self.model.lstm.flatten_parameters()  # one contiguous weight buffer for cuDNN
        self.net = self.model
        if ctx.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.window = state["step"], state["epoch"], state["window"]
        self.elapsed, self.best_val, self.val_loss = state["elapsed"], state["best_val_loss"], state["val_loss"]
        rows = self.ctx.rows(self.batch_size)
        self.hidden = tuple(t[:, rows].to(self.ctx.device) for t in state["hidden"])
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            _set_rng_state(rng[self.ctx.rank], self.ctx)
        else:  # a different number of processes: fresh, but still seeded, dropout masks
            torch.manual_seed(self.tc.seed + self.ctx.rank + 1_000_003 * self.step)

    def _state(self) -> dict[str, Any]:
        """Everything a resume needs; collective, so every process calls it."""
        hidden = tuple(self.ctx.gather_rows(t, dim=1).cpu() for t in self.hidden)
        rng = [_rng_state(self.ctx)]
        if self.ctx.enabled:
            rng = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(rng, _rng_state(self.ctx))
        return {"config": self.cfg.to_dict(), "vocab": self.vocab.chars, "byte_level": self.vocab.byte_level,
                "corpus_hash": self.corpus_hash, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "epoch": self.epoch, "window": self.window, "elapsed": self.elapsed,
                "best_val_loss": self.best_val, "val_loss": self.val_loss, "hidden": hidden, "rng": rng}

    def _limit_reached(self, eval_reserve: float) -> str | None:
        tc = self.tc
        if self.step >= tc.max_steps:
            return "max_steps"
        if tc.max_epochs and self.epoch + self.window / len(self.streams) >= tc.max_epochs:
            return "max_epochs"
        if tc.time_budget and self.elapsed + eval_reserve >= tc.time_budget:
            return "time_budget"
        return None

    def _should_stop(self, signals: StopSignals, eval_reserve: float, log_step: bool) -> str | None:
        """Why to stop after this step, if at all; every process reaches the same answer at the same step."""
        reason = signals.received or self._limit_reached(eval_reserve)
        if not self.ctx.enabled:
            return reason
        if reason in ("max_steps", "max_epochs"):  # the same in every process: no need to talk
            return reason
        # Clocks and signals differ between processes, so they only count at log steps, agreed on by all.
        return _STOP_CODES[self.ctx.agree(_STOP_CODES.index(reason))] if log_step else None

    def _expected_steps(self, steps_per_sec: float | None) -> int:
        """Where the run will stop, for the progress bar's total and ETA."""
        tc, total = self.tc, self.tc.max_steps
        if tc.max_epochs:
            total = min(total, math.ceil(tc.max_epochs * len(self.streams)))
        if tc.time_budget and steps_per_sec:
            total = min(total, self.step + int((tc.time_budget - self.elapsed) * steps_per_sec))
        return max(total, self.step)

    def _progress(self) -> float:
        by_steps = self.step / self.tc.max_steps
        by_time = self.elapsed / self.tc.time_budget if self.tc.time_budget else 0.0
        return max(by_steps, by_time)

    def _train_step(self) -> tuple[Tensor, Tensor]:
        tc, device = self.tc, self.ctx.device
        lr = lr_at(tc, self.step, self._progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.streams.window(self.window)
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        with autocast(device, tc.precision):
            logits, hidden = self.net(x, self.hidden)
            loss = cross_entropy(logits, y)
        self.hidden = self._reset_some(detach(hidden))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        self.window += 1
        if self.window == len(self.streams):  # a new epoch starts every stream from its beginning
            self.epoch, self.window = self.epoch + 1, 0
            self.hidden = self.model.init_hidden(self.streams.batch_size, device)
        return loss.detach(), norm.detach()

    def _reset_some(self, hidden: Hidden) -> Hidden:
        """Zero the state of the streams whose turn it is (see train.reset_every)."""
        every = self.tc.reset_every
        if not every:
            return hidden
        keep = ((self.step + 1 + self.reset_offsets) % every != 0).to(hidden[0].dtype)  # (B,)
        return hidden[0] * keep[None, :, None], hidden[1] * keep[None, :, None]

    def _flush(self, pending: list[tuple[Tensor, Tensor]], seconds: float) -> dict[str, float]:
        """Train scalars averaged since the last log; a NaN or inf loss stops the run."""
        values = torch.stack([torch.stack(p).float() for p in pending])  # (steps, 2): loss, grad norm
        values = (self.ctx.sum(values) / self.ctx.world_size).tolist()  # one host sync
        for offset, (loss, _) in enumerate(values):
            if not math.isfinite(loss):
                bad = self.step - len(values) + offset + 1
                raise UserError(f"the loss became {loss} at step {bad}; stopped. The last good checkpoint is "
                                f"kept: resume with a lower lr, e.g. charrnn train --resume {self.run_dir} "
                                f"--set train.lr={self.tc.lr / 4:g}")
        loss = sum(v[0] for v in values) / len(values)
        chars = len(values) * self.batch_size * self.streams.seq_len
        return {"train/loss": loss, "train/bpc": loss / LN2, "train/lr": self.optimizer.param_groups[0]["lr"],
                "train/grad_norm": values[-1][1], "train/chars_per_sec": chars / max(seconds, 1e-9)}

    def _evaluate(self) -> dict[str, float]:
        self.val_loss, _ = evaluate(self.model, self.val_streams, self.ctx, self.tc.precision)
        improved = self.val_loss < self.best_val
        if improved:
            self.best_val = self.val_loss
        return {"val/loss": self.val_loss, "val/bpc": self.val_loss / LN2, "improved": improved}

    def _save(self, best: bool, periodic: bool) -> None:
        if not _all_finite(self.model):
            raise UserError(f"the weights hold NaN or inf at step {self.step}; stopped without saving them. "
                            f"Resume from the last good checkpoint with a lower lr, e.g. --set "
                            f"train.lr={self.tc.lr / 4:g}")
        state = self._state()
        if not self.ctx.is_main:
            return
        folder = checkpoint.checkpoint_dir(self.run_dir)
        checkpoint.save_checkpoint(folder / checkpoint.LAST, state)
        if best:
            checkpoint.save_checkpoint(folder / checkpoint.BEST, state)
        if periodic and self.tc.keep_last:
            checkpoint.save_periodic(self.run_dir, self.step, state, self.tc.keep_last)

    def run(self) -> TrainResult:
        tc, ctx = self.tc, self.ctx
        bar = tqdm(total=self._expected_steps(None), initial=self.step, unit="step", disable=not self.progress,
                   dynamic_ncols=True, desc="train")
        pending: list[tuple[Tensor, Tensor]] = []
        eval_seconds, paused, stopped_by = 0.0, 0.0, None
        start = last_log = time.monotonic() - self.elapsed
        try:
            with StopSignals() as signals:
                while stopped_by is None:
                    pending.append(self._train_step())
                    now = time.monotonic()
                    self.elapsed = now - start
                    bar.update(1)
                    due = {name: self.step % every == 0 for name, every in
                           (("log", tc.log_every), ("eval", tc.eval_every), ("ckpt", tc.checkpoint_every))}
                    stopped_by = self._should_stop(signals, eval_seconds, due["log"])
                    interrupted = stopped_by in ("SIGINT", "SIGTERM")
                    scalars: dict[str, Any] = {}
                    if due["log"] or due["eval"] or due["ckpt"] or (stopped_by and not interrupted):
                        scalars = self._flush(pending, now - last_log - paused)
                        pending = []
                        bar.set_postfix_str(self._postfix(scalars), refresh=False)
                        bar.total = self._expected_steps(bar.format_dict["rate"])
                    if due["eval"] or (stopped_by and not interrupted):
                        tick = time.monotonic()
                        scalars.update(self._evaluate())
                        eval_seconds = time.monotonic() - tick
                        bar.set_postfix_str(self._postfix(scalars), refresh=False)
                    improved = scalars.pop("improved", False)
                    sample_due = bool(tc.sample_every) and self.step % tc.sample_every == 0
                    if ctx.is_main and scalars:
                        self.logger.log(self.step, scalars)
                    if ctx.is_main and sample_due:
                        text = sample_text(self.model, self.vocab, "", tc.sample_length,
                                           SAMPLE_TEMPERATURE, tc.seed + self.step)
                        self.logger.text(self.step, "samples", text)
                    if due["ckpt"] or improved or stopped_by:
                        self._save(best=improved, periodic=due["ckpt"])
                    # chars/s counts training time only, not evaluating, sampling or saving
                    if scalars:
                        last_log, paused = time.monotonic(), 0.0
                    else:
                        paused += time.monotonic() - now
        finally:
            bar.close()
            if ctx.is_main:
                self.logger.close()
        if stopped_by in ("SIGINT", "SIGTERM"):
            self.echo(f"{stopped_by}: saved step {self.step} to {checkpoint.checkpoint_dir(self.run_dir) / 'last.pt'}; "
                      f"continue with: charrnn train --resume {self.run_dir}")
        return TrainResult(self.step, self.best_val, None if stopped_by in ("SIGINT", "SIGTERM") else self.val_loss,
                           stopped_by, self.run_dir)

    def _postfix(self, scalars: dict[str, Any]) -> str:
        parts = []
        if "train/loss" in scalars:
            parts.append(f"loss {scalars['train/loss']:.3f}")
        if self.val_loss is not None:
            parts.append(f"val {self.val_loss:.3f}")
        if "train/chars_per_sec" in scalars:
            parts.append(f"{scalars['train/chars_per_sec']:,.0f} chars/s")
        return ", ".join(parts)


_STOP_CODES: list[str | None] = [None, "max_steps", "max_epochs", "time_budget", "SIGTERM", "SIGINT"]
