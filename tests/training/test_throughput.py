"""The step timer behind the planner and precision auto: the fastest of two timed steps, one only when it is long."""

import itertools

import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.training import throughput


@pytest.mark.parametrize("durations, expected", [
    ((0.7, 0.3), 0.3),  # a slow first reading of a short step does not decide: the second is faster
    ((0.3, 0.7), 0.3),
    ((2.0, 0.1), 2.0),  # a step over LONG_STEP is timed once: the second would cost as much again
])
def test_a_step_is_timed_twice_unless_it_is_long(monkeypatch, durations, expected):
    # The warm-up step reads the clock once, as it starts; each timed step reads it as it starts and ends.
    clock = itertools.accumulate(itertools.chain([0.0], *((1.0, d) for d in durations)))
    monkeypatch.setattr(throughput, "perf_counter", clock.__next__)
    model = ModelConfig(hidden_size=8, embed_dim=4)
    assert throughput.seconds_per_step("fp32", model, 10, 2, 5, torch.device("cpu")) == pytest.approx(expected)
    assert throughput.trial_seconds(expected) == pytest.approx(expected * (2 if expected > 1.0 else 3))
