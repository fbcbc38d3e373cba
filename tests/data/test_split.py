"""The train/validation split: the tail rule for a file, the hash rule for a directory, each id held out once."""

import numpy as np
import pytest

from charrnn.config import DataConfig
from charrnn.data.encoding import load_corpus
from charrnn.data.split import BLOCK, held_out, pieces, split_corpus, split_of, split_point
from charrnn.errors import UserError


def two_kinds(root, files=40):
    """A directory of Python files then C files (sorted path order): two very different halves."""
    for i in range(files):
        (root / "a_py").mkdir(parents=True, exist_ok=True)
        (root / "a_py" / f"m{i:02}.py").write_text(f"def f{i}(x):\n    return 'py' + str(x)\n" * (20 + i))
        (root / "b_c").mkdir(parents=True, exist_ok=True)
        (root / "b_c" / f"m{i:02}.c").write_text(f"int f{i}(int x) {{ if (x) {{ return x; }} }}\n" * (20 + i))
    return root


def share_of_python(corpus, ids):
    """The fraction of `ids`' characters that are Python's (the C half never holds "def ")."""
    text = corpus.vocab.decode(ids.tolist())
    return text.count("def ") * len("def f0(x):\n    return 'py' + str(x)\n") / len(text)


@pytest.mark.parametrize("num_ids, fraction, expected", [(100, 0.1, 90), (1000, 0.5, 500), (7, 0.1, 6), (1, 0.5, 0)])
def test_split_point_holds_out_the_last_fraction_rounding_the_training_part_down(num_ids, fraction, expected):
    assert split_point(num_ids, fraction) == expected


def test_the_tail_rule_gives_contiguous_views_of_a_memory_map(tmp_path):
    np.save(tmp_path / "ids.npy", np.arange(500, dtype=np.uint16))
    ids = np.load(tmp_path / "ids.npy", mmap_mode="r")
    split = split_corpus(ids, ("a",), np.array([0, 500]), 0.1, "auto", single_file=True)
    assert split.rule == "tail"
    assert isinstance(split.train, np.memmap)
    assert isinstance(split.val, np.memmap)
    assert split.train.tolist() + split.val.tolist() == list(range(500))
    assert split.val[0] == 450


def test_the_hash_split_of_a_directory_holds_both_halves_in_proportion_and_the_tail_does_not(tmp_path):
    corpus = load_corpus(two_kinds(tmp_path / "tree"))
    python = share_of_python(corpus, corpus.ids)
    hashed = split_of(corpus, DataConfig(path=str(corpus.path)))
    tail = split_of(corpus, DataConfig(path=str(corpus.path), split="tail"))
    assert hashed.rule == "hash"
    assert share_of_python(corpus, hashed.val) == pytest.approx(python, abs=0.2)
    assert share_of_python(corpus, tail.val) == 0.0  # the tail is all C
    assert len(hashed.val) / len(corpus.ids) == pytest.approx(0.1, abs=0.03)


def test_the_hash_split_holds_out_every_id_exactly_once_in_corpus_order(tmp_path):
    corpus = load_corpus(two_kinds(tmp_path / "tree"))
    split = split_of(corpus, DataConfig(path=str(corpus.path), split="hash"))
    held = np.zeros(len(corpus.ids), dtype=bool)
    for start, end in split.held_out.tolist():
        held[start:end] = True
    assert split.val.tolist() == corpus.ids[held].tolist()
    assert split.train.tolist() == corpus.ids[~held].tolist()


def test_the_hash_rule_is_stable_and_depends_on_paths_not_on_the_other_files(tmp_path):
    names = tuple(f"src/f{i}.c" for i in range(200))
    starts = np.arange(0, 201 * 100, 100)
    first = held_out(names, starts, 0.1)
    assert first.tolist() == held_out(names, starts, 0.1).tolist()
    assert len(first) == 20
    # One more file moves the mark by at most a piece: the files held out before mostly stay held out.
    more = held_out((*names, "src/zz.c"), np.append(starts, starts[-1] + 100), 0.1)
    assert len({tuple(r) for r in first.tolist()} & {tuple(r) for r in more.tolist()}) >= 19


def test_a_file_longer_than_a_block_is_hashed_block_by_block():
    ranges, keys = pieces(("big.txt", "small.txt"), np.array([0, 2 * BLOCK + 5, 2 * BLOCK + 15]))
    assert ranges.tolist() == [[0, BLOCK], [BLOCK, 2 * BLOCK], [2 * BLOCK, 2 * BLOCK + 5],
                               [2 * BLOCK + 5, 2 * BLOCK + 15]]
    assert keys == ["big.txt\x000", "big.txt\x001", "big.txt\x002", "small.txt\x000"]


def test_a_directory_of_one_small_file_falls_back_to_the_tail_and_hash_says_why(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "only.txt").write_text("hello world " * 100)
    corpus = load_corpus(tmp_path / "d")
    assert split_of(corpus, DataConfig(path=str(corpus.path))).rule == "tail"
    with pytest.raises(UserError, match="at least two files"):
        split_of(corpus, DataConfig(path=str(corpus.path), split="hash"))


def test_both_sides_always_hold_text_even_for_an_extreme_fraction():
    names, starts = ("a", "b", "c"), np.array([0, 10, 20, 30])
    assert len(held_out(names, starts, 0.01)) == 1
    assert len(held_out(names, starts, 0.99)) == 2


def test_locate_maps_a_corpus_position_to_its_file_and_offset(tmp_path):
    corpus = load_corpus(two_kinds(tmp_path / "tree", files=3))
    second = corpus.file_starts[1]
    assert corpus.locate(0) == ("a_py/m00.py", 0)
    assert corpus.locate(int(second) + 7) == ("a_py/m01.py", 7)
    assert corpus.file_names[-1] == "b_c/m02.c"
    assert corpus.file_starts[-1] == len(corpus.ids)


def test_the_end_of_the_training_split_is_read_without_joining_it(tmp_path):
    corpus = load_corpus(two_kinds(tmp_path / "tree"))
    split = split_of(corpus, DataConfig(path=str(corpus.path), split="hash"))
    for count in (1, 50, 5_000, len(corpus.ids)):
        assert split.train_end(count).tolist() == split.train[-count:].tolist()
    assert len(split.train_end(len(corpus.ids) + 10)) == len(split.train)
