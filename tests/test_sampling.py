import pytest
import torch

from charrnn.config import ModelConfig
from charrnn.errors import UserError
from charrnn.generation.sampling import generate, pick
from charrnn.generation.stepper import Stepper, unstack
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

VOCAB = Vocab("\n abcdefgh")
CELLS = ("lstm", "gru", "rnn")


def model(cell: str = "lstm") -> CharRNN:
    torch.manual_seed(0)
    m = CharRNN(VOCAB.size, ModelConfig(cell=cell, embed_dim=8, hidden_size=16, num_layers=2)).eval()
    with torch.no_grad():  # GRU and RNN biases start at zero: make every weight count, so a misplaced one shows
        for param in m.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return m


@pytest.mark.parametrize("cell", CELLS)
def test_stepper_agrees_with_the_fused_module_step_by_step(cell):
    m = model(cell)
    ids = torch.randint(0, VOCAB.size, (5, 40), generator=torch.Generator().manual_seed(1))  # 5 streams
    with torch.no_grad():
        expected, _ = m(ids)  # (5, 40, V)
        _, hidden = m(ids[:, :4])  # start the stepper mid-text, from the fused module's state
        step, state = Stepper(m), unstack(hidden)
        got = torch.stack([step(ids[:, t], state) for t in range(4, 40)], dim=1)
    assert len(state) == m.state_size and len(state[0]) == 2
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


def run(m, seed, **kw) -> str:
    g = torch.Generator().manual_seed(seed)
    return "".join(s[0] for s in generate(m, VOCAB, "abc", 60, generator=g, **kw))


def test_same_seed_same_text_and_other_seed_other_text():
    m = model()
    assert run(m, 1) == run(m, 1)
    assert run(m, 1) != run(m, 2)


@pytest.mark.parametrize("cell", CELLS)
def test_temperature_zero_is_greedy_argmax_of_the_full_forward_pass(cell):
    m = model(cell)
    text = run(m, 1, temperature=0)
    ids = VOCAB.encode("abc")
    for _ in range(20):  # recompute each step from scratch with the fused model
        logits, _ = m(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    assert text[:20] == VOCAB.decode(ids[3:])


def test_top_k_one_and_tiny_top_p_are_greedy():
    m = model()
    greedy = run(m, 5, temperature=0)
    assert run(m, 5, top_k=1) == greedy
    assert run(m, 5, top_p=1e-6) == greedy


def test_top_k_and_top_p_only_pick_allowed_tokens():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]]).repeat(500, 1)
    g = torch.Generator().manual_seed(0)
    assert set(pick(logits, 1.0, 2, 1.0, g).tolist()) == {0, 1}
    probs = logits[0].softmax(-1)  # top 2 hold ~0.94 of the mass
    assert probs[:2].sum() > 0.9
    assert set(pick(logits, 1.0, 0, 0.9, g).tolist()) == {0, 1}


@pytest.mark.parametrize("cell", CELLS)
def test_batched_samples_are_independent_and_each_well_formed(cell):
    m = model(cell)
    steps = list(generate(m, VOCAB, "", 40, num_samples=4, generator=torch.Generator().manual_seed(0)))
    texts = ["".join(col) for col in zip(*steps, strict=True)]
    assert len(texts) == 4 and all(len(t) == 40 for t in texts) and len(set(texts)) > 1


@pytest.mark.parametrize("kw, message", [
    ({"temperature": -0.5}, "--temperature must be >= 0"),
    ({"top_p": 0.0}, r"--top-p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"--top-p must be in \(0, 1\]"),
    ({"top_k": -1}, "--top-k must be >= 1"),
    ({"length": -1}, "--length must be >= 0"),
    ({"prime": "abz!"}, r"2 character\(s\) not in the model's vocabulary: '!', 'z'"),
])
def test_bad_options_fail_before_any_output(kw, message):
    with pytest.raises(UserError, match=message):
        generate(model(), VOCAB, **{"prime": "ab", "length": 5, **kw})
