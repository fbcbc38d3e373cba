"""Sampling: seeded and reproducible, greedy at temperature 0, top-k / top-p, batched samples, options checked first."""

import pytest
import torch

from charrnn.errors import UserError
from charrnn.generation.sampling import generate, pick
from charrnn.vocab import Vocab
from tests.helpers import random_model

VOCAB = Vocab("\n abcdefgh")
CELLS = ("lstm", "gru", "rnn")
JITTERED = {"hidden_size": 16, "jitter": 0.3}  # GRU and RNN biases start at zero: with noise, every weight counts


def run(m, seed, **kw) -> str:
    g = torch.Generator().manual_seed(seed)
    return "".join(s[0] for s in generate(m, VOCAB, "abc", 60, generator=g, **kw))


def test_same_seed_same_text_and_other_seed_other_text():
    m = random_model(VOCAB.size, **JITTERED)
    assert run(m, 1) == run(m, 1)
    assert run(m, 1) != run(m, 2)


@pytest.mark.parametrize("cell", CELLS)
def test_temperature_zero_is_greedy_argmax_of_the_full_forward_pass(cell):
    m = random_model(VOCAB.size, cell, **JITTERED)
    text = run(m, 1, temperature=0)
    ids = VOCAB.encode("abc")
    for _ in range(20):  # recompute each step from scratch with the fused model
        logits, _ = m(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    assert text[:20] == VOCAB.decode(ids[3:])


def test_top_k_one_and_tiny_top_p_are_greedy():
    m = random_model(VOCAB.size, **JITTERED)
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
    m = random_model(VOCAB.size, cell, **JITTERED)
    steps = list(generate(m, VOCAB, "", 40, num_samples=4, generator=torch.Generator().manual_seed(0)))
    texts = ["".join(col) for col in zip(*steps, strict=True)]
    assert len(texts) == 4
    assert all(len(t) == 40 for t in texts)
    assert len(set(texts)) > 1


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
        generate(random_model(VOCAB.size, **JITTERED), VOCAB, **{"prime": "ab", "length": 5, **kw})
