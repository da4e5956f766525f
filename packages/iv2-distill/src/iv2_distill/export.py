"""The product of stage 1: the student encoder alone, heads dropped, in the ``iv2_encoders`` layout.

:func:`export_encoder` reads any stage-1 checkpoint — an official ``PretrainInternVideo2`` / ``DistInternVideo2``
file (heads included, any wrapper), a training run's folder, one of its ``checkpoints/step_*`` or its
``final/model.safetensors`` — loads the encoder part into ``iv2_encoders.VideoEncoder`` with the checked loader
(nothing may be missing; the heads are reported as dropped) and writes a ``save_pretrained`` folder
(``config.json`` + ``model.safetensors``) that ``iv2_encoders.create_model(pretrained=DIR)`` reads back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iv2_encoders import LoadResult, VideoEncoder, VideoEncoderConfig, load_checkpoint, save_pretrained

from .config import get_student_configs
from .model import HEAD_KEYS


@dataclass
class ExportResult:
    output: Path  # the save_pretrained folder
    weights: Path  # its model.safetensors: the encoder checkpoint
    source: Path  # the file that was read
    load: LoadResult  # what was dropped (the heads, ...)


def student_encoder_state(state: dict[str, Any], prefix: str = "student.") -> dict[str, Any]:
    """A training model's state (``student.*`` beside teachers and counters) → the student encoder's keys,
    heads dropped, without the prefix: the ``iv2_encoders`` layout. The Trainer's export hook."""
    out = {}
    for key, value in state.items():
        if key.startswith(prefix):
            name = key[len(prefix):]
            if name.split(".", 1)[0] not in HEAD_KEYS:
                out[name] = value
    return out


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """``(weights file, run config.yaml or None)`` for a run folder (its final export, else its newest
    checkpoint), a ``checkpoints/step_*`` folder, a ``save_pretrained`` folder or a file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_file():
        run = path.parent.parent if path.parent.name == "final" else None
        return path, _run_config(run)
    if (path / "config.yaml").is_file():  # a run folder
        final = path / "final" / "model.safetensors"
        if final.is_file():
            return final, path / "config.yaml"
        from iv2_train import latest_checkpoint

        newest = latest_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(f"{path}: a run folder without final/model.safetensors or checkpoints/step_*")
        return newest / "model.safetensors", path / "config.yaml"
    if (path / "model.safetensors").is_file():  # checkpoints/step_* or a save_pretrained folder
        run = path.parent.parent if path.parent.name == "checkpoints" else None
        return path / "model.safetensors", _run_config(run)
    raise FileNotFoundError(f"{path}: no model.safetensors, final/model.safetensors or config.yaml inside")


def _run_config(run: Path | None) -> Path | None:
    return run / "config.yaml" if run is not None and (run / "config.yaml").is_file() else None


def export_encoder(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str | None = None,
    overrides: dict[str, Any] | None = None,
    num_frames: int | None = None,
) -> ExportResult:
    """Write the encoder of ``checkpoint`` to ``output`` as a ``save_pretrained`` folder.

    The architecture: ``model`` (a :func:`~iv2_distill.create_student` name) with ``overrides``; else the run's
    ``config.yaml`` next to the checkpoint (``model.name`` / ``model.overrides``); else, for a
    ``save_pretrained`` folder, its own config. ``num_frames``: the checkpoint's frame count when it differs from
    the architecture's (position tables are interpolated). Raises :class:`~iv2_encoders.CheckpointError` if an
    encoder key is missing or has another shape.
    """
    weights, run_config = resolve_checkpoint(checkpoint)
    encoder_cfg = _architecture(weights, run_config, model, overrides or {})
    encoder = VideoEncoder(encoder_cfg)
    result = load_checkpoint(encoder, weights, num_frames=num_frames, strict=True)
    folder = save_pretrained(encoder, output)
    return ExportResult(folder, folder / "model.safetensors", weights, result)


def _architecture(weights: Path, run_config: Path | None, model: str | None,
                  overrides: dict[str, Any]) -> VideoEncoderConfig:
    if model is not None:
        return get_student_configs(model, **overrides)[0]
    if run_config is not None:
        from iv2_train import load_config

        from .recipe import DistillConfig

        cfg = load_config(DistillConfig, run_config)
        return get_student_configs(cfg.model.name, **{**cfg.model.overrides, **overrides})[0]
    saved = weights.parent / "config.json"
    if saved.is_file():
        from iv2_encoders.pretrained import read_saved_config

        return read_saved_config(weights.parent)[0].replace(**overrides)
    raise ValueError(f"{weights}: cannot tell the architecture (no run config.yaml beside it): pass model= "
                     "(e.g. internvideo2-1b), the student it was trained as")
