"""Setting a run up: memory checked before anything is allocated, run dirs left out of a corpus, the corpus report."""

from pathlib import Path

import numpy as np
import pytest
import torch

from charrnn.config import load_config
from charrnn.data.batching import Streams
from charrnn.data.encoding import Corpus
from charrnn.data.split import Split
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


def scored(batch: int, seq_len: int, *extra: str, processes: int = 1) -> tuple[build.StreamShapes, np.ndarray]:
    """The stream shapes of a run with this batch and window, and the validation ids it scores, on 200,000 distinct
    held-out ids (so that the ids say where in the split they were read)."""
    split = Split(np.arange(400_000), "tail", np.array([[200_000, 400_000]]))
    tc = load_config(None, [f"train.batch_size={batch}", f"train.seq_len={seq_len}", *extra]).train
    shapes = build.stream_shapes(tc, split, processes)
    return shapes, shapes.val_streams(split).read_ids(shapes.val_windows)


@pytest.mark.parametrize("batch, seq_len", [(64, 50), (128, 25), (7, 333), (512, 10)])
def test_validation_scores_the_same_text_from_the_same_starts_whatever_the_batch_and_window(batch, seq_len):
    shapes, ids = scored(batch, seq_len)
    preset_shapes, preset_ids = scored(32, 100)
    assert (shapes.val_batch, shapes.val_seq_len) == (32, build.VAL_SEQ_LEN)
    assert len(ids) == 32 * (38 * 100 + 1)  # ceil(120,000 / 3,200) windows of each of 32 streams, and a last target
    np.testing.assert_array_equal(ids, preset_ids)
    assert (shapes.batch, shapes.seq_len) == (batch, seq_len)  # training's own shape is untouched


def test_eval_streams_0_validates_on_the_batchs_streams_as_runs_before_it_did():
    shapes, ids = scored(64, 50, "train.eval_streams=0")
    assert (shapes.val_batch, shapes.val_seq_len, shapes.val_windows) == (64, 50, 38)  # ceil(120,000 / 3,200)
    np.testing.assert_array_equal(ids, Streams.of(np.arange(200_000, 400_000), 64, 50).read_ids(38))
    assert set(ids.tolist()) != set(scored(32, 100)[1].tolist())  # other starts: other text


@pytest.mark.parametrize("processes", [2, 3, 5])
def test_validation_scores_the_same_streams_whatever_the_number_of_processes(processes):
    one, ids = scored(30, 100)
    shapes, _ = scored(30, 100, processes=processes)
    assert (shapes.val_batch, shapes.val_seq_len, shapes.val_windows) == (one.val_batch, 100, one.val_windows)
    split = Split(np.arange(400_000), "tail", np.array([[200_000, 400_000]]))
    shares = [shapes.val_streams(split, World(torch.device("cpu"), rank, processes).rows(shapes.val_batch))
              for rank in range(processes)]
    assert sum(s.batch_size for s in shares) == 32  # uneven where 32 does not divide: every stream, once
    np.testing.assert_array_equal(np.concatenate([s.data for s in shares]), shapes.val_streams(split).data)


def test_a_validation_split_too_short_for_a_stream_per_process_still_gives_each_one():
    split = Split(np.arange(10_150), "tail", np.array([[10_000, 10_150]]))  # 150 held out: one stream of 100
    tc = load_config(None, ["train.batch_size=2", "train.seq_len=100"]).train
    assert build.stream_shapes(tc, split).val_batch == 1
    shapes = build.stream_shapes(tc, split, processes=2)
    assert (shapes.val_batch, shapes.val_seq_len) == (2, 74)  # 149 pairs in two streams
