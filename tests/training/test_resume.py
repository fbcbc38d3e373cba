"""Resume with overrides: only resumable keys may change, the run's own config is kept, the corpus must be the same."""

import os
from dataclasses import asdict

import pytest
import torch

from charrnn.checkpoint import save_run
from charrnn.config import Config, load_config
from charrnn.errors import UserError
from charrnn.training.loop import train
from charrnn.training.resume import open_resume, run_config
from charrnn.training.state import RunState
from charrnn.vocab import Vocab
from tests.helpers import fast_config, random_model, resume, steps_logged

SAVED = load_config(None, ["model.embed_dim=4", "model.hidden_size=8", "model.num_layers=1", "train.max_steps=20",
                           "data.path='corpus.txt'"])


@pytest.fixture
def run_dir(tmp_path):
    """A run dir whose last.pt (an untrained model at step 12) holds SAVED: no training needed to open it."""
    model = random_model(3, **asdict(SAVED.model))
    save_run(tmp_path / "run" / "checkpoints" / "last.pt", config=SAVED, vocab=Vocab("abc"), model=model,
             optimizer=torch.optim.AdamW(model.parameters()), scaler=torch.amp.GradScaler("cpu", enabled=False),
             run=RunState("run-1", "hash", step=12).to_dict())
    return tmp_path / "run"


def test_open_resume_applies_resumable_overrides_and_values_to_the_saved_config(run_dir):
    found = open_resume(run_dir, ["train.max_steps=50", "train.lr=1e-4"], {"train.device": "cpu"})
    assert found.config.train.max_steps == 50
    assert found.config.train.lr == 1e-4
    assert found.config.train.device == "cpu"
    assert found.config.model == SAVED.model  # everything not overridden is the run's own
    assert found.state.step == 12
    assert found.state.run_id == "run-1"
    assert found.checkpoint.path == run_dir / "checkpoints" / "last.pt"


def test_a_resumed_run_may_read_its_corpus_at_a_new_place(run_dir):
    assert open_resume(run_dir, ["data.path='moved/corpus.txt'"]).config.data.path == "moved/corpus.txt"


@pytest.mark.parametrize("override, message", [
    ("model.cell=gru", "cannot change model.cell when resuming ('lstm' -> 'gru'); start a new run instead"),
    ("model.hidden_size=16", "cannot change model.hidden_size when resuming (8 -> 16)"),
    ("train.seq_len=7", "cannot change train.seq_len when resuming (100 -> 7)"),
    ("train.seed=7", "cannot change train.seed when resuming (1337 -> 7)"),
    ("train.reset_every=3", "cannot change train.reset_every when resuming (20 -> 3)"),
    ("data.val_fraction=0.5", "cannot change data.val_fraction when resuming (0.1 -> 0.5)"),
    ("data.encoding=latin-1", "cannot change data.encoding when resuming ('utf-8' -> 'latin-1')"),
])
def test_open_resume_refuses_a_change_the_run_cannot_take_naming_the_key(run_dir, override, message):
    with pytest.raises(UserError) as e:
        open_resume(run_dir, [override])
    assert message in str(e.value)


def test_an_override_equal_to_the_saved_value_is_no_change(run_dir):
    assert open_resume(run_dir, ["model.hidden_size=8"]).config == SAVED


def test_a_bad_override_is_refused_as_in_a_new_run(run_dir):
    with pytest.raises(UserError, match="train.lr must be > 0"):
        open_resume(run_dir, ["train.lr=0"])


def test_a_resume_notices_that_last_pt_was_replaced_since_it_was_read(run_dir):
    found = open_resume(run_dir)
    assert not found.changed()
    last_pt = run_dir / "checkpoints" / "last.pt"
    copy = last_pt.with_name("copy.pt")
    copy.write_bytes(last_pt.read_bytes())
    os.replace(copy, last_pt)  # as a trainer still running would save: the same bytes, in a new file
    assert found.changed()


def test_nothing_to_resume_is_one_line(tmp_path):
    with pytest.raises(UserError, match=rf"^nothing to resume in {tmp_path}: no checkpoints/last.pt$"):
        open_resume(tmp_path)


def test_run_config_of_a_new_run_loads_the_config_and_applies_overrides(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("[model]\nhidden_size = 24\n[data]\npath = 'text.txt'\n")
    cfg, found, _ = run_config(tmp_path / "r", resume=False, config=toml, overrides=["train.lr=1e-3"],
                            values={"train.max_steps": 7})
    assert found is None
    assert cfg.model.hidden_size == 24
    assert cfg.train.lr == 1e-3
    assert cfg.train.max_steps == 7
    from_object, _, _ = run_config(tmp_path / "r", resume=False, config=Config(), overrides=["data.path='x.txt'"])
    assert from_object.data.path == "x.txt"


def test_run_config_of_a_resume_is_the_run_s_own_config(run_dir):
    cfg, found, _ = run_config(run_dir, resume=True, overrides=["train.max_steps=30"])
    assert cfg == found.config
    assert cfg.train.max_steps == 30
    assert cfg.model == SAVED.model


@pytest.mark.parametrize("call, message", [
    (lambda d: run_config(None, resume=False, overrides=["data.path='x'"]), "missing --run-dir (or --resume RUN_DIR)"),
    (lambda d: run_config(d, resume=True, config=Config()),
     "--config cannot be combined with --resume: the run keeps its own config; use --set to change its length"),
    (lambda d: run_config(d, resume=False),
     "missing CORPUS: the text file or directory to train on (or data.path in --config)"),
    (lambda d: run_config(d / "elsewhere", resume=True), "nothing to resume in"),
], ids=["no-run-dir", "config-with-resume", "no-corpus", "nothing-to-resume"])
def test_run_config_errors_are_one_line(run_dir, call, message):
    with pytest.raises(UserError) as e:
        call(run_dir)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_resume_can_extend_the_run_and_continues_metrics(tmp_path, corpus_file):
    train(fast_config(corpus_file, "train.max_steps=20"), tmp_path / "r")
    result = resume(tmp_path / "r", ["train.max_steps=30", "train.eval_every=5"])
    assert result.step == 30
    assert steps_logged(tmp_path / "r") == [5, 10, 15, 20, 25, 30]


def test_resume_refuses_a_changed_model_or_corpus(tmp_path, corpus_file):
    train(fast_config(corpus_file, "train.max_steps=10"), tmp_path / "r")
    with pytest.raises(UserError, match=r"cannot change model.hidden_size when resuming \(32 -> 64\)"):
        open_resume(tmp_path / "r", ["model.hidden_size=64"])
    with pytest.raises(UserError, match="cannot change train.batch_size"):
        open_resume(tmp_path / "r", ["train.batch_size=4"])
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text()[::-1])
    with pytest.raises(UserError, match="is not the text this run was trained on"):
        resume(tmp_path / "r", [f"data.path='{other}'"])
    with pytest.raises(UserError, match="nothing to resume"):
        open_resume(tmp_path / "empty")


def test_resume_refuses_a_same_size_rewrite_that_keeps_the_mtime(tmp_path, corpus_file):
    corpus = tmp_path / "c.txt"
    corpus.write_text(corpus_file.read_text())
    train(fast_config(corpus, "train.max_steps=10"), tmp_path / "r")
    before = os.stat(corpus)
    corpus.write_text(corpus_file.read_text().swapcase())  # same size
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(UserError, match="is not the text this run was trained on"):
        resume(tmp_path / "r", ["train.max_steps=20"])
