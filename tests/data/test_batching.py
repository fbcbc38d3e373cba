"""Batching: contiguous streams, windows whose targets are shifted by one, the ragged tail, fit_batch."""

import numpy as np
import pytest

from charrnn.data.batching import Streams, fit_batch, make_streams
from charrnn.errors import UserError


def test_streams_are_contiguous_and_overlap_by_one():
    ids = np.arange(19)
    streams = make_streams(ids, 3)
    assert streams.shape == (3, 7)
    assert streams.tolist() == [list(range(0, 7)), list(range(6, 13)), list(range(12, 19))]


def test_windows_have_targets_shifted_by_one_and_carry_on_from_each_other():
    ids = np.arange(1000) % 251
    s = Streams.of(ids.astype(np.uint8), batch_size=4, seq_len=10)
    rows = [[] for _ in range(4)]
    for i in range(len(s)):
        x, y = s.window(i)
        assert x.dtype.is_floating_point is False
        assert x.shape == y.shape
        assert (x[:, 1:] == y[:, :-1]).all()  # y is x shifted left by one
        for b in range(4):
            rows[b] += x[b].tolist()
            last_target = y[b, -1].item()
    # each row is one contiguous slice of the corpus, read in order
    stream_len = (len(ids) - 1) // 4
    for b in range(4):
        assert rows[b] == (ids[b * stream_len:(b + 1) * stream_len]).tolist()
    assert last_target == ids[4 * stream_len]


def test_every_char_is_an_input_or_target_except_the_ragged_tail():
    n, batch = 1003, 7
    ids = np.arange(n)
    s = Streams.of(ids, batch, seq_len=16)
    seen = set()
    for i in range(len(s)):
        x, y = s.window(i)
        seen |= set(x.flatten().tolist()) | set(y.flatten().tolist())
    tail = (n - 1) - batch * ((n - 1) // batch)
    assert seen == set(range(n - tail))
    assert tail < batch
    assert s.chars_per_epoch == batch * ((n - 1) // batch)


def test_last_window_is_the_ragged_remainder():
    s = Streams.of(np.arange(19), batch_size=3, seq_len=4)
    assert len(s) == 2
    x, y = s.window(1)
    assert x.tolist() == [[4, 5], [10, 11], [16, 17]]
    assert y.tolist() == [[5, 6], [11, 12], [17, 18]]


def test_rows_select_a_share_of_the_streams():
    full = Streams.of(np.arange(100), 4, 5)
    half = Streams.of(np.arange(100), 4, 5, rows=slice(2, 4))
    assert half.batch_size == 2
    assert (half.window(3)[0] == full.window(3)[0][2:]).all()


def test_streams_read_a_memory_map_without_copying(tmp_path):
    path = tmp_path / "ids.npy"
    np.save(path, np.arange(10_000, dtype=np.uint16))
    mm = np.load(path, mmap_mode="r")
    s = Streams.of(mm, 8, 50)
    assert np.shares_memory(s.data, mm)
    assert s.window(0)[0][0, :3].tolist() == [0, 1, 2]


def test_fit_batch_keeps_what_fits_and_shrinks_batch_then_seq_len():
    assert fit_batch(10_000, 64, 100, "train") == (64, 100, "")
    batch, seq, warning = fit_batch(1001, 64, 100, "train")
    assert (batch, seq) == (10, 100)
    assert "batch_size 10" in warning
    batch, seq, warning = fit_batch(51, 64, 100, "validation")
    assert (batch, seq) == (1, 50)
    assert "validation split has only 51 characters" in warning
    with pytest.raises(UserError, match="too few to train or evaluate on"):
        fit_batch(5, 64, 100, "train")
    assert fit_batch(1001, 64, 100, "train", multiple=4)[0] == 8
