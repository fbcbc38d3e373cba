"""Generation: warm the state on prime text in one fused call, then step one character at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from charrnn.corpus import Vocab
from charrnn.devices import seeded_generator
from charrnn.errors import UserError
from charrnn.model import GATES, CharRNN, Hidden, eval_mode

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
        order = torch.arange(GATES[self.cell] * size)
        if self.cell == "lstm":  # (i, f, g, o) -> (i, f, o, g)
            order = torch.cat([order[: 2 * size], order[3 * size :], order[2 * size : 3 * size]])
        with torch.no_grad():
            self.weights: list[Tensor] = []  # W_hh^T (H, GH); LSTM/RNN above layer 0: [W_ih; W_hh]^T (E_in + H, GH)
            self.biases: list[Tensor] = []  # added to the matmul over `weights`; empty where the table holds them
            self.input_weights: list[Tensor] = []  # GRU above layer 0: W_ih^T (E_in, 3H); empty otherwise
            self.input_biases: list[Tensor] = []
            for layer in range(model.cfg.num_layers):
                w_ih, w_hh, b_ih, b_hh = (getattr(model.rnn, f"{n}_l{layer}").float()[order]
                                          for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
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
            self.head_weight = model.head.weight.float().t().contiguous()  # (H, V)
            self.head_bias = model.head.bias.float()
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


def pick(logits: Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator) -> Tensor:
    """(N, V) logits -> (N,) ids: argmax at temperature 0, else sample after top-k / top-p filtering."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    if temperature != 1.0:  # shifted first, so that a tiny temperature cannot overflow into inf - inf = NaN
        logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # mass before this token already reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    # Inverse-CDF draw: the same distribution as torch.multinomial at a third of its CPU cost.
    cdf = logits.softmax(dim=-1).cumsum(dim=-1)  # (N, V)
    draw = torch.rand(cdf.shape[0], 1, device=cdf.device, generator=generator) * cdf[:, -1:]
    return torch.searchsorted(cdf, draw).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def prime_ids(vocab: Vocab, prime: str) -> list[int]:
    """Ids of `prime`; an empty prime starts from a newline (or the first character when the vocabulary has none)."""
    return vocab.encode(prime or ("\n" if "\n" in vocab.chars else vocab.chars[0]))


def check_options(length: int, temperature: float, top_k: int, top_p: float, num_samples: int = 1) -> None:
    """Reject sampling options that make no sense, with one clear message each."""
    if length < 0:
        raise UserError(f"--length must be >= 0, got {length}")
    if not temperature >= 0:
        raise UserError(f"--temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k < 0:
        raise UserError(f"--top-k must be >= 1 (or 0 for no limit), got {top_k}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    if num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {num_samples}")


def generate(model: CharRNN, vocab: Vocab, prime: str = "", length: int = 200, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, num_samples: int = 1,
             generator: torch.Generator | None = None) -> Iterator[list[str]]:
    """Yield `length` steps of `num_samples` characters each, continuing `prime`.

    Bad options and prime characters outside the vocabulary fail here, before anything is yielded.
    An empty prime starts from a newline (or the first character when the vocabulary has none).
    """
    check_options(length, temperature, top_k, top_p, num_samples)
    context = prime_ids(vocab, prime)
    if generator is None:
        generator = seeded_generator(next(model.parameters()).device, None)
    return _generate(model, vocab, context, length, temperature, top_k, top_p, num_samples, generator)


def _generate(model: CharRNN, vocab: Vocab, prime_ids: list[int], length: int, temperature: float, top_k: int,
              top_p: float, num_samples: int, generator: torch.Generator) -> Iterator[list[str]]:
    with eval_mode(model), torch.inference_mode():
        device = next(model.parameters()).device
        ids = torch.tensor(prime_ids, device=device).expand(num_samples, -1)  # (N, P)
        logits, hidden = model(ids)  # the whole prime in one fused call
        logits = logits[:, -1].float()  # (N, V)
        step = Stepper(model)  # a copy of the weights: the model's mode no longer matters
        state = unstack(hidden)
    for _ in range(length):
        with torch.inference_mode():
            nxt = pick(logits, temperature, top_k, top_p, generator)
            chars = [vocab.chars[i] for i in nxt.tolist()]
        yield chars  # outside inference mode: the consumer may run anything in between
        with torch.inference_mode():
            logits = step(nxt, state)


def unstack(hidden: Hidden) -> State:
    """The fused module's (num_layers, N, H) state tensors -> the stepper's per-layer lists."""
    return tuple([layer.float() for layer in t.unbind(0)] for t in hidden)


def sample_text(model: CharRNN, vocab: Vocab, prime: str, length: int, temperature: float, seed: int,
                check: Callable[[], None] = lambda: None) -> str:
    """One sample as a string, from its own seeded generator so it never disturbs training's RNG.

    `check` runs before each character and may raise to abandon the sample.
    """
    generator = seeded_generator(next(model.parameters()).device, seed)
    chars = []
    for step in generate(model, vocab, prime, length, temperature=temperature, generator=generator):
        check()
        chars.append(step[0])
    return prime + "".join(chars)
