"""The training loop: truncated BPTT with periodic evaluation, samples and checkpoints.

It owns the step, the data position and the hidden state. The loop reads top to bottom like
nanochat's: each pass first decides whether this is the last step, then runs the once-in-a-while
phases (log, evaluate, sample, save), then breaks or takes one training step.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from charrnn import checkpoint
from charrnn.config import Config
from charrnn.data.encoding import Corpus, load_data
from charrnn.data.split import Split, split_of
from charrnn.errors import UserError
from charrnn.evaluation.baselines import Baselines
from charrnn.evaluation.corpus import CorpusCopies
from charrnn.evaluation.static import evaluate, split_baselines
from charrnn.generation.sampling import sample_text
from charrnn.model import bpc
from charrnn.training import rundir
from charrnn.training.advice import advice, head_note
from charrnn.training.build import Parts, agreed_run_id, build, check_memory, report_corpus, restore, skip_dir
from charrnn.training.distributed import World, gather_rng, setup, teardown
from charrnn.training.lock import hold_run_dir
from charrnn.training.metrics import MetricsLogger, NullLogger
from charrnn.training.plan import plan_in
from charrnn.training.resume import Resume
from charrnn.training.rule import used_symbols
from charrnn.training.session import Session
from charrnn.training.state import RunState
from charrnn.training.step import diverged, train_scalars, train_step
from charrnn.training.stopping import INTERRUPTS, Stopped, StopSignals, expected_steps, stop_check, stop_reason
from charrnn.training.throughput import learn_loop

SAMPLE_TEMPERATURE = 0.8  # for the samples logged to TensorBoard: cooler than 1, still varied


@dataclass(frozen=True)
class TrainResult:
    step: int
    best_val_loss: float
    val_loss: float | None  # at the end; None when interrupted before a final evaluation
    stopped_by: str  # max_steps, max_epochs, time_budget, or one of INTERRUPTS
    run_dir: Path
    chars_per_sec: float  # training throughput of this session, evaluation and saving excluded
    baselines: Baselines | None = None  # simple baselines on the final validation's text (train.baselines)
    advice: tuple[str, ...] = ()  # overfitting or underfitting, read off the run's own curves

    @property
    def interrupted(self) -> bool:
        return self.stopped_by in INTERRUPTS


def train(cfg: Config, run_dir: Path, *, resume: Resume | None = None, overwrite: bool = False,
          echo: Callable[[str], None] = lambda s: None, progress: bool = True, plan: Sequence[str] = ()) -> TrainResult:
    """Train (or resume) a run in `run_dir`, a new one with its `plan` keys planned (`charrnn.training.plan`);
    messages go to `echo`, the progress bar to stderr.

    A signal while the corpus is being encoded raises `Stopped` (nothing has been written yet).
    """
    run_dir = Path(run_dir)
    rundir.check_run_dir(run_dir, resume is not None, overwrite)
    world = setup(cfg.train.device)
    try:
        return _train(cfg, run_dir, world, resume, overwrite, echo, progress, plan)
    except BaseException as e:
        if world.enabled:  # the frames hold the DDP model, which must go before the group (teardown)
            traceback.clear_frames(e.__traceback__)
        raise
    finally:
        teardown(world)


def _train(cfg: Config, run_dir: Path, world: World, resume: Resume | None, overwrite: bool,
           echo: Callable[[str], None], progress: bool, plan: Sequence[str]) -> TrainResult:
    """The run in `world`'s processes, which the caller joins and leaves."""
    if cfg.train.precision == "fp16" and world.device.type != "cuda":
        raise UserError(f"train.precision fp16 needs CUDA; use bf16 or fp32 on {world.device}")
    check_memory(cfg, 1, cfg.train.batch_size // world.size, cfg.train.seq_len, world)  # before encoding
    echo = echo if world.is_main else (lambda s: None)
    with hold_run_dir(run_dir, world, echo), StopSignals() as signals:
        if resume is not None and resume.changed():
            raise UserError(f"{run_dir}'s last.pt changed while this resume was starting (another trainer was "
                            "still running); run the same command again")
        corpus = load_data(cfg.data, skip_dir=skip_dir(run_dir), verify=resume is not None,
                           progress=progress and world.is_main, check=signals.check)
        report_corpus(corpus, echo)
        split = split_of(corpus, cfg.data)
        cfg = cfg.with_overrides((), {"data.split": split.rule})  # the rule 'auto' chose, as the record says
        echo(split.describe())
        planned = plan_in(world, cfg, plan, split.train, corpus.vocab.size, echo) if plan and not resume \
            else None
        cfg = planned.config if planned else cfg
        note = head_note(cfg.model, split.train, corpus.vocab.size) if world.is_main and not (planned or resume) else ""
        if note:
            echo(note)
        parts = build(cfg, world, corpus, split, echo)
        if cfg.train.precision == "auto":
            echo(f"train.precision auto: {parts.precision} on {world.device}"
                 + (f" ({parts.precision_why})" if parts.precision_why else ""))
        if resume is None:
            state = RunState(run_id=agreed_run_id(world), corpus_hash=corpus.content_hash,
                             elapsed=planned.seconds if planned else 0.0)  # planning counts in the budget
            torch.manual_seed(cfg.train.seed + world.rank)  # dropout masks differ between processes
        else:
            state = restore(resume, parts, corpus, world, cfg.train, run_dir)
        if world.is_main:
            record = (planned.record() if planned else "") + cfg.to_toml()
            rundir.prepare(run_dir, state.run_id, record, fresh=resume is None, overwrite=overwrite)
        world.barrier()
        loop = _Loop(cfg, run_dir, world, parts, signals, echo, corpus, split)
        return loop.run(state, resumed=resume is not None, progress=progress and world.is_main)


class _Loop:
    """One session of a run, from its start or resume to its stop, and the phases it runs once in a while."""

    def __init__(self, cfg: Config, run_dir: Path, world: World, parts: Parts, signals: StopSignals,
                 echo: Callable[[str], None], corpus: Corpus, split: Split) -> None:
        self.copies, self.split = CorpusCopies(corpus), split  # for the samples' copy check and the baselines
        self.cfg, self.tc, self.run_dir, self.world, self.parts = cfg, cfg.train, run_dir, world, parts
        self.signals, self.poll, self.echo = signals, stop_check(signals, world), echo
        self.epoch_windows = len(parts.train)

    def run(self, state: RunState, *, resumed: bool, progress: bool) -> TrainResult:
        tc, world, parts = self.tc, self.world, self.parts
        global_batch = parts.train.batch_size * world.size
        hidden = (tuple(t[:, world.rows(global_batch)].to(world.device) for t in state.hidden) if state.hidden
                  else parts.model.init_hidden(parts.train.batch_size, world.device))
        s = Session(state, hidden, state.step, time.monotonic() - state.elapsed)
        budget_left = tc.time_budget - state.elapsed  # this session's seconds, if it trains to the budget
        self.logger = MetricsLogger(self.run_dir, state.step if resumed else None, warn=self.echo) \
            if world.is_main else NullLogger()
        self.bar = tqdm(total=expected_steps(tc, state, self.epoch_windows, None), initial=state.step, unit="step",
                        disable=not progress, dynamic_ncols=True, desc="train")
        try:
            while True:
                s.state.elapsed = time.monotonic() - s.wall_start
                s.stop = s.stop or stop_reason(tc, s.state, self.epoch_windows, self.signals, world, s.eval_seconds)
                last_step, interrupted = s.stop is not None, s.stop in INTERRUPTS
                self.bar.disable = self.bar.disable or s.stop == "SIGHUP"  # its terminal may be gone
                # once in a while: the train scalars (always before an evaluation or a save, to catch a NaN). A signal
                # leaves the partial interval unlogged, so a resumed run logs exactly what an uninterrupted one does.
                record = self._log_train(s) if s.pending and ((last_step and not interrupted) or any(
                    map(s.every, (tc.log_every, tc.eval_every, tc.checkpoint_every)))) else {}
                # once in a while: evaluate (the final evaluation too, unless a signal stopped the run)
                improved = s.moved and not interrupted and (last_step or s.every(tc.eval_every)) and \
                    self._evaluate(s, record)
                last_step = s.stop is not None  # a signal may have abandoned the evaluation
                if record:
                    self.logger.log(s.state.step, record)
                    self.bar.set_postfix_str(_postfix(record, s.state), refresh=False)
                # once in a while: a sample for TensorBoard (main process only; a signal abandons it)
                if s.every(tc.sample_every) and world.is_main and s.stop not in INTERRUPTS:
                    self._sample(s)
                # save: periodically, on improvement, and at the end; a new run stopped before its first step
                # saves step 0, so that it has a checkpoint to resume from, as the stop message says
                if (s.moved or s.state.step == 0) and (last_step or improved or s.every(tc.checkpoint_every)):
                    self._save(s, best=improved, periodic=s.every(tc.checkpoint_every) and tc.keep_last > 0)
                if last_step:
                    break
                self._step(s)
            baselines = self._baselines(s)
            if s.stop == "time_budget" and world.is_main:  # what the loop kept of the trial's speed, for plans
                learn_loop(parts.precision, self.cfg.model, parts.vocab.size, parts.train.batch_size,
                           parts.train.seq_len, world.device, s.state.step - s.first_step, budget_left)
        finally:
            self.bar.close()
            self.logger.close()
        return replace(self._result(s), baselines=baselines)

    def _baselines(self, s: Session) -> Baselines | None:
        """At the end (main process, after a final evaluation): the baselines, logged beside the model's figure."""
        if not (self.world.is_main and self.tc.baselines and s.stop not in INTERRUPTS and s.state.val_loss is not None):
            return None
        found = split_baselines(self.tc, self.split, self.parts.vocab)
        named = {f"baselines/{name}": value for name, value in found.bpc.items()}
        self.logger.log(s.state.step, {"baselines/model": bpc(s.state.val_loss), **named}, jsonl=False)
        return found

    def _step(self, s: Session) -> None:
        """One training step, then the data position moves on (a new epoch starts every stream afresh)."""
        with s.clock.running():
            loss, norm, s.hidden = train_step(self.parts, self.tc, s.state, s.hidden, self.world)
        s.pending.append((loss, norm))
        self.bar.update(1)
        s.state.step += 1
        s.state.window += 1
        if s.state.window == self.epoch_windows:
            s.state.epoch, s.state.window = s.state.epoch + 1, 0
            s.hidden = self.parts.model.init_hidden(self.parts.train.batch_size, self.world.device)

    def _log_train(self, s: Session) -> dict[str, float]:
        """The train scalars since the last log; the progress bar's total is re-estimated from the speed so far."""
        record = train_scalars(s.pending, s.clock.seconds - s.logged_at, self.parts, self.tc, s.state, self.world,
                               self.run_dir)
        s.pending, s.logged_at = [], s.clock.seconds
        self.bar.total = expected_steps(self.tc, s.state, self.epoch_windows, self.bar.format_dict["rate"])
        return record

    def _evaluate(self, s: Session, record: dict[str, float]) -> bool:
        """Validate (always in fp32: sample and eval run the fp32 weights so too); whether it is the best yet."""
        tick = time.monotonic()
        try:
            val_loss, _ = evaluate(self.parts.model, self.parts.val, self.world, windows=self.parts.val_windows,
                                   check=self.poll)
        except Stopped as e:  # abandoned, so not recorded; the state is still that of the last step
            s.stop = e.args[0]
            return False
        finally:
            s.eval_seconds = time.monotonic() - tick
        if not math.isfinite(val_loss):  # the same on every process: the loss was summed over all of them
            diverged(f"the validation loss became {val_loss} at step {s.state.step}", self.tc, self.run_dir)
        improved = val_loss < s.state.best_val_loss
        s.state.val_loss, s.state.best_val_loss = val_loss, min(val_loss, s.state.best_val_loss)
        record.update({"val/loss": val_loss, "val/bpc": bpc(val_loss)})
        return improved

    def _sample(self, s: Session) -> None:
        try:
            text = sample_text(self.parts.model, self.parts.vocab, "", self.tc.sample_length, SAMPLE_TEMPERATURE,
                               self.tc.seed + s.state.step, check=self.signals.check)
        except Stopped:
            return  # the next pass of the loop stops the run
        copy = self.copies.check(np.asarray(self.parts.vocab.encode(text)))
        self.logger.log(s.state.step, {"samples/longest_copy": copy.longest,
                                       "samples/copied_windows": copy.copied_windows}, jsonl=False)
        self.logger.text(s.state.step, "samples", f"{text}\n\n({copy.describe()})")

    def _save(self, s: Session, *, best: bool, periodic: bool) -> None:
        """Write last.pt (and best.pt, step-N.pt); collective, so every process calls it."""
        parts, world = self.parts, self.world
        if not all(bool(p.isfinite().all()) for p in parts.model.parameters()):
            diverged(f"the weights hold NaN or inf at step {s.state.step}", self.tc, self.run_dir)
        snapshot = replace(s.state, hidden=tuple(world.gather_rows(t, dim=1).cpu() for t in s.hidden),
                           rng=gather_rng(world))

        def write(path: Path) -> None:
            checkpoint.save_run(path, config=self.cfg, vocab=parts.vocab, model=parts.model,
                                optimizer=parts.optimizer, scaler=parts.scaler, run=snapshot.to_dict())

        if world.is_main:
            folder = checkpoint.checkpoint_dir(self.run_dir)
            write(folder / checkpoint.LAST)
            if best:
                write(folder / checkpoint.BEST)
            if periodic:
                checkpoint.save_periodic(self.run_dir, s.state.step, write, self.tc.keep_last)
        world.barrier()  # no process may exit (and have torchrun stop the others) while the main one writes

    def _result(self, s: Session) -> TrainResult:
        interrupted = s.stop in INTERRUPTS
        if interrupted:
            self.echo(f"{s.stop}: saved step {s.state.step} to "
                      f"{checkpoint.checkpoint_dir(self.run_dir) / checkpoint.LAST}; "
                      f"continue with: charrnn train --resume {self.run_dir}")
        chars = (s.state.step - s.first_step) * self.parts.train.batch_size * self.world.size * \
            self.parts.train.seq_len
        notes = () if interrupted or not self.world.is_main else \
            tuple(advice(self.run_dir, self.cfg, len(self.split.train),
                         used_symbols(self.split.train, self.parts.vocab.size)))
        return TrainResult(s.state.step, s.state.best_val_loss, None if interrupted else s.state.val_loss, s.stop,
                           self.run_dir, chars / max(s.clock.seconds, 1e-9), advice=notes)


def _postfix(scalars: dict[str, float], state: RunState) -> str:
    parts = [f"loss {scalars['train/loss']:.3f}"] if "train/loss" in scalars else []
    parts += [f"val {state.val_loss:.3f}"] if state.val_loss is not None else []
    parts += [f"{scalars['train/chars_per_sec']:,.0f} chars/s"] if "train/chars_per_sec" in scalars else []
    return ", ".join(parts)
