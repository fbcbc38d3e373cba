"""Encoding a corpus: its vocabulary and ids, the smallest dtype, the cache hit, and files under a fixed vocabulary."""

import numpy as np
import pytest

from charrnn.data import encoding
from charrnn.data.encoding import encode_file, load_corpus
from charrnn.errors import UserError
from charrnn.vocab import Vocab
from tests.helpers import text_of


def test_vocab_is_sorted_code_points_and_round_trips(tmp_path):
    text = "hello, wörld!\n日本 ok"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    c = load_corpus(tmp_path / "a.txt")
    assert c.vocab.chars == "".join(sorted(set(text)))
    assert text_of(c) == text
    assert c.vocab.decode(c.vocab.encode("wörld")) == "wörld"


def test_ids_use_the_smallest_dtype(tmp_path):
    (tmp_path / "a.txt").write_text("abc")
    assert load_corpus(tmp_path / "a.txt").ids.dtype == np.uint8
    (tmp_path / "b.txt").write_text("".join(chr(0x4E00 + i) for i in range(300)))
    assert load_corpus(tmp_path / "b.txt").ids.dtype == np.uint16


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "corpus not found"),
    (lambda p: p.write_text(""), "is empty"),
    (lambda p: p.write_bytes(b"text\x00more"), "NUL bytes"),
    (lambda p: p.write_bytes(b"caf\xc3\xa9 ok \xe9 bad"), "not valid utf-8 at byte offset 9"),
])
def test_bad_single_files(tmp_path, setup, message):
    path = tmp_path / "x.txt"
    setup(path)
    with pytest.raises(UserError, match=message):
        load_corpus(path)


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("cached text")
    first = load_corpus(path)
    monkeypatch.setattr(encoding, "_scan", lambda *a: pytest.fail("re-encoded a cached corpus"))
    second = load_corpus(path)
    assert second.content_hash == first.content_hash
    assert text_of(second) == "cached text"


def test_changed_file_is_re_encoded(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("version one")
    first = load_corpus(path)
    path.write_text("version two!")
    second = load_corpus(path)
    assert text_of(second) == "version two!"
    assert second.content_hash != first.content_hash


def test_encode_file_skips_and_counts_unknown_characters(tmp_path):
    path = tmp_path / "e.txt"
    path.write_text("abcxyzab\r\n")
    ids, skipped = encode_file(path, Vocab("\nab"))
    assert Vocab("\nab").decode(ids.tolist()) == "abab\n"
    assert skipped == 4


def test_raw_bytes_are_their_own_ids(tmp_path):
    data = bytes(range(256)) * 3 + b"\r\n\x00"
    (tmp_path / "b.bin").write_bytes(data)
    assert load_corpus(tmp_path / "b.bin", "bytes").ids.tobytes() == data
