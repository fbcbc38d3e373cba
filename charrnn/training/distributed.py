"""Devices and torch.distributed: one process by default, DDP when started by torchrun."""

from __future__ import annotations

import gc
import importlib
import os
import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from charrnn.devices import resolve_device


@dataclass(frozen=True)
class World:
    """The processes of a run: which one this is, how many there are, and where this one computes."""

    device: torch.device
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    def rows(self, batch_size: int) -> slice:
        """This process's contiguous share of `batch_size` streams: equal where it divides (a training batch must),
        else a stream more for the later processes (validation's streams are the same whatever the world size)."""
        return slice(self.rank * batch_size // self.size, (self.rank + 1) * batch_size // self.size)

    def sum(self, tensor: Tensor) -> Tensor:
        """Sum over all processes (in place); the identity in a single process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather_rows(self, tensor: Tensor, dim: int) -> Tensor:
        """Concatenate every process's `tensor` along `dim`, in rank order."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.enabled:
            dist.barrier()

    def agree(self, code: int) -> int:
        """The largest of every process's `code`, so that all of them stop at the same step."""
        if not self.enabled:
            return code
        flag = torch.tensor([code], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


def setup(device_name: str) -> World:
    """Join the process group when torchrun started us (gloo on CPU, NCCL on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size == 1:
        return World(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # DDP imports torch._dynamo, and an import after the group exists holds it in C++ past
        # destroy_process_group: its gloo threads lived on to exit, where they aborted a finished run.
        importlib.import_module("torch._dynamo")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(device, dist.get_rank(), dist.get_world_size())


def teardown(world: World) -> None:
    """Leave the process group; the caller has let go of its DDP model by now.

    The group must not outlive its last user inside the DDP reducer: the reducer's destructor joins
    gloo's threads holding the GIL, which a gloo thread releasing a finished collective's tensors
    waits for (a deadlock). Destroyed here, through its own Python handle, it joins without the GIL.
    """
    if world.enabled and dist.is_initialized():
        gc.collect()  # a DDP model left in a reference cycle goes first
        dist.destroy_process_group()


def _rng_state(world: World) -> dict[str, Any]:
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if world.device.type == "cuda" else []}


def restore_rng(state: dict[str, Any], world: World) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if world.device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng(world: World) -> list[dict[str, Any]]:
    """Every process's RNG state, in rank order (collective)."""
    if not world.enabled:
        return [_rng_state(world)]
    states: list[Any] = [None] * world.size
    torch.distributed.all_gather_object(states, _rng_state(world))
    return states
