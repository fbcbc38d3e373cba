"""Which files make a corpus: sorted, hidden and binary ones skipped, globs applied, run dirs inside left out."""

import os

import pytest

from charrnn.data.encoding import load_corpus
from charrnn.data.sources import list_files
from charrnn.errors import UserError
from tests.helpers import text_of


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
    assert text_of(only) == "CH"
    assert "left out 2 file(s)" in only.notes[0]
    with pytest.raises(UserError, match="holds no files to train on after data.include / data.exclude"):
        load_corpus(tmp_path, include=["*.rs"])


def test_charrnn_run_dirs_inside_a_corpus_are_left_out(tmp_path):
    (tmp_path / "src.txt").write_text("source")
    run = tmp_path / "runs" / "x"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text("[model]")
    (run / "metrics.jsonl").write_text("{}")
    c = load_corpus(tmp_path, skip_dir=lambda d: (d / "config.toml").is_file())
    assert text_of(c) == "source"
    assert c.notes == ("left out 1 charrnn run dir(s) inside the corpus: runs/x",)


def test_directory_without_text_files(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"\x00\x00")
    with pytest.raises(UserError, match="holds no text files"):
        load_corpus(tmp_path)
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(UserError, match="holds no files to train on"):
        load_corpus(tmp_path / "nothing_here")


def test_a_file_is_its_own_list_with_no_notes(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert list_files(tmp_path / "a.txt") == ([tmp_path / "a.txt"], [])


def test_files_are_sorted_by_path_parts_not_by_string(tmp_path):
    for name in ("a-b.txt", "a/b.txt", "a.txt"):  # as strings '-' < '.' < '/'; as parts 'a' < 'a-b.txt' < 'a.txt'
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    files, notes = list_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/b.txt", "a-b.txt", "a.txt"]
    assert notes == []


def test_fifos_and_broken_links_inside_a_directory_are_not_read(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    os.mkfifo(tmp_path / "fifo")  # opening it would wait for a writer forever
    (tmp_path / "broken").symlink_to(tmp_path / "gone.txt")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")  # a link to a regular file is read
    files, _ = list_files(tmp_path)
    assert [f.name for f in files] == ["a.txt", "link.txt"]


def test_exclude_alone_filters_and_says_how_many(tmp_path):
    for name in ("keep.txt", "tests/a.txt", "tests/b.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(name)
    files, notes = list_files(tmp_path, exclude=["tests/*"])
    assert files == [tmp_path / "keep.txt"]
    assert notes == ["left out 2 file(s) that data.include / data.exclude filter away"]


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "corpus not found: "),
    (lambda p: os.mkfifo(p), "is neither a regular file nor a directory"),
    (lambda p: p.symlink_to(p), "cannot read the corpus .*Too many levels of symbolic links"),
])
def test_a_corpus_that_is_not_a_file_or_directory_is_one_line(tmp_path, make, message):
    path = tmp_path / "corpus"
    make(path)
    with pytest.raises(UserError, match=message) as e:
        list_files(path)
    assert "\n" not in str(e.value)
