"""The run planner: with a time budget, choose the model and optimizer keys a config leaves unset.

It predicts, for every candidate shape, the validation loss it should reach in the budget by the fitted rule
(`charrnn.training.rule`), and takes the best. The steps come from this device: two anchor shapes are timed and
a power law through their FLOPs per step estimates every candidate; the best few are then timed themselves
(`charrnn.training.throughput`, cached, so a second plan on this machine measures nothing). All of it counts in
the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.config import Config, config_data, load_config, reference
from charrnn.data.encoding import load_data
from charrnn.data.split import split_of
from charrnn.devices import resolve_device
from charrnn.errors import UserError
from charrnn.model import adaptive
from charrnn.training.distributed import World
from charrnn.training.rule import COVERAGE, RISK_FREE, RISK_WEIGHT_DROP, lr_for, risk, used_symbols
from charrnn.training.speed import Estimate, Share, SpeedModel, precisions

PLANNED = ("model.embed_dim", "model.hidden_size", "model.num_layers", "model.dropout", "model.weight_dropout",
           "model.head_cutoff",
           "train.batch_size", "train.seq_len", "train.lr", "train.weight_decay", "train.warmup_steps",
           "train.min_lr_ratio", "train.precision", "train.max_steps")
WIDTHS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048)
DEPTHS = (1, 2)  # the sweeps hold one run of 3 layers, which the rule overrated by 0.048: not offered until swept
# Deeper models narrower than this learn far slower than the rule expects (docs/results.md): 2 x 256 scored 1.5584
# and 1.5591 on two hosts where it predicts 1.5145, 2 x 128 0.55 behind 1 x 256 on a source tree; 2 x 384 and
# 2 x 512 land within 0.013 of it. So they are not offered.
DEEP_MIN_WIDTH = 384
# Nor are they offered where the budget buys fewer steps than this: early on, a second layer lags one wide layer
# however its parameters rate (War and Peace at 600 steps: 2 x 512 0.055 behind 1 x 512, where the rule puts it
# 0.016 ahead; a 161 MB source tree at 700: 2 x 384 0.35-0.64 behind 1 x 512; tinyshakespeare at 600: 0.014 ahead).
DEEP_MIN_STEPS = 1000
# And past them it still lags one wide layer, by about DEPTH_LAG * 1000 / steps nats/char: the depth term that a fit
# of 51 runs found (`scripts/fit_scaling.py --depth`: C 0.038, gamma 1, docs/results.md). The rule leaves it out, so
# candidates are ranked with it added: at 600 s of tinyshakespeare the rule rated 2 x 512 and 1 x 768 level (0.315),
# and 1 x 768 scored 1.4014 and 1.4017 against 1.4084 and 1.4195 on two seeds, about 4,000 steps in.
DEPTH_LAG = 0.038
# The rule cannot tell apart candidates it rates within a margin of each other (its RMS residual is 0.025), and where
# it errs, it errs one way by how much the best risks overfitting (its epochs times parameters per character).
# Over RISK_WEIGHT_DROP, the wider ones scored far worse than it expects: on tinyshakespeare 1 x 1024 scored 1.4733 at
# 600 s and 1 x 1536 1.4649 in an hour, where 1 x 768, rated 0.001 and 0.006 behind them, scored 1.3948-1.4028 in
# 600 s and 1.3993 in the hour. So those rated within RULE_MARGIN are taken fewest parameters first.
RULE_MARGIN = 0.008
# Up to RISK_FREE, with nothing to regularize, the wider ones scored better than it expects: on War and Peace on the
# Zen 4, 1 x 512, rated 0.003-0.010 behind 1 x 384, scored 0.018 ahead on two seeds; on the kernel's core 1 x 512,
# rated 0.006 behind, scored 0.012 and 0.014 ahead on its split; the sweeps' War and Peace runs put 1 x 256 0.04-0.05
# worse than the rule and 1 x 512 0.03-0.06 better. So those of the best's depth rated within WIDE_MARGIN, under both
# errors seen (0.019, 0.027) and the residual, are taken widest first (docs/results.md).
WIDE_MARGIN = 0.015
FINALISTS = 3  # the best candidates by estimated speed, timed before the choice
# A finalist, or a second precision's wide anchor, is timed when the planning, with its timing (by its estimate),
# stays within this share of the budget: under the 5% the planning may cost, with room for one slower than guessed.
TIMING_SHARE = 0.04
PARAMS_PER_CHAR = 15  # no bigger model than this per training character: 1 x 512 (13.5) was best on 100K chars
WARMUP, WEIGHT_DECAY = 50, 0.1  # the presets' recipe
MIN_BUDGET = 20.0  # seconds: below this, the measurements alone would eat the budget
MIN_STEPS = 100
STEP_CAP = 100_000  # a plan's max_steps, as the presets': the budget ends the run (the default 5,000 cut a 1-h one)


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
    why: str = ""  # how the precision and the window were chosen, where they were
    symbols: tuple[int, int] = (0, 0)  # (symbols in use, vocabulary size)
    passed_over: Estimate | None = None  # a deeper model the rule rated better, left out (`_passed_over`)
    favourite: Estimate | None = None  # the finalist ranked best, where another rated level with it won

    def lines(self) -> list[str]:
        """What the planner chose and why, for the user, before training."""
        # The why line compares every finalist on the whole budget, as they were ranked; the steps line is the
        # chosen one's on the seconds the planning left.
        c, m, t = self.chosen, self.config.model, self.config.train
        others = ", ".join(f"{e.shape} {e.loss:.3f} at {e.loop / e.seconds_per_step:.1f} steps/s"
                           for e in self.finalists if e.shape != c.shape)
        head = f"an adaptive head over {m.head_cutoff:,} symbols, " if adaptive(self.symbols[1], m) else ""
        lines = [f"plan: {m.num_layers} x {m.hidden_size} {m.cell.upper()}, embedding {m.embed_dim}, {head}"
                 f"{c.params:,} parameters for {self.train_chars:,} training characters "
                 f"({c.params / self.train_chars:.2g} per character); batch {t.batch_size} x seq_len {t.seq_len}, "
                 f"lr {t.lr:.2g}, dropout {m.dropout:g}, "
                 + (f"weight dropout {m.weight_dropout:g}, " if m.weight_dropout else "")
                 + f"weight decay {t.weight_decay:g}",
                 f"plan: expects {c.steps:,} steps at {c.loop / c.seconds_per_step:.1f} steps/s ({c.precision}: "
                 f"{'timed' if c.measured else 'estimated'} at {1 / c.seconds_per_step:.1f}, {c.loop_from}), "
                 f"{c.steps * c.batch_size * c.seq_len:,} characters = "
                 f"{c.epochs:.2g} epochs, in {self.budget:g} s of which planning took {self.seconds:.1f} s",
                 f"plan: why: of {self.considered} candidates the rule predicts {self.finalists[0].loss:.3f} nats/char "
                 f"above the corpus's floor for {c.shape}" + (f", against {others}" if others else "")
                 + f"; dropout {m.dropout:g}" + (f", weight dropout {m.weight_dropout:g}" if m.weight_dropout else "")
                 + f" for {c.epochs:.2g} epochs" + self.why]
        if 2 * self.symbols[0] <= self.symbols[1]:  # worth saying when most of the vocabulary is rare
            lines.append(f"plan: the rule counts {c.capacity:,} of the parameters: the embedding and head rows of the "
                         f"{self.symbols[0]:,} symbols that make up {COVERAGE:.1%} of the training text, of "
                         f"{self.symbols[1]:,}")
        if c.capacity > PARAMS_PER_CHAR * self.train_chars:
            lines.append(f"plan: note: no candidate has {PARAMS_PER_CHAR} parameters per training character or "
                         "fewer, so this, the smallest, will overfit: a longer corpus would do better")
        lines += self._not_taken()
        if c.steps < MIN_STEPS:
            lines.append(f"plan: note: the budget buys only {c.steps:,} steps even of this model: a longer budget "
                         "would do better")
        if self.kept:
            lines.append(f"plan: kept from your config: {', '.join(self.kept)}")
        return lines

    def _not_taken(self) -> list[str]:
        """Why a deeper model the rule rated better (`passed_over`), and the finalist ranked best (`favourite`),
        did not train."""
        lines = []
        if self.passed_over:
            e = self.passed_over
            why = (f"the budget buys it {e.steps:,} steps, and under {DEEP_MIN_STEPS:,} a second layer learns slower "
                   "than one wide layer") if e.steps < DEEP_MIN_STEPS else \
                (f"a second layer trails one wide layer by about {depth_lag(e):.3f} after {e.steps:,} steps, more "
                 "than the rule rates it ahead")
            lines.append(f"plan: not {e.shape}, which the rule rates at {e.loss:.3f}: {why}")
        if self.favourite:
            f = self.favourite
            at = f"at {f.epochs:.2g} epochs of {f.capacity / self.train_chars:.2g} parameters a character it"
            lines.append(f"plan: not {f.shape}, which the rule rates at {f.loss:.3f}: " + (
                f"{at} risks overfitting, and of the candidates rated within {RULE_MARGIN:g} of it the fewest "
                "parameters train, as wider ones have scored far worse there than the rule expects"
                if self.chosen.capacity < f.capacity else
                f"{at} is far from overfitting, and of the candidates rated within {WIDE_MARGIN:g} of it the widest "
                "trains, as wider ones have scored better there than the rule expects"))
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
    corpus = load_data(cfg.data, progress=progress)
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
    check_budget(cfg.train.time_budget)
    budget, symbols = cfg.train.time_budget, symbols or vocab_size
    share = Share(TIMING_SHARE * budget, clock)
    fixed = {k: _get(cfg, k) for k in PLANNED if k not in free}
    precision = cfg.train.precision if "train.precision" in fixed else "auto"  # unset: as fast as measured

    # Where most of the vocabulary is rare, an adaptive head over the symbols in use may be far faster (`_head`).
    cutoff = symbols if "model.head_cutoff" not in fixed and 2 * symbols <= vocab_size else 0
    speed = SpeedModel(cfg.model, fixed, (vocab_size, symbols), processes, device,
                       precisions(precision, device, cfg.model), share, cutoff)
    candidates = [(layers, width) for layers in _options(fixed, "model.num_layers", DEPTHS)
                  for width in _options(fixed, "model.hidden_size", WIDTHS) if layers == 1 or width >= DEEP_MIN_WIDTH]
    # Every candidate is ranked on the whole budget, so that the plan depends on the measurements alone.
    estimates = [speed.estimate(layers, width, train_chars, budget) for layers, width in candidates]
    cap = PARAMS_PER_CHAR * train_chars
    depth_given = "model.num_layers" in fixed
    rank = _ranking(depth_given)
    fits = sorted((e for e in estimates if e.capacity <= cap and e.steps >= MIN_STEPS), key=rank)
    usable = _early_depth(fits, depth_given) or \
        [min(estimates, key=lambda e: (e.steps < MIN_STEPS, e.capacity))]  # nothing fits: the smallest that runs
    usable = _level_first(usable, rank, train_chars)
    # The finalists, best first, in the precision the anchors chose: timed in turns, as many as the planning's share
    # of the budget affords, from the cache always; the rest keep the anchors' estimate.
    # Each is timed with the dropout its estimate's epochs call for, which its run will have.
    regularized = [speed.regularized(e, train_chars) for e in usable[:FINALISTS]]
    timed = speed.time_finalists(regularized)
    ranked = _early_depth(sorted((speed.again(e, timed.get(e.model), train_chars, budget) for e in regularized),
                                 key=rank), depth_given)
    finalists = _level_first(ranked, rank, train_chars)
    passed_over = None if depth_given else _passed_over(finalists, fits, rank)
    best, window_why = speed.shorten_window(finalists[0], train_chars, budget)
    chosen = speed.again(best, None, train_chars, budget - share.elapsed())  # at its timing, in the seconds left
    values = {"model.num_layers": chosen.model.num_layers, "model.hidden_size": chosen.model.hidden_size,
              "model.embed_dim": chosen.model.embed_dim, "train.batch_size": chosen.batch_size,
              "train.seq_len": chosen.seq_len, "model.dropout": chosen.model.dropout,
              "model.weight_dropout": chosen.model.weight_dropout, "model.head_cutoff": chosen.model.head_cutoff,
              "train.lr": lr_for(chosen.model.num_layers, chosen.model.hidden_size, chosen.batch_size, chosen.seq_len),
              "train.weight_decay": WEIGHT_DECAY, "train.warmup_steps": WARMUP, "train.min_lr_ratio": 0.0,
              "train.precision": chosen.precision, "train.max_steps": max(STEP_CAP, 2 * chosen.steps)}
    planned = cfg.with_overrides((), {k: v for k, v in values.items() if k in free})
    return Plan(planned, chosen, tuple(finalists), len(estimates), train_chars, budget, share.elapsed(),
                tuple(k for k in PLANNED if k not in free),
                (speed.why(chosen) if "train.precision" in free else "") + window_why + speed.head_why,
                (symbols, vocab_size), passed_over, ranked[0] if ranked[0] is not finalists[0] else None)


def _ranking(depth_given: bool) -> Callable[[Estimate], float]:
    """The key candidates are ranked by: the rule's loss, and a deeper model's lag where the config left the depth."""
    return lambda e: e.loss + (0.0 if depth_given else depth_lag(e))


def depth_lag(e: Estimate) -> float:
    """How far (nats/char) a deeper model trails one wide layer after its steps, by the fitted depth term."""
    return DEPTH_LAG * (e.model.num_layers - 1) * 1000 / max(e.steps, 1)


def _passed_over(finalists: list[Estimate], fits: list[Estimate], rank: Callable[[Estimate], float]) -> Estimate | None:
    """A deeper model than the first finalist that the rule rates better, left out for its few steps or its
    lag (not for a margin's reordering, `_level_first`): a finalist as timed, else as estimated."""
    first, timed = finalists[0], {e.shape for e in finalists}
    return next((e for e in [*finalists, *(e for e in fits if e.shape not in timed)]
                 if e.model.num_layers > first.model.num_layers and e.loss < first.loss
                 and (e.steps < DEEP_MIN_STEPS or rank(e) >= rank(first))), None)


def _level_first(ranked: list[Estimate], rank: Callable[[Estimate], float], train_chars: int) -> list[Estimate]:
    """`ranked` (best first) with, where its best risks overfitting, those rated within RULE_MARGIN of it first,
    fewest parameters first; where it is far from it, those of its depth rated within WIDE_MARGIN and as far from it,
    widest first (see RULE_MARGIN and WIDE_MARGIN)."""
    best, at = ranked[0], lambda e: risk(e.epochs, e.capacity / train_chars)
    if at(best) > RISK_WEIGHT_DROP:
        level = [e for e in ranked if rank(e) <= rank(best) + RULE_MARGIN]  # a prefix of `ranked`
        return sorted(level, key=lambda e: e.capacity) + ranked[len(level):]
    if at(best) > RISK_FREE:
        return ranked
    wider = [e for e in ranked if rank(e) <= rank(best) + WIDE_MARGIN and at(e) <= RISK_FREE
             and e.model.num_layers == best.model.num_layers]
    return sorted(wider, key=lambda e: -e.model.hidden_size) + [e for e in ranked if e not in wider]


def _early_depth(ranked: list[Estimate], depth_given: bool) -> list[Estimate]:
    """`ranked` less the deeper models that get fewer than DEEP_MIN_STEPS steps, unless the config set the depth or
    nothing else is left."""
    shallow_or_long = [e for e in ranked if e.model.num_layers == 1 or e.steps >= DEEP_MIN_STEPS]
    return ranked if depth_given else shallow_or_long or ranked


def _get(cfg: Config, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _options(fixed: dict[str, object], key: str, grid: tuple[int, ...]) -> tuple[int, ...]:
    return (fixed[key],) if key in fixed else grid  # type: ignore[return-value]
