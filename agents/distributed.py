"""Several learner processes under ``torchrun``: one process group, gradients averaged by DDP.

``torchrun --nproc_per_node=K train_rl.py ...`` starts K copies of the CLI with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous in their environment. Each copy is a whole
learner: it owns its envs (on ``cuda:LOCAL_RANK`` when there are GPUs) and its own seed
stream, and the only things the processes exchange are

- the gradients, averaged by `DistributedDataParallel` during each backward pass;
- a few small reductions per iteration (episode statistics, loss metrics, the stop flag)
  and per update (whether the loss is finite on every rank; PPO's KL when ``target_kl`` is on);
- objects from rank 0 at the start (the checked config and the checkpoint to resume from)
  and the RNG states of every rank when a checkpoint is written.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) `distributed_session` yields a single-process
context whose collectives are identities, and nothing else changes.

On GPUs the process group is ``cpu:gloo,cuda:nccl``: DDP's gradient buckets go through NCCL,
the small control messages above are CPU tensors and go through gloo.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from agents.config import ConfigError

T = TypeVar("T")

#: the seed of rank r is ``seed + RANK_SEED_STRIDE * r`` (envs and action sampling)
RANK_SEED_STRIDE = 10_007


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the learners; collectives are no-ops for one process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, writes checkpoints and the summary."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This rank's seed derived from the run's seed (the seed itself on rank 0)."""
        return seed + RANK_SEED_STRIDE * self.rank

    def barrier(self) -> None:
        """Wait until every rank gets here.

        `dist.barrier`, not an all-reduce of a tensor made here: gloo's worker thread releases
        a collective's tensors after the caller has returned, and releasing one that has a
        Python object takes the GIL. After the run's last barrier the interpreter may be
        shutting down by then, and the thread then aborts the process ("terminate called
        without an active exception", SIGABRT: 8 of 57 2-process runs here; keeping the tensor
        alive in Python did not help, 2 of 28). A barrier passes no tensor of ours.
        """
        if self.enabled:
            dist.barrier()

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of `values` over the ranks, in float64 (one message)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def max_int(self, value: int) -> int:
        """The largest `value` of all ranks."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather_object(self, obj: T) -> list[T] | None:
        """Every rank's `obj` on rank 0 (a list by rank); None on the other ranks."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 alone and hand its result (or its `ConfigError`) to every rank.

        Used for the checks of the run directory and the reading of the checkpoint: all ranks
        then agree on them, and only rank 0 needs to see the run directory's filesystem.
        """
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except ConfigError as error:
                box[0] = ("error", error)
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise value
        return value


#: the context of a run without torchrun
SINGLE_PROCESS = DistContext()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def context_from_env() -> DistContext:
    """The rank, world size and local rank ``torchrun`` put in the environment (or 0, 1, 0)."""
    return DistContext(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
    )


@contextmanager
def distributed_session(timeout_s: float) -> Iterator[DistContext]:
    """Join the process group ``torchrun`` set up (when there is one) for the `with` block.

    Every collective that waits longer than `timeout_s` seconds for another rank (one that
    died, hung or lost its network) raises instead of hanging. The group is left at the end.
    """
    if dist.is_initialized():  # joined by the caller (a test, a notebook): use it as it is
        yield DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
        return
    ctx = context_from_env()
    if not ctx.enabled:
        yield ctx
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def lost_peer(error: BaseException) -> bool:
    """Whether `error` says another rank is gone (died, hung past the timeout, network lost).

    torch raises `torch.distributed.DistError` from collectives, but a failure inside DDP's
    backward pass arrives as a plain `RuntimeError` from the gloo or NCCL transport.
    """
    if isinstance(error, dist.DistError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        marker in text for marker in ("gloo", "NCCL", "ProcessGroup", "Connection reset")
    )


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK`` in a distributed run (one GPU per process)."""
    if not ctx.enabled or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise ConfigError(
            f"local rank {ctx.local_rank} has no GPU: this machine has {count}; "
            f"allowed: --nproc_per_node at most {count} on cuda, or --device cpu"
        )
    return torch.device("cuda", ctx.local_rank)


def wrap_model(policy: nn.Module, ctx: DistContext) -> nn.Module:
    """`policy` wrapped in DDP in a distributed run (rank 0's parameters broadcast to all).

    Buffers are not broadcast at every forward: the policy's buffers are constants.
    """
    if not ctx.enabled:
        return policy
    device = next(policy.parameters()).device
    return DistributedDataParallel(
        policy,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or `model` itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def _group_device(model: nn.Module) -> tuple[Any, torch.device] | None:
    if not isinstance(model, DistributedDataParallel):
        return None
    return model.process_group, next(model.parameters()).device


def all_ranks(model: nn.Module, flag: bool | torch.Tensor) -> bool:
    """Whether `flag` holds on every rank of `model`'s DDP group (`flag` itself without DDP).

    An update takes a gradient step only when every rank can: a rank that skipped a backward
    pass while the others ran one would leave them waiting for its gradients.
    """
    group_device = _group_device(model)
    if group_device is None:
        return bool(flag)
    group, device = group_device
    tensor = torch.as_tensor(flag, device=device).reshape(1).to(torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=group)
    return bool(tensor.item())


def mean_over_ranks(model: nn.Module, value: float | torch.Tensor) -> float:
    """The mean of `value` over the ranks of `model`'s DDP group (`value` itself without DDP)."""
    group_device = _group_device(model)
    if group_device is None:
        return float(value)
    group, device = group_device
    tensor = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(1).clone()
    dist.all_reduce(tensor, group=group)
    return float(tensor.item()) / dist.get_world_size(group)
