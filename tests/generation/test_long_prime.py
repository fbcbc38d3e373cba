"""A long prime is read in chunks with the state carried, which must give what one fused call gives."""

import pytest
import torch

from charrnn.generation import sampling
from charrnn.generation.beam import beam_search
from charrnn.generation.sampling import generate, warm
from charrnn.vocab import Vocab
from tests.helpers import random_model

VOCAB = Vocab("".join(chr(32 + i) for i in range(40)))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_warming_in_chunks_equals_one_call(monkeypatch, cell):
    model = random_model(VOCAB.size, cell)
    ids = torch.randint(VOCAB.size, (3, 1000), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        whole, hidden = model(ids)
    monkeypatch.setattr(sampling, "PRIME_CHUNK", 37)  # 28 chunks, the last one short
    logits, chunked = warm(model, ids, progress=True)
    torch.testing.assert_close(logits, whole[:, -1].float(), rtol=1e-5, atol=1e-5)
    for a, b in zip(chunked, hidden, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_sampling_and_beam_search_after_a_long_prime_match_an_unchunked_prime(monkeypatch):
    model = random_model(VOCAB.size, sharpness=5.0)
    prime = "".join(VOCAB.chars[i % VOCAB.size] for i in range(500))

    def greedy() -> str:
        return "".join(c[0] for c in generate(model, VOCAB, prime, 60, temperature=0))

    expected, expected_beam = greedy(), beam_search(model, VOCAB, prime, 30, beam_width=3)
    monkeypatch.setattr(sampling, "PRIME_CHUNK", 64)
    assert greedy() == expected
    assert [b.text for b in beam_search(model, VOCAB, prime, 30, beam_width=3)] == [b.text for b in expected_beam]
