"""The Python API: import cost, load, generate / stream / score, activations, train, and its parity with the CLI."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import charrnn
from charrnn.api import CharModel, _dotted
from charrnn.cli import main
from charrnn.config import Config
from charrnn.errors import UserError
from charrnn.evaluation.static import FILE_SEQ_LEN as SCORE_SEQ_LEN
from charrnn.model import CharRNN, cross_entropy
from charrnn.vocab import Vocab
from tests.helpers import ROOT, TINY_CONFIG, invoke, random_model, run_cli

TEXT = Path(textwrap.__file__).read_text(encoding="utf-8")  # the tiny run's corpus: every character is known


@pytest.fixture(scope="module")
def model(tiny_run) -> CharModel:
    return charrnn.load(tiny_run, device="cpu")


def test_import_charrnn_is_cheap_and_exports_only_the_api():
    code = "import sys, charrnn; assert 'torch' not in sys.modules; print(sorted(charrnn.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "['Beam', 'CharModel', 'Score', 'fit', 'load', 'train']"
    assert all(callable(getattr(charrnn, name)) for name in charrnn.__all__)
    with pytest.raises(AttributeError):
        charrnn.nothing_here  # noqa: B018


def test_load_gives_the_module_vocab_and_config(model, tiny_run):
    assert isinstance(model.model, CharRNN)
    assert not model.model.training
    assert model.config.model.hidden_size == 64
    assert model.config.train.max_steps == 30  # configs/tiny.toml
    assert "\n" in model.vocab.chars
    assert model.vocab.size == model.model.vocab_size
    assert model.path == tiny_run / "checkpoints" / "best.pt"
    assert "lstm 2x64" in repr(model)


def test_generate_is_reproducible_with_a_seed_and_stream_yields_the_same_characters(model):
    text = model.generate("def ", length=80, temperature=0.8, seed=3)
    assert len(text) == 80
    assert text == model.generate("def ", length=80, temperature=0.8, seed=3)
    assert text != model.generate("def ", length=80, temperature=0.8, seed=4)
    assert list(model.stream("def ", length=80, temperature=0.8, seed=3)) == list(text)
    assert model.generate("def ", 0) == ""


def test_the_cli_prints_exactly_what_the_api_generates(model, tiny_run):
    out = invoke("sample", tiny_run, "--prime", "def ", "-n", 60, "-t", 0.7, "--top-k", 10, "--seed", 5).stdout
    assert out.decode() == "def " + model.generate("def ", 60, temperature=0.7, top_k=10, seed=5) + "\n"
    many = invoke("sample", tiny_run, "-n", 30, "--num-samples", 3, "--seed", 2).stdout.decode()
    texts = model.generate_many(3, "", 30, seed=2)
    assert many == "".join(f"===== sample {i} =====\n{t}\n" for i, t in enumerate(texts, 1))


def test_bad_options_fail_at_the_call_before_any_character(model):
    with pytest.raises(UserError, match="--temperature must be >= 0"):
        model.stream(temperature=-1)
    with pytest.raises(UserError, match="not in the model's vocabulary"):
        model.generate("日本")


def test_generate_many_gives_independent_samples(model):
    texts = model.generate_many(4, "def ", 40, seed=0)
    assert len(texts) == 4
    assert all(len(t) == 40 for t in texts)
    assert len(set(texts)) > 1


def reference_loss(model: CharModel, text: str, context: str) -> float:
    """Mean loss of `text` after `context`, from one fused forward pass over everything."""
    ids = torch.tensor([model.vocab.encode(context + text)])
    with torch.no_grad():
        logits, _ = model.model(ids[:, :-1])
        losses = cross_entropy(logits, ids[:, 1:], reduction="none")
    return losses[len(context) - 1:].mean().item()


def test_score_is_the_loss_of_the_text_given_the_prime(model):
    text = TEXT[:300]
    score = model.score(text, prime="import re\n")
    assert score["chars"] == 300
    assert score["loss"] == pytest.approx(reference_loss(model, text, "import re\n"), rel=1e-5)
    assert score["bpc"] == pytest.approx(score["loss"] / math.log(2))
    # An empty prime is generation's start, a newline; a different prime changes the loss.
    assert model.score(text)["loss"] == pytest.approx(reference_loss(model, text, "\n"), rel=1e-5)
    assert model.score(text)["loss"] != pytest.approx(score["loss"], rel=1e-4)


def test_score_carries_the_state_across_windows(model):
    text = TEXT[: 2 * SCORE_SEQ_LEN + 77]
    assert model.score(text, prime="x")["loss"] == pytest.approx(reference_loss(model, text, "x"), rel=1e-5)


def test_score_agrees_with_charrnn_eval(model, tiny_run, tmp_path):
    text = TEXT[:1500]
    path = tmp_path / "t.txt"
    path.write_text("\n" + text, encoding="utf-8")  # eval predicts every character after the first
    evaluated = json.loads(invoke("eval", tiny_run, path, "--json").stdout)
    score = model.score(text)
    assert (score["chars"], score["loss"]) == (evaluated["chars"], pytest.approx(evaluated["loss"], rel=1e-5))


def test_score_refuses_empty_and_unknown_text(model):
    with pytest.raises(UserError, match="nothing to score"):
        model.score("")
    with pytest.raises(UserError, match="not in the model's vocabulary"):
        model.score("café ☕")


def test_score_leaves_a_training_model_in_training_mode():
    m = CharModel(random_model(5, training=True), Vocab("abcde"), Config())
    m.score("abcabc")
    assert m.model.training


def test_activations_are_recorded_over_the_text(model):
    acts = model.activations("def f(x):")
    assert acts.cell == "lstm"
    assert acts.probs.shape == (9, model.vocab.size)
    assert acts.signals["h"].shape == (2, 9, 64)
    ids = torch.tensor([model.vocab.encode("def f(x):")])
    with torch.no_grad():
        logits, _ = model.model(ids)
    assert acts.probs == pytest.approx(logits[0].softmax(-1).numpy(), abs=1e-5)


def test_fit_trains_a_run_that_load_reads(tmp_path, corpus_file):
    result = charrnn.fit(corpus_file, tmp_path / "run", TINY_CONFIG, progress=False, echo=lambda s: None,
                         max_steps=4, eval_every=4, checkpoint_every=4, sample_every=0, eval_chars=2000,
                         hidden_size=32, device="cpu", **{"train.lr": 5e-3})
    assert result.step == 4
    assert result.stopped_by == "max_steps"
    assert not result.interrupted
    m = charrnn.load(tmp_path / "run", device="cpu")
    assert (m.config.model.hidden_size, m.config.train.lr, m.config.model.num_layers) == (32, 5e-3, 2)
    assert m.config.data.path == os.path.abspath(corpus_file)
    more = charrnn.fit(None, tmp_path / "run", resume=True, progress=False, echo=lambda s: None, max_steps=6)
    assert more.step == 6


def test_fit_names_bad_keys_and_ambiguous_ones(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="unknown config key 'hiden_size' \\(did you mean 'hidden_size'\\?\\)"):
        charrnn.fit("x.txt", tmp_path, hiden_size=3)
    with pytest.raises(UserError, match="unknown config section \\[modle\\]"):
        charrnn.fit("x.txt", tmp_path, **{"modle.hidden_size": 3})
    with pytest.raises(UserError, match="config train.lr must be > 0"):
        charrnn.fit("x.txt", tmp_path, lr=-1.0)
    monkeypatch.setattr("charrnn.api.reference", lambda: [("model.seed", 1, ""), ("train.seed", 1, "")])
    with pytest.raises(UserError, match="config key 'seed' is in several sections: write it as one of 'model.seed'"):
        _dotted({"seed": 3})


def test_prime_file_primes_like_the_same_prime_on_the_command_line(tiny_run, tmp_path):
    path = tmp_path / "prime.txt"
    path.write_bytes(b"\xef\xbb\xbfdef wrap(text):\r\n    ")  # a BOM and CRLF, normalised as the corpus was
    from_file = invoke("sample", tiny_run, "--prime-file", path, "-n", 50, "--seed", 1).stdout
    inline = invoke("sample", tiny_run, "--prime", "def wrap(text):\n    ", "-n", 50, "--seed", 1).stdout
    assert from_file == inline
    assert from_file.startswith(b"def wrap(text):\n    ")


def test_prime_file_characters_outside_the_vocabulary_are_skipped_and_counted(tiny_run, tmp_path):
    path = tmp_path / "prime.txt"
    path.write_text("日本def ", encoding="utf-8")
    result = invoke("sample", tiny_run, "--prime-file", path, "-n", 5, "--seed", 1)
    assert result.stdout.startswith(b"def ")
    assert b"skipped 2 characters" in result.stderr


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.txt", "file not found"),
    (lambda d: d, "is a directory"),
    (lambda d: ((d / "bad.txt").write_bytes(b"\xff\xfe\xfa"), d / "bad.txt")[1], "is not valid utf-8"),
])
def test_bad_prime_files_fail_in_one_line(tiny_run, tmp_path, make, message):
    result = CliRunner().invoke(main, ["sample", str(tiny_run), "--prime-file", str(make(tmp_path))])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1
    assert len(lines) == 1
    assert message in lines[0]
    assert lines[0].startswith("Error: ")


def test_a_fifo_as_prime_file_is_refused_without_blocking(tiny_run, tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opening it would wait for a writer forever
    result = run_cli("sample", tiny_run, "--prime-file", tmp_path / "fifo", check=False, timeout=60)
    message = f"Error: file {tmp_path / 'fifo'} is not a regular file"
    assert result.returncode == 1
    assert result.stderr.decode().strip() == message


def test_prime_and_prime_file_together_are_refused(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["sample", str(tiny_run), "--prime", "a", "--prime-file", str(tmp_path)])
    assert result.exit_code == 1
    assert "--prime-file cannot be combined with --prime" in result.output


def test_probe_ranks_the_code_probes_by_margin(model):
    text = "def f(x):\n    if x > 1 and g(x):\n        return 'big'\n    return \"small\"  # done\n" * 30
    results = model.probe(text)
    names = {r.name for r in results}
    assert {"in_string", "in_if", "if_body_depth", "in_quote"} <= names
    margins = [r.margin for r in results if r.margin is not None]
    assert margins == sorted(margins, reverse=True)
    in_if = next(r for r in results if r.name == "in_if")
    assert in_if.margin == pytest.approx(in_if.score - in_if.control)
