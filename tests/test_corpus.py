import numpy as np
import pytest

from charrnn.data import decoding, encoding
from charrnn.data.encoding import encode_file, load_corpus
from charrnn.errors import UserError
from charrnn.vocab import Vocab


def text_of(c) -> str:
    return c.vocab.decode(c.ids.tolist())


def test_vocab_is_sorted_code_points_and_round_trips(tmp_path):
    text = "hello, wörld!\n日本 ok"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    c = load_corpus(tmp_path / "a.txt")
    assert c.vocab.chars == "".join(sorted(set(text)))
    assert text_of(c) == text
    assert c.vocab.decode(c.vocab.encode("wörld")) == "wörld"


def test_newlines_are_normalised_and_bom_dropped(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffone\r\ntwo\rthree\n\r\nend\r".encode())
    assert text_of(load_corpus(tmp_path / "a.txt")) == "one\ntwo\nthree\n\nend\n"


def test_crlf_split_across_chunks_is_one_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "CHUNK_BYTES", 4)
    (tmp_path / "a.txt").write_bytes("abc\r\ndéf\r\n\r\nxyz€\r".encode())
    assert text_of(load_corpus(tmp_path / "a.txt")) == "abc\ndéf\n\nxyz€\n"


def test_warpeace_style_file_bom_and_cr(tmp_path):
    (tmp_path / "w.txt").write_bytes(b"\xef\xbb\xbfCHAPTER I\r\rWell, Prince\r")
    assert text_of(load_corpus(tmp_path / "w.txt")) == "CHAPTER I\n\nWell, Prince\n"


def test_directory_is_sorted_concatenation_skipping_binary_and_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("second ")
    (tmp_path / "a.txt").write_text("first ")
    (tmp_path / "b" / "1.py").write_text("middle ")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01\x02 binary")
    (tmp_path / "d.txt").write_bytes(b"bad \xff utf8")
    (tmp_path / ".hidden").write_text("secret")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    c = load_corpus(tmp_path)
    assert text_of(c) == "first middle second "
    assert c.files == 3
    assert c.notes == ("skipped 2 binary or undecodable file(s), e.g. c.bin: contains NUL bytes and looks binary",)


def test_directory_skips_pycache_and_applies_include_and_exclude_globs(tmp_path):
    for name, text in {"a.py": "A", "a.c": "C", "b/c.h": "H", "b/tests/t.c": "T", "__pycache__/a.pyc": "P",
                       "b/__pycache__/x.py": "X"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert text_of(load_corpus(tmp_path)) == "CAHT"  # sorted paths; no __pycache__ anywhere
    assert text_of(load_corpus(tmp_path, include=["*.c", "*.h"])) == "CHT"  # '*' crosses '/'
    only = load_corpus(tmp_path, include=["*.c", "*.h"], exclude=["*/tests/*"])
    assert text_of(only) == "CH" and "left out 2 file(s)" in only.notes[0]
    with pytest.raises(UserError, match="holds no files to train on after data.include / data.exclude"):
        load_corpus(tmp_path, include=["*.rs"])


def test_charrnn_run_dirs_inside_a_corpus_are_left_out(tmp_path):
    (tmp_path / "src.txt").write_text("source")
    run = tmp_path / "runs" / "x"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text("[model]")
    (run / "metrics.jsonl").write_text("{}")
    c = load_corpus(tmp_path, skip_dir=lambda d: (d / "config.toml").is_file())
    assert text_of(c) == "source" and c.notes == ("left out 1 charrnn run dir(s) inside the corpus: runs/x",)


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


def test_directory_without_text_files(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00\x00")
    with pytest.raises(UserError, match="holds no text files"):
        load_corpus(tmp_path)
    with pytest.raises(UserError, match="holds no files to train on"):
        load_corpus(tmp_path / "nothing_here" if (tmp_path / "nothing_here").mkdir() else tmp_path / "nothing_here")


def test_other_codecs_and_raw_bytes(tmp_path):
    path = tmp_path / "l.txt"
    path.write_bytes(b"caf\xe9\x00\r\n")
    with pytest.raises(UserError, match="unknown encoding"):
        load_corpus(path, "klingon")
    c = load_corpus(path, "bytes")
    assert c.vocab.size == 256 and c.vocab.byte_level
    assert c.ids.tolist() == list(b"caf\xe9\x00\r\n")  # raw: no newline handling
    path.write_bytes(b"caf\xe9\r\n")
    assert text_of(load_corpus(path, "latin-1")) == "café\n"


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("cached text")
    first = load_corpus(path)
    monkeypatch.setattr(encoding, "_scan", lambda *a: pytest.fail("re-encoded a cached corpus"))
    second = load_corpus(path)
    assert second.content_hash == first.content_hash and text_of(second) == "cached text"


def test_changed_file_is_re_encoded(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("version one")
    first = load_corpus(path)
    path.write_text("version two!")
    second = load_corpus(path)
    assert text_of(second) == "version two!" and second.content_hash != first.content_hash


def test_encode_file_skips_and_counts_unknown_characters(tmp_path):
    path = tmp_path / "e.txt"
    path.write_text("abcxyzab\r\n")
    ids, skipped = encode_file(path, Vocab("\nab"))
    assert Vocab("\nab").decode(ids.tolist()) == "abab\n" and skipped == 4


def test_prime_outside_vocabulary_names_the_characters():
    with pytest.raises(UserError, match=r"2 character\(s\) not in the model's vocabulary: 'x', 'z'"):
        Vocab("ab").encode("axbz")


def test_invalid_utf8_offset_is_exact_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "CHUNK_BYTES", 4)
    path = tmp_path / "x.txt"
    path.write_bytes("café ok ".encode() + b"\xe9 bad")  # 'é' straddles the first chunk boundary
    with pytest.raises(UserError, match="byte offset 9"):
        load_corpus(path)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7])
def test_ascii_fast_path_and_decoder_agree_on_newlines_at_any_chunk_size(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(decoding, "CHUNK_BYTES", chunk)
    raw = "\ufeffab\r\ncd\r\rxé\r\nfg\r\nhi\r\r\nj\rk\r".encode()
    (tmp_path / "a.txt").write_bytes(raw)
    expected = "ab\ncd\n\nxé\nfg\nhi\n\nj\nk\n"
    assert text_of(load_corpus(tmp_path / "a.txt")) == expected
    ids, skipped = encode_file(tmp_path / "a.txt", load_corpus(tmp_path / "a.txt").vocab)
    assert skipped == 0 and len(ids) == len(expected)


def test_raw_bytes_are_their_own_ids(tmp_path):
    data = bytes(range(256)) * 3 + b"\r\n\x00"
    (tmp_path / "b.bin").write_bytes(data)
    assert load_corpus(tmp_path / "b.bin", "bytes").ids.tobytes() == data
