"""Scoring a split or a file: the cap on periodic validation, and file scores independent of training."""

import numpy as np
import pytest
import torch

from charrnn import checkpoint
from charrnn.data.batching import Streams
from charrnn.evaluation.static import evaluate, evaluate_file
from charrnn.training.distributed import World
from charrnn.training.stopping import Stopped
from tests.helpers import random_model

CPU = World(torch.device("cpu"))


def test_windows_caps_the_characters_scored_and_keeps_the_mode():
    ids = np.random.default_rng(0).integers(0, 30, 10_001).astype(np.uint8)
    streams = Streams.of(ids, 10, 50)  # 10 streams of 1,000 targets: 20 windows
    net = random_model(30, hidden_size=16, training=True)
    _, everything = evaluate(net, streams, CPU)
    _, capped = evaluate(net, streams, CPU, windows=3)
    assert everything == 10_000
    assert capped == 3 * 10 * 50
    assert net.training


def test_check_abandons_an_evaluation():
    ids = np.zeros(2_001, dtype=np.uint8)
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Stopped("SIGTERM")

    with pytest.raises(Stopped):
        evaluate(random_model(30, hidden_size=16, training=True), Streams.of(ids, 4, 10), CPU, check=check)
    assert len(calls) == 3


@pytest.fixture(scope="module")
def two_configs(tmp_path_factory, tiny_run):
    """The tiny run's weights saved twice: once as trained, once claiming another batch_size and seq_len."""
    folder = tmp_path_factory.mktemp("ckpts")
    data = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    torch.save(data, folder / "a.pt")
    data["config"]["train"].update(batch_size=3, seq_len=17)
    torch.save(data, folder / "b.pt")
    return folder / "a.pt", folder / "b.pt"


def test_file_scores_do_not_depend_on_the_training_config(two_configs, corpus_file):
    a, b = (evaluate_file(path, corpus_file, "cpu") for path in two_configs)
    assert checkpoint.load_model(two_configs[1]).config.train.batch_size == 3
    assert a == b
    assert a.chars == len(corpus_file.read_text()) - 1  # one stream: every character but the first


def test_file_scored_in_one_stream_equals_the_model_run_over_the_whole_text(two_configs, corpus_file):
    loaded = checkpoint.load_model(two_configs[0])
    text = corpus_file.read_text()[:3000]
    path = corpus_file.parent / "head.txt"
    path.write_text(text)
    ids = torch.tensor([loaded.vocab.chars.index(c) for c in text])[None]
    with torch.no_grad():
        logits, _ = loaded.model(ids[:, :-1])
    expected = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).item()
    assert evaluate_file(two_configs[0], path, "cpu").loss == pytest.approx(expected, rel=1e-5)


def test_streams_trade_exactness_for_speed(two_configs, corpus_file):
    exact = evaluate_file(two_configs[0], corpus_file, "cpu")
    approximate = evaluate_file(two_configs[0], corpus_file, "cpu", streams=8)
    assert approximate.chars <= exact.chars
    assert abs(approximate.loss - exact.loss) < 0.1
