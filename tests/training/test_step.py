"""The training step's pieces: which streams start blank at each step, and the logged scalars, a NaN stopping all."""

import math
from types import SimpleNamespace

import pytest
import torch

from charrnn.config import TrainConfig
from charrnn.errors import UserError
from charrnn.training.distributed import World
from charrnn.training.state import RunState
from charrnn.training.step import reset_some, train_scalars

ONE = World(torch.device("cpu"))


def offsets(batch_size: int, every: int) -> torch.Tensor:
    """Each stream's phase, as `build` staggers them."""
    return torch.arange(batch_size) * every // batch_size


def zeroed(hidden: tuple[torch.Tensor, ...]) -> list[int]:
    """The streams whose state is all zero, in every tensor of `hidden` and every layer."""
    blank = torch.stack([(t == 0).all(dim=2).all(dim=0) for t in hidden]).all(dim=0)  # (B,)
    return torch.nonzero(blank).flatten().tolist()


def test_reset_some_zeroes_exactly_the_streams_whose_turn_it_is():
    hidden = (torch.ones(2, 8, 3), torch.full((2, 8, 3), 2.0))  # (h, c): 2 layers, 8 streams
    phases = offsets(8, 4)  # [0, 0, 1, 1, 2, 2, 3, 3]
    expected = [[6, 7], [4, 5], [2, 3], [0, 1]] * 2  # (step + 1 + phase) % 4 == 0
    for step, streams in enumerate(expected):
        out = reset_some(hidden, 4, step, phases)
        assert zeroed(out) == streams, step
        kept = [b for b in range(8) if b not in streams]
        assert torch.equal(out[0][:, kept], hidden[0][:, kept])
        assert torch.equal(out[1][:, kept], hidden[1][:, kept])  # the cell state is kept, values and all


def test_every_stream_is_reset_once_per_cycle():
    phases = offsets(10, 5)
    hidden = (torch.ones(1, 10, 2),)
    counts = torch.zeros(10)
    for step in range(5):
        counts += (reset_some(hidden, 5, step, phases)[0][0, :, 0] == 0).float()
    assert counts.tolist() == [1.0] * 10


def test_reset_every_zero_leaves_the_state_alone():
    hidden = (torch.ones(1, 4, 2),)
    assert reset_some(hidden, 0, 3, offsets(4, 1)) is hidden


def test_reset_some_keeps_the_dtype():
    hidden = (torch.ones(1, 4, 2, dtype=torch.float64),)
    assert reset_some(hidden, 2, 1, offsets(4, 2))[0].dtype == torch.float64


def parts(batch_size: int = 4, seq_len: int = 10, lr: float = 0.01) -> SimpleNamespace:
    """What train_scalars reads of a run's Parts."""
    return SimpleNamespace(train=SimpleNamespace(batch_size=batch_size, seq_len=seq_len),
                           optimizer=SimpleNamespace(param_groups=[{"lr": lr}]))


def pending(*pairs: tuple[float, float]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor(loss), torch.tensor(norm)) for loss, norm in pairs]


def test_train_scalars_average_the_steps_since_the_last_log(tmp_path):
    tc = TrainConfig(grad_clip=1.0)
    steps = pending((2.0, 0.5), (1.0, 3.0), (1.5, 1.5), (1.5, 0.2))
    scalars = train_scalars(steps, 2.0, parts(), tc, RunState("r", "h", step=8), ONE, tmp_path)
    assert scalars["train/loss"] == pytest.approx(1.5)
    assert scalars["train/bpc"] == pytest.approx(1.5 / math.log(2))
    assert scalars["train/lr"] == 0.01
    assert scalars["train/grad_norm"] == pytest.approx(1.3)
    assert scalars["train/grad_norm_max"] == pytest.approx(3.0)
    assert scalars["train/clip_frac"] == pytest.approx(0.5)  # two of four norms were above the clip
    assert scalars["train/chars_per_sec"] == pytest.approx(4 * 4 * 10 / 2.0)


def test_without_clipping_no_step_counts_as_clipped(tmp_path):
    scalars = train_scalars(pending((1.0, 50.0)), 1.0, parts(), TrainConfig(grad_clip=0.0), RunState("r", "h", step=1),
                            ONE, tmp_path)
    assert scalars["train/clip_frac"] == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_run_naming_its_step(tmp_path, bad):
    steps = pending((2.0, 0.5), (bad, 0.5), (1.5, 0.5))  # the steps 11, 12 and 13
    with pytest.raises(UserError) as e:
        train_scalars(steps, 1.0, parts(), TrainConfig(lr=2e-3), RunState("r", "h", step=13), ONE, tmp_path)
    assert str(e.value) == (f"the loss became {bad} at step 12; stopped. No checkpoint was written yet: start again "
                            "with a lower lr, e.g. --set train.lr=0.0005")


def test_after_a_checkpoint_a_nan_says_how_to_resume(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    with pytest.raises(UserError, match=rf"the loss became nan at step 5; stopped. The last good checkpoint is kept: "
                                        rf"resume with a lower lr, e.g. charrnn train --resume {tmp_path} "
                                        r"--set train.lr=0.0005$"):
        train_scalars(pending((math.nan, 1.0)), 1.0, parts(), TrainConfig(lr=2e-3), RunState("r", "h", step=5), ONE,
                      tmp_path)
