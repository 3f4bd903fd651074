"""Data-parallel training over ``torch.distributed``: one process per rank, started by torchrun.

Every rank holds the whole (small) model and draws the same global batch order; each trains on its
own slice of every batch (``shard``), gradients are averaged with one ``all_reduce`` per step (what
``DistributedDataParallel`` does, without its buckets: the models here are a few MB), and logged
values are reduced across ranks. Only rank 0 writes files and logs to MLflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job: its rank, the world size and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = CPU

    @property
    def is_main(self) -> bool:
        """True on the process that writes outputs (rank 0)."""
        return self.rank == 0


SINGLE = Context()


def setup(backend: str = "auto") -> Context:
    """Join the process group torchrun describes in the environment; a single process otherwise.

    ``backend``: ``gloo`` (CPU), ``nccl`` (one CUDA GPU per rank) or ``auto`` (nccl when CUDA
    GPUs are present, else gloo). Training runs on ``cuda:LOCAL_RANK`` with nccl, else on the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl" and not cuda:
        raise ValueError("distributed.backend=nccl needs CUDA GPUs and none is visible: use gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if backend == "nccl" else CPU
    if world == 1:
        return Context(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Context(dist.get_rank(), dist.get_world_size(), device)


def teardown() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(idx: torch.Tensor, ctx: Context) -> torch.Tensor:
    """This rank's slice of a global batch of indices (every ``world``-th, from ``rank``)."""
    return idx[ctx.rank :: ctx.world]


def broadcast_modules(modules: list[nn.Module], ctx: Context) -> None:
    """Copy rank 0's parameters and buffers (e.g. BatchNorm statistics) to every rank."""
    if ctx.world == 1:
        return
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[nn.Parameter], ctx: Context) -> None:
    """Average the gradients of ``params`` over ranks with one flat ``all_reduce``."""
    if ctx.world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p)
        offset += n


def weighted_mean(values: dict[str, float], weight: float, ctx: Context) -> dict[str, float]:
    """Mean of per-rank means ``values`` weighted by each rank's ``weight`` (e.g. sample count)."""
    if ctx.world == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] * weight for k in keys] + [weight], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(t[i] / t[-1]) for i, k in enumerate(keys)}
