"""Picking a device and mixed precision."""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext

import torch

from charrnn.config import MAX_INT
from charrnn.errors import UserError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without CUDA is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
        try:
            device = torch.device(name if ":" in name else f"cuda:{local_rank}")
        except RuntimeError:
            raise UserError(f"bad device {name!r}: use auto, cpu, cuda or cuda:N") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    raise UserError(f"bad device {name!r}: use auto, cpu, cuda or cuda:N")


def resolve_precision(precision: str, device: torch.device, cell: str = "lstm") -> str:
    """'auto' -> 'bf16' on a CUDA card with bf16, and on a CPU that has a bf16 kernel for the cell (training then
    times both and keeps the faster: `charrnn.training.precision`); 'fp32' elsewhere."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and _cpu_runs_bf16(cell) else "fp32"


def check_precision(precision: str, device: torch.device, cell: str) -> None:
    """Refuse bf16 on a CPU whose oneDNN has no bf16 kernel for the fused cell (no AVX-512 BF16, no AMX)."""
    if precision == "bf16" and device.type == "cpu" and not _cpu_runs_bf16(cell):
        raise UserError(f"train.precision bf16: this CPU cannot run the fused {cell.upper()} in bf16 (oneDNN has no "
                        "bf16 kernel for it here); use fp32, or auto to pick what runs")


@functools.cache
def _cpu_runs_bf16(cell: str) -> bool:
    """Whether a tiny fused `cell` trains under CPU bf16 autocast: oneDNN refuses where the CPU lacks bf16 support."""
    with torch.random.fork_rng(devices=[]):
        rnn = getattr(torch.nn, cell.upper())(8, 8)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = rnn(torch.zeros(2, 1, 8))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Mixed precision for bf16 (CUDA or CPU) and fp16 (CUDA); nothing for fp32 (resolve 'auto' first)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seeded_generator(device: torch.device | str, seed: int | None) -> torch.Generator:
    """A random generator on `device`: seeded when `seed` is given, else from the OS's entropy."""
    if seed is not None and not 0 <= seed <= MAX_INT:
        raise UserError(f"--seed must be in [0, 2**63), got {seed}")
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def available_memory(device: torch.device) -> int | None:
    """Bytes free for tensors on `device` now (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
