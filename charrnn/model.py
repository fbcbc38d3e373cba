"""CharLSTM: character embedding -> stacked fused LSTM -> dropout -> linear head over the vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.config import ModelConfig

Hidden = tuple[Tensor, Tensor]  # (h, c), each (num_layers, B, hidden_size)


class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.cfg = cfg
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        # Fused multi-layer LSTM: oneDNN on CPU, cuDNN on CUDA. Time-major, which both prefer.
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden_size, cfg.num_layers,
                            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, vocab_size)
        self._init_forget_bias()

    def _init_forget_bias(self) -> None:
        # Gates are packed (input, forget, cell, output); a forget bias of 1 lets gradients
        # flow through long spans early in training (Jozefowicz et al., 2015).
        size = self.cfg.hidden_size
        with torch.no_grad():
            for name, bias in self.lstm.named_parameters():
                if name.startswith("bias_ih"):
                    bias[size : 2 * size].fill_(1.0)
                elif name.startswith("bias_hh"):
                    bias[size : 2 * size].fill_(0.0)

    def init_hidden(self, batch_size: int, device: torch.device | str = "cpu") -> Hidden:
        shape = (self.cfg.num_layers, batch_size, self.cfg.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, ids: Tensor, hidden: Hidden | None = None) -> tuple[Tensor, Hidden]:
        """(B, T) ids -> (B, T, V) logits and the hidden state after the last step."""
        x = self.embed(ids.t())  # (T, B, E)
        out, hidden = self.lstm(x, hidden)  # (T, B, H)
        logits = self.head(self.drop(out))  # (T, B, V)
        return logits.transpose(0, 1), hidden  # (B, T, V), a view: no copy

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def detach(hidden: Hidden) -> Hidden:
    """Cut the graph between truncated-BPTT windows, keeping the values."""
    return hidden[0].detach(), hidden[1].detach()


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """(B, T, V) logits and (B, T) targets -> loss in nats per character."""
    vocab = logits.shape[-1]
    # forward() returns a transposed view of time-major logits: transposing back is free.
    return F.cross_entropy(logits.transpose(0, 1).reshape(-1, vocab).float(), targets.t().reshape(-1),
                           reduction=reduction)
