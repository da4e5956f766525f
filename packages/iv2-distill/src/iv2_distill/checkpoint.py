"""Loading official stage-1 checkpoints (heads included) into :class:`DistillStudent`, and exporting the encoder.

Files are read with ``iv2_encoders.read_state_dict`` (safetensors or ``weights_only`` torch files; wrappers
``module`` / ``model`` / ``state_dict`` or bare). :func:`student_state_dict_from_checkpoint` is the part that is
specific to the stage-1 layouts (prefix, naming, position tables, what to drop), kept separate so that a
generic checked loader can use it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from iv2_encoders import CheckpointError, LoadResult, interpolate_pos_embed, read_state_dict
from iv2_encoders.checkpoint import split_vision_prefix
from iv2_encoders.model import layerscale_key_map

from .model import DistillStudent

# position tables of the student and how many leading rows are not patches (class row)
_POSITION_TABLES = {"pos_embed": 1, "clip_pos_embed": 1, "mae_pos_embed": 0}


def student_state_dict_from_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    student: DistillStudent,
    *,
    num_frames: int | None = None,
    source: str = "checkpoint",
) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Map a checkpoint's keys onto the student's official stage-1 names.

    Returns ``(to_load, dropped, prefix)``: tensors keyed by the student's names, the checkpoint keys the
    student has no place for (e.g. MAE heads when loading a 1B checkpoint into a student built without them,
    other towers of a stage-2 file), and the prefix the tower sat under (``module.``, ``vision_encoder.``, ...).
    LayerScale keys load in either naming. Position tables (``pos_embed``, ``clip_pos_embed``,
    ``mae_pos_embed``) of another frame count or size are resampled like the encoder's (linear in time,
    bicubic in space) when ``num_frames`` — the frame count the checkpoint was trained with — is given. A
    tensor of another shape raises :class:`~iv2_encoders.CheckpointError` naming the key and both shapes.
    """
    prefix, tower, other = split_vision_prefix(state_dict, source)
    dropped = list(other)
    for old, new in layerscale_key_map(list(tower), student.cfg.layerscale_keys).items():
        tower[new] = tower.pop(old)
    own = student.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in tower.items():
        if key not in own:
            dropped.append(prefix + key)
            continue
        if key in _POSITION_TABLES and own[key].shape != value.shape and num_frames is not None:
            value = _resample_table(key, value, student, num_frames, source)
        if own[key].shape != value.shape:
            hint = (" (a position table of another frame count: pass num_frames=, the checkpoint's frames)"
                    if key in _POSITION_TABLES else
                    f" (another model size or head layout than width {student.cfg.embed_dim} / depth "
                    f"{student.cfg.depth} / heads {student.heads_cfg.to_dict()})")
            raise CheckpointError(
                f"{source}: key {prefix + key!r} has shape {tuple(value.shape)} but the student expects "
                f"{tuple(own[key].shape)}{hint}"
            )
        to_load[key] = value
    return to_load, sorted(dropped), prefix


def _resample_table(key: str, table: torch.Tensor, student: DistillStudent, num_frames: int, source: str):
    extra = _POSITION_TABLES[key]
    t_dst, h, w = student.cfg.grid_size
    t_src = num_frames // student.cfg.tubelet_size
    rows = table.shape[-2] - extra
    side = math.isqrt(rows // t_src) if rows % t_src == 0 else 0
    if side * side * t_src != rows:
        raise CheckpointError(f"{source}: {key} has {rows} patch rows, not {t_src} frames of a square grid")
    return interpolate_pos_embed(table.reshape(1, rows + extra, -1), (t_src, side, side), (t_dst, h, w),
                                 num_extra_tokens=extra)


def load_checkpoint(
    student: DistillStudent,
    path: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    num_frames: int | None = None,
    strict: bool = False,
) -> LoadResult:
    """Load an official stage-1 checkpoint (file or state dict) into ``student`` in place.

    Returns :class:`~iv2_encoders.LoadResult`, which unpacks as ``missing, dropped``: student keys the file
    lacks (e.g. the heads when loading an encoder-only file) and file keys the student does not use. With
    ``strict=True`` anything missing is an error naming the keys. A shape mismatch always raises
    :class:`~iv2_encoders.CheckpointError` naming the key and both shapes.
    """
    source = "state dict" if isinstance(path, Mapping) else str(Path(path))
    state_dict = dict(path) if isinstance(path, Mapping) else read_state_dict(path)
    to_load, dropped, prefix = student_state_dict_from_checkpoint(
        state_dict, student, num_frames=num_frames, source=source)
    missing = sorted(k for k in student.state_dict() if k not in to_load)
    if strict and missing:
        raise CheckpointError(f"{source}: {len(missing)} student key(s) missing from the checkpoint: {missing[:8]}")
    meta = any(p.is_meta for p in student.parameters())
    student.load_state_dict(to_load, strict=False, assign=meta)
    return LoadResult(missing=missing, dropped=dropped, prefix=prefix, num_frames=num_frames)

