"""Checkpoint directories: written atomically, found again, pruned to the last K; weights as safetensors.

Layout of one checkpoint (``OUTPUT/checkpoints/step_00000100/``)::

    model.safetensors     model weights minus parts frozen with checkpoint=False (single process / DDP)
    trainer.pt            optimizer, scheduler, grad scaler, step, guard counters, strategy (rank 0)
    rank_00000.pt ...     per-rank RNG states and data position
    deepspeed/            DeepSpeed engine checkpoint (trainable weights + partitioned optimizer), DeepSpeed only
    frozen.safetensors    DeepSpeed only: the frozen parameters that stay in checkpoints

A checkpoint is written with :func:`iv2_data.atomic_write` (``directory=True``) into a temporary folder
``.step_XXXXXXXX.tmp-<pid>-<random>`` and renamed when every rank has finished, so a directory named
``step_*`` is always complete; a killed run leaves only such a temporary folder, which
:func:`remove_partial_checkpoints` (:func:`iv2_data.remove_leftovers`) deletes on the next start. Files and
folders get the umask's permissions. All ranks must see the same filesystem (one node, or a shared disk).
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iv2_data.files import atomic_write, remove_leftovers

from ._paths import checkpoint_dir, latest_checkpoint, list_checkpoints
from .distributed import any_rank_true, barrier, broadcast_object, get_rank

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


def remove_partial_checkpoints(output_dir: str | Path) -> list[Path]:
    """Delete the temporary folders of checkpoint writes whose process died (a killed run), and finish a
    replacement of a checkpoint cut short (the previous version is put back). Returns what was handled.
    Call it on one rank, where no other run writes to ``output_dir``."""
    return remove_leftovers(Path(output_dir) / "checkpoints")


class CheckpointWriteError(RuntimeError):
    """Raised on every rank whose own part of a checkpoint was written when another rank's part failed."""


@contextlib.contextmanager
def atomic_checkpoint(output_dir: str | Path, step: int, keep_last: int = 0) -> Iterator[Path]:
    """Collective: every rank writes its files into the yielded temporary directory; on exit rank 0
    renames it to ``step_XXXXXXXX`` (replacing an older one of the same step) and prunes old ones.

    Rank 0 opens the temporary directory with :func:`iv2_data.atomic_write` and broadcasts its path; after
    every rank has written, the ranks agree on success, and rank 0 commits it. If writing fails on any rank,
    every rank raises (the failing one its own error, the others :class:`CheckpointWriteError`), the
    temporary directory is removed and the previous checkpoints stay."""
    final = checkpoint_dir(output_dir, step)
    rank = get_rank()
    failure: BaseException | None = None
    try:
        with contextlib.ExitStack() as stack:
            opened: BaseException | None = None
            tmp: Path | None = None
            if rank == 0:
                try:
                    tmp = stack.enter_context(atomic_write(final, directory=True))
                except Exception as err:  # e.g. a read-only output_dir: the other ranks must not wait forever
                    opened = err
            shared = broadcast_object(None if opened is not None or tmp is None else str(tmp))
            if opened is not None:
                raise opened
            if shared is None:
                raise CheckpointWriteError(f"rank 0 could not create the temporary folder for {final}")
            error: BaseException | None = None
            try:
                yield Path(shared)
            except Exception as err:  # agree on failure below instead of leaving the other ranks at a barrier
                error = err
            if any_rank_true(error is not None):
                # Raised inside atomic_write on rank 0, so that it removes the temporary folder.
                raise error or CheckpointWriteError(
                    f"another rank failed while writing checkpoint step {step}; {final} was not written"
                )
        if rank == 0:  # committed: atomic_write renamed the folder into place
            prune_checkpoints(output_dir, keep_last)
    except Exception as err:
        failure = err
    barrier()  # every rank is here, on success or agreed failure: the error surfaces after the clean-up
    if failure is not None:
        raise failure


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
    with atomic_write(path) as partial:  # complete or absent, umask permissions, leftovers recognisable
        save_file(tensors, str(partial), metadata=meta or None)
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
