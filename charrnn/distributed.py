"""Devices and torch.distributed: one process by default, DDP when started by torchrun."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from charrnn.errors import UserError


@dataclass(frozen=True)
class Context:
    """Which process this is and where it computes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice:
        """This process's contiguous share of `batch_size` streams."""
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def sum(self, tensor: Tensor) -> Tensor:
        """Sum over all processes (in place); the identity in a single process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_rows(self, tensor: Tensor, dim: int) -> Tensor:
        """Concatenate every process's `tensor` along `dim`, in rank order."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def agree(self, code: int) -> int:
        """The largest of every process's `code`, so that all of them stop at the same step."""
        if not self.enabled:
            return code
        flag = torch.tensor([code], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


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


def setup(device_name: str) -> Context:
    """Join the process group when torchrun started us (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size == 1:
        return Context(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(device, dist.get_rank(), dist.get_world_size())


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Mixed precision for bf16/fp16 (CUDA only); nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
