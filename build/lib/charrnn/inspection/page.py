"""The page of `charrnn visualize`: one HTML file with its CSS, script and data inline.

The data is quantised and deflated: tanh(c) and h of every cell in a few signed steps each, and
the gates not at all: the page computes a cell's gate from the stored h of the layer (and of the
layer below) with the gate's weights in int8, to within a few hundredths. Storing every gate of
every cell instead would double the page: about 28 MB for 20,000 characters of a 2x512 LSTM
rather than 15, measured on a model trained on tinyshakespeare.txt.
"""

from __future__ import annotations

import base64
import json
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from charrnn.files import write_atomic
from charrnn.inspection.activations import SIGMOID_GATES, Activations
from charrnn.inspection.visualize import Visualization, mean_bits

LEVELS = {"c": 9, "h": 7}  # steps per unit of asinh(c) / asinh(its cell's largest |c|), and of h
TOP_K = 5  # next-character predictions kept per character
SPARK_POINTS = 160  # characters in each probe's sparkline
SATURATED = (0.1, 0.9)  # a gate below the first is left-saturated, above the second right-saturated


def write_page(vis: Visualization, out: Path) -> int:
    """Write the self-contained HTML page to `out`; returns its size in bytes."""
    # Inside <script>, "</" could end the element early and "<!--" could change how it is parsed.
    data = json.dumps(page_data(vis), separators=(",", ":")).replace("</", "<\\/").replace("<!--", "\\u003c!--")
    template = resources.files("charrnn.inspection").joinpath("visualize.html").read_text(encoding="utf-8")
    page = template.replace("/*DATA*/null", data, 1).encode("utf-8")
    write_atomic(Path(out), page, make_parent=True)
    return len(page)


def page_data(vis: Visualization) -> dict[str, object]:
    """Everything the page shows, as JSON-ready values; large arrays deflated, in base85 (see `_pack`)."""
    acts, cfg = vis.acts, vis.model.cfg
    top = np.argsort(-acts.probs, axis=1)[:, :TOP_K]  # (T, K)
    top_p = np.take_along_axis(acts.probs, top, axis=1)
    surprisal = np.round(vis.surprisal * 1000)  # millibits; 65535 marks "unknown"
    start = vis.start[0][:, 0] if vis.start is not None else torch.zeros(cfg.num_layers, cfg.hidden_size)
    scales = _scales(acts)
    return {
        "checkpoint": str(vis.checkpoint), "textFile": str(vis.text_file), "offset": vis.offset,
        "skipped": vis.skipped, "cell": acts.cell, "layers": cfg.num_layers, "hidden": cfg.hidden_size,
        "text": vis.text, "vocab": vis.vocab.chars, "ids": _pack(vis.ids.astype(np.uint16)),
        "signals": list(acts.signals), "levels": {k: v for k, v in LEVELS.items() if k in acts.signals},
        "blocks": {name: [_pack(_quantize(acts.signals[name][layer], name, scales[name][layer]))
                          for layer in range(cfg.num_layers)] for name in scales},
        "scales": {name: [[float(f"{x:.5g}") for x in row] for row in scale] for name, scale in scales.items()},
        "gates": [_gate_weights(vis, layer) for layer in range(cfg.num_layers)],
        "h0": np.round(start.float().cpu().numpy(), 5).tolist(),
        "top": _pack(top.astype(np.uint16)), "topP": _pack(np.round(top_p * 65535).astype(np.uint16)),
        "surprisal": _pack(np.nan_to_num(surprisal, nan=65535).clip(0, 65535).astype(np.uint16)),
        "bpc": mean_bits(vis.surprisal),
        "saturation": {gate: {"left": np.round((acts.signals[gate] < SATURATED[0]).mean(axis=1), 3).tolist(),
                              "right": np.round((acts.signals[gate] > SATURATED[1]).mean(axis=1), 3).tolist()}
                       for gate in SIGMOID_GATES[acts.cell]},
        "probes": [{**result.to_dict(), "spark": _spark(vis, probe.values, result.signal, result.layer, result.cell)}
                   for probe, result in zip(vis.probes, vis.results, strict=True)],
    }


def _scales(acts: Activations) -> dict[str, np.ndarray]:
    """Signal -> (L, H): the largest value each cell's stored steps reach (see `_quantize`)."""
    layers, _, size = acts.signals["h"].shape
    scales = {"h": np.ones((layers, size), np.float32)}
    if "c" in acts.signals:
        largest = np.arcsinh(np.maximum(np.abs(acts.signals["c"]).max(axis=1), 1e-3))
        scales = {"c": np.array([[float(f"{x:.5g}") for x in row] for row in largest], np.float32), **scales}
    return scales


def _quantize(values: np.ndarray, signal: str, scale: np.ndarray) -> np.ndarray:
    """(T, H) values -> (H, T) int8 steps of scale / LEVELS[signal], cell by cell.

    A cell state is stored as asinh(c): as fine as tanh(c) near 0, yet a cell whose c reaches 10 or 100
    (where tanh(c) is -1 or 1 throughout) still shows how c follows the text. The page inverts it.
    """
    shown = np.arcsinh(values) if signal == "c" else values
    return np.round((shown / scale).T * LEVELS[signal]).astype(np.int8)


def _pack(array: np.ndarray) -> str:
    """An array's little-endian bytes, deflated (for DecompressionStream in the page) and in base85.

    Base85 (RFC 1924's alphabet) is 6% smaller than base64, and holds no quote, backslash or slash.
    """
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return base64.b85encode(zlib.compress(raw, 6)).decode("ascii")  # level 9 is 7x slower for 1% less


def _per_row(matrix: np.ndarray, dtype: type) -> tuple[np.ndarray, list[float]]:
    """Each row in integers of `dtype` times its own scale."""
    scale = np.abs(matrix).max(axis=1) / np.iinfo(dtype).max
    scale[scale == 0] = 1.0
    return np.round(matrix / scale[:, None]).astype(dtype), scale.astype(np.float32).tolist()


@torch.no_grad()
def _gate_weights(vis: Visualization, layer: int) -> dict[str, dict[str, object]]:
    """What the page needs to compute each gate of a layer: pre-activation = input part + W_hh h_{t-1}."""
    model = vis.model
    w_ih, w_hh, b_ih, b_hh = (t.float().cpu() for t in model.layer_weights(layer))
    out: dict[str, dict[str, object]] = {}
    for gate in SIGMOID_GATES[model.cfg.cell]:
        rows = model.gate_rows(gate)
        bias = b_ih[rows] + b_hh[rows]
        entry: dict[str, object] = {}
        if layer == 0:  # the input is a character: a table of its contribution, (H, V)
            table, scale = _per_row((model.embed.weight.float().cpu() @ w_ih[rows].t() + bias).t().numpy(), np.int16)
            entry.update(table=_pack(table), tableScale=scale)
        else:
            weights, scale = _per_row(w_ih[rows].numpy(), np.int8)
            entry.update(weightIn=_pack(weights), scaleIn=scale, bias=np.round(bias.numpy(), 5).tolist())
        weights, scale = _per_row(w_hh[rows].numpy(), np.int8)
        out[gate] = {**entry, "weightHidden": _pack(weights), "scaleHidden": scale}
    return out


def _spark(vis: Visualization, probe: np.ndarray, signal: str | None, layer: int | None,
           cell: int | None) -> dict[str, list[float]] | None:
    """The probe and its best cell on SPARK_POINTS characters of the held-out half where the probe moves, each 0..1."""
    if signal is None:
        return None
    half = len(vis.text) // 2
    held_out = probe[half:]
    moves = np.flatnonzero(held_out[1:] != held_out[:-1])
    first_move = int(moves[0]) if len(moves) else 0
    start = half + max(0, min(first_move - SPARK_POINTS // 8, len(held_out) - SPARK_POINTS))
    window = slice(start, start + SPARK_POINTS)

    def scaled(values: np.ndarray) -> list[float]:
        low, high = float(values.min()), float(values.max())
        return np.round((values - low) / (high - low) if high > low else values * 0.0, 3).tolist()

    return {"cell": scaled(vis.acts.signals[signal][layer, window, cell].astype(np.float64)),
            "probe": scaled(probe[window].astype(np.float64))}
