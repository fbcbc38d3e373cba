"""ONNX export: every cell matches torch in onnxruntime, the graph's names and metadata, sampling without torch."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import charrnn
from charrnn.checkpoint import save_run
from charrnn.cli import main
from charrnn.config import Config, from_dict
from charrnn.tools.export import export_onnx
from charrnn.training.state import RunState
from charrnn.vocab import Vocab
from tests.helpers import random_model, run_cli

ort = pytest.importorskip("onnxruntime", reason="the export extra: pip install 'charrnn[export]'")

TEXT = Path(textwrap.__file__).read_text(encoding="utf-8")  # real text, and the tiny run's corpus

# Sampling from an exported model with numpy and onnxruntime alone, as the README shows it.
STANDALONE = '''
import json, sys
import numpy as np
import onnxruntime as ort

path, prime, length, temperature = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
session = ort.InferenceSession(path)
meta = session.get_modelmeta().custom_metadata_map
vocab = json.loads(meta["vocab"])  # id i is vocab[i]
model = json.loads(meta["config"])["model"]
index = {c: i for i, c in enumerate(vocab)}
names = [i.name for i in session.get_inputs()[1:]]  # h0, and c0 for an LSTM
state = {n: np.zeros((model["num_layers"], 1, model["hidden_size"]), np.float32) for n in names}
rng = np.random.default_rng(0)
ids = np.array([[index[c] for c in prime or "\\n"]], dtype=np.int64)
out = []
for _ in range(length):
    logits, *final = session.run(None, {"ids": ids, **state})
    state = dict(zip(names, final))
    last = logits[0, -1]
    if temperature == 0:
        nxt = int(last.argmax())
    else:
        p = np.exp((last - last.max()) / temperature)
        nxt = int(rng.choice(len(vocab), p=p / p.sum()))
    out.append(vocab[nxt])
    ids = np.array([[nxt]], dtype=np.int64)
assert "charrnn" not in sys.modules and "torch" not in sys.modules
sys.stdout.buffer.write((prime + "".join(out)).encode())
'''


def standalone(path: Path, prime: str, length: int, temperature: float) -> str:
    result = subprocess.run([sys.executable, "-c", STANDALONE, str(path), prime, str(length), str(temperature)],
                            capture_output=True, check=True)
    return result.stdout.decode()


def save_checkpoint(path: Path, cell: str, vocab: Vocab, head_cutoff: int = 0) -> Path:
    """A checkpoint of an untrained model, for the cells and heads the tiny run does not cover."""
    model = random_model(vocab.size, cell, seed=1, sharpness=3.0, head_cutoff=head_cutoff,
                         counts=torch.tensor([TEXT.count(c) for c in vocab.chars]))
    config = Config(model=model.cfg)
    save_run(path, config=config, vocab=vocab, model=model, optimizer=torch.optim.AdamW(model.parameters()),
             scaler=torch.amp.GradScaler("cpu", enabled=False),
             run=RunState(run_id="test", corpus_hash="none").to_dict())
    return path


def onnx_and_torch_logits(onnx_path: Path, m: charrnn.CharModel, batch_size: int, seq_len: int):
    """Logits of both on real text, from a nonzero state reached by reading the text before it."""
    ids = torch.tensor([m.vocab.encode(TEXT[i * 1000 : i * 1000 + 100 + seq_len]) for i in range(batch_size)])
    with torch.no_grad():
        _, state = m.model(ids[:, :100])
        want, want_state = m.model(ids[:, 100:], state)
    session = ort.InferenceSession(str(onnx_path))
    names = [i.name for i in session.get_inputs()]
    feeds = dict(zip(names, [ids[:, 100:].numpy(), *(s.numpy() for s in state)], strict=True))
    got, *got_state = session.run(None, feeds)
    return (got, want.numpy()), list(zip(got_state, [s.numpy() for s in want_state], strict=True))


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> tuple[Path, bytes]:
    """The tiny run exported through the CLI, and what the command said."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return path, run_cli("export", tiny_run, "--format", "onnx", "--out", path).stderr


@pytest.mark.parametrize("cell, head_cutoff", [("lstm", 0), ("gru", 0), ("rnn", 0), ("lstm", 20)])
def test_every_cell_exports_and_onnxruntime_matches_torch_on_real_text(tmp_path, cell, head_cutoff):
    vocab = Vocab("".join(sorted(set(TEXT))))
    checkpoint = save_checkpoint(tmp_path / "m.pt", cell, vocab, head_cutoff)
    export_onnx(checkpoint, tmp_path / "m.onnx")
    m = charrnn.load(checkpoint, device="cpu")
    for batch_size, seq_len in ((3, 400), (1, 1)):  # neither is the export's example shape: the axes are dynamic
        (got, want), states = onnx_and_torch_logits(tmp_path / "m.onnx", m, batch_size, seq_len)
        assert got.shape == (batch_size, seq_len, vocab.size)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert len(states) == (2 if cell == "lstm" else 1)
        for got_state, want_state in states:
            np.testing.assert_allclose(got_state, want_state, atol=1e-5, rtol=0)
    assert standalone(tmp_path / "m.onnx", "def ", 50, 0) == "def " + m.generate("def ", 50, temperature=0)


def test_exported_graph_names_its_inputs_and_outputs_and_carries_vocab_and_config(tiny_run, exported):
    path, said = exported
    assert said.startswith(f"wrote {path}: lstm, inputs ids, h0, c0, outputs logits, hn, cn; ".encode())
    session = ort.InferenceSession(str(path))
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert inputs == {"ids": ("tensor(int64)", ["batch", "time"]), "h0": ("tensor(float)", [2, "batch", 64]),
                      "c0": ("tensor(float)", [2, "batch", 64])}
    m = charrnn.load(tiny_run, device="cpu")
    assert outputs == {"logits": ["batch", "time", m.vocab.size], "hn": [2, "batch", 64], "cn": [2, "batch", 64]}
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["vocab"]) == m.vocab.chars
    assert json.loads(meta["byte_level"]) is False
    assert from_dict(json.loads(meta["config"])) == m.config
    assert meta["cell"] == "lstm"


def test_a_trained_model_matches_and_samples_in_onnxruntime_alone(tiny_run, exported):
    path, _ = exported
    m = charrnn.load(tiny_run, device="cpu")
    (got, want), _ = onnx_and_torch_logits(path, m, 2, 500)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    sampled = standalone(path, "def ", 200, 0.8)
    assert sampled.startswith("def ")
    assert len(sampled) == 204
    assert set(sampled) <= set(m.vocab.chars)
    assert standalone(path, "", 80, 0) == m.generate("", 80, temperature=0)


def test_without_the_extra_export_says_how_to_install_it(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: ONNX export needs the onnx and onnxruntime packages: "
                                     "pip install 'charrnn[export]'")
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/no/such/dir/m.onnx"], "cannot write {tmp}/no/such/dir/m.onnx: No such file or directory"),
    (["--out", "{tmp}/m.onnx", "--format", "tflite"], "'tflite' is not 'onnx'"),
    ([], "Missing option '--out'"),
])
def test_bad_export_options_fail_in_one_line(tiny_run, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, ["export", str(tiny_run), *args])
    assert result.exit_code != 0
    assert message.format(tmp=tmp_path) in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_model_with_dropout_exports_without_it_and_stays_in_eval_mode():
    from charrnn.tools.export import max_abs_diff, to_onnx

    model = random_model(30, dropout=0.5, embed_dropout=0.5)
    data = to_onnx(model).SerializeToString()
    assert not model.training  # the exporter once left it training, with dropout on
    assert "Dropout" not in {node.op_type for node in to_onnx(model).graph.node}
    assert max_abs_diff(model, data) < 1e-4
