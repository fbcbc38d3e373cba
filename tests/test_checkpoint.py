import os

import pytest
import torch

from charrnn import checkpoint
from charrnn.checkpoint import load_checkpoint, resolve, save_checkpoint, save_periodic
from charrnn.errors import UserError


def state(value: float = 1.0) -> dict:
    return {"weights": torch.full((3, 4), value), "config": {"model": {"hidden_size": 4}}, "vocab": "ab\n",
            "rng": {"python": (3, (1, 2, 3), None)}, "step": 7}


def test_round_trip_holds_tensors_and_plain_types(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, state(2.0))
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"], torch.full((3, 4), 2.0))
    assert loaded["vocab"] == "ab\n" and loaded["step"] == 7 and loaded["rng"]["python"] == (3, (1, 2, 3), None)
    assert loaded["format_version"] == checkpoint.FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left behind


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "payload": Evil()}, path)
    with pytest.raises(UserError, match="objects other than tensors and plain Python types"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable checkpoint"),
    (lambda p: p.write_bytes(os.urandom(2000)), "not a readable checkpoint"),
    (lambda p: p.write_text("hello"), "not a readable checkpoint"),
    (lambda p: torch.save({"weights": torch.zeros(1)}, p), "not a charrnn checkpoint"),
    (lambda p: torch.save([1, 2], p), "not a charrnn checkpoint"),
    (lambda p: torch.save({"format_version": 99}, p), "checkpoint format 99"),
])
def test_bad_files_get_clear_errors(tmp_path, make, message):
    path = tmp_path / "c.pt"
    save_checkpoint(path, state())
    make(path)
    with pytest.raises(UserError, match=message):
        load_checkpoint(path)


def test_missing_checkpoint_and_run_dir_resolution(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="holds no checkpoints/best.pt"):
        resolve(tmp_path)
    save_checkpoint(tmp_path / "checkpoints" / "last.pt", state(1.0))
    assert resolve(tmp_path).name == "last.pt"
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", state(2.0))
    assert resolve(tmp_path).name == "best.pt"


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1.0))

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="cannot write .*No space left on device.*previous checkpoint is kept"):
        save_checkpoint(path, state(2.0))
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["weights"], torch.full((3, 4), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unwritable_destination_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write checkpoint"):
        save_checkpoint(blocker / "last.pt", state())


def test_periodic_checkpoints_keep_only_the_newest(tmp_path):
    for step in (10, 20, 30, 40):
        save_periodic(tmp_path, step, state(step), keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000030.pt", "step-00000040.pt"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_checkpoint_loads_on_cpu(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"weights": torch.ones(2, device="cuda")})
    assert load_checkpoint(tmp_path / "c.pt", "cpu")["weights"].device.type == "cpu"
