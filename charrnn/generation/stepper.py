"""The stepper: one character per call through the recurrent stack, for sampling and beam search."""

from __future__ import annotations

import torch
from torch import Tensor

from charrnn.model import GATE_BLOCKS, CharRNN, Hidden

# The stepper's recurrent state: one list of per-layer (N, H) tensors for each tensor of `Hidden`,
# i.e. (hs, cs) for the LSTM and (hs,) for the GRU and the RNN.
State = tuple[list[Tensor], ...]


class Stepper:
    """One character per call through the recurrent stack, with the weights pre-arranged for few ops.

    Stepping `nn.LSTM` (or `nn.GRU`, `nn.RNN`) one character at a time pays its per-call setup every
    time. Here each layer is a matmul or two plus a handful of pointwise ops, and the first layer's
    input projection is a lookup table (embedding @ W_ih + biases, per character).

    - LSTM: the gates are reordered to (input, forget, output, cell) so that one sigmoid covers three,
      and above the first layer [x, h] goes through one matmul.
    - GRU: h' = (1 - z) * n + z * h with n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). The reset gate
      scales the hidden half of n, so the input and hidden projections stay two matmuls; the r and z
      biases of both are folded into the input side.
    - RNN: h' = tanh(W_ih x + W_hh h + biases), one matmul over [x, h] like the LSTM.
    """

    def __init__(self, model: CharRNN) -> None:
        self.cell = model.cfg.cell
        size = model.cfg.hidden_size
        order = torch.arange(len(GATE_BLOCKS[self.cell]) * size)
        if self.cell == "lstm":  # (i, f, g, o) -> (i, f, o, g)
            order = torch.cat([order[: 2 * size], order[3 * size :], order[2 * size : 3 * size]])
        with torch.no_grad():
            self.weights: list[Tensor] = []  # W_hh^T (H, GH); LSTM/RNN above layer 0: [W_ih; W_hh]^T (E_in + H, GH)
            self.biases: list[Tensor] = []  # added to the matmul over `weights`; empty where the table holds them
            self.input_weights: list[Tensor] = []  # GRU above layer 0: W_ih^T (E_in, 3H); empty otherwise
            self.input_biases: list[Tensor] = []
            for layer in range(model.cfg.num_layers):
                w_ih, w_hh, b_ih, b_hh = (t.float()[order] for t in model.layer_weights(layer))
                if self.cell == "gru":  # r, z: b_hh just adds, so it joins b_ih; n: b_hn stays inside r * (...)
                    rz = 2 * size
                    b_ih = b_ih + torch.cat([b_hh[:rz], b_hh.new_zeros(size)])
                    b_hh = torch.cat([b_hh.new_zeros(rz), b_hh[rz:]])
                else:  # every bias just adds
                    b_ih, b_hh = b_ih + b_hh, torch.empty(0)
                gru_input = self.cell == "gru" and layer > 0
                self.input_weights.append(w_ih.t().contiguous() if gru_input else torch.empty(0))
                self.input_biases.append(b_ih if gru_input else torch.empty(0))
                if layer == 0:
                    self.table = model.embed.weight.float() @ w_ih.t() + b_ih  # (V, GH)
                if layer == 0 or self.cell == "gru":
                    self.weights.append(w_hh.t().contiguous())
                    self.biases.append(b_hh)
                else:
                    self.weights.append(torch.cat([w_ih, w_hh], dim=1).t().contiguous())
                    self.biases.append(b_ih)
            # A full head is one matmul, (H, V) and (V,); an adaptive one scores through its own module.
            self.adaptive_head = model.logits if model.adaptive else None
            full = not model.adaptive
            self.head_weight = model.head.weight.float().t().contiguous() if full else torch.empty(0)
            self.head_bias = model.head.bias.float() if full else torch.empty(0)
        self.size = size

    def __call__(self, ids: Tensor, state: State) -> Tensor:
        """(N,) ids -> (N, V) logits; updates the per-layer lists of `state` in place."""
        hs = state[0]
        x = ids
        for layer in range(len(self.weights)):
            if self.cell == "gru":
                x = self._gru(layer, x, hs[layer])
            else:
                if layer == 0:
                    pre = torch.addmm(self.table.index_select(0, ids), hs[0], self.weights[0])  # (N, GH)
                else:
                    pre = torch.addmm(self.biases[layer], torch.cat([x, hs[layer]], dim=1), self.weights[layer])
                if self.cell == "lstm":
                    x, state[1][layer] = self._lstm(pre, state[1][layer])
                else:
                    x = pre.tanh_()
            hs[layer] = x
        if self.adaptive_head is not None:
            return self.adaptive_head(x)
        return torch.addmm(self.head_bias, x, self.head_weight)

    def _lstm(self, gates: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 4H) pre-activations in (i, f, o, g) order and the cell -> the new (h, c)."""
        sig, cand = gates.split((3 * self.size, self.size), dim=1)  # (N, 3H), (N, H)
        in_gate, forget, out_gate = sig.sigmoid_().chunk(3, dim=1)
        cell = torch.addcmul(forget * cell, in_gate, cand.tanh_())
        return out_gate * cell.tanh(), cell

    def _gru(self, layer: int, x: Tensor, h: Tensor) -> Tensor:
        """One GRU layer: (N,) ids at layer 0, else (N, H) inputs, and h (N, H) -> the new h."""
        if layer == 0:
            inputs = self.table.index_select(0, x)  # (N, 3H), a fresh tensor
        else:
            inputs = torch.addmm(self.input_biases[layer], x, self.input_weights[layer])
        hidden = torch.addmm(self.biases[layer], h, self.weights[layer])  # (N, 3H)
        split = 2 * self.size
        reset, update = inputs[:, :split].add_(hidden[:, :split]).sigmoid_().chunk(2, dim=1)
        cand = torch.addcmul(inputs[:, split:], reset, hidden[:, split:]).tanh_()
        return torch.lerp(cand, h, update)  # (1 - z) * n + z * h


def unstack(hidden: Hidden) -> State:
    """The fused module's (num_layers, N, H) state tensors -> the stepper's per-layer lists."""
    return tuple([layer.float() for layer in t.unbind(0)] for t in hidden)
