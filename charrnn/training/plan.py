"""The run planner: with a time budget, choose the model and optimizer keys a config leaves unset.

It predicts, for every candidate shape, the validation loss it should reach in the budget by the fitted rule
(`charrnn.training.rule`), and takes the best. The steps come from this device: two anchor shapes are timed and
a power law through their FLOPs per step estimates every candidate; the best few are then timed themselves
(`charrnn.training.throughput`, cached, so a second plan on this machine measures nothing). All of it counts in
the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.config import Config, ModelConfig, config_data, load_config, reference
from charrnn.data.batching import fit_batch
from charrnn.data.encoding import load_corpus
from charrnn.data.split import split_of
from charrnn.devices import resolve_device, resolve_precision
from charrnn.errors import UserError
from charrnn.model import parameter_count, train_flops_per_char
from charrnn.training.distributed import World
from charrnn.training.precision import MARGIN
from charrnn.training.rule import BATCH, COVERAGE, dropout_for, lr_for, predicted_loss, used_symbols
from charrnn.training.throughput import cached_seconds, step_seconds

PLANNED = ("model.embed_dim", "model.hidden_size", "model.num_layers", "model.dropout", "train.batch_size",
           "train.seq_len", "train.lr", "train.weight_decay", "train.warmup_steps", "train.min_lr_ratio",
           "train.precision")
WIDTHS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)
DEPTHS = (1, 2)  # the sweeps hold one run of 3 layers, which the rule overrated by 0.048: not offered until swept
ANCHORS = ((1, 256), (1, 768))  # (num_layers, hidden_size) timed first, to draw the speed line through
FINALISTS = 3  # the best candidates by estimated speed, timed before the choice
TIMING_SHARE = 0.03  # the finalists are timed while planning has spent less than this share of the budget
SEQ_LEN, MAX_BATCH, EMBED_DIM, WARMUP, WEIGHT_DECAY = 100, 512, 64, 50, 0.1  # the presets' recipe, and BATCH
MAX_STEPS = 20_000  # a plan with more steps than this doubles its batch instead (GPUs, long budgets)
PARAMS_PER_CHAR = 15  # no bigger model than this per training character: 1 x 512 (13.5) was best on 100K chars
LOOP_SHARE = 0.8  # the share of the timed trial's speed the real loop keeps (measured: docs/results.md)
MIN_BUDGET = 20.0  # seconds: below this, the measurements alone would eat the budget
MIN_STEPS = 100


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

    @property
    def shape(self) -> str:
        return f"{self.model.num_layers}x{self.model.hidden_size}"


@dataclass(frozen=True)
class Plan:
    config: Config  # the run's config with the planned keys filled in
    chosen: Estimate
    finalists: tuple[Estimate, ...]  # the timed candidates, best first
    considered: int  # candidates estimated
    train_chars: int
    budget: float
    seconds: float  # spent planning, counted in the budget
    kept: tuple[str, ...]  # planned keys the config set, which the plan kept
    precision_why: str = ""  # how the precision was chosen, where it was
    symbols: tuple[int, int] = (0, 0)  # (symbols in use, vocabulary size)

    def lines(self) -> list[str]:
        """What the planner chose and why, for the user, before training."""
        c, m, t = self.chosen, self.config.model, self.config.train
        others = ", ".join(f"{e.shape} {e.loss:.3f} at {1 / e.seconds_per_step:.1f} steps/s" for e in self.finalists
                           if e.model != c.model)
        lines = [f"plan: {m.num_layers} x {m.hidden_size} {m.cell.upper()}, embedding {m.embed_dim}, {c.params:,} "
                 f"parameters for {self.train_chars:,} training characters ({c.params / self.train_chars:.2g} per "
                 f"character); batch {t.batch_size} x seq_len {t.seq_len}, lr {t.lr:.2g}, dropout {m.dropout:g}, "
                 f"weight decay {t.weight_decay:g}",
                 f"plan: expects {c.steps:,} steps at {1 / c.seconds_per_step:.1f} steps/s ({c.precision}, "
                 f"{'timed' if c.measured else 'estimated'}), {c.steps * c.batch_size * c.seq_len:,} characters = "
                 f"{c.epochs:.2g} epochs, in {self.budget:g} s of which planning took {self.seconds:.1f} s",
                 f"plan: why: of {self.considered} candidates the rule predicts {c.loss:.3f} nats/char above the "
                 f"corpus's floor for {c.shape}" + (f", against {others}" if others else "")
                 + f"; dropout {m.dropout:g} for {c.epochs:.2g} epochs" + self.precision_why]
        if 2 * self.symbols[0] <= self.symbols[1]:  # worth saying when most of the vocabulary is rare
            lines.append(f"plan: the rule counts {c.capacity:,} of the parameters: the embedding and head rows of the "
                         f"{self.symbols[0]:,} symbols that make up {COVERAGE:.1%} of the training text, of "
                         f"{self.symbols[1]:,}")
        if c.capacity > PARAMS_PER_CHAR * self.train_chars:
            lines.append(f"plan: note: no candidate has {PARAMS_PER_CHAR} parameters per training character or "
                         "fewer, so this, the smallest, will overfit: a longer corpus would do better")
        if c.steps < MIN_STEPS:
            lines.append(f"plan: note: the budget buys only {c.steps:,} steps even of this model: a longer budget "
                         "would do better")
        if self.kept:
            lines.append(f"plan: kept from your config: {', '.join(self.kept)}")
        return lines

    def record(self) -> str:
        """The plan as TOML comments, to head the run's config.toml."""
        return "".join(f"# {line}\n" for line in self.lines()) + "\n"


def free_keys(cfg: Config, given: Sequence[str]) -> tuple[str, ...]:
    """The keys a new run's plan fills: the unset ones, when there is a time budget, train.plan is on and the shape
    (model.hidden_size, model.num_layers) is not wholly set: a config that sets the shape has designed its model."""
    if not cfg.train.plan or not cfg.train.time_budget or {"model.hidden_size", "model.num_layers"} <= set(given):
        return ()
    return tuple(k for k in PLANNED if k not in given)


def given_keys(config: Path | Config | None, overrides: Sequence[str] = (),
               values: Mapping[str, Any] | None = None) -> set[str]:
    """The dotted keys a config file, `section.key=value` overrides and `values` set; a Config object sets all."""
    if isinstance(config, Config):
        return {key for key, _, _ in reference()}
    tables = config_data(config)
    given = {f"{section}.{key}" for section, table in tables.items() if isinstance(table, dict) for key in table}
    return given | {item.partition("=")[0].strip() for item in overrides} | set(values or {})


def plan_corpus(config: Path | None, overrides: Sequence[str], values: Mapping[str, Any],
                echo: Callable[[str], None], progress: bool = False) -> list[str]:
    """`charrnn plan`: what a new run of this config on this corpus would plan, as the lines it would print."""
    cfg = load_config(config, overrides, values)
    free = free_keys(cfg, given_keys(config, overrides, values))
    if not free:
        why = "train.plan is off" if not cfg.train.plan else \
            "the config sets the model's shape (model.hidden_size and model.num_layers)"
        return [f"plan: nothing to plan: {why}"]
    check_budget(cfg.train.time_budget)  # before reading a corpus
    corpus = load_corpus(Path(cfg.data.path), cfg.data.encoding, include=cfg.data.include, exclude=cfg.data.exclude,
                         progress=progress)
    split = split_of(corpus, cfg.data)
    echo(split.describe())
    return plan_run(cfg, free, len(split.train), corpus.vocab.size, resolve_device(cfg.train.device),
                    symbols=used_symbols(split.train, corpus.vocab.size)).lines()


def plan_in(world: World, cfg: Config, free: Sequence[str], train: np.ndarray, vocab_size: int,
            echo: Callable[[str], None]) -> Plan:
    """The plan of a run's main process, which every process then trains with; its lines go to `echo`."""
    plan = [plan_run(cfg, free, len(train), vocab_size, world.device, world.size,
                     symbols=used_symbols(train, vocab_size)) if world.is_main else None]
    if world.enabled:
        torch.distributed.broadcast_object_list(plan, src=0)
    for line in plan[0].lines():
        echo(line)
    return plan[0]


def check_budget(budget: float) -> None:
    """Refuse, in one line, a budget too short for the planner's measurements."""
    if budget < MIN_BUDGET:
        raise UserError(f"a time budget of {budget:g} s is too short to plan a run (planning times a few training "
                        f"steps first): give {MIN_BUDGET:g} s or more, or set the model and optimizer yourself "
                        "(or --no-plan)")


def plan_run(cfg: Config, free: Sequence[str], train_chars: int, vocab_size: int, device: torch.device,
             processes: int = 1, clock: Callable[[], float] = time.monotonic, symbols: int | None = None) -> Plan:
    """Plan the `free` keys of `cfg` for its time budget, this corpus size and this device; `symbols` is how many of
    the vocabulary's the text uses (`used_symbols`), all of them if not given."""
    start, budget, symbols = clock(), cfg.train.time_budget, symbols or vocab_size
    check_budget(budget)
    fixed = {k: _get(cfg, k) for k in PLANNED if k not in free}
    precision = cfg.train.precision if "train.precision" in fixed else "auto"  # unset: as fast as measured
    speed = _SpeedModel(cfg.model, fixed, (vocab_size, symbols), processes, device,
                        _precisions(precision, device, cfg.model))
    candidates = [(layers, width) for layers in _options(fixed, "model.num_layers", DEPTHS)
                  for width in _options(fixed, "model.hidden_size", WIDTHS)]
    # Every candidate is ranked on the whole budget, so that the plan depends on the measurements alone.
    estimates = [speed.estimate(layers, width, train_chars, budget) for layers, width in candidates]
    cap = PARAMS_PER_CHAR * train_chars
    usable = [e for e in estimates if e.capacity <= cap and e.steps >= MIN_STEPS] or \
        [min(estimates, key=lambda e: (e.steps < MIN_STEPS, e.capacity))]  # nothing fits: the smallest that runs
    usable.sort(key=lambda e: e.loss)
    # The finalists, best first, in the precision the anchors chose: measured while the planning has spent less
    # than its share of the budget, from the cache always; the rest keep the anchors' estimate.
    timed = {e.model: speed.time(e, measure=clock() - start < TIMING_SHARE * budget) for e in usable[:FINALISTS]}
    finalists = sorted((speed.again(e, timed.get(e.model), train_chars, budget) for e in usable[:FINALISTS]),
                       key=lambda e: e.loss)
    best = finalists[0]
    chosen = speed.again(best, timed.get(best.model), train_chars, budget - (clock() - start))  # the seconds left
    values = {"model.num_layers": chosen.model.num_layers, "model.hidden_size": chosen.model.hidden_size,
              "model.embed_dim": chosen.model.embed_dim, "train.batch_size": chosen.batch_size,
              "train.seq_len": chosen.seq_len, "model.dropout": dropout_for(best.epochs, best.capacity / train_chars),
              "train.lr": lr_for(chosen.model.num_layers, chosen.model.hidden_size, chosen.batch_size),
              "train.weight_decay": WEIGHT_DECAY, "train.warmup_steps": WARMUP, "train.min_lr_ratio": 0.0,
              "train.precision": chosen.precision}
    planned = cfg.with_overrides((), {k: v for k, v in values.items() if k in free})
    return Plan(planned, chosen, tuple(finalists), len(estimates), train_chars, budget, clock() - start,
                tuple(k for k in PLANNED if k not in free), speed.why(chosen) if "train.precision" in free else "",
                (symbols, vocab_size))


def _get(cfg: Config, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _options(fixed: dict[str, object], key: str, grid: tuple[int, ...]) -> tuple[int, ...]:
    return (fixed[key],) if key in fixed else grid  # type: ignore[return-value]


def _precisions(precision: str, device: torch.device, model: ModelConfig) -> tuple[str, ...]:
    """The precisions a candidate may train in: both of fp32 and bf16 where 'auto' would time them."""
    resolved = resolve_precision(precision, device, model.cell)
    if precision == "auto" and device.type == "cpu" and resolved == "bf16":
        return ("fp32", "bf16")
    return (resolved,)


class _SpeedModel:
    """Seconds per step of any candidate: timed for anchors and finalists, a line through FLOPs for the rest."""

    def __init__(self, model: ModelConfig, fixed: dict[str, object], vocab: tuple[int, int], processes: int,
                 device: torch.device, precisions: tuple[str, ...]) -> None:
        self.model, self.fixed, (self.vocab_size, self.symbols), self.processes = model, fixed, vocab, processes
        self.device, self.precisions = device, precisions
        self.lines = {p: self._line(p) for p in precisions}

    def shape(self, layers: int, width: int) -> ModelConfig:
        return replace(self.model, num_layers=layers, hidden_size=width,
                       embed_dim=int(self.fixed.get("model.embed_dim", EMBED_DIM)))  # type: ignore[arg-type]

    def flops(self, model: ModelConfig, batch: int, seq_len: int) -> float:
        return train_flops_per_char(self.vocab_size, model) * batch * seq_len

    def _time(self, precision: str, model: ModelConfig, batch: int, seq_len: int) -> float:
        return step_seconds(precision, model, self.vocab_size, batch // self.processes, seq_len, self.device)[0]

    def _line(self, precision: str) -> tuple[float, float, float]:
        """(FLOPs, seconds, exponent) of a power law through the two anchors timed at the default batch: exact at
        both, and never below zero as a straight line can go when a wide shape falls out of the CPU's caches."""
        (f0, t0), (f1, t1) = [(self.flops(m, BATCH, SEQ_LEN), self._time(precision, m, BATCH, SEQ_LEN))
                              for m in (self.shape(*a) for a in ANCHORS)]
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

    def time(self, e: Estimate, measure: bool) -> float | None:
        """Seconds per step of a candidate in its precision: cached, else measured if `measure`, else None."""
        cached = cached_seconds(e.precision, e.model, self.vocab_size, e.batch_size // self.processes, e.seq_len,
                                self.device)
        if cached is not None or not measure:
            return cached
        return self._time(e.precision, e.model, e.batch_size, e.seq_len)

    def again(self, e: Estimate, timed: float | None, train_chars: int, seconds: float) -> Estimate:
        """The estimate for `seconds`, at its `timed` speed where it was timed."""
        per_step, measured = (e.seconds_per_step, e.measured) if timed is None else (timed, True)
        return self._estimate(e.model, e.batch_size, e.seq_len, e.precision, per_step, measured, train_chars, seconds)

    def _estimate(self, model: ModelConfig, batch: int, seq_len: int, precision: str, per_step: float,
                  measured: bool, train_chars: int, seconds: float) -> Estimate:
        steps = int(LOOP_SHARE * max(seconds, 0.0) / per_step)
        seen = steps * batch * seq_len
        capacity = parameter_count(self.symbols, model)
        return Estimate(model, batch, seq_len, parameter_count(self.vocab_size, model), capacity, precision, per_step,
                        measured, steps, seen / train_chars, predicted_loss(capacity, max(seen, 1), train_chars))
