"""Dynamic evaluation: it learns from what it has scored, never from what it has not, and leaves the model alone."""

import json
import math

import pytest
import torch

from charrnn.config import load_config
from charrnn.errors import UserError
from charrnn.evaluation.dynamic import dynamic_evaluate, dynamic_evaluate_file, gradient_stats
from charrnn.model import cross_entropy
from charrnn.training.loop import train
from tests.helpers import TINY_CONFIG, random_model, run_cli

VOCAB_SIZE = 12
DEFAULTS = {"segment_len": 50, "lr": 1e-3, "decay": 0.003}  # the CLI's


def random_ids(length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB_SIZE, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell, head_cutoff", [("lstm", 0), ("gru", 0), ("rnn", 0), ("lstm", 5)])
def test_a_character_is_scored_before_any_update_that_saw_it(cell, head_cutoff):
    # An adaptive head's rare cluster has no gradient in a segment without a rare symbol: updates pass it by.
    net = random_model(VOCAB_SIZE, cell, hidden_size=24, head_cutoff=head_cutoff)
    stats = gradient_stats(net, random_ids(500, 1), segment_len=10)
    text = random_ids(200, 2)
    base = dynamic_evaluate(net, text, stats, lr=3e-2, decay=0.01)
    for changed in (3, 47, 150):  # inside the first, the fifth and the sixteenth segment
        other = text.clone()
        other[changed] = (other[changed] + 1) % VOCAB_SIZE
        result = dynamic_evaluate(net, other, stats, lr=3e-2, decay=0.01)
        # Loss k scores ids[k + 1]: everything scored before the changed character is bitwise the same, even
        # within its segment, whose update comes only after all of the segment is scored ...
        assert torch.equal(result.losses[: changed - 1], base.losses[: changed - 1])
        # ... and what comes after it differs, so the comparison has teeth.
        assert not torch.equal(result.losses[changed:], base.losses[changed:])


@pytest.mark.parametrize("head_cutoff", [0, 5])
def test_without_updates_it_is_static_evaluation_of_one_stream(head_cutoff):
    net = random_model(VOCAB_SIZE, hidden_size=24, head_cutoff=head_cutoff)
    text = random_ids(333, 3)
    result = dynamic_evaluate(net, text, gradient_stats(net, random_ids(200, 4), segment_len=16), lr=0.0, decay=0.0)
    with torch.no_grad():
        logits, _ = net(text[None, :-1])
    expected = cross_entropy(logits, text[None, 1:], reduction="none")
    assert result.chars == 332
    torch.testing.assert_close(result.losses, expected, rtol=1e-5, atol=1e-5)


def test_the_model_is_left_untouched():
    net = random_model(VOCAB_SIZE, hidden_size=24)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = gradient_stats(net, random_ids(200, 5), segment_len=20)
    dynamic_evaluate(net, random_ids(300, 6), stats, lr=1e-2, decay=0.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.training


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, corpus_file):
    """configs/tiny.toml trained 10x longer than tiny_run: dynamic evaluation needs a model that has learnt something.

    After 150 steps the model's numerics depended on the host CPU enough that the repeats test passed on one host
    (dynamic below 0.6x static) and not on another (0.71x); after 300 it is 0.23x.
    """
    run_dir = tmp_path_factory.mktemp("runs") / "trained"
    steps = 300
    cfg = load_config(TINY_CONFIG, values={"data.path": str(corpus_file), "train.device": "cpu",
                                           "train.max_steps": steps, "train.eval_every": steps,
                                           "train.checkpoint_every": steps, "train.sample_every": 0})
    train(cfg, run_dir, progress=False)
    return run_dir


def test_repeats_of_a_paragraph_score_far_better_than_under_the_static_model(trained_run, corpus_file, tmp_path):
    paragraph = corpus_file.read_text()[2000:2100]
    repeated = tmp_path / "repeated.txt"
    repeated.write_text(paragraph * 20)
    # A model this small learns slowly: short segments and a high lr let it catch on within a few copies.
    options = {"segment_len": 10, "stats_chars": 3000}
    static = dynamic_evaluate_file(trained_run, repeated, "cpu", lr=0.0, decay=0.0, **options)
    dynamic = dynamic_evaluate_file(trained_run, repeated, "cpu", lr=1e-2, decay=0.0, **options)
    last = slice(15 * len(paragraph), None)  # the last 5 copies
    assert dynamic.losses[last].mean() < 0.6 * static.losses[last].mean()


def test_statistics_come_from_the_end_of_the_training_split_or_from_a_given_text(tiny_run, corpus_file, tmp_path):
    text = corpus_file.read_text()
    head = tmp_path / "head.txt"
    head.write_text(text[:600])
    options = {**DEFAULTS, "stats_chars": 2000}
    own = dynamic_evaluate_file(tiny_run, head, "cpu", **options)
    # The same run with its training corpus gone: it needs --stats-text, and the training split gives the same result.
    moved = tmp_path / "run"
    data = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    data["config"]["data"]["path"] = str(tmp_path / "gone.txt")
    (moved / "checkpoints").mkdir(parents=True)
    torch.save(data, moved / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="gone.txt.*is not there; give --stats-text FILE"):
        dynamic_evaluate_file(moved, head, "cpu", **options)
    train_split = tmp_path / "train.txt"
    train_split.write_text(text[: int(len(text) * (1 - data["config"]["data"]["val_fraction"]))])
    given = dynamic_evaluate_file(moved, head, "cpu", stats_text=train_split, **options)
    assert torch.equal(given.losses, own.losses)
    other = dynamic_evaluate_file(moved, head, "cpu", stats_text=corpus_file, **options)  # includes validation text
    assert not torch.equal(other.losses, own.losses)


@pytest.mark.parametrize("kw, message", [
    ({"segment_len": 0}, "--segment-len must be >= 1"),
    ({"lr": -1.0}, "--dynamic-lr must be >= 0"),
    ({"decay": 1.5}, r"--decay must be in \[0, 1\]"),
])
def test_bad_hyperparameters_are_refused(tiny_run, corpus_file, kw, message):
    with pytest.raises(UserError, match=message):
        dynamic_evaluate_file(tiny_run, corpus_file, "cpu", **{**DEFAULTS, **kw})


def test_eval_dynamic_prints_both_figures_and_never_changes_the_checkpoint(tiny_run, corpus_file, tmp_path):
    best = tiny_run / "checkpoints" / "best.pt"
    before, stat = best.read_bytes(), best.stat()
    text, stats = tmp_path / "head.txt", tmp_path / "stats.txt"
    text.write_text(corpus_file.read_text()[:1500])
    stats.write_text(corpus_file.read_text()[5000:7000])  # a short --stats-text keeps the test fast
    out = json.loads(run_cli("eval", tiny_run, text, "--dynamic", "--stats-text", stats, "--json", "--device", "cpu")
                     .stdout)
    assert out["chars"] == 1499
    assert set(out["dynamic"]) == {"loss", "bpc", "segment_len", "lr", "decay"}
    assert math.isfinite(out["dynamic"]["loss"])
    assert out["dynamic"]["loss"] != out["loss"]
    lines = run_cli("eval", tiny_run, text, "--dynamic", "--segment-len", 30, "--stats-text", stats,
                    "--device", "cpu").stdout.decode()
    assert lines.startswith("static:  loss ")
    assert "\ndynamic: loss " in lines
    assert "segment_len 30" in lines
    assert best.read_bytes() == before
    assert best.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.mark.parametrize("args, message", [
    (["--streams", "4"], "--dynamic reads the file as one stream: leave out --streams"),
    (["--stats-text", "missing.txt"], "--stats-text: file not found: missing.txt"),
])
def test_eval_dynamic_refuses_bad_options_in_one_line(tiny_run, corpus_file, args, message):
    result = run_cli("eval", tiny_run, corpus_file, "--dynamic", *args, check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == f"Error: {message}"
