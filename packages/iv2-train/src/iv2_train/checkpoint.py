"""Checkpoint directories: written atomically, found again, pruned to the last K; weights as safetensors.

Layout of one checkpoint (``OUTPUT/checkpoints/step_00000100/``)::

    model.safetensors     model weights minus parts frozen with checkpoint=False (single process / DDP)
    trainer.pt            optimizer, scheduler, grad scaler, step, guard counters, strategy (rank 0)
    rank_00000.pt ...     per-rank RNG states and data position
    deepspeed/            DeepSpeed engine checkpoint (trainable weights + partitioned optimizer), DeepSpeed only
    frozen.safetensors    DeepSpeed only: the frozen parameters that stay in checkpoints

A checkpoint is written into ``.tmp-step_...`` and renamed when every rank has finished, so a directory
named ``step_*`` is always complete; a crash mid-write leaves only a ``.tmp-*`` directory, ignored and
cleaned up later. All ranks must see the same filesystem (one node, or a shared disk).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._paths import checkpoint_dir, latest_checkpoint, list_checkpoints
from .distributed import any_rank_true, barrier, get_rank

__all__ = [
    "CheckpointWriteError",
    "atomic_checkpoint",
    "checkpoint_dir",
    "export_safetensors",
    "latest_checkpoint",
    "list_checkpoints",
    "load_safetensors",
    "prune_checkpoints",
    "read_safetensors",
    "remove_partial_checkpoints",
    "unwrap_model",
]

_ALIASES_KEY = "iv2_train.aliases"


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints (``<= 0`` keeps all); returns the deleted."""
    if keep_last <= 0:
        return []
    found = list_checkpoints(output_dir)
    doomed = [p for _, p in found[:-keep_last]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def remove_partial_checkpoints(output_dir: str | Path) -> None:
    """Delete ``.tmp-*`` directories left by a run that died while writing."""
    root = Path(output_dir) / "checkpoints"
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)


class CheckpointWriteError(RuntimeError):
    """Raised on every rank whose own part of a checkpoint was written when another rank's part failed."""


@contextlib.contextmanager
def atomic_checkpoint(output_dir: str | Path, step: int, keep_last: int = 0) -> Iterator[Path]:
    """Collective: every rank writes its files into the yielded temporary directory; on exit rank 0
    renames it to ``step_XXXXXXXX`` (replacing an older one of the same step) and prunes old ones.

    If writing fails on any rank, every rank raises (the failing one its own error, the others
    :class:`CheckpointWriteError`), the temporary directory is removed and the previous checkpoints stay."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(".tmp-" + final.name)
    if get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    error: BaseException | None = None
    try:
        yield tmp
    except Exception as err:  # agree on failure below instead of leaving the other ranks at a barrier
        error = err
    if any_rank_true(error is not None):
        if get_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier()  # every rank agreed to fail, so every rank is here: the error surfaces after the clean-up
        if error is not None:
            raise error
        raise CheckpointWriteError(f"another rank failed while writing checkpoint step {step}; {final} was not written")
    if get_rank() == 0:
        _fsync_dir(tmp)
        if final.exists():
            trash = final.with_name(".tmp-old-" + final.name)
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
        prune_checkpoints(output_dir, keep_last)
    barrier()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DeepSpeed / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _alias_key(t: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype]:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)


def export_safetensors(
    model: nn.Module | Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write a model's weights (or a state dict) as safetensors.

    Tied weights (the same tensor under two names) are stored once and the other names recorded in the
    metadata, so :func:`load_safetensors` restores them; views into flat buffers (DeepSpeed ZeRO) are copied.
    """
    from safetensors.torch import save_file

    state = unwrap_model(model).state_dict() if isinstance(model, nn.Module) else dict(model)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first_name: dict[tuple[Any, ...], str] = {}
    for name, tensor in state.items():
        key = _alias_key(tensor)
        if tensor.numel() > 0 and key in first_name:
            aliases[name] = first_name[key]
            continue
        first_name[key] = name
        tensors[name] = tensor.detach().to("cpu", copy=True).contiguous()
    meta = dict(metadata or {})
    if aliases:
        meta[_ALIASES_KEY] = json.dumps(aliases)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta or None)
    os.replace(tmp, path)
    return path


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The full state dict in a file written by :func:`export_safetensors` (tied names restored)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    state = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    for alias, target in json.loads(meta.get(_ALIASES_KEY, "{}")).items():
        state[alias] = state[target]
    return state


def load_safetensors(model: nn.Module, path: str | Path, *, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load weights written by :func:`export_safetensors` into ``model``; returns (missing, unexpected)."""
    state = read_safetensors(path)
    result = unwrap_model(model).load_state_dict(state, strict=strict)
    return list(result.missing_keys), list(result.unexpected_keys)
