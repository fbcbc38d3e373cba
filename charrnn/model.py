"""CharRNN: character embedding -> stacked fused recurrent cell -> dropout -> linear head over the vocabulary.

The cell is PyTorch's fused `nn.LSTM`, `nn.GRU` or `nn.RNN` (tanh): oneDNN on CPU, cuDNN on CUDA. The head is a
softmax over the vocabulary or, with model.head_cutoff, an adaptive softmax (Grave et al., 2017).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.config import ModelConfig

# The recurrent state: (h, c) for the LSTM, (h,) for the GRU and the RNN; each (num_layers, B, hidden_size).
Hidden = tuple[Tensor, ...]

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# The blocks of hidden_size rows in each layer's weight_ih / weight_hh, in PyTorch's packing order.
GATE_BLOCKS = {"lstm": ("input", "forget", "candidate", "output"), "gru": ("reset", "update", "candidate"),
               "rnn": ("candidate",)}
LAYER_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # each layer's parameters, as `_lN` suffixes name
TAIL_DIV = 4  # the adaptive head's rare cluster projects the hidden state to hidden_size / TAIL_DIV first


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on the CPU: 8 random bits an element, eight from each 64-bit draw.

    torch's CPU dropout draws one random number per element, and that draw is the cost: a 1 x 512 LSTM's training
    step (32 x 100, bf16) took 68 ms with dropout 0.1 against 61 ms without, and 61 ms with a mask of 16 bits an
    element; 8 bits, compared straight into the input's dtype, halve the mask's cost again (docs/results.md). So p is
    rounded to 1/256 (0.1 drops 26 of 256, 0.1016), and the kept elements are scaled by the rounded p, so that the
    mean is kept (to the scale's own rounding in bf16); a p that rounds to 0 or 1 gets torch's exact mask. CUDA keeps
    torch's fused kernel. Eight paired runs found no significant cost in quality against 16 bits (docs/results.md).
    """

    def forward(self, x: Tensor) -> Tensor:
        dropped = round(self.p * 256)  # of every 256
        if not self.training or self.p == 0 or x.device.type != "cpu" or not 0 < dropped < 256:
            return super().forward(x)
        draws = torch.empty((x.numel() + 7) // 8, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits random
        lanes = draws.view(torch.int8)[: x.numel()].view(x.shape)  # uniform over [-128, 128)
        keep = torch.ge(lanes, dropped - 128, out=torch.empty(x.shape, dtype=x.dtype))  # 1 with probability 1 - p
        return x * keep.mul_(256 / (256 - dropped))


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig, counts: Tensor | None = None) -> None:
        """`counts`, each symbol's in the training text, orders an adaptive head's symbols (the checkpoint keeps it)."""
        super().__init__()
        self.vocab_size = vocab_size
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        self.embed_drop = Dropout(cfg.embed_dropout)
        # Time-major, which both oneDNN and cuDNN prefer.
        self.rnn = CELLS[cfg.cell](cfg.embed_dim, cfg.hidden_size, cfg.num_layers,
                                   dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.drop = Dropout(cfg.dropout)
        self.weight_drop = Dropout(cfg.weight_dropout)
        # One-layer cells without weights of their own (on the meta device: no memory, no draws from the seed), which
        # `_layered` runs each layer's weights through; a tuple, so that they stay out of the state dict.
        self._one_layer = tuple(CELLS[cfg.cell](size, cfg.hidden_size, device="meta")
                                for size in (cfg.embed_dim, cfg.hidden_size)[: cfg.num_layers])
        # The head scores every symbol; an adaptive one (Grave et al., 2017), the head_cutoff most frequent and one
        # cluster of the rest, which `tail` then splits through a projection TAIL_DIV times narrower.
        self.adaptive = adaptive(vocab_size, cfg)
        self.head = nn.Linear(cfg.hidden_size, head_outputs(vocab_size, cfg))
        if self.adaptive:
            narrow = cfg.hidden_size // TAIL_DIV
            self.tail = nn.Sequential(nn.Linear(cfg.hidden_size, narrow, bias=False),
                                      nn.Linear(narrow, vocab_size - cfg.head_cutoff, bias=False))
            # rank[id]: the symbol's place by frequency in the training text, the order the head and tail score in.
            order = torch.arange(vocab_size) if counts is None else torch.sort(-counts, stable=True).indices
            self.register_buffer("rank", torch.empty_like(order).scatter_(0, order, torch.arange(vocab_size)))
        self._init_recurrent()

    def _init_recurrent(self) -> None:
        size = self.cfg.hidden_size
        with torch.no_grad():
            for name, param in self.rnn.named_parameters():
                if self.cfg.cell == "lstm":
                    # Gates are packed (input, forget, cell, output); a forget bias of 1 lets gradients
                    # flow through long spans early in training (Jozefowicz et al., 2015).
                    if name.startswith("bias_ih"):
                        param[size : 2 * size].fill_(1.0)
                    elif name.startswith("bias_hh"):
                        param[size : 2 * size].fill_(0.0)
                elif name.startswith("weight_hh"):
                    # Orthogonal recurrent matrices (Saxe et al., 2014) keep a tanh RNN's and a GRU's
                    # gradients from shrinking or growing geometrically through time at the start.
                    for block in param.split(size, dim=0):
                        nn.init.orthogonal_(block)
                elif name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(param)
                else:
                    param.zero_()

    @property
    def state_size(self) -> int:
        """How many tensors the recurrent state holds: 2 for the LSTM, 1 otherwise."""
        return 2 if self.cfg.cell == "lstm" else 1

    def init_hidden(self, batch_size: int, device: torch.device | str = "cpu") -> Hidden:
        shape = (self.cfg.num_layers, batch_size, self.cfg.hidden_size)
        return tuple(torch.zeros(shape, device=device) for _ in range(self.state_size))

    def forward(self, ids: Tensor, hidden: Hidden | None = None, targets: Tensor | None = None,
                reduction: str = "mean") -> tuple[Tensor, Hidden]:
        """(B, T) ids -> (B, T, V) logits and the hidden state after the last step; given (B, T) targets, their loss
        in nats per character instead (`reduction` as F.cross_entropy's; "none": (T * B,), time-major). Losses come
        from here, inside a DDP wrapper's forward, so that an adaptive head scores its rare cluster only where it
        must."""
        x = self.embed_drop(self.embed(ids.t()))  # (T, B, E)
        out, hidden = self._recurrent(x, _unpack(hidden))  # (T, B, H)
        out = self.drop(out)
        if targets is None:
            return self.logits(out).transpose(0, 1), _pack(hidden)  # (B, T, V), a view: no copy
        if not self.adaptive:
            return cross_entropy(self.head(out).transpose(0, 1), targets, reduction), _pack(hidden)
        losses = -self._scored(out.reshape(-1, out.shape[-1]), self.rank[targets.t().reshape(-1)])  # (T * B,)
        return (losses if reduction == "none" else losses.sum() if reduction == "sum" else losses.mean()), \
            _pack(hidden)

    def _scored(self, out: Tensor, ranks: Tensor) -> Tensor:
        """An adaptive head's log-probabilities of (N,) symbols by `rank` after (N, H) outputs: the rare cluster's
        only where a rare symbol comes. In fp32, as cross_entropy's; the matmuls in autocast's dtype."""
        cutoff = self.cfg.head_cutoff
        scored = self.head(out).float().log_softmax(-1).gather(1, ranks.clamp(max=cutoff)[:, None])[:, 0]  # (N,)
        rows = (ranks >= cutoff).nonzero()[:, 0]
        if len(rows) == 0:
            return scored
        rare = self.tail(out[rows]).float().log_softmax(-1).gather(1, ranks[rows, None] - cutoff)[:, 0]
        return scored.index_add(0, rows, rare)

    def logits(self, out: Tensor) -> Tensor:
        """(..., H) cell outputs -> (..., V) logits; an adaptive head's are its log-probabilities."""
        if not self.adaptive:
            return self.head(out)
        head = self.head(out).float().log_softmax(-1)  # (..., cutoff + 1): the frequent symbols, then the cluster
        tail = self.tail(out).float().log_softmax(-1) + head[..., -1:]  # (..., V - cutoff)
        return torch.cat([head[..., :-1], tail], -1)[..., self.rank]  # by rank -> by id

    def _recurrent(self, x: Tensor, hidden: Tensor | tuple[Tensor, Tensor] | None) -> tuple[Tensor, Any]:
        """The fused cell over (T, B, E) inputs: whole, or in training one layer at a time where that is cheaper."""
        cpu_dropout = x.device.type == "cpu" and self.cfg.num_layers > 1 and self.cfg.dropout > 0
        if self.training and (self.cfg.weight_dropout or cpu_dropout):
            return self._layered(x, hidden)
        return self.rnn(x, hidden)

    def _layered(self, x: Tensor, hidden: Tensor | tuple[Tensor, Tensor] | None) -> tuple[Tensor, Any]:
        """Each layer's weights through a fused one-layer cell, so that two things are charrnn's own:
        - the dropout between layers is the cheap CPU mask: the fused cell draws torch's, which took 9 of a 2 x 512
          bf16 step's 147 ms (docs/results.md);
        - weight drop (AWD-LSTM's) drops entries of each layer's weight_hh, one mask a step: it regularizes the
          recurrence, which dropout between layers never touches, and keeps the fused kernel, as a per-step mask
          would not."""
        last = []
        for layer in range(self.cfg.num_layers):
            weights = {f"{name}_l0": w for name, w in zip(LAYER_WEIGHTS, self.layer_weights(layer), strict=True)}
            if self.cfg.weight_dropout:
                weights["weight_hh_l0"] = self.weight_drop(weights["weight_hh_l0"])
            state = None if hidden is None else _layer_state(hidden, layer)
            with warnings.catch_warnings():  # cuDNN packs the weights afresh each step, as it must
                warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous")
                x, state = torch.func.functional_call(self._one_layer[min(layer, 1)], weights,
                                                      (self.drop(x) if layer else x, state))
            last.append(state)
        return x, tuple(map(torch.cat, zip(*last, strict=True))) if isinstance(last[0], tuple) else torch.cat(last)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def layer_weights(self, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One layer's (weight_ih, weight_hh, bias_ih, bias_hh): (G*H, In), (G*H, H), (G*H,), (G*H,), G gate blocks."""
        return tuple(getattr(self.rnn, f"{name}_l{layer}") for name in LAYER_WEIGHTS)  # type: ignore[return-value]

    def gate_rows(self, gate: str) -> slice:
        """The rows of `gate`'s block in every weight_ih / weight_hh / bias of the cell."""
        block, size = GATE_BLOCKS[self.cfg.cell].index(gate), self.cfg.hidden_size
        return slice(block * size, (block + 1) * size)


def adaptive(vocab_size: int, cfg: ModelConfig) -> bool:
    """Whether CharRNN(vocab_size, cfg) has an adaptive head: a cutoff that leaves at least two symbols out of it."""
    return 0 < cfg.head_cutoff < vocab_size - 1


def head_outputs(vocab_size: int, cfg: ModelConfig) -> int:
    """The logits a training step computes for every character: the vocabulary's, or an adaptive head's own
    (its symbols and the rare cluster's one; the cluster's own logits come only where a rare symbol does)."""
    return cfg.head_cutoff + 1 if adaptive(vocab_size, cfg) else vocab_size


def parameter_count(vocab_size: int, cfg: ModelConfig) -> int:
    """How many parameters CharRNN(vocab_size, cfg) has, computed without building it."""
    size, gates = cfg.hidden_size, len(GATE_BLOCKS[cfg.cell])
    first, rest = gates * size * (cfg.embed_dim + size + 2), gates * size * (2 * size + 2)
    head = (size + 1) * vocab_size
    if adaptive(vocab_size, cfg):  # the head's matrix and bias, then the rare cluster's two matrices, without bias
        tail = size // TAIL_DIV
        head = (size + 1) * (cfg.head_cutoff + 1) + size * tail + tail * (vocab_size - cfg.head_cutoff)
    return vocab_size * cfg.embed_dim + first + (cfg.num_layers - 1) * rest + head


def train_flops_per_char(vocab_size: int, cfg: ModelConfig) -> float:
    """Training FLOPs per character: 3x the forward matmuls of every layer and the head."""
    gates = len(GATE_BLOCKS[cfg.cell])
    forward = sum(2 * gates * cfg.hidden_size * ((cfg.embed_dim if i == 0 else cfg.hidden_size) + cfg.hidden_size)
                  for i in range(cfg.num_layers))
    return 3 * (forward + 2 * cfg.hidden_size * head_outputs(vocab_size, cfg))


def training_bytes(vocab_size: int, cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """A rough lower bound on the memory training needs: fp32 weights, gradients and AdamW's two moments,
    plus the activations one window keeps for backpropagation."""
    per_step = (cfg.embed_dim + cfg.num_layers * cfg.hidden_size * (len(GATE_BLOCKS[cfg.cell]) + 2)
                + 2 * head_outputs(vocab_size, cfg))
    return 4 * (4 * parameter_count(vocab_size, cfg) + batch_size * seq_len * per_step)


def _unpack(hidden: Hidden | None) -> Tensor | tuple[Tensor, Tensor] | None:
    """Our uniform tuple -> what nn.LSTM (a pair) or nn.GRU / nn.RNN (one tensor) take."""
    if hidden is None or len(hidden) == 2:
        return hidden
    return hidden[0]


def _layer_state(hidden: Tensor | tuple[Tensor, Tensor], layer: int) -> Tensor | tuple[Tensor, Tensor]:
    """One layer's slice, (1, B, H), of nn.LSTM's (h, c) pair or a GRU's or an RNN's h."""
    if isinstance(hidden, tuple):
        return tuple(t[layer : layer + 1] for t in hidden)  # type: ignore[return-value]
    return hidden[layer : layer + 1]


def _pack(hidden: Tensor | tuple[Tensor, Tensor]) -> Hidden:
    return tuple(hidden) if isinstance(hidden, tuple) else (hidden,)


def detach(hidden: Hidden) -> Hidden:
    """Cut the graph between truncated-BPTT windows, keeping the values (in fp32: under bf16 autocast
    the fused LSTM hands back a bf16 state, and the carried state and checkpoints stay one dtype)."""
    return tuple(t.detach().float() for t in hidden)


def bpc(nats: float) -> float:
    """Nats per character -> bits per character."""
    return nats / math.log(2)


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """(B, T, V) logits and (B, T) targets -> loss in nats per character."""
    vocab = logits.shape[-1]
    # forward() returns a transposed view of time-major logits: transposing back is free.
    return F.cross_entropy(logits.transpose(0, 1).reshape(-1, vocab).float(), targets.t().reshape(-1),
                           reduction=reduction)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) inside the block; the previous mode comes back afterwards, even on error."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
