import torch

from charrnn.config import ModelConfig
from charrnn.model import CharRNN, cross_entropy
from charrnn.sampling import Stepper


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
