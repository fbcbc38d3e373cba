"""Finding verbatim copies of the corpus in a sample: exact spans, collisions, repetition, strides, the saved index."""

from pathlib import Path

import numpy as np
import pytest

from charrnn.evaluation import copies
from charrnn.evaluation.copies import WINDOW, CopyIndex, CopyReport, open_index

# Disjoint alphabets make every boundary exact by construction: the corpus background never matches a
# passage, and the sample's noise never matches the corpus, so no span can grow past what was planted.
BACKGROUND, PASSAGE, NOISE = (0, 64), (64, 128), (128, 256)
AT = 12_345


def ids(rng: np.random.Generator, n: int, alphabet: tuple[int, int]) -> np.ndarray:
    return rng.integers(*alphabet, n).astype(np.uint8)


def planted(length: int, *, n: int = 40_000, at: int = AT, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(corpus, passage, sample): the passage lies at `at` in the corpus and at 100 in the sample."""
    rng = np.random.default_rng(seed)
    corpus, passage = ids(rng, n, BACKGROUND), ids(rng, length, PASSAGE)
    corpus[at:at + length] = passage
    sample = np.concatenate([ids(rng, 100, NOISE), passage, ids(rng, 150, NOISE)])
    return corpus, passage, sample


def windows_of(sample: np.ndarray) -> int:
    return len(sample) - WINDOW + 1


def test_a_planted_passage_is_found_where_it_lies():
    corpus, passage, sample = planted(300)
    index = CopyIndex.build(corpus)
    assert index.check(sample) == CopyReport(300, AT, 100, (300 - WINDOW + 1) / windows_of(sample), exact=True)
    assert index.check(sample.astype(np.int64)) == index.check(sample)  # ids as torch hands them over


def test_independent_text_copies_nothing():
    rng = np.random.default_rng(1)
    corpus = rng.integers(0, 60_000, 50_000).astype(np.uint16)
    sample = rng.integers(0, 60_000, 2_000).astype(np.uint16)
    assert CopyIndex.build(corpus).check(sample) == CopyReport(0, None, None, 0.0, exact=True)


def test_nineteen_characters_are_no_copy_and_twenty_are():
    corpus, _, sample = planted(WINDOW - 1)
    assert CopyIndex.build(corpus).check(sample) == CopyReport(0, None, None, 0.0, exact=True)
    corpus, _, sample = planted(WINDOW)
    assert CopyIndex.build(corpus).check(sample) == CopyReport(WINDOW, AT, 100, 1 / windows_of(sample), exact=True)


def test_a_sample_shorter_than_a_window_copies_nothing():
    corpus, passage, _ = planted(300)
    index = CopyIndex.build(corpus)
    assert index.check(passage[:WINDOW - 1]) == CopyReport(0, None, None, 0.0, exact=True)
    assert index.check(np.zeros(0, np.uint8)) == CopyReport(0, None, None, 0.0, exact=True)
    assert CopyIndex.build(passage[:WINDOW - 1]).check(passage) == CopyReport(0, None, None, 0.0, exact=True)


def first_id(ids: np.ndarray, first: int, count: int, stride: int) -> np.ndarray:
    """A weak hash: the window's first id, in the top bits; every bucket holds ~1/64 of the corpus."""
    return ids[first:first + (count - 1) * stride + 1:stride].astype(np.uint64) << np.uint64(56)


def constant(ids: np.ndarray, first: int, count: int, stride: int) -> np.ndarray:
    return np.zeros(count, np.uint64)


@pytest.mark.parametrize("weak_hash", [first_id, constant])
def test_hash_collisions_never_make_a_copy(monkeypatch: pytest.MonkeyPatch, weak_hash):
    monkeypatch.setattr(copies, "_hash_windows", weak_hash)
    monkeypatch.setattr(copies, "MAX_CANDIDATES", 5_000)  # try every colliding position, not the first 256
    corpus, _, sample = planted(300, n=4_000, at=1_234, seed=2)
    index = CopyIndex.build(corpus)
    assert index.check(sample) == CopyReport(300, 1_234, 100, (300 - WINDOW + 1) / windows_of(sample), exact=True)
    # Every window of this noise collides with hundreds of corpus windows (all of them for the constant hash).
    noise = sample[:100] & np.uint8(63)
    assert index.check(noise) == CopyReport(0, None, None, 0.0, exact=True)


def test_a_run_of_one_character_is_found_whole():
    run = np.full(1_500, 7, np.uint8)
    index = CopyIndex.build(run)
    assert index.check(run[:600]) == CopyReport(600, 0, 0, 1.0, exact=True)
    # A sample longer than the corpus: the whole corpus, at its earliest place in the sample.
    assert index.check(np.full(2_500, 7, np.uint8)) == CopyReport(1_500, 0, 0, 1.0, exact=True)


def test_a_run_deep_inside_the_corpus_is_found_despite_the_cap():
    rng = np.random.default_rng(3)
    corpus = ids(rng, 40_000, BACKGROUND)
    corpus[AT:AT + 3_000] = 100  # 2,981 identical windows: over ten times MAX_CANDIDATES
    assert CopyIndex.build(corpus).check(np.full(1_000, 100, np.uint8)) == CopyReport(1_000, AT, 0, 1.0, exact=True)


def test_windows_that_differ_in_their_last_character_do_not_crowd_one_bucket():
    # 600 windows share their first 19 ids; a hash blind to the last one would offer only the first 256.
    corpus = np.concatenate([np.r_[np.ones(WINDOW - 1), last] for last in range(2, 602)]).astype(np.uint16)
    sample = corpus[-WINDOW:]
    assert CopyIndex.build(corpus).check(sample) == CopyReport(WINDOW, len(corpus) - WINDOW, 0, 1.0, exact=True)


def test_a_strided_index_still_finds_copies_of_window_plus_stride():
    corpus, passage, sample = planted(WINDOW + 9)
    index = CopyIndex.build(corpus, max_windows=4_000)  # 39,981 windows: every 10th
    assert index.stride == 10 and AT % 10 != 0
    report = index.check(sample)
    assert report == CopyReport(WINDOW + 9, AT, 100, 10 / windows_of(sample), exact=False)


def test_a_saved_index_loads_for_its_corpus_only(tmp_path: Path):
    corpus, _, sample = planted(300)
    built = CopyIndex.build(corpus)
    built.save(tmp_path)
    loaded = CopyIndex.load(tmp_path, corpus)
    assert loaded is not None and isinstance(loaded.keys, np.memmap)  # mapped, not read whole
    assert np.array_equal(loaded.keys, built.keys) and loaded.check(sample) == built.check(sample)
    assert CopyIndex.load(tmp_path, corpus[:-1]) is None  # another length
    other = corpus.copy()
    other[::97] ^= 1
    assert CopyIndex.load(tmp_path, other) is None  # same length, other text
    assert CopyIndex.load(tmp_path / "missing", corpus) is None
    assert CopyIndex.load(tmp_path, corpus, max_windows=1_000) is None  # a strided index was never saved
    (path,) = tmp_path.glob("copies-*.npy")
    path.write_bytes(path.read_bytes()[:-8])
    assert CopyIndex.load(tmp_path, corpus) is None  # truncated
    path.write_bytes(b"not an index")
    assert CopyIndex.load(tmp_path, corpus) is None


def test_open_index_saves_once_and_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    corpus, _, sample = planted(300)
    first = open_index(corpus, tmp_path / "entry")
    assert [p.name for p in (tmp_path / "entry").iterdir()] == ["copies-w20-s1.npy"]
    monkeypatch.setattr(CopyIndex, "build", None)  # a second open must not build again
    again = open_index(corpus, tmp_path / "entry")
    assert again.check(sample) == first.check(sample)


def test_open_index_without_a_writable_directory_keeps_it_in_memory(tmp_path: Path):
    corpus, _, sample = planted(300)
    (tmp_path / "file").write_text("")
    unwritable = tmp_path / "file" / "entry"  # below a regular file: no directory can be made, even by root
    assert open_index(corpus, unwritable).check(sample).longest == 300
    assert open_index(corpus, None).check(sample).longest == 300


def test_a_read_only_memory_map_is_never_written(tmp_path: Path):
    corpus, _, sample = planted(300)
    np.save(tmp_path / "ids.npy", corpus)
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    assert CopyIndex.build(mapped).check(sample).position == AT
    assert np.array_equal(np.load(tmp_path / "ids.npy"), corpus)
