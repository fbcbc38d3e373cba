"""ONNX export: the model as a graph that any ONNX runtime can run and sample from, without charrnn or torch.

    inputs:  ids (int64, [batch, time]), h0 (+ c0 for the LSTM) (float32, [num_layers, batch, hidden_size])
    outputs: logits (float32, [batch, time, vocab]; an adaptive head's are log-probabilities, the same softmax),
             hn (+ cn)
    metadata_props: vocab (JSON string; id i is character i), byte_level, config (JSON), cell, charrnn_version

The recurrent layers become ONNX's own LSTM / GRU / RNN operators, so the batch and time axes stay dynamic.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from charrnn import __version__
from charrnn.checkpoint import load_model
from charrnn.errors import UserError
from charrnn.files import write_atomic
from charrnn.model import CharRNN
from charrnn.vocab import Vocab

OPSET = 17  # onnxruntime >= 1.13 runs it
INSTALL_HINT = "ONNX export needs the onnx and onnxruntime packages: pip install 'charrnn[export]'"


@dataclass(frozen=True)
class Exported:
    """What `export_onnx` wrote, and how closely onnxruntime reproduced torch on a check batch."""

    path: Path
    cell: str
    inputs: list[str]
    outputs: list[str]
    max_abs_diff: float  # largest |logits_onnx - logits_torch| over the check batch


class _Graph(nn.Module):
    """The model with its state as separate tensors, which is what an ONNX signature can name."""

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, hidden = self.model(ids, tuple(state))
        return (logits, *hidden)


def state_names(model: CharRNN) -> tuple[list[str], list[str]]:
    """Names of the initial and final state tensors: (h0, c0), (hn, cn) for the LSTM; (h0,), (hn,) otherwise."""
    letters = "hc"[: model.state_size]
    return [f"{x}0" for x in letters], [f"{x}n" for x in letters]


def export_onnx(checkpoint: Path, out: Path) -> Exported:
    """Write a checkpoint's (or run dir's) model to `out` as ONNX, then check it against torch with onnxruntime."""
    try:
        import onnx  # noqa: F401 - both are needed below; fail before any work
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    loaded = load_model(checkpoint, "cpu")
    model = loaded.model
    graph = to_onnx(model)
    for key, value in metadata(loaded.vocab, loaded.config.to_dict(), model.cfg.cell).items():
        graph.metadata_props.add(key=key, value=value)
    data = graph.SerializeToString()
    write_atomic(Path(out), data)
    state_in, state_out = state_names(model)
    diff = max_abs_diff(model, data)
    return Exported(Path(out), model.cfg.cell, ["ids", *state_in], ["logits", *state_out], diff)


def to_onnx(model: CharRNN) -> Any:
    """The model as an `onnx.ModelProto` with dynamic batch and time axes."""
    import onnx

    state_in, state_out = state_names(model)
    ids = torch.zeros(2, 3, dtype=torch.long)  # (B, T): any shape; both axes are declared dynamic below
    state = model.init_hidden(2)
    axes = {"ids": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    axes.update({name: {1: "batch"} for name in state_in + state_out})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but torch.export's (torch 2.13, onnxscript 0.7) unrolls the
        # recurrence over the example's time length; this one emits ONNX's LSTM / GRU / RNN operators.
        warnings.simplefilter("ignore")
        # The wrapper in eval mode: the exporter puts the wrapper's own mode back on every submodule afterwards,
        # and a fresh module's is training, which would turn dropout on in the model it wraps.
        torch.onnx.export(_Graph(model).eval(), (ids, *state), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["ids", *state_in], output_names=["logits", *state_out], dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def metadata(vocab: Vocab, config: dict[str, Any], cell: str) -> dict[str, str]:
    """What a runtime needs to sample without charrnn: the vocabulary (id i is character i) and the config."""
    return {"vocab": json.dumps(vocab.chars), "byte_level": json.dumps(vocab.byte_level),
            "config": json.dumps(config), "cell": cell, "charrnn_version": __version__}


def max_abs_diff(model: CharRNN, onnx_bytes: bytes, batch_size: int = 3, seq_len: int = 50) -> float:
    """Largest logit difference between onnxruntime and torch on random ids from a random state."""
    import onnxruntime

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(model.vocab_size, (batch_size, seq_len), generator=generator)
    state = tuple(torch.randn(t.shape, generator=generator) for t in model.init_hidden(batch_size))
    with torch.inference_mode():
        logits, _ = model(ids, state)
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    feeds = dict(zip(["ids", *state_names(model)[0]], [ids.numpy(), *(t.numpy() for t in state)], strict=True))
    (onnx_logits,) = session.run(["logits"], feeds)
    return float((torch.from_numpy(onnx_logits) - logits).abs().max())
