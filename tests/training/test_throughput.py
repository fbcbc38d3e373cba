"""The step timer behind the planner and precision auto: the fastest of STEPS timed steps, one only when it is long."""

import itertools
import json
from dataclasses import replace

import pytest
import torch

import charrnn.model
from charrnn.config import ModelConfig
from charrnn.training import throughput


@pytest.mark.parametrize("durations, expected", [
    ((0.7, 0.5, 0.9, 0.3), 0.3),  # slow readings of a short step do not decide: the fastest of STEPS does
    ((0.3, 0.7, 0.6, 0.8), 0.3),
    ((2.0,), 2.0),  # a step over LONG_STEP is timed once: another would cost as much again
])
def test_a_step_is_timed_steps_times_unless_it_is_long(monkeypatch, durations, expected):
    assert throughput.STEPS == 4 or len(durations) == 1  # the short steps' durations are one per timed step
    # The warm-up step reads the clock once, as it starts; each timed step reads it as it starts and ends.
    clock = itertools.accumulate(itertools.chain([0.0], *((1.0, d) for d in durations)))
    monkeypatch.setattr(throughput, "perf_counter", clock.__next__)
    model = ModelConfig(hidden_size=8, embed_dim=4)
    assert throughput.seconds_per_step("fp32", model, 10, 2, 5, torch.device("cpu")) == pytest.approx(expected)
    rounds = 2 if expected > 1.0 else throughput.STEPS + 1  # a warm-up step and the timed ones
    assert throughput.trial_seconds(expected) == pytest.approx(expected * rounds)


def test_in_turns_a_long_step_is_timed_once_and_a_short_one_steps_times(monkeypatch):
    """Each trial costs what `trial_seconds` counts for it, whatever it is timed beside: a plan's share holds."""
    steps, forward = [], charrnn.model.CharRNN.forward
    monkeypatch.setattr(charrnn.model.CharRNN, "forward",
                        lambda self, ids, *rest: steps.append(self.cfg.hidden_size) or forward(self, ids, *rest))
    # The warm-up round reads the clock as each step starts; then a 2 s step of the first, 0.3, 0.2, 0.25 and 0.4 of
    # the second.
    clock = itertools.accumulate(itertools.chain([0.0], (1.0,), (1.0, 2.0, 1.0, 0.3), (1.0, 0.2, 1.0, 0.25, 1.0, 0.4)))
    monkeypatch.setattr(throughput, "perf_counter", clock.__next__)
    trials = [throughput.Trial("fp32", ModelConfig(hidden_size=h, embed_dim=4), 2, 5) for h in (16, 8)]
    assert throughput._trials(trials, 10, torch.device("cpu"), throughput.STEPS) == pytest.approx([2.0, 0.2])
    assert steps == [16, 8, 16, 8] + [8] * (throughput.STEPS - 1)


def test_a_run_to_its_budget_leaves_the_share_of_its_trials_speed_its_loop_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path))
    model, cpu = ModelConfig(hidden_size=8, embed_dim=4), torch.device("cpu")
    shape, wider = ("bf16", model, 10, 2, 5, cpu), ("bf16", replace(model, hidden_size=16), 10, 2, 5, cpu)
    assert throughput.learn_loop(*shape, steps=160, seconds=10.0) is None  # never timed: nothing to compare with
    throughput.write_cache({throughput._key(*shape): 0.05, throughput._key(*wider): 0.1})  # trials: 20 and 10 steps/s
    assert throughput.learn_loop(*shape, steps=160, seconds=10.0) == pytest.approx(0.8)
    assert throughput.learn_loop(*shape, steps=10, seconds=10.0) is None  # 0.05 of it: a paused run, not the loop
    assert throughput.learn_loop(*shape, steps=160, seconds=0.0) is None
    for steps in (150, 140, 130, 120, 110):
        throughput.learn_loop(*shape, steps=steps, seconds=10.0)
    assert throughput.loop_shares(*shape) == (pytest.approx([0.75, 0.7, 0.65, 0.6, 0.55]),) * 2  # the latest five
    throughput.learn_loop(*wider, steps=90, seconds=10.0)
    own, every = throughput.loop_shares(*wider)
    assert own == pytest.approx([0.9]) and sorted(every) == pytest.approx([0.55, 0.6, 0.65, 0.7, 0.75, 0.9])
    # Another machine's shares, and what a hand or another version wrote, count for nothing; the cache still reads.
    elsewhere = json.loads(throughput._loop_key(*shape))
    elsewhere[2] = "another CPU"
    throughput.write_cache({**throughput.read_cache(), json.dumps(elsewhere): [0.3], "5": [0.5], "[": 1,
                            throughput._loop_key(*wider): ["x", True, 0.01, 9, 0.9]})
    assert throughput.loop_shares(*wider) == ([0.9], pytest.approx([0.75, 0.7, 0.65, 0.6, 0.55, 0.9]))


def test_the_trial_draws_the_masks_its_run_will_and_is_cached_apart(monkeypatch, tmp_path):
    """A trial of a model with dropout and weight dropout runs them, as the run's loop will (they are a tenth of a
    wide bf16 step), and its timing is kept apart from the same shape's without them."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path))
    drawn = []
    forward = charrnn.model.Dropout.forward
    monkeypatch.setattr(charrnn.model.Dropout, "forward", lambda self, x: drawn.append(self.p) or forward(self, x))
    bare, cpu = ModelConfig(hidden_size=8, embed_dim=4, num_layers=1), torch.device("cpu")
    throughput.step_seconds("fp32", bare, 10, 2, 5, cpu)
    assert not [p for p in drawn if p]
    regularized = replace(bare, dropout=0.1, weight_dropout=0.25)
    assert throughput.cached_seconds("fp32", regularized, 10, 2, 5, cpu) is None  # not the bare shape's timing
    assert throughput.step_seconds("fp32", regularized, 10, 2, 5, cpu)[1] is False
    assert {0.1, 0.25} <= set(drawn)  # dropout before the head, weight dropout on weight_hh
    assert throughput.step_seconds("fp32", regularized, 10, 2, 5, cpu)[1] is True


def test_two_windows_are_timed_in_turns_and_cached_against_the_first_windows_own_speed(monkeypatch, tmp_path):
    """A halved window is compared with its full window on steps taken one of each a round, so that a machine's drift
    between two trials cannot decide; its cached speed is the measured ratio times the full window's cached one."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path))
    shapes, forward = [], charrnn.model.CharRNN.forward
    monkeypatch.setattr(charrnn.model.CharRNN, "forward",
                        lambda self, ids, *rest: shapes.append(tuple(ids.shape)) or forward(self, ids, *rest))
    # Each step reads the clock as it starts, and a timed one as it ends: the full window 0.1 s, the half 0.08 s.
    warm_up, timed = (1.0,), (1.0, 0.1, 1.0, 0.08)
    clock = itertools.accumulate(itertools.chain([0.0], warm_up, *[timed] * throughput.STEPS))
    monkeypatch.setattr(throughput, "perf_counter", clock.__next__)
    model, cpu = ModelConfig(hidden_size=8, embed_dim=4), torch.device("cpu")
    windows = [(2, 6), (4, 3)]
    trials = [throughput.Trial("fp32", model, *w) for w in windows]
    assert throughput.turn_seconds(trials, 10, cpu) == pytest.approx([0.1, 0.08])
    assert shapes == [(2, 6), (4, 3)] * (throughput.STEPS + 1)  # a warm-up round, then STEPS rounds of one step each
    assert [throughput.cached_seconds("fp32", model, 10, *w, cpu) for w in windows] == pytest.approx([0.1, 0.08])
    # Where the full window has a cached speed (its loop shares were learnt against it), the half keeps the ratio.
    throughput.write_cache({throughput._key("fp32", model, 10, 2, 6, cpu): 0.2})
    clock = itertools.accumulate(itertools.chain([0.0], warm_up, *[timed] * throughput.STEPS))
    monkeypatch.setattr(throughput, "perf_counter", clock.__next__)
    assert throughput.turn_seconds(trials, 10, cpu) == pytest.approx([0.2, 0.16])
    assert [throughput.cached_seconds("fp32", model, 10, *w, cpu) for w in windows] == pytest.approx([0.2, 0.16])


def test_a_window_pair_can_be_timed_in_more_rounds_where_a_benchmark_asks(monkeypatch, tmp_path):
    """scripts/precision.py --trials compares the planner's STEPS rounds with more: each window's fastest counts."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path))
    rounds = [(1.0, 0.1, 1.0, 0.095), (1.0, 0.105, 1.0, 0.095), (1.0, 0.1, 1.0, 0.08), (1.0, 0.1, 1.0, 0.08)]
    clock = itertools.accumulate(itertools.chain([0.0], (1.0,), *rounds))
    monkeypatch.setattr(throughput, "perf_counter", clock.__next__)
    model, cpu = ModelConfig(hidden_size=8, embed_dim=4), torch.device("cpu")
    trials = [throughput.Trial("fp32", model, 2, 6), throughput.Trial("fp32", model, 4, 3)]
    assert throughput.turn_seconds(trials, 10, cpu, 4) == pytest.approx([0.1, 0.08])


def test_two_shapes_are_timed_in_turns_each_its_own_model_and_precision(monkeypatch, tmp_path):
    """Finalists of different shapes are compared on steps taken one of each a round, each of its own fresh model in
    its own precision; read on the first's cached scale where it has one, and all cached."""
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path))
    steps, forward = [], charrnn.model.CharRNN.forward
    monkeypatch.setattr(charrnn.model.CharRNN, "forward", lambda self, ids, *rest: steps.append(
        (self.cfg.hidden_size, torch.is_autocast_enabled("cpu"))) or forward(self, ids, *rest))
    warm_up, timed = (1.0, 1.0), (1.0, 0.1, 1.0, 0.3, 1.0, 0.2)
    clock = itertools.accumulate(itertools.chain([0.0], warm_up, *[timed] * throughput.STEPS))
    monkeypatch.setattr(throughput, "perf_counter", clock.__next__)
    cpu = torch.device("cpu")
    trials = [throughput.Trial("fp32", ModelConfig(hidden_size=8, embed_dim=4), 2, 5),
              throughput.Trial("bf16", ModelConfig(hidden_size=16, embed_dim=4), 2, 5),
              throughput.Trial("fp32", ModelConfig(hidden_size=24, embed_dim=4, num_layers=2), 2, 5)]
    throughput.write_cache({throughput._key("fp32", trials[0].model, 10, 2, 5, cpu): 0.05})  # timed at a quiet hour
    assert throughput.turn_seconds(trials, 10, cpu) == pytest.approx([0.05, 0.15, 0.1])
    assert steps == [(8, False), (16, True), (24, False)] * (throughput.STEPS + 1)  # a warm-up round, then STEPS
    # rounds, in turns
    assert [throughput.cached_seconds(*t[:2], 10, *t[2:], cpu) for t in trials] == pytest.approx([0.05, 0.15, 0.1])
