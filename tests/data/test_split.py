"""The train/validation split: the last val_fraction is held out, as views of the ids."""

import numpy as np
import pytest

from charrnn.data.split import split_ids, split_point


@pytest.mark.parametrize("num_ids, fraction, expected", [(100, 0.1, 90), (1000, 0.5, 500), (7, 0.1, 6), (1, 0.5, 0)])
def test_split_point_holds_out_the_last_fraction_rounding_the_training_part_down(num_ids, fraction, expected):
    assert split_point(num_ids, fraction) == expected


def test_split_ids_are_contiguous_views_that_cover_every_id_once():
    ids = np.arange(1000, dtype=np.uint16)
    train, val = split_ids(ids, 0.25)
    assert len(train) == 750
    assert len(val) == 250
    assert np.concatenate([train, val]).tolist() == ids.tolist()
    assert np.shares_memory(train, ids)
    assert np.shares_memory(val, ids)


def test_split_ids_of_a_memory_map_do_not_copy(tmp_path):
    np.save(tmp_path / "ids.npy", np.arange(500, dtype=np.uint16))
    mm = np.load(tmp_path / "ids.npy", mmap_mode="r")
    train, val = split_ids(mm, 0.1)
    assert isinstance(train, np.memmap)
    assert isinstance(val, np.memmap)
    assert val[0] == 450
