"""The checkpoint format: round trips, inference loading, format 1, refusing pickles and damaged files."""

import os
from dataclasses import asdict

import pytest
import torch

from charrnn import checkpoint
from charrnn.checkpoint import load_model, load_run, resolve, save_periodic, save_run
from charrnn.config import load_config
from charrnn.errors import UserError
from charrnn.model import CharRNN
from charrnn.training.optim import make_optimizer
from charrnn.training.state import RunState
from charrnn.vocab import Vocab
from tests.helpers import random_model

VOCAB = Vocab("\nabc")
CONFIG = load_config(None, ["model.embed_dim=4", "model.hidden_size=8", "model.num_layers=1"])


def save(path, value: float = 0.0, step: int = 7) -> CharRNN:
    model = random_model(VOCAB.size, **asdict(CONFIG.model), training=True)
    optimizer = make_optimizer(model, CONFIG.train, torch.device("cpu"))
    model(torch.zeros(1, 3, dtype=torch.long))[0].sum().backward()
    optimizer.step()  # so that the optimizer has state to save
    with torch.no_grad():
        model.head.bias.fill_(value)
    run = RunState("run-1", "hash", step=step, epoch=1, window=2, elapsed=3.5, best_val_loss=1.25, val_loss=1.5,
                   hidden=(torch.ones(1, 2, 8), torch.zeros(1, 2, 8)), rng=[{"python": (3, (1, 2), None)}])
    save_run(path, config=CONFIG, vocab=VOCAB, model=model, optimizer=optimizer,
             scaler=torch.amp.GradScaler("cpu", enabled=False), run=run.to_dict())
    return model


def test_round_trip_restores_the_run(tmp_path):
    model = save(tmp_path / "c.pt", 2.0)
    saved = load_run(tmp_path / "c.pt")
    assert saved.config == CONFIG
    assert saved.vocab == VOCAB
    assert saved.run["step"] == 7
    assert saved.run["run_id"] == "run-1"
    assert saved.run["rng"][0]["python"] == (3, (1, 2), None)
    assert torch.equal(saved.run["hidden"][0], torch.ones(1, 2, 8))
    assert saved.optimizer["state"]
    assert all(torch.equal(saved.model[k], v) for k, v in model.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left behind


def test_inference_loading_gives_an_eval_model_and_never_reads_the_optimizer(tmp_path, monkeypatch):
    save(tmp_path / "c.pt", 2.0)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    loaded = load_model(tmp_path / "c.pt")
    assert calls == [{"map_location": "cpu", "weights_only": True, "mmap": True}]  # mapped, not read
    assert not loaded.model.training
    assert torch.equal(loaded.model.head.bias, torch.full((4,), 2.0))
    assert loaded.run["best_val_loss"] == 1.25
    assert loaded.config == CONFIG


def test_format_1_checkpoints_still_load(tmp_path):
    save(tmp_path / "c.pt")
    new = torch.load(tmp_path / "c.pt", weights_only=True)
    old = {k: v for k, v in new.items() if k != "run"} | {k: v for k, v in new["run"].items() if k != "run_id"}
    old["format_version"] = 1
    torch.save(old, tmp_path / "old.pt")
    saved = load_run(tmp_path / "old.pt")
    assert saved.run["step"] == 7
    assert saved.run["run_id"] == ""
    assert saved.run["best_val_loss"] == 1.25
    assert load_model(tmp_path / "old.pt").vocab == VOCAB


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 2, "payload": Evil()}, path)
    with pytest.raises(UserError, match="objects other than tensors and plain Python types"):
        load_run(path)
    assert not marker.exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable checkpoint"),
    (lambda p: p.write_bytes(os.urandom(2000)), "not a readable checkpoint"),
    (lambda p: p.write_text("hello"), "not a readable checkpoint"),
    (lambda p: p.write_bytes(b""), "not a readable checkpoint"),
    (lambda p: torch.save({"weights": torch.zeros(1)}, p), "not a charrnn checkpoint"),
    (lambda p: torch.save([1, 2], p), "not a charrnn checkpoint"),
    (lambda p: torch.save({"format_version": 99}, p), "checkpoint format 99; this charrnn reads formats 1, 2"),
    (lambda p: torch.save({"format_version": 2, "model": {}}, p), "damaged charrnn checkpoint: it lacks config"),
    (lambda p: torch.save({**torch.load(p, weights_only=True), "run": {"step": 1}}, p), "run state is malformed"),
    (lambda p: torch.save({**torch.load(p, weights_only=True), "config": {"model": {"cell": "x"}}}, p),
     "holds a config this charrnn cannot use"),
])
def test_bad_files_get_clear_errors(tmp_path, make, message):
    path = tmp_path / "c.pt"
    save(path)
    make(path)
    with pytest.raises(UserError, match=message):
        RunState.from_dict(load_run(path).run, path)  # as a resume reads it


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path):
    save(tmp_path / "c.pt")
    data = torch.load(tmp_path / "c.pt", weights_only=True)
    data["config"]["model"]["hidden_size"] = 16
    torch.save(data, tmp_path / "c.pt")
    with pytest.raises(UserError, match="its weights do not fit its config"):
        load_model(tmp_path / "c.pt")


def test_missing_checkpoint_run_dir_resolution_and_non_files(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="holds no checkpoints/best.pt"):
        resolve(tmp_path)
    save(tmp_path / "checkpoints" / "last.pt")
    assert resolve(tmp_path).name == "last.pt"
    save(tmp_path / "checkpoints" / "best.pt")
    assert resolve(tmp_path).name == "best.pt"
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(UserError, match="is not a regular file"):
        load_model(tmp_path / "fifo.pt")  # refused at once, never blocks on the FIFO


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save(path, 1.0)

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="cannot write .*No space left on device.*previous checkpoint is kept"):
        save(path, 2.0)
    monkeypatch.undo()
    assert torch.equal(load_model(path).model.head.bias, torch.full((4,), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unwritable_destination_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write checkpoint"):
        save(blocker / "last.pt")


def test_periodic_checkpoints_keep_only_the_newest(tmp_path):
    for step in (10, 20, 30, 40):
        save_periodic(tmp_path, step, lambda path, step=step: save(path, step=step), keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000030.pt", "step-00000040.pt"]
    assert load_run(tmp_path / "checkpoints" / names[-1]).run["step"] == 40
    assert checkpoint.is_periodic("step-00000030.pt")
    assert not checkpoint.is_periodic("step-1.pt.bak")


def test_describe_names_the_cell_and_progress(tmp_path):
    save(tmp_path / "c.pt")
    text = "\n".join(checkpoint.describe(tmp_path / "c.pt"))
    assert "cell:        lstm (1 x 8)" in text
    assert "step:        7 (epoch 1, window 2)" in text
    assert "best val:    1.2500 nats/char" in text


def test_a_checkpoint_from_before_data_split_reads_as_the_tail_rule_it_was_trained_with(tmp_path):
    save(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    del state["config"]["data"]["split"]
    torch.save(state, tmp_path / "old.pt")
    assert load_run(tmp_path / "old.pt").config.data.split == "tail"
    assert load_model(tmp_path / "old.pt").config.data.split == "tail"


def test_a_checkpoint_from_before_eval_streams_validates_on_the_batchs_streams_as_it_was_trained(tmp_path):
    save(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["config"]["train"]["eval_streams"] == 32  # what a run saves today
    del state["config"]["train"]["eval_streams"]
    torch.save(state, tmp_path / "old.pt")
    assert load_run(tmp_path / "old.pt").config.train.eval_streams == 0
    assert load_model(tmp_path / "old.pt").config.train.eval_streams == 0
