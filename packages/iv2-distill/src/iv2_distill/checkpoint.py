"""Loading official stage-1 checkpoints (heads included) into :class:`DistillStudent`.

Files are read with ``iv2_encoders.read_state_dict`` (safetensors or ``weights_only`` torch files; wrappers
``module`` / ``model`` / ``state_dict`` or bare) and loaded with ``iv2_encoders.load_state_dict_checked`` (the one
checked loader of the iv2 packages: shapes, dropped and missing keys). What is specific to stage 1 is
:func:`student_state_dict_from_checkpoint`: where the tower sits, LayerScale naming and the resampling of the
three position tables.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from iv2_encoders import (
    CheckpointError,
    LoadResult,
    interpolate_pos_embed,
    layerscale_key_map,
    load_state_dict_checked,
    read_state_dict,
    split_vision_prefix,
)

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

    Returns ``(tower, other, prefix)``: the tower's tensors without their prefix (``module.``,
    ``vision_encoder.``, ``student.`` ...), LayerScale keys in the student's naming; the checkpoint keys outside
    the tower (other towers of a stage-2 file, a training run's counters); and the prefix. Position tables
    (``pos_embed``, ``clip_pos_embed``, ``mae_pos_embed``) of another frame count or size are resampled like the
    encoder's (linear in time, bicubic in space) when ``num_frames`` — the frame count the checkpoint was trained
    with — is given; without it such a table raises :class:`~iv2_encoders.CheckpointError` asking for it.
    """
    prefix, tower, other = split_vision_prefix(state_dict, source)
    for old, new in layerscale_key_map(list(tower), student.cfg.layerscale_keys).items():
        tower[new] = tower.pop(old)
    own = student.state_dict()
    for key in _POSITION_TABLES:
        if key not in tower or key not in own or own[key].shape == tower[key].shape:
            continue
        if num_frames is None or own[key].shape[-1] != tower[key].shape[-1]:
            raise CheckpointError(
                f"{source}: key {prefix + key!r} has shape {tuple(tower[key].shape)} but the student expects "
                f"{tuple(own[key].shape)} (a position table of another frame count or size: pass num_frames=, "
                "the frame count the checkpoint was trained with; a different width is another model size)"
            )
        tower[key] = _resample_table(key, tower[key], student, num_frames, source)
    return tower, sorted(other), prefix


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
    strict: bool = True,
) -> LoadResult:
    """Load a stage-1 checkpoint (file, folder or state dict) into ``student`` in place: official
    ``PretrainInternVideo2`` / ``DistInternVideo2`` files (heads included), or an iv2 training checkpoint.

    Returns :class:`~iv2_encoders.LoadResult`, which unpacks as ``missing, dropped``. ``strict`` (default): a
    student key the file lacks is a :class:`~iv2_encoders.CheckpointError` naming the keys and the file;
    ``strict=False`` loads the rest (e.g. an encoder-only file, heads left at their initialisation) and returns
    them in ``missing``. Keys the student has no place for (MAE heads into a student without them, other towers)
    are dropped and reported under their names in the file. A tensor of another shape raises, naming the key
    and both shapes.
    """
    source = "state dict" if isinstance(path, Mapping) else str(Path(path))
    state_dict = dict(path) if isinstance(path, Mapping) else read_state_dict(path)
    tower, other, prefix = student_state_dict_from_checkpoint(state_dict, student, num_frames=num_frames,
                                                                source=source)
    result = load_state_dict_checked(student, tower, source=source, strict=strict)
    dropped = sorted([*other, *(prefix + key for key in result.dropped)])
    return LoadResult(missing=result.missing, dropped=dropped, prefix=prefix, num_frames=num_frames, source=source)
