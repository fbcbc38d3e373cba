"""The stepper: one character per call through the stack, which must agree with the fused module for every cell."""

import pytest
import torch

from charrnn.generation.stepper import Stepper, unstack
from charrnn.vocab import Vocab
from tests.helpers import random_model

VOCAB = Vocab("\n abcdefgh")
JITTERED = {"hidden_size": 16, "jitter": 0.3}  # GRU and RNN biases start at zero: with noise, a misplaced one shows


@pytest.mark.parametrize("cell, head_cutoff", [("lstm", 0), ("gru", 0), ("rnn", 0), ("lstm", 4)])
def test_stepper_agrees_with_the_fused_module_step_by_step(cell, head_cutoff):
    counts = torch.arange(VOCAB.size)  # an adaptive head scores the last 4 symbols, the most frequent, in its head
    m = random_model(VOCAB.size, cell, head_cutoff=head_cutoff, counts=counts, **JITTERED)
    ids = torch.randint(0, VOCAB.size, (5, 40), generator=torch.Generator().manual_seed(1))  # 5 streams
    with torch.no_grad():
        expected, _ = m(ids)  # (5, 40, V)
        _, hidden = m(ids[:, :4])  # start the stepper mid-text, from the fused module's state
        step, state = Stepper(m), unstack(hidden)
        got = torch.stack([step(ids[:, t], state) for t in range(4, 40)], dim=1)
    assert len(state) == m.state_size
    assert len(state[0]) == 2
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


def test_stepper_matches_the_fused_lstm():
    model = random_model(20, hidden_size=16, num_layers=3)
    ids = torch.randint(0, 20, (2, 9))
    expected, _ = model(ids)
    step = Stepper(model)
    h, c = model.init_hidden(2)
    state = (list(h.unbind(0)), list(c.unbind(0)))
    got = torch.stack([step(ids[:, t], state) for t in range(9)], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_unstack_gives_one_float_tensor_per_layer_for_each_state_tensor():
    h = torch.arange(2 * 3 * 4, dtype=torch.bfloat16).reshape(2, 3, 4)  # (L, N, H), as bf16 autocast leaves it
    hs, cs = unstack((h, h + 100))
    assert len(hs) == 2
    assert all(t.dtype == torch.float32 for t in hs + cs)
    assert torch.equal(hs[1], h[1].float())
    assert torch.equal(cs[0], (h + 100)[0].float())
