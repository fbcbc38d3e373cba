"""The planner's speed model: seconds per training step of any candidate shape on this device, from two anchor
shapes timed first and a power law through their FLOPs per step, and the finalists timed themselves
(`charrnn.training.throughput`, cached per device, torch version, thread count and shape)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from charrnn.config import ModelConfig
from charrnn.data.batching import fit_batch
from charrnn.devices import resolve_precision
from charrnn.model import parameter_count, train_flops_per_char
from charrnn.training.precision import MARGIN
from charrnn.training.rule import predicted_loss, regularization_for
from charrnn.training.throughput import (
    Trial,
    cached_seconds,
    loop_shares,
    prepare,
    step_seconds,
    trial_seconds,
    turn_seconds,
)

ANCHORS = ((1, 256), (1, 768))  # (num_layers, hidden_size) timed first, to draw the speed line through
BATCH, SEQ_LEN = 32, 100  # the presets' recipe, which the anchors are timed at and every candidate ranked in
MAX_BATCH, EMBED_DIM = 512, 64  # the largest batch a plan doubles to; the presets' embedding
MAX_STEPS = 20_000  # a plan with more steps than this doubles its batch instead (GPUs, long budgets)
# The shortest window a plan halves to: 128 x 25 learnt as much a second as 64 x 50 or more in five pairs of six on
# tinyshakespeare and War and Peace (docs/results.md); windows shorter than 25 were never tried.
SHORTEST_WINDOW = 25
# The share of the timed trial's speed the real loop keeps (measured: docs/results.md), until runs on this machine
# have found their own (`throughput.learn_loop`).
LOOP_SHARE = 0.8


@dataclass(frozen=True)
class Estimate:
    """One candidate with the steps it gets in the budget and the loss the rule predicts for it."""

    model: ModelConfig
    batch_size: int
    seq_len: int
    params: int
    capacity: int  # the parameters the rule counts: the embedding and head of the symbols in use
    precision: str
    seconds_per_step: float
    measured: bool
    steps: int
    epochs: float
    loss: float  # above the corpus's own floor, E_corpus
    loop: float  # the share of `seconds_per_step`'s speed that the run's loop is expected to keep
    loop_from: str  # what `loop` is and where it came from, for the plan's steps line

    @property
    def shape(self) -> str:
        return f"{self.model.num_layers}x{self.model.hidden_size}"



def precisions(precision: str, device: torch.device, model: ModelConfig) -> tuple[str, ...]:
    """The precisions a candidate may train in: both of fp32 and bf16 where 'auto' would time them."""
    resolved = resolve_precision(precision, device, model.cell)
    if precision == "auto" and device.type == "cpu" and resolved == "bf16":
        return ("fp32", "bf16")
    return (resolved,)


class Share:
    """The planning's clock against the seconds its timings may take.

    Torch's one-time cost of a process's first optimizer, a lazy import (1.2 s on a 2-core Xeon), is paid before the
    first timing and kept off the clock: an unplanned run pays it too, building its optimizer before its budget
    starts. A plan whose every timing is cached never pays it."""

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self.seconds, self.clock, self.start, self.paused, self.prepared = seconds, clock, clock(), 0.0, False

    def elapsed(self) -> float:
        return self.clock() - self.start - self.paused

    def afford(self, seconds: float) -> bool:
        """Whether a timing of `seconds` more keeps the planning within its share."""
        return self.elapsed() + seconds <= self.seconds

    def before_timing(self) -> None:
        if not self.prepared:
            start = self.clock()
            prepare()
            self.paused, self.prepared = self.paused + self.clock() - start, True


class SpeedModel:
    """Seconds per step of any candidate: timed for anchors and finalists, a line through FLOPs for the rest."""

    def __init__(self, model: ModelConfig, fixed: dict[str, object], vocab: tuple[int, int], processes: int,
                 device: torch.device, precisions: tuple[str, ...], share: Share, cutoff: int = 0) -> None:
        """`cutoff`: an adaptive head over that many symbols, to time against the full head and take if faster."""
        self.model, self.fixed, (self.vocab_size, self.symbols), self.processes = model, fixed, vocab, processes
        self.device, self.precisions, self.share = device, precisions, share
        self.borrowed = False  # whether bf16's wide anchor went untimed, fp32's slope standing in
        self.head_why = self._head(cutoff) if cutoff else ""
        self.lines: dict[str, tuple[float, float, float]] = {}
        for precision in precisions:
            self.lines[precision] = self._line(precision)

    def shape(self, layers: int, width: int) -> ModelConfig:
        """A candidate's model, bare of dropout: the anchors' line is the shape's speed, and `regularized` adds the
        dropout a finalist's trial then runs."""
        return replace(self.model, num_layers=layers, hidden_size=width, dropout=0.0, embed_dropout=0.0,
                       weight_dropout=0.0,
                       embed_dim=int(self.fixed.get("model.embed_dim", EMBED_DIM)))  # type: ignore[arg-type]

    def regularized(self, e: Estimate, train_chars: int) -> Estimate:
        """`e` with the dropout and weight dropout its epochs call for (or the config's), so that its trial draws the
        masks its loop will: they cost 6% of a 1 x 512 bf16 step and 8-14% of a 1 x 768 one (docs/results.md)."""
        dropout, weight_dropout = regularization_for(e.epochs, e.capacity / train_chars)
        model = replace(e.model, embed_dropout=self.model.embed_dropout,
                        dropout=float(self.fixed.get("model.dropout", dropout)),  # type: ignore[arg-type]
                        weight_dropout=float(self.fixed.get("model.weight_dropout", weight_dropout)))  # type: ignore[arg-type]
        return replace(e, model=model)

    def _head(self, cutoff: int) -> str:
        """Take an adaptive head over the `cutoff` most frequent symbols unless the narrow anchor, timed in turns with
        the full head, runs MARGIN slower with it: where most of a vocabulary is rare it learns better a step too (on
        the kernel's core 0.070-0.086 at the same shape and seed, docs/results.md). For the plan's why line, what it
        found."""
        precision, full = self.precisions[-1], self.shape(*ANCHORS[0])
        trials = [Trial(precision, m, BATCH // self.processes, SEQ_LEN)
                  for m in (full, replace(full, head_cutoff=cutoff))]
        seconds = [self._cached(t.precision, t.model, BATCH, SEQ_LEN) for t in trials]
        if None in seconds:
            self.share.before_timing()
            seconds = turn_seconds(trials, self.vocab_size, self.device)
        speedup, shape = seconds[0] / seconds[1], f"{full.num_layers}x{full.hidden_size}"
        if speedup * MARGIN < 1:
            return (f"; a full head: with its {self.vocab_size - cutoff:,} rare symbols in one cluster, {shape} ran "
                    f"at only {speedup:.2f}x its speed")
        self.model = replace(self.model, head_cutoff=cutoff)
        return (f"; an adaptive head: with its {self.vocab_size - cutoff:,} rare symbols in one cluster, {shape} ran "
                f"at {speedup:.2f}x a full head's speed")

    def flops(self, model: ModelConfig, batch: int, seq_len: int) -> float:
        return train_flops_per_char(self.vocab_size, model) * batch * seq_len

    def _time(self, precision: str, model: ModelConfig, batch: int, seq_len: int) -> float:
        if self._cached(precision, model, batch, seq_len) is None:
            self.share.before_timing()
        return step_seconds(precision, model, self.vocab_size, batch // self.processes, seq_len, self.device)[0]

    def _line(self, precision: str) -> tuple[float, float, float]:
        """(FLOPs, seconds, exponent) of a power law through the two anchors timed at the default batch: exact at
        both, and never below zero as a straight line can go when a wide shape falls out of the CPU's caches.

        A second precision's wide anchor is timed only if the planning's share affords it, guessed from the first
        precision's line; if not, the first's exponent stands in (emulated bf16 ran one 1 x 768 trial in 7.5 s)."""
        narrow, wide = (self.shape(*a) for a in ANCHORS)
        f0, f1 = self.flops(narrow, BATCH, SEQ_LEN), self.flops(wide, BATCH, SEQ_LEN)
        t0 = self._time(precision, narrow, BATCH, SEQ_LEN)
        if self.lines:
            first = next(iter(self.lines))
            guess = self.on_line(first, wide, BATCH, SEQ_LEN) * t0 / self.lines[first][1]
            if self._cached(precision, wide, BATCH, SEQ_LEN) is None and not self.share.afford(trial_seconds(guess)):
                self.borrowed = True
                return f0, t0, self.lines[first][2]
        t1 = self._time(precision, wide, BATCH, SEQ_LEN)
        return f0, t0, min(max(math.log(t1 / t0) / math.log(f1 / f0), 0.0), 2.0)

    def on_line(self, precision: str, model: ModelConfig, batch: int, seq_len: int) -> float:
        """Seconds per step of a shape by the anchors' line."""
        f0, t0, exponent = self.lines[precision]
        return t0 * (self.flops(model, batch, seq_len) / f0) ** exponent

    def why(self, e: Estimate) -> str:
        """What chose the precision of `e`: the anchors' speed in each, for its shape."""
        if len(self.precisions) == 1:
            return ""
        fp32, bf16 = (self.on_line(p, e.model, e.batch_size, e.seq_len) for p in ("fp32", "bf16"))
        if self.borrowed:
            return (f"; {e.precision}: bf16 ran {ANCHORS[0][0]}x{ANCHORS[0][1]} at {fp32 / bf16:.2f}x fp32's speed "
                    "and was not timed wider, which would cost more of the budget than planning may")
        return f"; {e.precision}: the anchors put bf16 at {fp32 / bf16:.2f}x fp32's speed for this shape"

    def estimate(self, layers: int, width: int, train_chars: int, seconds: float) -> Estimate:
        """A candidate's loss, its batch doubled while it would take more than MAX_STEPS steps."""
        model = self.shape(layers, width)
        batch = int(self.fixed.get("train.batch_size", max(BATCH, self.processes)))  # type: ignore[arg-type]
        seq_len = int(self.fixed.get("train.seq_len", SEQ_LEN))  # type: ignore[arg-type]
        while True:
            b, t, _ = fit_batch(train_chars, batch, seq_len, "train", self.processes)
            per = {p: self.on_line(p, model, b, t) for p in self.precisions}
            # bf16 only by MARGIN, as 'auto' decides: within timing noise, fp32 (exact) wins
            precision = self.precisions[0] if len(per) == 1 or per["fp32"] / per["bf16"] < MARGIN else "bf16"
            per_step = per[precision]
            e = self._estimate(model, b, t, precision, per_step, False, train_chars, seconds)
            if e.steps <= MAX_STEPS or "train.batch_size" in self.fixed or batch * 2 > MAX_BATCH or b < batch:
                return e
            batch *= 2

    def _cached(self, precision: str, model: ModelConfig, batch: int, seq_len: int) -> float | None:
        return cached_seconds(precision, model, self.vocab_size, batch // self.processes, seq_len, self.device)

    def time_finalists(self, finalists: list[Estimate]) -> dict[ModelConfig, float]:
        """Seconds per step of the finalists, by model: the cached ones read, and the rest timed in turns, as many
        as the planning's share affords, best first.

        A cached finalist was timed at another moment, which on a VM can be 15% slower or faster than now, more than
        separates two finalists; so the first cached one is timed in turns with them where the share affords it too,
        and their speeds are read on its cached scale."""
        cached = {e.model: self._cached(e.precision, e.model, e.batch_size, e.seq_len) for e in finalists}
        known = {model: s for model, s in cached.items() if s is not None}
        todo: list[Estimate] = []
        cost = 0.0
        for e in finalists:
            price = trial_seconds(e.seconds_per_step)
            if e.model not in known and self.share.afford(cost + price):
                todo.append(e)
                cost += price
        anchor = next((e for e in finalists if e.model in known), None)
        if anchor and todo and self.share.afford(cost + trial_seconds(known[anchor.model])):
            todo = [anchor, *todo]
        if todo:
            self.share.before_timing()
            seconds = turn_seconds([Trial(e.precision, e.model, e.batch_size // self.processes, e.seq_len)
                                    for e in todo], self.vocab_size, self.device)
            known |= {e.model: s for e, s in zip(todo, seconds, strict=True)}
        return known

    def shorten_window(self, e: Estimate, train_chars: int, seconds: float) -> tuple[Estimate, str]:
        """`e` with its window halved (`halve_window`) again and again while each halving is at least MARGIN faster
        than the window before it, down to SHORTEST_WINDOW; with what decided each, for the plan's why line."""
        whys = []
        while True:
            shorter, why = self.halve_window(e, train_chars, seconds)
            whys.append(why)
            if shorter.seq_len == e.seq_len:
                return shorter, "".join(whys)
            e = shorter

    def halve_window(self, e: Estimate, train_chars: int, seconds: float) -> tuple[Estimate, str]:
        """`e` in twice the streams of half the window, the same characters a step, where the two windows timed in
        turns find that at least MARGIN faster (a small head's step is mostly the recurrence, which half the window
        runs in half the sequential steps); else `e` itself. With what decided it, for the plan's why line."""
        if {"train.batch_size", "train.seq_len"} & self.fixed.keys() or 2 * e.batch_size > MAX_BATCH \
                or e.seq_len // 2 < SHORTEST_WINDOW:
            return e, ""  # a window the config set, a batch already as large as a plan takes, or the shortest window
        b, t, _ = fit_batch(train_chars, 2 * e.batch_size, e.seq_len // 2, "train", self.processes)
        if (b, t) != (2 * e.batch_size, e.seq_len // 2):
            return e, ""  # the corpus is too short for twice the streams
        per_half = self._cached(e.precision, e.model, b, t)  # timed in turns with `e`'s window by an earlier plan
        if per_half is not None:
            per_full = self._cached(e.precision, e.model, e.batch_size, e.seq_len) or e.seconds_per_step
        elif self.share.afford(2 * trial_seconds(e.seconds_per_step)):  # the same characters a step: about as long
            self.share.before_timing()
            per_full, per_half = turn_seconds([Trial(e.precision, e.model, e.batch_size // self.processes, e.seq_len),
                                               Trial(e.precision, e.model, b // self.processes, t)],
                                              self.vocab_size, self.device)
        else:
            return e, f"; {e.batch_size} x {e.seq_len}: {b} x {t} untimed, which would cost more than planning may"
        speedup = per_full / per_half
        if speedup < MARGIN:
            return (self.again(e, per_full, train_chars, seconds),
                    f"; {e.batch_size} x {e.seq_len}: {b} x {t} ran at {speedup:.2f}x its speed")
        return (self._estimate(e.model, b, t, e.precision, per_half, True, train_chars, seconds),
                f"; {b} x {t}: {speedup:.2f}x the speed of {e.batch_size} x {e.seq_len}")

    def again(self, e: Estimate, timed: float | None, train_chars: int, seconds: float) -> Estimate:
        """The estimate for `seconds`, at its `timed` speed where it was timed."""
        per_step, measured = (e.seconds_per_step, e.measured) if timed is None else (timed, True)
        return self._estimate(e.model, e.batch_size, e.seq_len, e.precision, per_step, measured, train_chars, seconds)

    def loop_share(self, precision: str, model: ModelConfig, batch: int, seq_len: int) -> tuple[float, str]:
        """The share of a trial's speed a run's loop keeps, and whence: the median of the latest runs of this shape
        on this machine, else of every shape's runs here, else LOOP_SHARE."""
        own, every = loop_shares(precision, model, self.vocab_size, batch // self.processes, seq_len, self.device)
        if own:
            share = statistics.median(own)
            return share, f"of which this shape's loop kept {share:.2f} in {_runs(own)} here"
        if every:
            share = statistics.median(every)
            return share, f"of which loops here kept {share:.2f} in {_runs(every)} of other shapes"
        return LOOP_SHARE, f"of which a loop keeps about {LOOP_SHARE:.2f}: no run here to learn from yet"

    def _estimate(self, model: ModelConfig, batch: int, seq_len: int, precision: str, per_step: float,
                  measured: bool, train_chars: int, seconds: float) -> Estimate:
        loop, loop_from = self.loop_share(precision, model, batch, seq_len)
        steps = int(loop * max(seconds, 0.0) / per_step)
        steps = min(steps, int(self.fixed.get("train.max_steps", steps)))  # type: ignore[call-overload]
        seen = steps * batch * seq_len
        capacity = parameter_count(self.symbols, model)
        return Estimate(model, batch, seq_len, parameter_count(self.vocab_size, model), capacity, precision, per_step,
                        measured, steps, seen / train_chars, predicted_loss(capacity, max(seen, 1), train_chars),
                        loop, loop_from)


def _runs(shares: list[float]) -> str:
    return "one run" if len(shares) == 1 else f"{len(shares)} runs"
