"""Bytes -> text: strict decoding with exact byte offsets, LF newlines across chunk boundaries, no BOM, other codecs."""

import pytest

from charrnn.data import decoding
from charrnn.data.decoding import BadFile, check_encoding, iter_text
from charrnn.data.encoding import encode_file, load_corpus
from charrnn.errors import UserError
from tests.helpers import text_of


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


def test_other_codecs_and_raw_bytes(tmp_path):
    path = tmp_path / "l.txt"
    path.write_bytes(b"caf\xe9\x00\r\n")
    with pytest.raises(UserError, match="unknown encoding"):
        load_corpus(path, "klingon")
    c = load_corpus(path, "bytes")
    assert c.vocab.size == 256
    assert c.vocab.byte_level
    assert c.ids.tolist() == list(b"caf\xe9\x00\r\n")  # raw: no newline handling
    path.write_bytes(b"caf\xe9\r\n")
    assert text_of(load_corpus(path, "latin-1")) == "café\n"


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
    assert skipped == 0
    assert len(ids) == len(expected)


@pytest.mark.parametrize("name, message", [
    ("klingon", "unknown encoding 'klingon'"),
    ("base64", "'base64' is not a text encoding"),
    ("rot13", "'rot13' is not a text encoding"),
])
def test_check_encoding_refuses_unknown_and_bytes_to_bytes_codecs(name, message):
    with pytest.raises(UserError, match=message):
        check_encoding(name)


@pytest.mark.parametrize("name", ["bytes", "utf-8", "latin-1", "utf-16"])
def test_check_encoding_accepts_text_codecs_and_raw_bytes(name):
    assert check_encoding(name) is None


def test_a_file_that_ends_inside_a_character_is_refused(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("ok €".encode()[:-1])  # the euro sign's last byte is missing
    with pytest.raises(BadFile, match="ends in a truncated utf-8 sequence"):
        list(iter_text(path, "utf-8"))


def test_a_nul_byte_in_a_later_chunk_marks_the_file_binary(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "CHUNK_BYTES", 4)
    path = tmp_path / "t.txt"
    path.write_bytes(b"plain text, then \x00")
    with pytest.raises(BadFile, match="contains NUL bytes"):
        list(iter_text(path, "utf-8"))


def test_iter_text_joins_to_the_decoded_text_in_another_codec(tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "CHUNK_BYTES", 3)
    path = tmp_path / "t.txt"
    path.write_bytes("a\r\nßü\r".encode("utf-16"))  # not ASCII-compatible: every chunk goes through the decoder
    pieces = list(iter_text(path, "utf-16"))
    assert all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == "a\nßü\n"
