"""train.precision = "auto" on a CPU: time a few training steps of the run's own shape in fp32 and in bf16, and
train in the faster.

Whether bf16 pays depends on the CPU (AMX tiles, AVX-512 BF16, or neither, where it is emulated), on torch's
oneDNN and on the shape, so the choice is measured rather than read off a CPU flag. A measurement takes a
second or two before training starts and is cached per CPU, torch version, thread count and shape in the
corpus cache dir (precision.json), so a second run of the same shape starts at once. On CUDA, auto means bf16
where the card has it (see `charrnn.devices.resolve_precision`).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass

import torch

from charrnn.config import ModelConfig
from charrnn.data.cache import cache_dir
from charrnn.devices import autocast, resolve_precision
from charrnn.errors import UserError
from charrnn.files import write_atomic
from charrnn.model import CharRNN, cross_entropy

STEPS = 3  # timed steps per precision, after one untimed warm-up step; the fastest counts
MARGIN = 1.05  # bf16 must beat fp32 by this much: within timing noise, fp32 (exact) wins
CACHE = "precision.json"


@dataclass(frozen=True)
class Choice:
    precision: str  # 'fp32', 'bf16' or 'fp16'
    why: str  # for the user: what decided it


def choose_precision(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                     device: torch.device) -> Choice:
    """The precision a run trains in: `precision` itself unless it is 'auto'."""
    resolved = resolve_precision(precision, device, model_cfg.cell)
    if precision != "auto" or device.type != "cpu" or resolved == "fp32":
        reasons = {"cuda": {"bf16": "the card runs bf16", "fp32": "the card has no bf16"},
                   "cpu": {"fp32": "no bf16 kernel for this cell on this CPU"}}
        why = reasons.get(device.type, {}).get(resolved, "") if precision == "auto" else ""
        return Choice(resolved, why)
    key = json.dumps([_cpu_name(), torch.__version__, torch.get_num_threads(), model_cfg.cell, model_cfg.num_layers,
                      model_cfg.hidden_size, model_cfg.embed_dim, vocab_size, batch_size, seq_len])
    cached = _read_cache().get(key)
    if isinstance(cached, (int, float)) and math.isfinite(cached) and cached > 0:
        return _decide(float(cached), "cached")
    ratio = _seconds_per_step("fp32", model_cfg, vocab_size, batch_size, seq_len, device) / \
        _seconds_per_step("bf16", model_cfg, vocab_size, batch_size, seq_len, device)
    _write_cache(key, ratio)
    return _decide(ratio, "measured")


def _decide(ratio: float, how: str) -> Choice:
    """`ratio` is bf16's speed as a multiple of fp32's."""
    return Choice("bf16" if ratio >= MARGIN else "fp32", f"{how}: bf16 trains this shape at {ratio:.2f}x fp32's speed")


def _seconds_per_step(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                      device: torch.device) -> float:
    """The fastest of STEPS training steps (forward, backward, AdamW) of a fresh model on random ids."""
    with torch.random.fork_rng(devices=[]):  # the run's own seeding is untouched
        torch.manual_seed(0)
        model = CharRNN(vocab_size, model_cfg).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(vocab_size, (batch_size, seq_len + 1), device=device)
        best = math.inf
        for step in range(STEPS + 1):
            start = time.perf_counter()
            with autocast(device, precision):
                logits, _ = model(ids[:, :-1])
                loss = cross_entropy(logits, ids[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step:  # the first step pays for allocation and kernel selection
                best = min(best, time.perf_counter() - start)
    return best


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_cache() -> dict[str, object]:
    try:
        data = json.loads((cache_dir() / CACHE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, ratio: float) -> None:
    """Remember a measurement; a cache dir that cannot be written only means measuring again next time."""
    data = {**_read_cache(), key: ratio}
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_atomic(cache_dir() / CACHE, json.dumps(data, indent=1) + "\n")
    except (OSError, UserError):
        pass
