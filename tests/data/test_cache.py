"""The corpus cache heals damaged entries, notices rewritten files, and never leaves temporaries behind."""

import json
import multiprocessing
import os
import tempfile

import numpy as np
import pytest

from charrnn.data import cache, encoding
from charrnn.data.encoding import load_corpus
from charrnn.errors import UserError
from tests.helpers import text_of


@pytest.fixture()
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "c.txt"
    path.write_text("the quick brown fox\n" * 50)
    load_corpus(path)
    return path


def entry_of(path):
    return cache.cache_dir() / cache.key([path], "utf-8")


def truncate(p):
    p.write_bytes(p.read_bytes()[:200])


def out_of_range(p):
    ids = np.load(p)
    ids[7] = 250
    np.save(p, ids)


@pytest.mark.parametrize("damage", [
    lambda e: truncate(e / "ids.npy"),
    lambda e: (e / "ids.npy").unlink(),
    lambda e: (e / "ids.npy").write_bytes(b"garbage"),
    lambda e: (e / "meta.json").unlink(),
    lambda e: (e / "meta.json").write_text("{not json"),
    lambda e: (e / "meta.json").write_text("{}"),
    lambda e: (e / "meta.json").write_text(json.dumps({**json.loads((e / "meta.json").read_text()), "length": 3})),
    lambda e: out_of_range(e / "ids.npy"),
], ids=["truncated", "no-ids", "garbage-ids", "no-meta", "garbage-meta", "empty-meta", "wrong-length", "bad-id"])
def test_a_damaged_entry_is_reported_rebuilt_and_replaced(corpus, damage):
    damage(entry_of(corpus))
    healed = load_corpus(corpus)
    assert text_of(healed) == "the quick brown fox\n" * 50
    damaged = [note for note in healed.notes if "was damaged" in note]
    assert len(damaged) == 1
    assert "rebuilt it" in damaged[0]
    again = load_corpus(corpus)
    assert not again.notes
    assert again.encode_seconds == 0  # the replacement is used from now on
    assert sorted(p.name for p in cache.cache_dir().iterdir()) == [entry_of(corpus).name]  # no trash left


def test_a_same_size_rewrite_with_the_old_mtime_is_noticed(corpus, tmp_path):
    before = os.stat(corpus)
    corpus.write_text("THE QUICK BROWN FOX\n" * 50)  # same size
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))  # `touch -r` back to the old mtime
    assert text_of(load_corpus(corpus)) == "THE QUICK BROWN FOX\n" * 50  # the ctime changed: a new entry


def test_verify_rehashes_even_when_the_key_cannot_tell(corpus, monkeypatch):
    monkeypatch.setattr(cache, "key", lambda files, encoding: "fixed")  # a filesystem whose stat lies
    first = load_corpus(corpus)
    corpus.write_text("THE QUICK BROWN FOX\n" * 50)
    assert text_of(load_corpus(corpus)) == text_of(first)  # fooled without verify...
    checked = load_corpus(corpus, verify=True)
    assert text_of(checked) == "THE QUICK BROWN FOX\n" * 50
    assert "did not match the files' bytes" in checked.notes[0]


def test_temp_dirs_of_dead_processes_are_cleaned_but_live_ones_kept(corpus, tmp_path):
    dead = cache.cache_dir() / ".tmp-999999999-abc"
    live = cache.cache_dir() / f".tmp-{os.getpid()}-xyz"
    dead.mkdir()
    live.mkdir()
    other = tmp_path / "other.txt"
    other.write_text("new text to encode")
    load_corpus(other)
    assert not dead.exists()
    assert live.exists()


def test_an_unwritable_cache_says_not_cached_and_leaves_nothing(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache dir should be")
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = tmp_path / "c.txt"
    path.write_text("uncached text")
    c = load_corpus(path)
    assert text_of(c) == "uncached text"
    assert not c.cached
    assert not list((tmp_path / "tmp").iterdir())  # the private copy is unlinked once mapped


def test_a_full_cache_disk_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(encoding, "_write_ids", disk_full)
    path = tmp_path / "c.txt"
    path.write_text("text")
    with pytest.raises(UserError, match="cannot cache the encoded corpus in .*No space left on device"):
        load_corpus(path)
    assert not list((tmp_path / "cache").iterdir())


def test_a_valid_entry_that_a_racing_process_stored_is_kept_not_pulled_away(corpus):
    entry = entry_of(corpus)  # stored by the fixture: as if another DDP rank finished encoding first
    first = (entry / "ids.npy").stat().st_ino
    meta = json.loads((entry / "meta.json").read_text())
    written = []

    def write(out):  # this process's own encoding, finished a moment later
        written.append(out)
        np.save(out, np.zeros(meta["length"], dtype=np.uint8))

    got = cache.store(entry, meta, write, lambda m: len(m["chars"]))
    assert written
    assert (entry / "ids.npy").stat().st_ino == first
    assert text_of(load_corpus(corpus)) == "the quick brown fox\n" * 50
    assert got.cached
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temp or trash dir left


def _load_each(barrier, paths, errors):
    """One of two racing processes: load every corpus at the same moment as the other, pausing at each step."""
    import random
    import time

    def slow(call):
        return lambda *args: (call(*args), time.sleep(random.uniform(0, 0.005)))[0]

    # Pauses after each look at the entry and each rename widen the windows between them, as a busy machine does.
    os.rename, os.replace, cache.open_entry = slow(os.rename), slow(os.replace), slow(cache.open_entry)
    for path in paths:
        barrier.wait()
        try:
            assert text_of(load_corpus(path)) == path.read_text()
        except BaseException as e:
            errors.put(f"{path.name}: {type(e).__name__}: {e}")


def test_two_processes_encoding_one_new_corpus_at_once_both_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "cache"))  # as two DDP ranks on a corpus never cached
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"c{i}.txt")
        paths[-1].write_text(f"text number {i}\n" * 500)
    context = multiprocessing.get_context("spawn")
    barrier, errors = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_load_each, args=(barrier, paths, errors)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert errors.empty(), errors.get()
    assert len(list((tmp_path / "cache").iterdir())) == len(paths)  # one entry each; no temp or trash dir left
