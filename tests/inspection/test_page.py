"""The visualize page: the data it holds (quantised, deflated, base85), in one self-contained HTML file."""

import base64
import json
import re
import zlib

import numpy as np
import pytest

from charrnn.config import Config
from charrnn.errors import UserError
from charrnn.inspection import page
from charrnn.inspection.activations import SIGMOID_GATES, record
from charrnn.inspection.page import LEVELS, TOP_K, _pack, _quantize, _scales, page_data, write_page
from charrnn.inspection.probes import make_probes, rank_probes
from charrnn.inspection.visualize import Visualization, _surprisal, mean_bits
from charrnn.vocab import Vocab
from tests.helpers import random_model

TEXT = 'def f(x):\n    return "</script><!-- (x)"  # a comment\n' * 8


def unpack(packed: str, dtype: str) -> np.ndarray:
    """What the page's DecompressionStream and typed arrays make of `_pack`'s output."""
    return np.frombuffer(zlib.decompress(base64.b85decode(packed)), dtype=dtype)


def visualization(cell: str, tmp_path) -> Visualization:
    vocab = Vocab("".join(sorted(set(TEXT))))
    model = random_model(vocab.size, cell, hidden_size=12, sharpness=3.0)
    ids = np.array(vocab.encode(TEXT))
    acts = record(model, ids)
    probes = make_probes(TEXT)
    return Visualization(tmp_path / "best.pt", tmp_path / "text.txt", model, vocab, Config(), TEXT, ids, 5, 2, None,
                         acts, _surprisal(acts.probs, ids, None), "python", probes, rank_probes(acts, probes))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_page_data_describes_the_model_the_text_and_every_signal(tmp_path, cell):
    vis = visualization(cell, tmp_path)
    data = page_data(vis)
    assert data["checkpoint"] == str(tmp_path / "best.pt")
    assert data["textFile"] == str(tmp_path / "text.txt")
    assert (data["offset"], data["skipped"]) == (5, 2)
    assert (data["cell"], data["layers"], data["hidden"]) == (cell, 2, 12)
    assert data["text"] == TEXT
    assert data["vocab"] == vis.vocab.chars
    assert unpack(data["ids"], "<u2").tolist() == vis.ids.tolist()
    assert data["signals"] == list(vis.acts.signals)
    assert data["levels"] == ({"c": 9, "h": 7} if cell == "lstm" else {"h": 7})
    assert set(data["blocks"]) == ({"c", "h"} if cell == "lstm" else {"h"})  # gates are computed by the page
    assert all(len(layers) == 2 for layers in data["blocks"].values())
    assert [set(g) for g in data["gates"]] == [set(SIGMOID_GATES[cell])] * 2
    assert set(data["gates"][0][SIGMOID_GATES[cell][0]]) == {"table", "tableScale", "weightHidden", "scaleHidden"}
    assert set(data["gates"][1][SIGMOID_GATES[cell][0]]) == {"weightIn", "scaleIn", "bias", "weightHidden",
                                                            "scaleHidden"}
    assert data["h0"] == np.zeros((2, 12)).tolist()  # a blank start
    assert set(data["saturation"]) == set(SIGMOID_GATES[cell])
    assert [p["name"] for p in data["probes"]] == [p.name for p in vis.probes]
    assert data["bpc"] == mean_bits(vis.surprisal)


def test_the_top_predictions_and_surprisal_decode_to_the_model_s(tmp_path):
    vis = visualization("lstm", tmp_path)
    data = page_data(vis)
    top = unpack(data["top"], "<u2").reshape(len(TEXT), TOP_K)
    assert top[:, 0].tolist() == vis.acts.probs.argmax(axis=1).tolist()
    top_p = unpack(data["topP"], "<u2").reshape(len(TEXT), TOP_K) / 65535
    np.testing.assert_allclose(top_p[:, 0], vis.acts.probs.max(axis=1), atol=1 / 65535)
    surprisal = unpack(data["surprisal"], "<u2")
    assert surprisal[0] == 65535  # the first character's surprisal is unknown after a blank start
    np.testing.assert_allclose(surprisal[1:] / 1000, vis.surprisal[1:], atol=5e-4)


def test_the_stored_steps_decode_to_the_signals_within_half_a_step(tmp_path):
    vis = visualization("lstm", tmp_path)
    data, scales = page_data(vis), _scales(vis.acts)
    for name in ("c", "h"):
        for layer in range(2):
            steps = unpack(data["blocks"][name][layer], "i1").reshape(12, len(TEXT))  # (H, T)
            scale = np.array(data["scales"][name][layer], np.float32)[:, None]
            shown = steps * scale / LEVELS[name]
            want = vis.acts.signals[name][layer].T
            want = np.arcsinh(want) if name == "c" else want
            assert np.abs(shown - want).max() <= 0.5 * scale.max() / LEVELS[name] + 1e-6, (name, layer)
            np.testing.assert_allclose(scale[:, 0], scales[name][layer], rtol=1e-4)


def test_quantize_round_trips_within_a_step_and_keeps_large_cell_states_apart():
    rng = np.random.default_rng(0)
    h = np.tanh(rng.normal(size=(50, 4))).astype(np.float32)  # (T, H)
    q = _quantize(h, "h", np.ones(4, np.float32))
    assert q.shape == (4, 50)
    assert q.dtype == np.int8
    assert np.abs(q.T / LEVELS["h"] - h).max() <= 0.5 / LEVELS["h"] + 1e-6
    c = np.array([[10.0], [20.0], [100.0]], np.float32)  # tanh(c) is 1.0 for all three; asinh(c) is not
    scale = np.arcsinh(np.abs(c).max(axis=0))
    steps = _quantize(c, "c", scale)[0]
    assert len(set(steps.tolist())) == 3
    assert steps.max() == LEVELS["c"]  # the largest |c| of a cell is its full scale


@pytest.mark.parametrize("array", [np.arange(1000, dtype=np.uint16), np.arange(-128, 128, dtype=np.int8),
                                   np.array([1, 2, 65535], dtype=">u2")], ids=["uint16", "int8", "big-endian"])
def test_pack_is_little_endian_deflate_in_base85(array):
    packed = _pack(array)
    assert not set(packed) & set("\"'\\/")  # safe inside JSON inside <script>
    assert unpack(packed, array.dtype.newbyteorder("<").str).tolist() == array.tolist()


def test_write_page_writes_one_html_file_holding_the_data_and_no_temp(tmp_path):
    vis = visualization("gru", tmp_path)
    out = tmp_path / "pages" / "visualize.html"  # the folder is made
    size = write_page(vis, out)
    html = out.read_bytes()
    assert size == len(html)
    assert [p.name for p in out.parent.iterdir()] == ["visualize.html"]
    (script,) = re.findall(rb'<script id="data" type="application/json">(.*?)</script>', html, flags=re.S)
    assert b"</" not in script  # the text's "</script>" cannot end the element early
    assert b"<!--" not in script
    assert json.loads(script) == json.loads(json.dumps(page_data(vis)))
    assert b"/*DATA*/null" not in html


def test_a_failed_page_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    vis = visualization("rnn", tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(page, "page_data", lambda vis: {"text": "x"})
    monkeypatch.setattr("charrnn.files.os.fsync", full_disk)
    with pytest.raises(UserError, match="cannot write .*p.html: No space left on device"):
        write_page(vis, tmp_path / "out" / "p.html")
    assert list((tmp_path / "out").iterdir()) == []
