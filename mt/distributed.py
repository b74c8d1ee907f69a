"""DistributedDataParallel plumbing for `torchrun -m mt.train`: process group, sharding, reductions.

Without torchrun (WORLD_SIZE unset or 1) every helper here is a no-op, so the single-process
code path is exactly the plain one.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collective tensors live (NCCL needs CUDA tensors)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_from_env(use_cuda: bool) -> Dist:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # Rank 0 validates while the others wait in a collective: allow long validations.
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return Dist(rank, world, local_rank, f"cuda:{local_rank}" if use_cuda else "cpu")


def shard(group: list[T], d: Dist, accumulate: int) -> list[T]:
    """This rank's micro-batches of one update: `accumulate` consecutive batches per rank, disjoint."""
    return group[d.rank * accumulate : (d.rank + 1) * accumulate]


def all_sum(values: list[float], d: Dist) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, d: Dist) -> bool:
    return bool(all_sum([float(flag)], d)[0]) if d.enabled else flag


def gather(obj: T, d: Dist) -> list[T]:
    if not d.enabled:
        return [obj]
    out: list = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: T, d: Dist) -> T:
    """Rank 0's `obj` on every rank (the others pass a placeholder)."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=torch.device(d.device))
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def max_param_divergence(model: torch.nn.Module, d: Dist) -> float:
    """Largest |param - rank 0's param| over all ranks; 0.0 means the replicas are identical."""
    if not d.enabled:
        return 0.0
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff[0])


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
