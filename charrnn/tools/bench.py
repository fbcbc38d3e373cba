"""`charrnn bench`: the machine's matmul peak, a bare PyTorch training loop, charrnn's real loop, and sampling.

FLOPs per character, for a layer with input width E_in and H units: 2 * 4H * (E_in + H) for the
forward pass (four gates, each a matmul over [x, h]), times 3 for training (backward costs about
twice the forward), plus 3 * 2 * H * V for the head.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from charrnn.config import ModelConfig, load_config
from charrnn.data.encoding import load_corpus
from charrnn.devices import available_memory, resolve_device
from charrnn.errors import UserError
from charrnn.generation.sampling import generate
from charrnn.model import CharRNN, training_bytes
from charrnn.model import train_flops_per_char as model_flops_per_char
from charrnn.training.loop import train
from charrnn.training.optim import adamw
from charrnn.training.throughput import sync
from charrnn.vocab import Vocab

SAMPLE_CELLS = ("lstm", "gru", "rnn")  # single-stream sampling speed is measured for each


@dataclass(frozen=True)
class Shape:
    num_layers: int
    hidden_size: int

    def __str__(self) -> str:
        return f"{self.num_layers}x{self.hidden_size}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        """'2x512' -> Shape(2, 512); ValueError unless both are positive integers."""
        layers, _, size = text.lower().partition("x")
        shape = cls(int(layers), int(size))
        if not (1 <= shape.num_layers <= 1024 and 1 <= shape.hidden_size <= 1 << 20):
            raise ValueError(text)
        return shape


@dataclass(frozen=True)
class Row:
    shape: str
    raw_chars_per_sec: float
    charrnn_chars_per_sec: float
    gflops: float  # achieved by charrnn's loop
    pct_of_peak: float
    ratio: float  # charrnn / raw


def train_flops_per_char(shape: Shape, embed_dim: int, vocab_size: int) -> float:
    """Training FLOPs per character of an LSTM of this shape (`charrnn.model.train_flops_per_char`)."""
    cfg = ModelConfig(embed_dim=embed_dim, hidden_size=shape.hidden_size, num_layers=shape.num_layers)
    return model_flops_per_char(vocab_size, cfg)


def matmul_peak(device: torch.device, repeats: int = 5) -> float:
    """GFLOP/s of a large fp32 matrix product: the best of `repeats`."""
    size = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def raw_loop(shape: Shape, embed_dim: int, vocab_size: int, batch_size: int, seq_len: int, steps: int,
             device: torch.device) -> float:
    """chars/s of a bare Embedding + LSTM + Linear step with AdamW and clipping on random ids."""
    torch.manual_seed(0)
    embed = nn.Embedding(vocab_size, embed_dim).to(device)
    lstm = nn.LSTM(embed_dim, shape.hidden_size, shape.num_layers).to(device)
    head = nn.Linear(shape.hidden_size, vocab_size).to(device)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = adamw(params, 1e-3, device)
    x = torch.randint(0, vocab_size, (seq_len, batch_size), device=device)  # (T, B)
    y = torch.randint(0, vocab_size, (seq_len, batch_size), device=device)
    hidden = None

    def step() -> None:
        nonlocal hidden
        out, hidden = lstm(embed(x), hidden)
        hidden = tuple(t.detach() for t in hidden)
        loss = nn.functional.cross_entropy(head(out).reshape(-1, vocab_size), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    sync(device)
    start = time.perf_counter()  # from a cold start, as charrnn_loop measures
    for _ in range(steps):
        step()
    sync(device)
    return batch_size * seq_len * steps / (time.perf_counter() - start)


def charrnn_loop(corpus: Path, shape: Shape, embed_dim: int, batch_size: int, seq_len: int, steps: int,
                 device: torch.device) -> float:
    """chars/s of charrnn's own `train()` on a real corpus, from a cold start like `raw_loop`."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, values={
            "model.num_layers": shape.num_layers, "model.hidden_size": shape.hidden_size,
            "model.embed_dim": embed_dim, "train.batch_size": batch_size, "train.seq_len": seq_len,
            "train.max_steps": steps, "train.log_every": steps, "train.eval_every": 1_000_000,
            "train.checkpoint_every": 1_000_000, "train.sample_every": 0, "train.eval_chars": 1,
            "train.device": str(device), "data.val_fraction": 0.01, "data.path": str(corpus)})
        return train(cfg, Path(tmp) / "run", progress=False).chars_per_sec


def sampling_speed(shape: Shape, embed_dim: int, vocab_size: int, num_samples: int, length: int,
                   device: torch.device, cell: str = "lstm") -> float:
    """chars/s generated by `num_samples` streams together (random weights; speed does not depend on them)."""
    torch.manual_seed(0)
    vocab = Vocab("".join(chr(32 + i) for i in range(vocab_size)))
    model = CharRNN(vocab_size, ModelConfig(cell=cell, embed_dim=embed_dim, hidden_size=shape.hidden_size,
                                            num_layers=shape.num_layers)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    prime = vocab.chars[0]
    for _ in generate(model, vocab, prime, 20, num_samples=num_samples, generator=generator):
        pass
    sync(device)
    start = time.perf_counter()
    for _ in generate(model, vocab, prime, length, num_samples=num_samples, generator=generator):
        pass
    sync(device)
    return num_samples * length / (time.perf_counter() - start)


@dataclass(frozen=True)
class BenchResult:
    device: str
    matmul_gflops: float
    batch_size: int
    seq_len: int
    rows: list[Row]
    sample_shape: str
    sample_single: dict[str, float]  # one stream, per cell
    sample_batched: float  # LSTM, `sample_streams` streams together
    sample_streams: int

    def to_dict(self) -> dict:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


def run_bench(corpus: Path, shapes: list[Shape], device_name: str = "auto", batch_size: int = 64,
              seq_len: int = 100, steps: int = 8, rounds: int = 2, embed_dim: int = 64,
              sample_length: int = 400, report: Callable[[str], None] = lambda s: None) -> BenchResult:
    """Measure everything in one run on one device; each loop's figure is the best of `rounds`."""
    device = resolve_device(device_name)
    vocab_size = load_corpus(corpus, progress=False).vocab.size
    for shape in shapes:
        _check_memory(shape, embed_dim, vocab_size, batch_size, seq_len, device)
    peak = matmul_peak(device)
    report(f"matmul peak: {peak:.1f} GFLOP/s on {device}")
    rows = []
    for shape in shapes:
        raw = ours = 0.0
        for _ in range(rounds):  # interleaved, so a noisy neighbour hurts both alike
            raw = max(raw, raw_loop(shape, embed_dim, vocab_size, batch_size, seq_len, steps, device))
            ours = max(ours, charrnn_loop(corpus, shape, embed_dim, batch_size, seq_len, steps, device))
        gflops = train_flops_per_char(shape, embed_dim, vocab_size) * ours / 1e9
        rows.append(Row(str(shape), raw, ours, gflops, 100 * gflops / peak, ours / raw))
        report(f"{shape}: raw {raw:,.0f} chars/s, charrnn {ours:,.0f} chars/s")
    sample_shape = Shape(2, 512)
    streams = 32
    single = dict.fromkeys(SAMPLE_CELLS, 0.0)
    batched = 0.0
    for _ in range(rounds):
        for cell in SAMPLE_CELLS:
            single[cell] = max(single[cell], sampling_speed(sample_shape, embed_dim, vocab_size, 1, sample_length,
                                                            device, cell))
        batched = max(batched, sampling_speed(sample_shape, embed_dim, vocab_size, streams, sample_length, device))
    return BenchResult(str(device), peak, batch_size, seq_len, rows, str(sample_shape), single, batched, streams)


def _check_memory(shape: Shape, embed_dim: int, vocab_size: int, batch_size: int, seq_len: int,
                  device: torch.device) -> None:
    """Refuse a shape whose training cannot fit, before any of the bench runs."""
    cfg = ModelConfig(embed_dim=embed_dim, hidden_size=shape.hidden_size, num_layers=shape.num_layers)
    need, free = training_bytes(vocab_size, cfg, batch_size, seq_len), available_memory(device)
    if free is not None and need > free:
        raise UserError(f"--shapes {shape} with --batch-size {batch_size} and --seq-len {seq_len} needs about "
                        f"{need / 2**30:,.1f} GiB to train, but {device} has {free / 2**30:,.1f} GiB free")


def format_table(result: BenchResult) -> str:
    """The bench as a Markdown table, ready for the README."""
    lines = [f"device: {result.device}; matmul peak {result.matmul_gflops:.1f} GFLOP/s; "
             f"batch {result.batch_size} x seq_len {result.seq_len}", "",
             "| shape | raw loop chars/s | charrnn chars/s | charrnn / raw | GFLOP/s | % of matmul peak |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.shape} | {r.raw_chars_per_sec:,.0f} | {r.charrnn_chars_per_sec:,.0f} | {r.ratio:.2f} | "
              f"{r.gflops:.1f} | {r.pct_of_peak:.0f}% |" for r in result.rows]
    lstm = result.sample_single["lstm"]
    lines += ["", "| sampling, " + result.sample_shape + " | chars/s |", "|---|---:|",
              f"| LSTM, 1 stream | {lstm:,.0f} |",
              f"| LSTM, {result.sample_streams} streams together | {result.sample_batched:,.0f} "
              f"({result.sample_batched / lstm:.1f}x) |"]
    lines += [f"| {cell.upper()}, 1 stream | {speed:,.0f} |" for cell, speed in result.sample_single.items()
              if cell != "lstm"]
    return "\n".join(lines)
