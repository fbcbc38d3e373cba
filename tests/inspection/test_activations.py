"""Recorded activations: every signal of every cell against the documented equations, chunks, the scan."""

import numpy as np
import pytest
import torch

from charrnn.inspection.activations import RECORDED, linear_scan, record
from charrnn.model import CharRNN
from tests.helpers import random_model

VOCAB = 12


SIZES = {"embed_dim": 5, "hidden_size": 8}


def saturating(model: CharRNN) -> CharRNN:
    """`model` with its input weights 3x larger than at init, so that its gates saturate."""
    with torch.no_grad():
        for name, param in model.rnn.named_parameters():
            if name.startswith("weight_ih"):
                param.mul_(3)
    return model


def reference(model: CharRNN, ids: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch's documented cell equations, one character at a time: slow, and obviously right."""
    size, cell = model.cfg.hidden_size, model.cfg.cell
    out: dict[str, list] = {name: [] for name in RECORDED[cell]}
    with torch.no_grad():
        x_seq = model.embed(torch.as_tensor(ids))
        for layer in range(model.cfg.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(model.rnn, f"{n}_l{layer}")
                                      for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            h, c = torch.zeros(size), torch.zeros(size)
            rows: dict[str, list] = {name: [] for name in RECORDED[cell]}
            for x in x_seq:
                gi, gh = w_ih @ x + b_ih, w_hh @ h + b_hh
                if cell == "lstm":
                    i, f, g, o = (gi + gh).chunk(4)
                    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                    c = f * c + i * g
                    h = o * c.tanh()
                    step = {"c": c, "h": h, "input": i, "forget": f, "output": o}
                elif cell == "gru":
                    r = (gi[:size] + gh[:size]).sigmoid()
                    z = (gi[size : 2 * size] + gh[size : 2 * size]).sigmoid()
                    n = (gi[2 * size :] + r * gh[2 * size :]).tanh()
                    h = (1 - z) * n + z * h
                    step = {"h": h, "update": z, "reset": r}
                else:
                    h = (gi + gh).tanh()
                    step = {"h": h}
                for name, value in step.items():
                    rows[name].append(value)
            for name in rows:
                out[name].append(torch.stack(rows[name]))
            x_seq = torch.stack(rows["h"])
    return {name: torch.stack(layers).numpy() for name, layers in out.items()}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_signal_matches_the_cell_equations_and_the_fused_module(cell):
    model = saturating(random_model(VOCAB, cell, **SIZES))
    ids = np.random.default_rng(1).integers(0, VOCAB, 300)
    acts = record(model, ids, chunk_size=64)  # the state carried across chunks
    expected = reference(model, ids)
    assert set(acts.signals) == set(RECORDED[cell])
    for name, values in expected.items():
        np.testing.assert_allclose(acts.signals[name], values, atol=2e-4, err_msg=name)
    with torch.no_grad():  # the fused stack's own outputs, which the reference must reproduce too
        logits, hidden = model(torch.as_tensor(ids)[None])
    np.testing.assert_allclose(acts.probs, logits[0].softmax(-1).numpy(), atol=1e-4)
    for got, want in zip(acts.state, hidden, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-4)
    np.testing.assert_allclose(expected["h"][-1, -1], hidden[0][-1, 0].numpy(), atol=1e-5)


def test_chunks_carry_the_state():
    model = saturating(random_model(VOCAB, "lstm", **SIZES))
    ids = np.random.default_rng(2).integers(0, VOCAB, 200)
    whole = record(model, ids)
    chunked = record(model, ids, chunk_size=37)
    first = record(model, ids[:90])
    rest = record(model, ids[90:], first.state)
    for name in RECORDED["lstm"]:
        np.testing.assert_allclose(chunked.signals[name], whole.signals[name], atol=2e-4)
        np.testing.assert_allclose(np.concatenate([first.signals[name], rest.signals[name]], axis=1),
                                   whole.signals[name], atol=2e-4)


def test_a_cell_that_never_forgets_is_exact_across_chunks_and_scan_segments():
    model = saturating(random_model(VOCAB, "lstm", **SIZES, num_layers=1))
    with torch.no_grad():
        size = model.cfg.hidden_size
        model.rnn.bias_ih_l0[size : 2 * size] = 50.0  # forget gate pinned at 1: c sums its inputs forever
    ids = np.random.default_rng(3).integers(0, VOCAB, 400)
    acts = record(model, ids, chunk_size=150)  # the sums go on across chunks
    np.testing.assert_allclose(acts.signals["c"], reference(model, ids)["c"], rtol=1e-4, atol=1e-3)
    assert np.abs(acts.signals["c"]).max() > 20  # the sums did grow: a dropped state would show


def test_linear_scan_matches_the_loop():
    gen = torch.Generator().manual_seed(0)
    decay, inject = torch.rand(101, 3, generator=gen), torch.randn(101, 3, generator=gen)
    start = torch.randn(3, generator=gen)
    c, expected = start, []
    for t in range(101):
        c = decay[t] * c + inject[t]
        expected.append(c)
    torch.testing.assert_close(linear_scan(decay, inject, start, segment=7), torch.stack(expected))


def test_float16_output_and_an_empty_text():
    model = saturating(random_model(VOCAB, "gru", **SIZES))
    acts = record(model, [1, 2, 3], dtype=np.float16)
    assert acts.signals["h"].dtype == np.float16
    assert acts.signals["h"].shape == (2, 3, 8)
    empty = record(model, [])
    assert empty.probs.shape == (0, VOCAB)
    assert empty.signals["update"].shape == (2, 0, 8)
