"""The figures a user checks a run by, end to end: baselines beside every loss and the copy check on samples."""

import json
import shutil
import zlib
from pathlib import Path

import pytest

import charrnn
from charrnn.config import load_config
from charrnn.training.loop import train
from tests.helpers import fast_config, invoke, steps_logged

MEMORISE = ["model.embed_dim=16", "model.hidden_size=128", "model.num_layers=1", "train.batch_size=4",
            "train.seq_len=64", "train.lr=1e-2", "train.warmup_steps=5", "train.max_steps=800",
            "train.eval_every=1000", "train.checkpoint_every=1000", "train.sample_every=0", "train.device='cpu'",
            "train.baselines=false"]


@pytest.fixture(scope="module")
def memorised(tmp_path_factory, corpus_file):
    """A model overfit on purpose on 1,500 characters of text, which it then recites."""
    root = tmp_path_factory.mktemp("memorised")
    text = root / "tiny.txt"
    text.write_text(corpus_file.read_text(encoding="utf-8")[:1500], encoding="utf-8")
    train(load_config(None, [*MEMORISE, f"data.path='{text}'"]), root / "run", progress=False)
    return root / "run", text.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, corpus_file):
    run = tmp_path_factory.mktemp("small") / "run"
    result = train(fast_config(corpus_file), run, progress=False)
    return run, result


def common_prefix(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_a_memorised_corpus_is_reported_as_copied_as_far_as_the_greedy_sample_recites_it(memorised):
    run, text = memorised
    out = json.loads(invoke("sample", run, "--prime", text[:40], "-n", 300, "-t", 0, "--json").stdout)
    sample = out["samples"][0]
    recited = common_prefix(sample["text"][40:], text[40:])
    assert recited >= 200  # it did memorise: the test means something
    assert sample["copy"]["longest_copy"] == recited
    assert sample["copy"]["file"] == "tiny.txt"
    assert sample["copy"]["offset"] == 40
    assert sample["copy"]["exact"] is True


def test_the_copy_check_goes_to_stderr_after_the_streamed_sample(memorised):
    run, text = memorised
    result = invoke("sample", run, "--prime", text[:40], "-n", 100, "-t", 0)
    assert result.stdout.decode().startswith(text[:40])
    assert "copy check: the longest span copied verbatim from the corpus is" in result.stderr.decode()
    assert "from tiny.txt at character 40" in result.stderr.decode()
    quiet = invoke("sample", run, "-n", 50, "--no-copy-check")
    assert "copy check" not in quiet.stderr.decode()


def test_text_the_corpus_never_holds_reports_no_copy(memorised):
    run, _ = memorised
    model = charrnn.load(run, "cpu")
    report = model.copies("xqxqxqxqxq" * 10)
    assert report.longest == 0
    assert report.file is None
    assert report.copied_windows == 0.0


def test_sampling_without_the_corpus_still_works_and_says_the_check_was_skipped(tmp_path, memorised):
    run, text = memorised
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    config = moved / "config.toml"  # the run points at a corpus that is gone
    config.write_text(config.read_text().replace(str(Path(run).parent / "tiny.txt"), str(tmp_path / "gone.txt")))
    ckpt = moved / "checkpoints" / "last.pt"
    import torch

    state = torch.load(ckpt, weights_only=True)
    state["config"]["data"]["path"] = str(tmp_path / "gone.txt")
    torch.save(state, ckpt)
    result = invoke("sample", ckpt, "-n", 30, "--seed", 1)
    assert "copy check skipped: the copy check reads the checkpoint's training corpus" in result.stderr.decode()
    assert "is not there" in result.stderr.decode()


def test_eval_without_a_file_scores_the_validation_split_exactly_as_training_did(small_run):
    run, result = small_run
    out = json.loads(invoke("eval", run / "checkpoints" / "last.pt", "--json").stdout)
    assert out["loss"] == pytest.approx(result.val_loss, abs=1e-6)
    assert {"unigram", "zlib", "bz2", "xz"} <= out["baselines"].keys()
    assert any(name.endswith("-gram KN") for name in out["baselines"])
    assert result.baselines is not None
    assert result.baselines.bpc == pytest.approx(out["baselines"])


def test_eval_of_a_file_prints_the_model_beside_the_baselines(small_run, corpus_file):
    run, _ = small_run
    printed = invoke("eval", run, corpus_file).stdout.decode().splitlines()
    assert printed[1].startswith("model ")
    assert "-gram KN" in printed[1] and "xz" in printed[1] and "unigram" in printed[1]
    data = corpus_file.read_bytes()
    out = json.loads(invoke("eval", run, corpus_file, "--json").stdout)
    assert out["baselines"]["zlib"] == pytest.approx(len(zlib.compress(data, 9)) * 8 / len(data.decode()))
    assert "baselines" not in json.loads(invoke("eval", run, corpus_file, "--json", "--no-baselines").stdout)


def test_the_end_of_training_prints_the_baselines(tmp_path, corpus_file):
    result = invoke("train", corpus_file, "--run-dir", tmp_path / "r", "--config", "tiny", "--device", "cpu")
    lines = result.stderr.decode().splitlines()
    assert any(line.startswith("on the validation text: model ") and "-gram KN" in line for line in lines)


def test_tensorboard_carries_the_samples_copy_figures(small_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = small_run
    events = EventAccumulator(str(run / "tb")).Reload()
    copies = events.Scalars("samples/longest_copy")
    assert [e.step for e in copies] == [20, 40]
    assert all(e.value >= 0 for e in copies)
    assert [e.step for e in events.Scalars("samples/copied_windows")] == [20, 40]
    assert steps_logged(run) == list(range(5, 41, 5))  # the copy figures stay out of metrics.jsonl


def test_eval_needs_a_file_for_dynamic_and_streams(small_run):
    run, _ = small_run
    result = invoke("eval", run, "--dynamic", check=False)
    assert result.returncode != 0
    assert result.stderr.decode().strip().splitlines()[-1] == "Error: --dynamic scores a FILE: give one"


def test_the_api_reports_a_passage_of_the_corpus_at_its_offset(memorised):
    run, text = memorised
    model = charrnn.load(run, "cpu")
    report = model.copies(text[100:400])
    assert report.longest == 300
    assert report.offset == 100
    assert report.copied_windows == 1.0


def test_visualize_says_which_side_of_the_split_the_file_is_on(tmp_path):
    from tests.data.test_split import two_kinds

    tree = two_kinds(tmp_path / "tree", files=10)
    run = tmp_path / "run"
    train(fast_config(tree, "train.max_steps=10", "train.baselines=false"), run, progress=False)
    corpus = charrnn.load(run, "cpu")
    from charrnn.data.encoding import load_corpus
    from charrnn.data.split import split_of

    loaded = load_corpus(tree)
    held = split_of(loaded, corpus.config.data).held_out
    inside = loaded.locate(int(held[0, 0]))[0]
    outside = next(n for i, n in enumerate(loaded.file_names)
                   if not ((held[:, 0] < loaded.file_starts[i + 1]) & (held[:, 1] > loaded.file_starts[i])).any())
    for name, side in ((inside, "held out for validation"), (outside, "in the training split")):
        err = invoke("visualize", run, tree / name, "--out", tmp_path / "v.html", "--chars", 200).stderr.decode()
        assert f"is part of the run's corpus: {side} (data.split = 'hash')" in err
    err = invoke("visualize", run, __file__, "--out", tmp_path / "v.html", "--chars", 200).stderr.decode()
    assert "part of the run's corpus" not in err


def test_eval_of_a_run_whose_corpus_is_gone_is_one_clear_line(tmp_path, corpus_file):
    text = tmp_path / "moved.txt"
    shutil.copy(corpus_file, text)
    train(fast_config(text, "train.max_steps=10", "train.baselines=false"), tmp_path / "run", progress=False)
    text.unlink()
    result = invoke("eval", tmp_path / "run", check=False)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [f"Error: scoring the validation split reads the checkpoint's training corpus {text}, "
                     "which is not there"]


def test_a_bad_split_rule_is_one_clear_line(tmp_path, corpus_file):
    result = invoke("train", corpus_file, "--run-dir", tmp_path / "r", "--set", "data.split='random'", check=False)
    assert result.returncode != 0
    assert result.stderr.decode().strip().splitlines()[-1] == \
        "Error: config data.split must be 'auto', 'tail' or 'hash', got 'random'"
    assert not (tmp_path / "r").exists()


def test_eval_of_the_split_refuses_a_corpus_that_changed_since_training(tmp_path, corpus_file):
    text = tmp_path / "changing.txt"
    shutil.copy(corpus_file, text)
    train(fast_config(text, "train.max_steps=10", "train.baselines=false"), tmp_path / "run", progress=False)
    text.write_text(text.read_text()[::-1])  # the same characters, another text
    result = invoke("eval", tmp_path / "run", check=False)
    assert result.returncode == 1
    assert "has changed since training (its content hash differs)" in result.stderr.decode()


def test_tensorboard_carries_the_baselines_beside_the_model_at_the_last_step(small_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, result = small_run
    events = EventAccumulator(str(run / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"baselines/model", "baselines/unigram", "baselines/xz"} <= tags
    assert [e.step for e in events.Scalars("baselines/unigram")] == [40]
    assert events.Scalars("baselines/model")[0].value == pytest.approx(result.val_loss / 0.6931471805599453, rel=1e-6)
    assert events.Scalars("baselines/xz")[0].value == pytest.approx(result.baselines.bpc["xz"], rel=1e-6)
