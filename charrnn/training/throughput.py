"""Seconds per training step of a shape on this device: measured on random ids, and cached per machine.

Both choices that depend on the hardware read this: `train.precision = "auto"` (the faster of fp32 and bf16)
and the run planner (how many steps each candidate shape gets in the budget). A run that trains to its time budget
also leaves here the share of its trial's speed that its loop kept, evaluations and dropout included, so that the
next plan expects the steps this machine's runs really make. A measurement is a few steps of
a fresh model, so it takes well under a second for a small shape; the cache (throughput.json in the corpus
cache dir) is keyed by the CPU or card, the torch version and the thread count, so a second run of the same
shape reads it at once.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from time import perf_counter
from typing import NamedTuple

import torch

from charrnn.config import ModelConfig
from charrnn.data.cache import cache_dir
from charrnn.devices import autocast
from charrnn.errors import UserError
from charrnn.files import write_atomic
from charrnn.model import CharRNN, adaptive
from charrnn.training.optim import adamw

# Timed steps, after one untimed warm-up step; the fastest counts. Two were not enough on a Zen 4 EPYC, whose bf16
# steps swing by up to 1.6x within seconds: fresh plans of War and Peace read 1 x 512 at 98-129 ms a step with two,
# 89-96 ms with four (docs/results.md), and one slow reading decides which width trains.
STEPS = 4
# Seconds: one timed step this long is timed well enough (a 9,000-symbol head's steps are slow). Shorter steps are
# timed STEPS times: one step of 0.3 s, timed once, can read half its speed on a busy VM (1 x 384 at 1.4 steps/s
# where 2 x 384 made 2.4), and one bad reading decides a plan.
LONG_STEP = 1.0
CACHE = "throughput.json"
# What a trial's step is, in the cache's keys: a new one when the step changes (2: the fused AdamW on the CPU; 3: the
# model's dropout, which the keys now hold; 4: a halved window's timing, taken in turns with its full window's; 5:
# the fastest of four steps, not two), so that timings of the old step are measured again rather than read.
TRIAL = 5
LOOP = "loop"  # the first field of a loop share's key; the rest are its trial's
LOOP_RUNS = 5  # a shape's latest runs, whose shares count: a machine that slowed down is followed
# A share outside this is no loop's speed but a run that was paused or starved (a SIGSTOP, another trainer).
SHARE_RANGE = (0.2, 2.0)


def step_seconds(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                 device: torch.device) -> tuple[float, bool]:
    """(seconds per step, whether it came from the cache) for this shape in `precision` on `device`."""
    cached = cached_seconds(precision, model_cfg, vocab_size, batch_size, seq_len, device)
    if cached is not None:
        return cached, True
    seconds = seconds_per_step(precision, model_cfg, vocab_size, batch_size, seq_len, device)
    write_cache({**read_cache(), _key(precision, model_cfg, vocab_size, batch_size, seq_len, device): seconds})
    return seconds, False


def cached_seconds(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                   device: torch.device) -> float | None:
    """The cached seconds per step of this shape, if it was measured on this machine before; None if not."""
    cached = read_cache().get(_key(precision, model_cfg, vocab_size, batch_size, seq_len, device))
    return float(cached) if isinstance(cached, (int, float)) and math.isfinite(cached) and cached > 0 else None


def learn_loop(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
               device: torch.device, steps: int, seconds: float) -> float | None:
    """Remember the share of its trial's speed that a run's loop kept, `steps` in `seconds` of its budget; the
    share, or None where the shape was never timed or the share is out of SHARE_RANGE."""
    trial = cached_seconds(precision, model_cfg, vocab_size, batch_size, seq_len, device)
    share = steps * trial / seconds if trial is not None and seconds > 0 else math.nan
    if not SHARE_RANGE[0] <= share <= SHARE_RANGE[1]:
        return None
    cache, key = read_cache(), _loop_key(precision, model_cfg, vocab_size, batch_size, seq_len, device)
    write_cache({**cache, key: [*_shares(cache.get(key))[-(LOOP_RUNS - 1):], share]})
    return share


def loop_shares(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                device: torch.device) -> tuple[list[float], list[float]]:
    """The loop shares runs of this shape kept on this machine (`learn_loop`), and those of every shape."""
    fields = _fields(precision, model_cfg, vocab_size, batch_size, seq_len, device)
    machine = json.dumps([LOOP, *fields[:4]])[:-1] + ", "  # TRIAL, the device, the torch version, the threads
    cache = read_cache()
    every = [share for k, v in cache.items() if k.startswith(machine) for share in _shares(v)]
    return _shares(cache.get(json.dumps([LOOP, *fields]))), every


def _shares(value: object) -> list[float]:
    """A cached list of loop shares, less anything a hand or another version put there."""
    values = value if isinstance(value, list) else []
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and SHARE_RANGE[0] <= v <= SHARE_RANGE[1]]


def _loop_key(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
              device: torch.device) -> str:
    return json.dumps([LOOP, *_fields(precision, model_cfg, vocab_size, batch_size, seq_len, device)])


def _key(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
         device: torch.device) -> str:
    return json.dumps(_fields(precision, model_cfg, vocab_size, batch_size, seq_len, device))


def _fields(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
            device: torch.device) -> list[object]:
    """What a trial's timing holds for: the trial's kind, the machine, and the shape."""
    return [TRIAL, device_name(device), torch.__version__, torch.get_num_threads(), precision, model_cfg.cell,
            model_cfg.num_layers, model_cfg.hidden_size, model_cfg.embed_dim, vocab_size, batch_size, seq_len,
            model_cfg.dropout, model_cfg.embed_dropout, model_cfg.weight_dropout,
            *([model_cfg.head_cutoff] if adaptive(vocab_size, model_cfg) else [])]  # the older keys hold for full heads


def seconds_per_step(precision: str, model_cfg: ModelConfig, vocab_size: int, batch_size: int, seq_len: int,
                     device: torch.device) -> float:
    """The fastest of STEPS training steps (forward, backward, AdamW) of a fresh model on random ids, with the
    dropout its config has, or the one step after the warm-up when that took over LONG_STEP."""
    return _trials([Trial(precision, model_cfg, batch_size, seq_len)], vocab_size, device, STEPS)[0]


class Trial(NamedTuple):
    """One shape a plan compares: a model in a precision, at a batch size and seq_len."""

    precision: str
    model: ModelConfig
    batch_size: int
    seq_len: int


def turn_seconds(trials: Sequence[Trial], vocab_size: int, device: torch.device, rounds: int = STEPS) -> list[float]:
    """Seconds per step of each trial, timed in turns, `rounds` steps of each, and cached.

    Two trials taken an hour apart can differ by 15% on a VM, more than a halved window gains or than separates two
    finalists (a 1 x 768 trial read 96 ms, and 110-125 ms two hours later: docs/results.md), so what a plan compares
    is timed in turns. Each trial's speed is its ratio to the first's times the first's cached speed where it has
    one, so that the loop shares learnt against that speed still hold and the others are read on its scale."""
    seconds = _trials(trials, vocab_size, device, rounds)
    first = cached_seconds(trials[0].precision, trials[0].model, vocab_size, trials[0].batch_size, trials[0].seq_len,
                           device)
    seconds = [s * (first / seconds[0] if first is not None else 1.0) for s in seconds]
    write_cache({**read_cache(), **{_key(t.precision, t.model, vocab_size, t.batch_size, t.seq_len, device): s
                                    for t, s in zip(trials, seconds, strict=True)}})
    return seconds


def _trials(trials: Sequence[Trial], vocab_size: int, device: torch.device, rounds: int) -> list[float]:
    """The fastest of `rounds` steps of each trial on a fresh model of its shape, one step of each a round, after an
    untimed warm-up round (the first step of a shape pays for allocation and kernel selection); a trial whose step
    took over LONG_STEP is not timed again."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's seeding is untouched
        torch.manual_seed(0)
        nets = {}  # one model per shape: a shape's windows train the same one, as its run would
        for t in trials:
            if t.model not in nets:
                model = CharRNN(vocab_size, t.model).to(device)
                nets[t.model] = model, adamw(model.parameters(), 1e-4, device)  # the run's own AdamW
        # An adaptive head's steps are timed on its own symbols: the rare cluster's few are next to free.
        batches = [torch.randint(t.model.head_cutoff if adaptive(vocab_size, t.model) else vocab_size,
                                 (t.batch_size, t.seq_len + 1), device=device) for t in trials]
        best = [math.inf] * len(trials)
        for round_ in range(rounds + 1):
            for i, (trial, ids) in enumerate(zip(trials, batches, strict=True)):
                model, optimizer = nets[trial.model]
                if LONG_STEP < best[i] < math.inf:
                    continue  # one long step is timed well enough, and costs what `trial_seconds` counts
                sync(device)
                start = perf_counter()
                with autocast(device, trial.precision):
                    loss, _ = model(ids[:, :-1], None, ids[:, 1:])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sync(device)
                if round_:
                    best[i] = min(best[i], perf_counter() - start)
    return best


def prepare() -> None:
    """Pay torch's one-time cost of a process's first optimizer, a lazy import (1.2 s on a 2-core Xeon), which every
    run pays whether it plans or not: so that the planning's own seconds are not charged with it."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def trial_seconds(per_step: float) -> float:
    """What `seconds_per_step` costs for a shape of about `per_step` seconds a step: its warm-up and timed steps."""
    return per_step * (2 if per_step > LONG_STEP else STEPS + 1)


def sync(device: torch.device) -> None:
    """Wait for a CUDA device's queued work, so that a clock reads what it did; nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """The CPU's model name, or the CUDA card's: what a measurement holds for."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_cache() -> dict[str, object]:
    try:
        data = json.loads((cache_dir() / CACHE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(data: dict[str, object]) -> None:
    """Remember measurements; a cache dir that cannot be written only means measuring again next time."""
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_atomic(cache_dir() / CACHE, json.dumps(data, indent=1) + "\n")
    except (OSError, UserError):
        pass
