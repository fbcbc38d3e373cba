"""Setting a run up: memory checked before anything is allocated, run dirs left out of a corpus, the corpus report."""

from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn.config import load_config
from charrnn.data.encoding import Corpus
from charrnn.errors import UserError
from charrnn.training import build
from charrnn.training.build import check_memory, report_corpus, skip_dir
from charrnn.training.distributed import World
from charrnn.vocab import Vocab

ONE = World(torch.device("cpu"))


def test_a_model_too_big_for_free_memory_is_refused_naming_the_estimate(monkeypatch):
    monkeypatch.setattr(build, "available_memory", lambda device: 2**30)  # 1 GiB free
    cfg = load_config(None, ["model.hidden_size=4096", "model.num_layers=4"])
    with pytest.raises(UserError) as e:
        check_memory(cfg, 100, 64, 100, ONE)
    message = str(e.value)
    assert message.startswith("a 4 x 4096 lstm (embed_dim 64) needs about ")
    assert "GiB to train, but cpu has 1.0 GiB free" in message
    assert message.endswith("use a smaller model.hidden_size, model.num_layers or model.embed_dim")


def test_a_model_that_fits_or_memory_that_is_unknown_passes(monkeypatch):
    cfg = load_config(None, ["model.hidden_size=32"])
    monkeypatch.setattr(build, "available_memory", lambda device: 2**30)
    assert check_memory(cfg, 100, 16, 64, ONE) is None
    monkeypatch.setattr(build, "available_memory", lambda device: None)
    huge = load_config(None, ["model.hidden_size=100000"])
    assert check_memory(huge, 100, 64, 100, ONE) is None


def make_run_dir(path: Path) -> Path:
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.toml").write_text("[model]\n")
    return path


def test_skip_dir_leaves_out_this_run_and_every_other_run_dir_but_not_plain_folders(tmp_path):
    own = tmp_path / "corpus" / "runs" / "mine"  # not created yet: a new run's dir is skipped all the same
    other = make_run_dir(tmp_path / "corpus" / "runs" / "old")
    plain = tmp_path / "corpus" / "src"
    plain.mkdir()
    (plain / "config.toml").write_text("a config.toml alone is not a run")
    skip = skip_dir(own)
    assert skip(own)
    assert skip(tmp_path / "corpus" / "runs" / ".." / "runs" / "mine")  # the same folder by another path
    assert skip(other)
    assert not skip(plain)
    assert not skip(tmp_path / "corpus")


def corpus(**kwargs) -> Corpus:
    fields = {"path": Path("c.txt"), "ids": np.zeros(1000, np.uint8), "vocab": Vocab("ab"), "content_hash": "h",
              "files": 1}
    return Corpus(**{**fields, **kwargs})


def test_report_corpus_tells_how_it_was_encoded_and_what_was_left_out():
    said = []
    report_corpus(corpus(encode_seconds=0.5, size_bytes=2_000_000, notes=("left out 1 file",)), said.append)
    assert said == ["encoded 2.0 MB into 1,000 ids over 2 symbols in 0.50s (4.0 MB/s, both passes); cached",
                    "left out 1 file"]
    said.clear()
    report_corpus(corpus(encode_seconds=1.0, size_bytes=10, cached=False), said.append)
    assert said[0].endswith("not cached (the cache dir is not writable)")


def test_a_corpus_from_the_cache_is_not_reported_as_encoded():
    said = []
    report_corpus(corpus(), said.append)
    assert said == []
