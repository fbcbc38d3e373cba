import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.generation.stepper import Stepper
from charrnn.model import CharRNN, cross_entropy, parameter_count


def make(vocab=20, **kw) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(vocab, ModelConfig(**{"embed_dim": 8, "hidden_size": 16, "num_layers": 2, **kw}))


def test_shapes():
    model = make()
    logits, (h, c) = model(torch.randint(0, 20, (3, 7)))
    assert logits.shape == (3, 7, 20)
    assert h.shape == c.shape == (2, 3, 16)
    assert model.init_hidden(5)[0].shape == (2, 5, 16)


def test_forget_gate_bias_starts_at_one():
    model = make()
    size = 16
    for layer in range(2):
        total = getattr(model.rnn, f"bias_ih_l{layer}") + getattr(model.rnn, f"bias_hh_l{layer}")
        assert torch.allclose(total[size:2 * size], torch.ones(size))


def test_carried_state_makes_two_windows_equal_one():
    model = make().eval()
    ids = torch.randint(0, 20, (4, 12))
    whole, hidden_whole = model(ids)
    first, hidden = model(ids[:, :6])
    second, hidden = model(ids[:, 6:], hidden)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    torch.testing.assert_close(hidden[1], hidden_whole[1])


def test_stepper_matches_the_fused_lstm():
    model = make(num_layers=3).eval()
    ids = torch.randint(0, 20, (2, 9))
    expected, _ = model(ids)
    step = Stepper(model)
    h, c = model.init_hidden(2)
    state = (list(h.unbind(0)), list(c.unbind(0)))
    got = torch.stack([step(ids[:, t], state) for t in range(9)], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_overfits_a_short_text():
    text = torch.tensor([ord(c) - 97 for c in "thequickbrownfoxjumpsoverthelazydog" * 2])
    model = make(vocab=26)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    x, y = text[:-1].unsqueeze(0), text[1:].unsqueeze(0)
    for _ in range(150):
        loss = cross_entropy(model(x)[0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_cross_entropy_matches_the_plain_definition():
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
    torch.testing.assert_close(cross_entropy(logits, targets), plain)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_cell_runs_and_its_size_is_known_before_building(cell):
    model = make(cell=cell, num_layers=3)
    logits, hidden = model(torch.randint(0, 20, (3, 7)))
    assert logits.shape == (3, 7, 20) and len(hidden) == (2 if cell == "lstm" else 1)
    assert all(h.shape == (3, 3, 16) for h in hidden)
    assert model.num_params() == parameter_count(20, model.cfg)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_and_rnn_start_with_orthogonal_recurrent_blocks_and_zero_biases(cell):
    model = make(cell=cell)
    for block in model.rnn.weight_hh_l1.split(16, dim=0):
        torch.testing.assert_close(block @ block.t(), torch.eye(16), atol=1e-5, rtol=0)
    assert not model.rnn.bias_ih_l0.any() and not model.rnn.bias_hh_l1.any()


def test_embedding_dropout_only_in_training():
    model = make(embed_dropout=0.5)
    ids = torch.randint(0, 20, (2, 5))
    model.eval()
    torch.testing.assert_close(model(ids)[0], model(ids)[0])
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])
