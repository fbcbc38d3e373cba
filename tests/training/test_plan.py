"""The run planner: deterministic for given measurements, explicit keys win, it travels through resume, and its
command line gives one-line answers to a tiny corpus or a budget too short to measure."""

import itertools
import json
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from charrnn.cli import main
from charrnn.config import ModelConfig, load_config
from charrnn.errors import UserError
from charrnn.model import adaptive, parameter_count
from charrnn.training import plan as plan_mod
from charrnn.training import precision as precision_mod
from charrnn.training import rule
from charrnn.training import speed as speed_mod
from charrnn.training.advice import advice, head_note
from charrnn.training.loop import train
from charrnn.training.plan import PLANNED, free_keys, given_keys, plan_run
from charrnn.training.resume import run_config
from charrnn.training.rule import dropout_for, lr_for, predicted_loss, regularization_for, used_symbols
from charrnn.training.speed import Estimate
from tests.training.test_loop import interrupt_after, weights

CPU = torch.device("cpu")
VOCAB = 65


def fake_speed(bf16_speedup: float = 0.5, per_flop: float = 1e-10):
    """A step_seconds stand-in: an overhead plus a cost per FLOP, bf16 at `bf16_speedup` x fp32's speed, logged."""
    calls = []

    def step_seconds(precision, model, vocab_size, batch_size, seq_len, device):
        calls.append((precision, model.num_layers, model.hidden_size, batch_size, model.dropout, model.weight_dropout))
        flops = 6 * parameter_count(vocab_size, model) * batch_size * seq_len
        seconds = 0.01 + per_flop * flops
        return (seconds / bf16_speedup if precision == "bf16" else seconds), False

    step_seconds.calls = calls
    return step_seconds


@pytest.fixture(autouse=True)
def nothing_cached(monkeypatch):
    """The planner sees only the fake timings each test gives it, never one an earlier test cached."""
    monkeypatch.setattr(speed_mod, "cached_seconds", lambda *args: None)


@pytest.fixture(autouse=True)
def nothing_learnt(monkeypatch):
    """Nor a loop share that an earlier test's run left: every estimate keeps LOOP_SHARE unless a test says so."""
    monkeypatch.setattr(speed_mod, "loop_shares", lambda *args: ([], []))


@pytest.fixture(autouse=True)
def turns_through_step_seconds(monkeypatch):
    """Trials timed in turns (the finalists, two windows) read whatever fake `step_seconds` a test gives, one after
    the other."""
    monkeypatch.setattr(speed_mod, "turn_seconds", lambda trials, vocab_size, device: [
        speed_mod.step_seconds(t.precision, t.model, vocab_size, t.batch_size, t.seq_len, device)[0]
        for t in trials])


@pytest.fixture(autouse=True)
def fp32_only(monkeypatch):
    """'auto' resolves to fp32, as on a CPU without bf16, whatever this host has; a test that wants both says so."""
    monkeypatch.setattr(speed_mod, "resolve_precision", lambda *args: "fp32")


@pytest.fixture
def measured(monkeypatch):
    """Planner and precision trial both read the fake timings; bf16 is slower, so every run stays fp32. Fake
    timings need no optimizer import, so none is paid, and a test's clock ticks for the timings alone."""
    speed = fake_speed()
    monkeypatch.setattr(speed_mod, "step_seconds", speed)
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)
    monkeypatch.setattr(precision_mod, "step_seconds", speed)
    return speed


def planned(*overrides: str, train_chars: int = 1_000_000, clock=None, vocab_size=VOCAB, symbols=None,
            budget: float = 600.0):
    cfg = load_config(None, [*overrides, "train.device='cpu'"], {"train.time_budget": budget})
    free = free_keys(cfg, given_keys(None, overrides, {"train.time_budget": budget}))
    return plan_run(cfg, free, train_chars, vocab_size, CPU, clock=clock or iter(range(100)).__next__,
                    symbols=symbols)


def test_the_plan_is_the_same_for_the_same_measurements_and_follows_them(measured, monkeypatch):
    a, b = planned(), planned()
    assert a.config == b.config and a.chosen == b.chosen
    assert a.config.train.time_budget == 600 and a.config.train.precision == "fp32"
    # A device where every step costs the same no matter the shape buys the largest model the corpus allows.
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (0.05, False))
    flat = planned()
    assert parameter_count(VOCAB, flat.config.model) > parameter_count(VOCAB, a.config.model)
    assert flat.chosen.params <= plan_mod.PARAMS_PER_CHAR * 1_000_000


def test_the_plan_predicts_from_its_rule_and_says_why(measured):
    p = planned()
    assert p.finalists[0].loss == min(e.loss for e in p.finalists) and p.chosen.model == p.finalists[0].model
    assert p.chosen.steps < p.finalists[0].steps  # the chosen one is told what the planning's seconds left it
    assert p.chosen.loss == pytest.approx(predicted_loss(p.chosen.params, p.chosen.steps * 3200, 1_000_000))
    assert (p.config.model.dropout, p.config.model.weight_dropout) == \
        regularization_for(p.finalists[0].epochs, p.chosen.params / 1_000_000)
    assert [dropout_for(e, 1.0) for e in (0.5, 2.2, 5, 8.7, 42, 500)] == [0.0, 0.0, 0.05, 0.1, 0.2, 0.3]
    risks = np.geomspace(0.1, 1e4, 200)
    assert np.all(np.diff([dropout_for(r, 1.0) for r in risks]) >= 0)  # never less for a greater risk
    assert dropout_for(4.0, 0.25) == 0.0  # many epochs of a corpus far larger than the model: nothing to memorize
    lines = p.lines()
    assert lines[0].startswith(f"plan: {p.config.model.num_layers} x {p.config.model.hidden_size} LSTM")
    assert "parameters for 1,000,000 training characters" in lines[0] and "epochs" in lines[1]
    assert lines[2].startswith(f"plan: why: of 15 candidates the rule predicts {p.finalists[0].loss:.3f} nats")
    assert all(f"{e.shape} {e.loss:.3f} at" in lines[2] for e in p.finalists[1:])  # all on the whole budget
    assert {c[0] for c in measured.calls} <= {"fp32", "bf16"} and len(measured.calls) >= 2


def test_the_plan_expects_the_steps_that_runs_on_this_machine_made(measured, monkeypatch):
    before = planned()
    assert before.chosen.loop == speed_mod.LOOP_SHARE
    assert "of which a loop keeps about 0.80: no run here to learn from yet" in before.lines()[1]
    # Runs of other shapes here kept 0.3-0.5 of their trials' speed: every candidate expects that median share.
    monkeypatch.setattr(speed_mod, "loop_shares", lambda *args: ([], [0.3, 0.4, 0.5]))
    slower = planned()
    assert {e.loop for e in slower.finalists} == {0.4}
    c = slower.chosen
    assert int(0.4 * (600 - slower.seconds) / c.seconds_per_step) <= c.steps <= int(0.4 * 600 / c.seconds_per_step)
    assert f"expects {c.steps:,} steps at {0.4 / c.seconds_per_step:.1f} steps/s (fp32: timed at " \
        f"{1 / c.seconds_per_step:.1f}, of which loops here kept 0.40 in 3 runs of other shapes)" \
        in slower.lines()[1]
    # A shape's own runs count over the others': the one shape that ran kept 0.9, and it alone expects that.
    own = (c.model.num_layers, c.model.hidden_size, c.batch_size, c.seq_len)
    monkeypatch.setattr(speed_mod, "loop_shares", lambda precision, model, vocab, batch, seq_len, device: (
        [0.9] if (model.num_layers, model.hidden_size, batch, seq_len) == own else [], [0.3, 0.4, 0.5, 0.9]))
    learnt = planned()
    assert learnt.chosen.model == c.model and learnt.chosen.loop == 0.9
    assert {e.loop for e in learnt.finalists if e.model != c.model} == {0.45}
    assert "of which this shape's loop kept 0.90 in one run here)" in learnt.lines()[1]


def test_the_learning_rate_follows_width_depth_and_characters_per_step_within_its_bounds():
    assert lr_for(1, 512, 32, 100) == 8e-3  # one layer: above the preset's 6e-3, by paired runs (docs/results.md)
    assert lr_for(1, 512, 64, 50) == 8e-3  # the same characters a step in more streams: the same lr
    assert lr_for(2, 512, 32, 100) == 4e-3  # deeper: the 10-minute preset's
    assert lr_for(1, 1024, 32, 100) == 4e-3 and lr_for(2, 1024, 128, 100) == 4e-3  # inversely with width, by sqrt
    assert lr_for(1, 64, 32, 100) == 1e-2 and lr_for(2, 2048, 1, 100) == 5e-4  # within [5e-4, 1e-2]


@pytest.mark.parametrize("speedup, window", [(1.2, (64, 50)), (1.02, (32, 100)), (0.8, (32, 100))])
def test_the_window_is_halved_only_where_a_timing_finds_it_faster(monkeypatch, speedup, window):
    speed = fake_speed()  # the same seconds for the same characters a step, whatever the window, unless sped up
    monkeypatch.setattr(speed_mod, "step_seconds",
                        lambda *args: (speed(*args)[0] / (speedup if args[4] == 50 else 1.0), False))
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)
    p = planned()
    assert (p.config.train.batch_size, p.config.train.seq_len) == window and p.chosen.measured
    assert f"; {window[0]} x {window[1]}: " in p.lines()[2]
    assert p.config.train.lr == lr_for(p.config.model.num_layers, p.config.model.hidden_size, *window)
    if window == (64, 50):  # the same characters a step, faster: more steps, and the rule's loss for them
        slow = planned("train.seq_len=100")
        assert slow.config.model == p.config.model and slow.config.train.batch_size == 32  # a set window is kept
        assert p.chosen.steps == pytest.approx(speedup * slow.chosen.steps, rel=0.01)
        assert p.chosen.loss < slow.chosen.loss
        monkeypatch.setattr(speed_mod, "MAX_BATCH", 32)
        assert planned().config.train.batch_size == 32  # never past the largest batch a plan may take


@pytest.mark.parametrize("gains, window", [((1.2, 1.1), (128, 25)), ((1.2, 1.02), (64, 50)), ((1.02, 1.5), (32, 100))])
def test_the_window_is_halved_again_while_each_halving_is_faster_down_to_the_shortest(monkeypatch, gains, window):
    """Each halving is timed beside the window before it, and one that is not MARGIN faster ends the halving: a
    faster window past a slower one is never reached. None goes below SHORTEST_WINDOW or past MAX_BATCH."""
    speed = fake_speed()
    speedup = {100: 1.0, 50: gains[0], 25: gains[0] * gains[1]}  # no 12: a window that short is never timed
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (speed(*args)[0] / speedup[args[4]], False))
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)
    p = planned()
    assert (p.config.train.batch_size, p.config.train.seq_len) == window
    assert p.config.train.lr == lr_for(p.config.model.num_layers, p.config.model.hidden_size, *window)
    if window == (128, 25):
        assert "; 64 x 50: 1.20x the speed of 32 x 100; 128 x 25: 1.10x the speed of 64 x 50" in p.lines()[2]
        assert p.chosen.steps == pytest.approx(1.1 * planned("train.batch_size=64", "train.seq_len=50").chosen.steps,
                                                  rel=0.01)
        monkeypatch.setattr(speed_mod, "MAX_BATCH", 64)
        capped = planned().config.train
        assert (capped.batch_size, capped.seq_len) == (64, 50)
    elif window == (64, 50):
        assert "; 64 x 50: 128 x 25 ran at 1.02x its speed" in p.lines()[2]


def test_the_window_is_decided_on_both_windows_timed_in_turns_not_on_a_trial_taken_apart(monkeypatch):
    """A finalist's trial that read fast (a quiet hour on a VM) does not make its halved window look no faster: the
    two windows are timed together, and an earlier plan's pair is read from the cache without timing again."""
    speed, turns = fake_speed(), []
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (0.85 * speed(*args)[0], False))  # a lucky reading
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)

    def turn_seconds(trials, vocab_size, device):
        if len({t.model for t in trials}) > 1:  # the finalists
            return [speed_mod.step_seconds(*t[:2], vocab_size, *t[2:], device)[0] for t in trials]
        turns.append([(t.batch_size, t.seq_len) for t in trials])
        # 64 x 50 1.15x as fast as either window beside it, which hold the same characters
        return [speed(t.precision, t.model, vocab_size, t.batch_size, t.seq_len, device)[0]
                / (1.15 if t.seq_len == 50 else 1.0) for t in trials]

    monkeypatch.setattr(speed_mod, "turn_seconds", turn_seconds)
    p = planned()
    # 64 x 50 is taken, then timed in turns with 128 x 25, which is no faster: it stays
    assert (p.config.train.batch_size, p.config.train.seq_len) == (64, 50)
    assert turns == [[(32, 100), (64, 50)], [(64, 50), (128, 25)]]
    assert "; 64 x 50: 1.15x the speed of 32 x 100; 64 x 50: 128 x 25 ran at 0.87x its speed" in p.lines()[2]
    # A pair an earlier plan timed is read, not timed again, and decides as it read then.
    full = 0.85 * 1.15 * p.chosen.seconds_per_step  # the finalist's lucky reading, as the cache would hold it
    pair = {(32, 100): full, (64, 50): full / 1.03}
    monkeypatch.setattr(speed_mod, "cached_seconds",
                        lambda pr, model, v, b, t, d: pair.get((b, t)) if model == p.chosen.model else None)
    turns.clear()
    again = planned()
    assert turns == [] and again.config.model == p.config.model
    assert (again.config.train.batch_size, again.config.train.seq_len) == (32, 100)
    assert again.chosen.seconds_per_step == pytest.approx(full)
    assert "; 32 x 100: 64 x 50 ran at 1.03x its speed" in again.lines()[2]


@pytest.mark.parametrize("bf16_speedup, expected", [(1.5, "bf16"), (1.02, "fp32"), (0.5, "fp32")])
def test_the_anchors_choose_the_precision_and_the_finalists_are_timed_in_it_alone(monkeypatch, bf16_speedup,
                                                                                 expected):
    speed = fake_speed(bf16_speedup)
    monkeypatch.setattr(speed_mod, "step_seconds", speed)
    monkeypatch.setattr(speed_mod, "resolve_precision", lambda *args: "bf16")  # a CPU where 'auto' may pick bf16
    p = planned()
    assert p.config.train.precision == expected  # within MARGIN, fp32 (exact) wins
    anchors, finalists, windows = speed.calls[:4], speed.calls[4:-2], speed.calls[-2:]
    assert sorted(c[0] for c in anchors) == ["bf16", "bf16", "fp32", "fp32"]
    assert len(finalists) == plan_mod.FINALISTS and {c[0] for c in finalists} == {expected}
    # the chosen one's window and its halved window, timed in turns, in its precision too
    assert [(c[0], c[3]) for c in windows] == [(expected, 32), (expected, 64)]
    assert f"; {expected}: the anchors put bf16 at {bf16_speedup:.2f}x fp32's speed" in p.lines()[2]


@pytest.mark.parametrize("budget, timed", [(138.0, False), (600.0, True)])
def test_a_slow_second_precision_is_timed_wide_only_if_the_budget_affords_it(monkeypatch, budget, timed):
    speed = fake_speed(bf16_speedup=0.34, per_flop=2e-11)  # as emulated bf16: fp32's 1 x 768 1.0 s, bf16's 2.9 s
    monkeypatch.setattr(speed_mod, "step_seconds", speed)
    monkeypatch.setattr(speed_mod, "resolve_precision", lambda *args: "bf16")
    p = planned(budget=budget)  # the trial of bf16's wide anchor: 2 steps, 5.9 s; the share: 5.5 s and 24 s
    wide_bf16 = [c for c in speed.calls if c[:3] == ("bf16", 1, 768)]
    assert bool(wide_bf16) == timed and ("bf16", 1, 256) in [c[:3] for c in speed.calls]
    assert p.config.train.precision == "fp32"  # 0.34x fp32's speed, whichever line says so
    why = p.lines()[2]
    assert ("bf16 ran 1x256 at 0.34x fp32's speed and was not timed wider" in why) != timed
    assert ("the anchors put bf16 at" in why) == timed


def test_torchs_one_time_optimizer_cost_is_paid_before_the_first_timing_and_off_the_planning_clock(monkeypatch):
    events, now = [], [0.0]
    speed = fake_speed()

    def timed(*args):
        events.append("time")
        return speed(*args)

    def prepare():
        events.append("prepare")
        now[0] += 100.0  # far past the share: charged to the planning, it would leave the finalists untimed

    monkeypatch.setattr(speed_mod, "step_seconds", timed)
    monkeypatch.setattr(speed_mod, "prepare", prepare)
    p = planned(clock=lambda: now[0])
    assert events[0] == "prepare" and events.count("prepare") == 1 and events.count("time") > 1
    assert p.seconds == 0.0 and all(e.measured for e in p.finalists)


def test_a_plan_whose_timings_are_all_cached_never_pays_the_optimizer_import(monkeypatch):
    speed = fake_speed()
    monkeypatch.setattr(speed_mod, "cached_seconds", lambda *args: speed(*args)[0])
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (speed(*args)[0], True))
    monkeypatch.setattr(speed_mod, "prepare", lambda: pytest.fail("prepared with every timing cached"))
    assert planned().chosen.measured


@pytest.mark.parametrize("spent, timed", [(9, 3), (14, 2), (19, 1), (20, 0)])
def test_the_finalists_are_timed_only_as_far_as_their_timings_fit_in_the_share(monkeypatch, spent, timed):
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (2.5, False))  # a trial: 2 steps, 5 s
    p = planned(clock=itertools.chain([0], itertools.repeat(spent)).__next__)  # the share of 600 s: 24 s
    assert [e.measured for e in p.finalists].count(True) == timed
    assert p.chosen.model == p.finalists[0].model  # the ranking takes estimated and timed finalists alike


def test_the_finalists_are_timed_in_turns_beside_the_first_cached_one(monkeypatch):
    """Finalists are compared on trials taken together, never on one taken now against one an earlier plan took at
    a quieter hour: a cached finalist is timed again, first, beside the new ones (which `turn_seconds` then reads on
    its cached scale); a plan whose finalists are all cached times nothing."""
    speed, turns = fake_speed(), []
    monkeypatch.setattr(speed_mod, "step_seconds", speed)
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)

    def turn_seconds(trials, vocab_size, device):
        turns.append([t.model for t in trials])
        return [speed(*t[:2], vocab_size, *t[2:], device)[0] for t in trials]

    monkeypatch.setattr(speed_mod, "turn_seconds", turn_seconds)
    first = planned()
    timing, window = turns  # the finalists in one timing, then the chosen one's two windows
    assert sorted(map(repr, timing)) == sorted(repr(e.model) for e in first.finalists) and len(set(window)) == 1
    assert all(e.measured for e in first.finalists)
    # An earlier plan cached the second; it is timed again, first, beside the two that are new.
    quiet = {timing[1]: 0.5 * first.finalists[0].seconds_per_step}
    monkeypatch.setattr(speed_mod, "cached_seconds",
                        lambda pr, model, v, b, t, d: quiet.get(model) if b == 32 else None)
    turns.clear()
    again = planned()
    assert turns[0] == [timing[1], timing[0], timing[2]] and all(e.measured for e in again.finalists)
    # All cached: nothing is timed, as a second plan on this machine measures nothing.
    monkeypatch.setattr(speed_mod, "cached_seconds", lambda pr, model, v, b, t, d: speed(pr, model, v, b, t, d)[0])
    turns.clear()
    assert planned().chosen.measured and turns == []


def test_no_deeper_model_narrower_than_the_floor_is_offered(monkeypatch):
    monkeypatch.setattr(speed_mod, "step_seconds", lambda p, m, *rest: (1e-4 * m.hidden_size, False))  # narrow: fast
    p = planned("model.num_layers=2")
    assert p.considered == sum(w >= plan_mod.DEEP_MIN_WIDTH for w in plan_mod.WIDTHS)
    assert p.chosen.model.hidden_size >= plan_mod.DEEP_MIN_WIDTH
    assert planned().considered == len(plan_mod.WIDTHS) + p.considered  # one layer: every width


def test_the_rule_counts_only_the_symbols_in_use(measured):
    assert used_symbols(np.array([0] * 9990 + list(range(1, 11))), 5000) == 1  # 99.9% of the text is one symbol
    assert used_symbols(np.arange(6500) % VOCAB, VOCAB) == VOCAB
    assert used_symbols(np.array([], dtype=np.int64), VOCAB) == VOCAB
    # A source tree: 9,000 symbols, of which 100 make up the text. Counted whole, every small model looks big.
    whole, used = planned(vocab_size=9000), planned(vocab_size=9000, symbols=100)
    assert used.chosen.capacity < used.chosen.params and whole.chosen.capacity == whole.chosen.params
    assert used.config.model.hidden_size > whole.config.model.hidden_size
    assert any("the embedding and head rows of the 100 symbols that make up 99.9%" in line for line in used.lines())
    assert not any("symbols that make up" in line for line in whole.lines())


def test_weight_dropout_takes_over_only_where_the_risk_is_high():
    # 1 x 384 for 11 epochs of tinyshakespeare (risk 7.9): dropout alone, as weight dropout cost it 0.008.
    assert regularization_for(11, 0.72) == (dropout_for(11, 0.72), 0.0) == (0.1, 0.0)
    # 2 x 512 for 14 epochs (risk 46): weight dropout, with dropout held at 0.1, beat dropout 0.2 alone.
    assert dropout_for(14, 3.3) == 0.2 and regularization_for(14, 3.3) == (0.1, rule.WEIGHT_DROP)
    risks = np.geomspace(0.1, 1e4, 200)
    assert np.all(np.diff([regularization_for(r, 1.0)[1] for r in risks]) >= 0)  # never less for a greater risk
    # weight dropout takes over, not on top, until the risk passes where 0.1 and 0.25 were found best
    assert all(regularization_for(r, 1.0)[0] <= 0.15 for r in risks if r <= rule.HEAVY[0][0])


def test_both_dropouts_grow_with_a_risk_past_where_they_were_found_best():
    # 1 x 768 for 18 epochs of tinyshakespeare (risk 47, the 600 s plan): 0.1 and 0.25, as weight dropout 0.4 was
    # worse there; for 44 epochs of 225 K characters (risk 500): 0.4 and 0.5, the best pair of the sweep.
    assert regularization_for(18, 2.6) == (0.1, 0.25) and regularization_for(44, 11.6) == (0.4, 0.5)
    assert regularization_for(120, 2.6) == (0.35, 0.45)  # an hour of tinyshakespeare: between them
    assert regularization_for(1e5, 1.0) == (0.4, 0.5)  # held past the strongest tried
    risks = np.geomspace(rule.RISK_WEIGHT_DROP + 1, 1e4, 200)
    pairs = np.array([regularization_for(r, 1.0) for r in risks])
    assert np.all(np.diff(pairs, axis=0) >= 0)  # neither ever less for a greater risk


def test_a_long_budget_on_a_small_corpus_plans_weight_dropout(monkeypatch):
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (0.01, False))  # many epochs of 100K characters
    p = planned(train_chars=100_000)
    m, risk = p.config.model, p.finalists[0].epochs * p.chosen.capacity / 100_000
    assert risk > rule.RISK_WEIGHT_DROP and m.weight_dropout >= rule.WEIGHT_DROP
    assert (m.dropout, m.weight_dropout) == regularization_for(p.finalists[0].epochs, p.chosen.capacity / 100_000)
    assert f"weight dropout {m.weight_dropout:g}" in p.lines()[0] and "weight dropout" in p.lines()[2]


def test_the_finalists_are_timed_with_the_dropout_the_plan_gives_them(monkeypatch):
    speed = fake_speed(per_flop=1e-12)  # many epochs of 100K characters: dropout and weight dropout
    monkeypatch.setattr(speed_mod, "step_seconds", speed)
    p = planned(train_chars=100_000)
    m, t = p.config.model, p.config.train
    assert m.dropout > 0 and m.weight_dropout >= rule.WEIGHT_DROP
    anchors, finalists = speed.calls[:2], speed.calls[2:]
    assert [c[4:] for c in anchors] == [(0.0, 0.0)] * 2  # the line is the bare shapes' speed
    assert ("fp32", m.num_layers, m.hidden_size, t.batch_size, m.dropout, m.weight_dropout) in finalists
    assert all(c[4:] != (0.0, 0.0) for c in finalists)  # every finalist draws its masks, as its run will
    speed.calls.clear()
    given = planned("model.dropout=0.33", "model.weight_dropout=0.0", train_chars=100_000)
    assert {c[4:] for c in speed.calls[2:]} == {(0.33, 0.0)}  # the config's own dropout, in every finalist's trial
    assert (given.config.model.dropout, given.config.model.weight_dropout) == (0.33, 0.0)


def test_more_steps_than_the_cap_buy_a_larger_batch(monkeypatch):
    monkeypatch.setattr(speed_mod, "step_seconds", lambda p, m, v, batch, *rest: (5e-5 * batch, False))  # a fast card
    p = planned(train_chars=100_000_000)
    assert p.config.train.batch_size > speed_mod.BATCH and p.chosen.steps <= speed_mod.MAX_STEPS


@pytest.mark.parametrize("key, value", [
    ("model.embed_dim", 24), ("model.hidden_size", 200), ("model.num_layers", 3), ("model.dropout", 0.33),
    ("model.weight_dropout", 0.4), ("model.head_cutoff", 40),
    ("train.batch_size", 12), ("train.seq_len", 50), ("train.lr", 1.234e-3), ("train.weight_decay", 0.07),
    ("train.warmup_steps", 7), ("train.min_lr_ratio", 0.25), ("train.precision", "'fp32'"),
    ("train.max_steps", 321)])
def test_every_key_set_explicitly_wins_over_the_plan(measured, key, value):
    assert key in PLANNED
    p = planned(f"{key}={value}")
    section, name = key.split(".")
    assert getattr(getattr(p.config, section), name) == (value.strip("'") if isinstance(value, str) else value)
    assert key in p.kept and any(key in line for line in p.lines())


def test_the_budget_ends_a_planned_run_and_an_explicit_step_limit_caps_its_plan(monkeypatch):
    monkeypatch.setattr(speed_mod, "step_seconds", fake_speed(per_flop=1e-12))  # a fast device: 20,000 steps an hour
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)
    p = planned(budget=3600.0)
    assert p.chosen.steps > load_config(None).train.max_steps
    assert p.config.train.max_steps >= max(plan_mod.STEP_CAP, 2 * p.chosen.steps)
    capped = planned("train.max_steps=400", budget=3600.0)
    assert capped.config.train.max_steps == 400 and capped.chosen.steps == 400
    assert "expects 400 steps" in capped.lines()[1]


def test_which_keys_are_planned(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[model]\nhidden_size = 256\n[train]\nlr = 1e-3\n")
    given = given_keys(toml, ["train.seq_len=50"], {"train.seed": 1})
    assert {"model.hidden_size", "train.lr", "train.seq_len", "train.seed"} <= given
    budget = load_config(toml, [], {"train.time_budget": 60.0})
    assert free_keys(budget, given) == tuple(k for k in PLANNED if k not in given)
    assert free_keys(load_config(toml), given) == ()  # no budget, no plan
    assert free_keys(budget.with_overrides(["train.plan=false"]), given) == ()
    assert free_keys(budget, given | {"model.num_layers"}) == ()  # the shape is the user's: nothing is planned
    assert free_keys(load_config("shakespeare", [], {"train.time_budget": 60.0}),
                     given_keys("shakespeare")) == ()  # the presets plan nothing


def test_a_planned_run_records_its_plan_and_resumes_bitwise_on_it(tmp_path, corpus_file, measured, monkeypatch):
    values = {"data.path": str(corpus_file), "train.time_budget": 3600.0, "train.max_steps": 20,
              "train.eval_every": 10, "train.checkpoint_every": 10, "train.sample_every": 0, "train.device": "cpu",
              "train.batch_size": 8, "train.seq_len": 32}

    def run(name, resume=False, **extra):
        cfg, found, free = run_config(tmp_path / name, resume=resume, values=values if not resume else extra)
        return train(cfg, tmp_path / name, resume=found, plan=free, echo=messages.append), cfg, free

    messages = []
    _, cfg, free = run("full")
    assert "model.hidden_size" in free and "train.batch_size" not in free
    assert any(m.startswith("plan: ") for m in messages)
    text = (tmp_path / "full" / "config.toml").read_text()
    assert text.startswith("# plan: ") and "batch_size = 8" in text
    recorded = load_config(tmp_path / "full" / "config.toml")
    assert recorded.train.batch_size == 8 and recorded.train.weight_decay == plan_mod.WEIGHT_DECAY
    with monkeypatch.context() as m:
        interrupt_after(m, 13)
        assert run("split")[0].interrupted
    messages.clear()
    _, resumed_cfg, free = run("split", resume=True)
    assert free == () and not any(m.startswith("plan: ") for m in messages)  # a resume is never planned again
    assert resumed_cfg.model == recorded.model
    a, b = weights(tmp_path / "full"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_plan_prints_a_plan_and_makes_no_run_dir(tmp_path, corpus_file, measured, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    result = CliRunner().invoke(main, ["plan", str(corpus_file), "--time-budget", "2m", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "plan: " in result.output and "epochs, in 120 s" in result.output
    assert set(os.listdir(tmp_path)) == before
    preset = CliRunner().invoke(main, ["plan", str(corpus_file), "--time-budget", "2m", "--config", "shakespeare"])
    assert preset.exit_code == 0 and "plan: nothing to plan: the config sets the model's shape" in preset.output


def test_a_tiny_corpus_gets_a_clear_plan_or_one_line(tmp_path, measured):
    small = tmp_path / "small.txt"
    small.write_text("to be or not to be, that is the question. " * 8)
    result = CliRunner().invoke(main, ["plan", str(small), "--time-budget", "60", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "plan: 1 x 64 LSTM" in result.output  # the smallest candidate: nothing else fits 300 characters
    assert "so this, the smallest, will overfit" in result.output
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc")
    result = CliRunner().invoke(main, ["plan", str(tiny), "--time-budget", "60", "--device", "cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: the train split has 2 characters, too few")


@pytest.mark.parametrize("command", ["plan", "train"])
def test_a_budget_too_short_to_measure_is_one_line(tmp_path, corpus_file, command):
    args = [command, str(corpus_file), "--time-budget", "5s", "--device", "cpu"]
    result = CliRunner().invoke(main, args + (["--run-dir", str(tmp_path / "r")] if command == "train" else []))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("Error: a time budget of 5 s is too short to plan")
    assert not (tmp_path / "r").exists()


def test_plan_run_refuses_a_short_budget_itself():
    with pytest.raises(UserError, match="too short to plan"):
        plan_run(load_config(None, [], {"train.time_budget": 3.0}), PLANNED, 10_000, VOCAB, CPU)


def write_metrics(run_dir, evals, train_loss):
    run_dir.mkdir()
    lines = [{"step": s, "train/loss": train_loss, "val/loss": v} for s, v in evals]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_advice_names_overfitting_and_underfitting_and_is_quiet_otherwise(tmp_path):
    cfg = load_config(None, ["model.hidden_size=512", "model.dropout=0.1"], {"train.time_budget": 300.0})
    write_metrics(tmp_path / "over", [(500, 1.60), (1000, 1.55), (1500, 1.58), (2000, 1.63)], 1.20)
    (line,) = advice(tmp_path / "over", cfg, 100_000, VOCAB)
    assert line.startswith("advice: overfitting: the best validation (1.5500) came at step 1,000 of 2,000")
    assert "model.dropout=0.3" in line and "model.hidden_size=384" in line
    # 128 epochs at 12 parameters a character: the strongest pair the planner gives
    assert "try --set model.weight_dropout=0.5 --set model.dropout=0.4, or" in line
    weighted = cfg.with_overrides(["model.weight_dropout=0.25"])
    (line,) = advice(tmp_path / "over", weighted, 100_000, VOCAB)
    assert "try --set model.weight_dropout=0.5 --set model.dropout=0.4, or" in line  # more than it has
    weighted = cfg.with_overrides(["model.weight_dropout=0.5"])
    (line,) = advice(tmp_path / "over", weighted, 100_000, VOCAB)
    assert "weight_dropout" not in line  # what it has already, it is not told to try
    write_metrics(tmp_path / "under", [(500, 1.80), (1000, 1.62), (1500, 1.50)], 1.49)
    (line,) = advice(tmp_path / "under", cfg, 100_000_000, VOCAB)
    assert line.startswith("advice: underfitting") and "--time-budget 600" in line
    write_metrics(tmp_path / "fine", [(500, 1.80), (1000, 1.60), (1500, 1.598)], 1.45)
    assert advice(tmp_path / "fine", cfg, 1_000_000, VOCAB) == []
    assert advice(tmp_path / "missing", cfg, 1_000_000, VOCAB) == []


@pytest.mark.parametrize("seconds, deep", [(0.5, False), (0.4, True)])  # 960 and 1,200 steps in 600 s
def test_two_layers_are_offered_only_for_enough_steps(monkeypatch, seconds, deep):
    monkeypatch.setattr(plan_mod, "DEPTH_LAG", 0.0)  # steps alone decide here (the lag: the next test)
    monkeypatch.setattr(plan_mod, "RULE_MARGIN", 0.0)  # and the rule's best, not the fewest parameters near it
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (seconds, False))  # every shape as fast: the
    p = planned()                                                                  # rule would go deep
    assert (p.chosen.model.num_layers == 2) == deep
    note = [line for line in p.lines() if "a second layer learns slower" in line]
    assert bool(note) != deep and (deep or f"under {plan_mod.DEEP_MIN_STEPS:,}" in note[0])
    given = planned("model.num_layers=2")  # a depth the config sets is trained, however few its steps
    assert given.chosen.model.num_layers == 2 and given.passed_over is None


def test_a_second_layer_must_be_rated_ahead_by_more_than_its_lag(monkeypatch):
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (0.4, False))  # every shape as fast: 1,200 steps
    monkeypatch.setattr(plan_mod, "RULE_MARGIN", 0.0)
    monkeypatch.setattr(plan_mod, "DEPTH_LAG", 0.0)
    deep = planned()
    assert deep.chosen.model.num_layers == 2 and deep.passed_over is None
    monkeypatch.setattr(plan_mod, "DEPTH_LAG", 0.038)  # the shipped term: 0.032 at 1,200 steps, more than its lead
    p = planned()
    assert p.chosen.model.num_layers == 1 and p.passed_over.shape == deep.chosen.shape
    lead = p.chosen.loss - p.passed_over.loss
    assert 0 < lead < plan_mod.depth_lag(p.passed_over) and p.passed_over.steps >= plan_mod.DEEP_MIN_STEPS
    (note,) = [line for line in p.lines() if line.startswith(f"plan: not {p.passed_over.shape}")]
    assert f"trails one wide layer by about {plan_mod.depth_lag(p.passed_over):.3f} after 1,2" in note
    given = planned("model.num_layers=2")  # a depth the config sets wins
    assert given.chosen.model.num_layers == 2 and given.passed_over is None


@pytest.mark.parametrize("chars, margin, fewest", [
    (1_000_000, 0.008, True),  # 24 epochs: the candidates the rule rates level, fewest parameters first
    (1_000_000, 0.0, False),  # no margin: the rule's best
    (100_000_000, 0.008, False),  # a fraction of an epoch: nothing to overfit, the rule's best (the widest)
])
def test_where_a_plan_risks_overfitting_the_fewest_parameters_rated_level_train(monkeypatch, chars, margin, fewest):
    monkeypatch.setattr(speed_mod, "step_seconds", lambda *args: (0.05, False))  # every shape as fast: the rule
    monkeypatch.setattr(plan_mod, "DEPTH_LAG", 0.0)  # goes as wide as the corpus allows, by thousandths
    monkeypatch.setattr(plan_mod, "RULE_MARGIN", margin)
    p = planned(train_chars=chars)
    rank = plan_mod._ranking(False)
    best = min(p.finalists, key=rank)
    if not fewest:
        assert p.chosen.shape == best.shape and p.favourite is None
        assert not any(line.startswith("plan: not ") and "risks overfitting" in line for line in p.lines())
        return
    assert p.chosen.capacity < best.capacity and rank(p.chosen) <= rank(best) + margin
    assert p.favourite.shape == best.shape  # the finalist ranked best, which the plan says it did not take
    assert p.chosen.epochs * p.chosen.capacity / chars > rule.RISK_WEIGHT_DROP
    level = [e for e in p.finalists if rank(e) <= rank(best) + margin]
    assert p.chosen.capacity == min(e.capacity for e in level)  # the fewest of those rated level
    (line,) = [line for line in p.lines() if line.startswith(f"plan: not {p.favourite.shape}, which the rule")]
    assert f"rated within {margin:g} of it the fewest parameters train" in line


@pytest.mark.parametrize("margin, wider", [(0.015, True), (0.0, False)])
def test_far_from_overfitting_the_widest_rated_level_trains(measured, monkeypatch, margin, wider):
    # 3M characters, 300 s at this speed: the rule rates 1 x 384 0.004 ahead of 1 x 512, both under a risk of 2
    monkeypatch.setattr(speed_mod, "step_seconds", fake_speed(per_flop=3e-12))
    monkeypatch.setattr(plan_mod, "WIDE_MARGIN", margin)
    p = planned(train_chars=3_000_000, budget=300.0)
    rank = plan_mod._ranking(False)
    best = min(p.finalists, key=rank)
    assert best.shape == "1x384" and rule.risk(best.epochs, best.capacity / 3_000_000) <= rule.RISK_FREE
    if not wider:
        assert p.chosen.shape == best.shape and p.favourite is None
        assert not any(line.startswith("plan: not ") for line in p.lines())
        return
    level = [e for e in p.finalists if rank(e) <= rank(best) + margin and e.model.num_layers == 1]
    assert p.chosen.shape == "1x512" and p.chosen.model.hidden_size == max(e.model.hidden_size for e in level)
    assert p.favourite.shape == "1x384" and p.config.model.hidden_size == 512
    assert p.config.train.lr == rule.lr_for(1, 512, p.config.train.batch_size, p.config.train.seq_len)
    (line,) = [line for line in p.lines() if line.startswith("plan: not 1x384, which the rule")]
    assert f"far from overfitting, and of the candidates rated within {margin:g} of it the widest trains" in line


def test_the_widest_rated_level_trains_only_where_neither_has_anything_to_regularize():
    def estimate(width: int, loss: float, epochs: float) -> Estimate:
        model = ModelConfig(hidden_size=width)
        return Estimate(model, 32, 100, width * 1000, width * 1000, "fp32", 0.1, True, 1000, epochs, loss, 0.8, "")
    narrow, wide = estimate(384, 0.200, 2.0), estimate(512, 0.210, 2.0)  # risks 0.77 and 1.0
    rank, order = plan_mod._ranking(True), plan_mod._level_first
    assert order([narrow, wide], rank, 1_000_000) == [wide, narrow]
    assert order([narrow, estimate(512, 0.220, 2.0)], rank, 1_000_000)[0] is narrow  # rated 0.02 behind
    assert order([narrow, estimate(512, 0.210, 5.0)], rank, 1_000_000)[0] is narrow  # the wider at a risk of 2.6
    assert order([estimate(384, 0.200, 8.0), estimate(512, 0.203, 8.0)], rank, 1_000_000)[0].model.hidden_size == 384


def head_speed(speedup: float):
    """`fake_speed`, with an adaptive head `speedup` x the speed of a full head on the same shape."""
    full = fake_speed()

    def step_seconds(precision, model, vocab_size, batch_size, seq_len, device):
        seconds, cached = full(precision, replace(model, head_cutoff=0), vocab_size, batch_size, seq_len, device)
        step_seconds.heads.append(model.head_cutoff)
        return (seconds / speedup if adaptive(vocab_size, model) else seconds), cached

    step_seconds.heads = []
    return step_seconds


@pytest.mark.parametrize("speedup, cutoff", [(3.0, 100), (1.02, 100), (0.96, 100), (0.94, 0)])
def test_an_adaptive_head_is_planned_where_most_symbols_are_rare_unless_it_was_timed_slower(monkeypatch, speedup,
                                                                                           cutoff):
    speed = head_speed(speedup)
    monkeypatch.setattr(speed_mod, "step_seconds", speed)
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)
    p = planned(vocab_size=9000, symbols=100)  # a source tree: 100 symbols make up 99.9% of the text
    assert p.config.model.head_cutoff == p.chosen.model.head_cutoff == cutoff
    assert speed.heads[:2] == [0, 100]  # the full head and the adaptive one, on the narrow anchor, first
    assert set(speed.heads[2:]) == {cutoff}  # then every timing in the head chosen
    assert ("an adaptive head over 100 symbols" in p.lines()[0]) == bool(cutoff)
    taken = f"an adaptive head: with its 8,900 rare symbols in one cluster, 1x256 ran at {speedup:.2f}x a full head's"
    kept = f"a full head: with its 8,900 rare symbols in one cluster, 1x256 ran at only {speedup:.2f}x its speed"
    assert (taken if cutoff else kept) in p.lines()[2]


def test_no_adaptive_head_is_timed_where_most_symbols_are_in_use(monkeypatch):
    speed = head_speed(3.0)
    monkeypatch.setattr(speed_mod, "step_seconds", speed)
    monkeypatch.setattr(speed_mod.Share, "before_timing", lambda self: None)
    p = planned(vocab_size=200, symbols=101)
    assert p.config.model.head_cutoff == 0 and set(speed.heads) == {0} and "rare symbols" not in p.lines()[2]


def test_a_run_left_unplanned_hears_of_the_adaptive_head_where_a_large_vocabulary_is_mostly_rare():
    # 50 symbols make up the text, 1,450 more come once each: 0.07% of it.
    train = np.concatenate([np.repeat(np.arange(50), 40_000), np.arange(50, 1500)])
    note = head_note(ModelConfig(), train, 1500)
    assert note.startswith("note: 50 of the 1,500 symbols make up 99.9% of the training text: "
                           "--set model.head_cutoff=50 would score the rest in one cluster")
    assert head_note(ModelConfig(head_cutoff=50), train, 1500) == ""  # it has one
    assert head_note(ModelConfig(), train[:2_000_000], 150) == ""  # a small vocabulary: little to gain
    assert head_note(ModelConfig(), np.arange(6000) % 1500, 1500) == ""  # every symbol in use
