"""Per-character activations of every layer and cell: cell states, hidden states, gates and predictions.

    from charrnn.checkpoint import load_model
    from charrnn.inspection.activations import record
    loaded = load_model("runs/shakespeare")
    acts = record(loaded.model, loaded.vocab.encode(text))
    acts.signals["c"][layer, t, cell]      # the LSTM's cell state after reading text[t]
    acts.probs[t]                          # the distribution of text[t + 1]

Stepping `nn.LSTM` one character at a time pays its setup for every character. Instead each layer
runs as one fused call per chunk of text, with the state carried from chunk to chunk, which gives
its h sequence; the gates then come from one matmul per layer over all (x_t, h_{t-1}) pairs at once,
and the LSTM's cell state from an elementwise scan (see `linear_scan`).

The fused call still reads every recurrent weight once per character, so it is bound by memory.
Running the text as parallel segments would batch those reads, but a segment's starting state is
only known once the one before it is done, and a trained LSTM has cells that remember for thousands
of characters (a count, an open quote): tried with starting states guessed from a short warm-up,
nearly every segment of a trained 2x512 model had to run again. So it runs in order, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.model import CELLS, LAYER_WEIGHTS, CharRNN, Hidden, eval_mode

# The sigmoid gates of each cell (named as in `charrnn.model.GATE_BLOCKS`), recorded as values in [0, 1].
SIGMOID_GATES = {"lstm": ("input", "forget", "output"), "gru": ("update", "reset"), "rnn": ()}
# What is recorded for each cell type, in this order: the states, then the gates.
RECORDED = {"lstm": ("c", "h", *SIGMOID_GATES["lstm"]), "gru": ("h", *SIGMOID_GATES["gru"]), "rnn": ("h",)}

CHUNK = 16384  # characters per pass; bounds the memory of the gate pre-activations
SEGMENT = 512  # characters per segment of the cell-state scan


@dataclass(frozen=True)
class Activations:
    """What a model computed for each character of a text, after reading that character."""

    cell: str  # "lstm", "gru" or "rnn"
    signals: dict[str, np.ndarray]  # name in RECORDED[cell] -> (num_layers, T, hidden_size)
    probs: np.ndarray  # (T, V): the distribution of the next character, after each character
    state: Hidden  # the recurrent state after the last character, to carry into more text


@torch.no_grad()
def record(model: CharRNN, ids: Sequence[int] | np.ndarray | Tensor, state: Hidden | None = None, *,
           dtype: np.dtype | type = np.float32, chunk_size: int = CHUNK) -> Activations:
    """Run `model` over `ids` with the state carried from `state` (blank when None), recording every signal."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(-1)
    cfg = model.cfg
    device = model.embed.weight.device
    names = RECORDED[cfg.cell]
    total = len(ids)
    signals = {name: np.empty((cfg.num_layers, total, cfg.hidden_size), dtype) for name in names}
    probs = np.empty((total, model.vocab_size), np.float32)
    layers = [_single_layer(model, layer) for layer in range(cfg.num_layers)]
    state = model.init_hidden(1, device) if state is None else state
    carried = [tuple(s[layer].reshape(1, -1).to(device) for s in state) for layer in range(cfg.num_layers)]
    with eval_mode(model):
        for start in range(0, total, chunk_size):
            x = model.embed(ids[start : start + chunk_size].to(device))  # (t, E)
            stop = start + len(x)
            for layer, rnn in enumerate(layers):
                h = _run(rnn, x, carried[layer])  # (t, H)
                values = _signals(cfg.cell, rnn, x, h, carried[layer])
                for name in names:
                    signals[name][layer, start:stop] = values[name].float().cpu().numpy()
                carried[layer] = (h[-1:],) + ((values["c"][-1:],) if cfg.cell == "lstm" else ())
                x = h
            probs[start:stop] = model.logits(x).float().softmax(dim=-1).cpu().numpy()
    final = tuple(torch.stack([c[i][0] for c in carried]).unsqueeze(1) for i in range(model.state_size))
    return Activations(cfg.cell, signals, probs, final)


def _single_layer(model: CharRNN, layer: int) -> nn.Module:
    """One layer of a fused stack as its own fused module, with a copy of that layer's weights."""
    weights = model.layer_weights(layer)
    single = CELLS[model.cfg.cell](weights[0].shape[1], model.cfg.hidden_size, 1)
    single.load_state_dict({f"{name}_l0": w for name, w in zip(LAYER_WEIGHTS, weights, strict=True)})
    return single.to(weights[0].device).eval()


def _run(rnn: nn.Module, x: Tensor, init: tuple[Tensor, ...]) -> Tensor:
    """One layer over (T, In) inputs from `init` (a tuple of (1, H)): its h sequence (T, H)."""
    state = tuple(s.unsqueeze(1) for s in init)  # (1, 1, H): one layer, batch 1
    out, _ = rnn(x.unsqueeze(1), state if len(state) == 2 else state[0])  # (T, 1, H)
    return out[:, 0]


def _signals(cell: str, rnn: nn.Module, x: Tensor, h: Tensor, init: tuple[Tensor, ...]) -> dict[str, Tensor]:
    """Gates (and the LSTM's c) of one layer from its inputs (T, In) and outputs (T, H), all steps at once."""
    h_prev = torch.cat([init[0], h[:-1]])  # (T, H)
    inputs = torch.addmm(rnn.bias_ih_l0, x, rnn.weight_ih_l0.t())  # (T, G*H)
    hidden = torch.addmm(rnn.bias_hh_l0, h_prev, rnn.weight_hh_l0.t())  # (T, G*H)
    if cell == "lstm":  # PyTorch packs the gates as (input, forget, cell, output)
        in_gate, forget, cand, out_gate = inputs.add_(hidden).chunk(4, dim=1)
        in_gate, forget, out_gate = in_gate.sigmoid(), forget.sigmoid(), out_gate.sigmoid()
        c = linear_scan(forget, in_gate * cand.tanh(), init[1][0])
        return {"c": c, "h": h, "input": in_gate, "forget": forget, "output": out_gate}
    if cell == "gru":  # packed as (reset, update, new)
        size = rnn.hidden_size
        reset, update = inputs[:, : 2 * size].add_(hidden[:, : 2 * size]).sigmoid_().chunk(2, dim=1)
        return {"h": h, "update": update, "reset": reset}
    return {"h": h}


def linear_scan(decay: Tensor, inject: Tensor, start: Tensor, segment: int = SEGMENT) -> Tensor:
    """c_t = decay_t * c_{t-1} + inject_t for all t, from c_{-1} = start: (T, H), (T, H), (H,) -> (T, H).

    Segments of the sequence are scanned side by side from 0, keeping the running product of their
    decays; then each segment's true start (where the previous one ended) is added in, scaled by
    that product. A Python loop of `segment` steps instead of T; no division, so nothing overflows.
    """
    total, size = decay.shape
    count = math.ceil(total / segment)
    pad = count * segment - total
    decays = F.pad(decay, (0, 0, 0, pad), value=1.0).view(count, segment, size)
    injects = F.pad(inject, (0, 0, 0, pad)).view(count, segment, size)
    local, product = torch.empty_like(injects), torch.empty_like(decays)
    c, p = torch.zeros_like(injects[:, 0]), torch.ones_like(decays[:, 0])  # (N, H)
    for k in range(segment):
        c = torch.addcmul(injects[:, k], decays[:, k], c)
        p = p * decays[:, k]
        local[:, k], product[:, k] = c, p
    starts = [start]
    for j in range(count - 1):
        starts.append(local[j, -1] + product[j, -1] * starts[-1])
    return local.addcmul_(product, torch.stack(starts).unsqueeze(1)).view(count * segment, size)[:total]
