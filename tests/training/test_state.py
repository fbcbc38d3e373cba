"""The run state: a plain dict in every checkpoint, read back whole; a malformed one is a one-line error."""

import io
import math
import random

import pytest
import torch

from charrnn.errors import UserError
from charrnn.training.distributed import World, gather_rng
from charrnn.training.state import RunState


def full_state() -> RunState:
    random.seed(3)
    return RunState("run-9", "abc123", step=42, epoch=2, window=7, elapsed=12.5, best_val_loss=1.25, val_loss=1.5,
                    hidden=(torch.randn(2, 4, 8), torch.randn(2, 4, 8)), rng=gather_rng(World(torch.device("cpu"))))


def assert_same(a: RunState, b: RunState) -> None:
    for name in ("run_id", "corpus_hash", "step", "epoch", "window", "elapsed", "best_val_loss", "val_loss"):
        assert getattr(a, name) == getattr(b, name), name
    assert len(a.hidden) == len(b.hidden)
    for x, y in zip(a.hidden, b.hidden, strict=True):
        assert torch.equal(x, y)
    assert a.rng[0]["python"] == b.rng[0]["python"]
    assert torch.equal(a.rng[0]["torch"], b.rng[0]["torch"])


def test_a_new_run_starts_at_the_beginning_with_no_best_loss():
    state = RunState("run", "hash")
    assert (state.step, state.epoch, state.window, state.elapsed) == (0, 0, 0, 0.0)
    assert state.best_val_loss == math.inf
    assert state.val_loss is None
    assert state.hidden == ()


def test_to_dict_and_from_dict_round_trip_through_a_weights_only_load(tmp_path):
    state = full_state()
    buffer = io.BytesIO()
    torch.save(state.to_dict(), buffer)  # as a checkpoint stores it: plain values and tensors only
    buffer.seek(0)
    back = RunState.from_dict(torch.load(buffer, weights_only=True), tmp_path / "last.pt")
    assert_same(back, state)
    assert isinstance(back.hidden, tuple)


def test_to_dict_is_a_plain_dict_of_every_field():
    data = full_state().to_dict()
    assert type(data) is dict
    assert set(data) == {"run_id", "corpus_hash", "step", "epoch", "window", "elapsed", "best_val_loss", "val_loss",
                         "hidden", "rng"}


def test_a_hidden_state_stored_as_a_list_comes_back_as_a_tuple(tmp_path):
    data = {**full_state().to_dict(), "hidden": [torch.zeros(1, 2, 3)]}
    assert isinstance(RunState.from_dict(data, tmp_path / "c.pt").hidden, tuple)


@pytest.mark.parametrize("change", [
    lambda d: d.update(surprise=1),  # a key this charrnn does not know
    lambda d: d.pop("run_id"),  # a required key missing
    lambda d: d.clear(),
], ids=["unknown-key", "missing-key", "empty"])
def test_a_malformed_run_state_is_one_line_that_names_the_checkpoint(tmp_path, change):
    data = full_state().to_dict()
    change(data)
    with pytest.raises(UserError) as e:
        RunState.from_dict(data, tmp_path / "last.pt")
    assert str(e.value) == f"{tmp_path / 'last.pt'} is a damaged charrnn checkpoint: its run state is malformed"
    assert e.value.__cause__ is None
    assert e.value.__suppress_context__


def test_a_run_state_whose_hidden_state_is_not_a_sequence_is_one_line(tmp_path):
    data = {**full_state().to_dict(), "hidden": None}
    with pytest.raises(UserError, match="its run state is malformed"):
        RunState.from_dict(data, tmp_path / "last.pt")
