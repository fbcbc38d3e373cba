"""The baselines: each meets its known answer on a source whose entropy is known, and big inputs are capped."""

import bz2
import lzma
import math
import zlib

import numpy as np
import pytest

from charrnn.errors import UserError
from charrnn.evaluation import baselines as bl


def markov(table: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n characters of the order-2 source whose next character after (a, b) has the distribution table[a, b]."""
    rng = np.random.default_rng(seed)
    cumulative, draws = table.cumsum(-1), rng.random(n)
    ids = np.zeros(n, dtype=np.uint8)
    for i in range(2, n):
        ids[i] = min(np.searchsorted(cumulative[ids[i - 2], ids[i - 1]], draws[i]), len(table) - 1)
    return ids


@pytest.fixture(scope="module")
def source():
    """(table, training text, held-out text) of an order-2 Markov source over 4 characters."""
    table = np.random.default_rng(0).dirichlet(np.full(4, 0.5), size=(4, 4))
    return table, markov(table, 200_000, 1), markov(table, 50_000, 2)


def test_unigram_meets_the_entropy_of_an_iid_source():
    probs = np.array([0.5, 0.25, 0.125, 0.125])
    rng = np.random.default_rng(0)
    train, scored = (rng.choice(4, 200_000, p=probs).astype(np.uint8) for _ in range(2))
    assert bl.unigram_bpc(train, scored, 4) == pytest.approx(1.75, abs=0.01)
    assert bl.unigram_bpc(train, scored, 8) > bl.unigram_bpc(train, scored, 4)  # unused symbols keep some mass
    # add-1/2: a character never seen in 3 has (0 + 1/2) / (3 + 3/2) = 1/9
    assert bl.unigram_bpc(np.array([0, 0, 1]), np.array([2]), 3) == pytest.approx(math.log2(9))


def test_discounts_follow_the_count_of_counts_or_fall_back():
    counts = np.array([1, 1, 1, 1, 2, 2, 3, 4, 9, 0])  # n1..n4 = 4, 2, 1, 1: Y = 1/2
    assert bl._discounts(counts) == pytest.approx([0, 0.5, 1.25, 1.0])
    assert bl._discounts(np.array([2, 2, 3, 4])) == pytest.approx([0, *bl.FALLBACK_DISCOUNTS])  # no singletons
    assert bl._discounts(np.array([1, 2, 3, 3, 3, 4])) == pytest.approx([0, *bl.FALLBACK_DISCOUNTS])  # D3 < 0


def test_the_lower_order_counts_contexts_not_occurrences():
    # b follows a 50 times, c follows five different characters once each: after an unseen character (8), the
    # bigram backs off to how many contexts each character completes, and so favours c, as the unigram does not
    train = np.array([0, 1] * 50 + [3, 2, 4, 2, 5, 2, 6, 2, 7, 2])
    assert bl.ngram_bpc(train, np.array([8, 2]), 9, 2) < bl.ngram_bpc(train, np.array([8, 1]), 9, 2)
    assert bl.unigram_bpc(train, np.array([8, 2]), 9) > bl.unigram_bpc(train, np.array([8, 1]), 9)


def test_the_right_order_meets_the_conditional_entropy_and_is_chosen(source):
    table, train, held_out = source
    entropy = -np.log2(table[held_out[:-2], held_out[1:-1], held_out[2:]]).mean()  # the true model on these samples
    by_order = {k: bl.ngram_bpc(train, held_out, 4, k) for k in (1, 2, 3, 4)}
    assert by_order[3] == pytest.approx(entropy, abs=0.01)
    assert by_order[1] > by_order[2] + 0.1 > by_order[3] + 0.2
    assert by_order[4] >= by_order[3] - 0.002  # no better than the truth, give or take estimation noise
    assert bl.choose_order(train, 4) == 3


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("prefix", [[2], [5, 5, 1], [1, 2, 3, 0, 1]])
def test_probabilities_sum_to_one_in_any_context_seen_or_not(order, prefix):
    rng = np.random.default_rng(3)
    train = rng.integers(0, 4, 3_000).astype(np.uint8)  # characters 4 and 5 never occur
    train[::7] //= 2  # uneven counts, so the three discounts differ

    def bits(ids):
        return bl.ngram_bpc(train, np.array(ids, dtype=np.uint8), 6, order) * len(ids)

    total = sum(2 ** (bits(prefix) - bits([*prefix, c])) for c in range(6))  # p(c | prefix), summed over c
    assert total == pytest.approx(1.0, abs=1e-9)


def test_compressors_are_exactly_the_compressed_bits_per_character():
    text = "the cat sat on the mat, naïvely. " * 300
    data = text.encode("utf-8")
    assert bl.compressor_bpc(data, len(text)) == {
        "zlib": len(zlib.compress(data, 9)) * 8 / len(text),
        "bz2": len(bz2.compress(data, 9)) * 8 / len(text),
        "xz": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) * 8 / len(text),
    }


def test_baselines_names_each_and_an_unseen_character_costs_finite_bits(source):
    _, train, held_out = source
    scored = held_out[:5_000].copy()
    scored[::100] = 5  # never in training
    train = train.view()
    train.flags.writeable = False  # as a read-only memmap would be: nothing may write to it
    found = bl.baselines(train, scored, 6, lambda ids: bytes(ids + ord("a")))
    assert found.order == bl.choose_order(train, 6) == 3
    assert set(found.bpc) == {"unigram", "3-gram KN", "zlib", "bz2", "xz"}
    assert all(math.isfinite(value) and value > 0 for value in found.bpc.values())
    assert found.bpc["3-gram KN"] < found.bpc["unigram"]
    assert found.notes == ()
    assert set(bl.baselines(train, scored, 6).bpc) == {"unigram", "3-gram KN"}


def test_the_caps_apply_and_say_so(monkeypatch):
    text = "abcé dé " * 500  # é takes two bytes: the compressors' cut falls on a character
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text], dtype=np.uint16)
    monkeypatch.setattr(bl, "NGRAM_TRAIN_CHARS", 1_000)
    monkeypatch.setattr(bl, "SCORED_CHARS", 300)
    monkeypatch.setattr(bl, "STRETCHES", 10)
    found = bl.baselines(ids, ids[:2_000], len(vocab), lambda x: "".join(vocab[i] for i in x).encode(), max_order=3)
    assert found.notes == ("the n-gram trained on 1,000 of the 4,000 training characters, in 10 evenly spaced "
                           "stretches", "the n-gram and the compressors scored the first 300 of 2,000 characters")
    assert found.bpc[f"{found.order}-gram KN"] == bl.ngram_bpc(bl.spread(ids, 1_000, 10), ids[:300], len(vocab),
                                                               found.order)
    assert found.bpc["xz"] == bl.compressor_bpc(text[:300].encode("utf-8"), 300)["xz"]
    assert found.bpc["unigram"] == bl.unigram_bpc(ids, ids[:2_000], len(vocab))  # cheap, so never capped


@pytest.mark.parametrize("call, message", [
    (lambda ok: bl.baselines(ok[:0], ok, 4), "some training text"),
    (lambda ok: bl.baselines(ok, ok[:0], 4), "some scored text"),
    (lambda ok: bl.unigram_bpc(ok, ok, 0), "at least 1 character"),
    (lambda ok: bl.ngram_bpc(ok, ok, 2, 3), "outside the vocabulary"),
    (lambda ok: bl.ngram_bpc(ok.astype(np.int8) - 1, ok, 4, 3), "outside the vocabulary"),
    (lambda ok: bl.ngram_bpc(ok, ok, 4, 0), "order must be at least 1"),
    (lambda ok: bl.choose_order(ok[:1], 4), "at least 2 training characters"),
    (lambda ok: bl.compressor_bpc(b"", 0), "at least 1 character"),
])
def test_bad_input_is_a_user_error(call, message):
    with pytest.raises(UserError, match=message):
        call(np.array([0, 1, 2, 3, 2, 1], dtype=np.uint8))


def test_a_capped_training_text_is_spread_over_the_whole_split_not_its_first_corner():
    ids = np.repeat(np.arange(10, dtype=np.uint8), 1_000)  # ten "directories" in path order
    capped = bl.spread(ids, 500, stretches=10)
    assert len(capped) == 500
    assert sorted(set(capped.tolist())) == list(range(10))
    assert bl.spread(ids, 20_000) is ids
