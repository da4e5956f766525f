"""Process start-up and collectives.

Start-up reads the environment that ``torchrun`` and the DeepSpeed launcher both set (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), so the same script runs single-process,
under ``python -m torch.distributed.run --nproc-per-node N`` and under ``deepspeed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import os
import random
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist

from .config import DistributedConfig


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """Where this process sits: rank, world size, its device and the active precision."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    precision: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to bf16/fp16 on this device, or a no-op for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_distributed(cfg: DistributedConfig | None = None) -> DistEnv:
    """Join the process group (if several processes, or DeepSpeed asked for) and pick the device.

    Idempotent: a second call returns the same answer without re-initialising.
    """
    cfg = cfg or DistributedConfig()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    if cfg.device == "auto":
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    backend = cfg.backend or ("nccl" if device.type == "cuda" else "gloo")
    need_group = world_size > 1 or cfg.strategy in ("ddp", "deepspeed")
    if need_group and not dist.is_initialized():
        # DDP and DeepSpeed want a process group even for one process; give it a private rendezvous.
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world_size))
        os.environ.setdefault("LOCAL_RANK", str(local_rank))
        init_kwargs: dict[str, Any] = {"backend": backend, "rank": rank, "world_size": world_size}
        if device.type == "cuda":
            init_kwargs["device_id"] = device
        # torch.distributed.nn.functional binds ``group.WORLD`` as a default argument when it is imported, and
        # DDP imports it (through torch._dynamo) on first use. Imported after the group exists, it pins the
        # group for good: destroy_process_group() then leaves gloo's threads running until interpreter
        # teardown, where a rank aborted now and then ("terminate called without an active exception").
        # Imported first, it binds None.
        importlib.import_module("torch.distributed.nn")

        dist.init_process_group(**init_kwargs)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        backend = dist.get_backend()
    else:
        backend = None
    return DistEnv(rank, world_size, local_rank, device, backend, cfg.precision)


def shutdown_distributed() -> None:
    """Leave the process group (safe to call when there is none)."""
    if dist.is_initialized():
        # Objects that hold the group (a DDP reducer in a reference cycle) must go first: destroyed after it,
        # at interpreter exit, they abort the process ("terminate called without an active exception").
        gc.collect()
        dist.destroy_process_group()


def usable_cpus(*, per_process: bool = False) -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, e.g. under ``taskset``, a
    container's cpuset or a Slurm allocation; else the machine's count): the most intra-op threads that do not
    compete with each other. ``per_process``: this process's share (at least 1) when a launcher started several
    on this node (``LOCAL_WORLD_SIZE`` from torchrun, ``LOCAL_SIZE`` from the DeepSpeed launcher)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    if per_process:
        local = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or 1)
        cpus = max(1, cpus // max(1, local))
    return cpus


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python, NumPy (if installed) and torch with ``seed + rank``; returns the seed used."""
    value = int(seed) + int(rank)
    random.seed(value)
    try:
        import numpy as np

        np.random.seed(value % (2**32))
    except ImportError:  # numpy is optional for iv2-train
        pass
    torch.manual_seed(value)
    return value


def get_rng_state() -> dict[str, Any]:
    """All random-number-generator states of this process (Python, NumPy, torch CPU and CUDA)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------------
# Collectives (all are no-ops, returning their input, without a process group)
# --------------------------------------------------------------------------------------------------------


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, sum_grads: bool) -> torch.Tensor:
        ctx.sum_grads = sum_grads
        ctx.local_size = tensor.shape[0]
        world = dist.get_world_size()
        sizes = torch.tensor([tensor.shape[0]], device=tensor.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
        dist.all_gather(all_sizes, sizes)
        ctx.sizes = [int(s.item()) for s in all_sizes]
        # all_gather needs equal shapes: pad to the largest first dimension, then trim.
        longest = max(ctx.sizes)
        padded = tensor
        if tensor.shape[0] < longest:
            pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
            padded = torch.cat([tensor, pad])
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, ctx.sizes)])

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad_output.contiguous()
        if ctx.sum_grads:
            # Every rank's loss depends on every slice: add the other ranks' gradients for our slice.
            grad = grad.clone()
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: dist.get_rank()])
        return grad[start : start + ctx.local_size], None


def all_gather_with_grad(tensor: torch.Tensor, *, sum_grads: bool = True) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the autograd graph to the local slice.

    With ``sum_grads=True`` the backward adds every rank's gradient for the local slice, so the gradient is
    exactly that of the sum of all ranks' losses (DDP then divides by the world size: the mean). With
    ``sum_grads=False`` the backward keeps only this rank's own gradient for its slice, as the official
    InternVideo2 stage-2 code does (REFERENCE e). First dimensions may differ between ranks.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor, sum_grads)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (equal shapes on all ranks) from all ranks along dim 0, without gradient."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is not modified)."""
    out = tensor.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def reduce_dict_mean(values: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """Mean over ranks of every scalar in ``values`` (same keys on every rank), in one collective."""
    keys = sorted(values)
    if not keys:
        return {}
    stacked = torch.stack([torch.as_tensor(values[k], dtype=torch.float64).detach().cpu() for k in keys])
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl":
            stacked = stacked.cuda()
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        stacked = stacked / dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, stacked.cpu().tolist())}


def any_rank_true(flag: bool, device: torch.device | None = None) -> bool:
    """True when ``flag`` is true on at least one rank (keeps all ranks taking the same branch)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return bool(flag)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. to download or cache), the others after it."""
    if get_rank() != 0:
        barrier()
    yield
    if get_rank() == 0:
        barrier()
