"""Teachers from a run's config (:class:`~iv2_distill.recipe.TeachersConfig`), and their fingerprint.

The fingerprint says which teachers produced a target cache without loading them: kind, tapped layers, dtype and
a digest of the weight files (whole files up to 64 MiB, else their size and first and last 8 MiB). A cache
whose fingerprint differs from the run's teachers is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from ..recipe import ImageTeacherConfig, TeachersConfig, VideoTeacherConfig
from .base import DistillTeachers, FrozenTeacher

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_WHOLE_FILE_LIMIT = 64 << 20
_EDGE = 8 << 20


def build_image_teacher(cfg: ImageTeacherConfig, *, clip_frames: int) -> FrozenTeacher | None:
    """The CLIP teacher described by ``cfg`` (``None`` for ``kind="none"``), in ``cfg.dtype`` on the CPU.
    ``clip_frames``: the frames the teacher sees per clip (an ``iv2_video`` teacher is built for them)."""
    dtype = _DTYPES[cfg.dtype]
    options = {"return_layers": cfg.return_layers, "return_interval": cfg.return_interval}
    frame_options = {**options, "frames_per_batch": cfg.frames_per_batch or None}
    if cfg.kind == "none":
        return None
    if cfg.kind == "internvit":
        from .image import InternViTTeacher

        return InternViTTeacher.from_pretrained(_need_path(cfg.path, "teachers.image.path", "an InternVL-C / InternViT "
                                                           "folder or hub id"), dtype=dtype, **frame_options)
    if cfg.kind == "timm":
        import timm

        from .image import TimmTeacher

        if not cfg.model:
            raise ValueError("teachers.image.model is empty: name the timm ViT (e.g. vit_base_patch16_clip_224)")
        overlay = {"file": cfg.path} if cfg.path else None
        model = timm.create_model(cfg.model, pretrained=bool(cfg.path), pretrained_cfg_overlay=overlay,
                                  num_classes=0)
        return TimmTeacher(model.to(dtype), **frame_options)
    if cfg.kind == "clip":
        from transformers import CLIPVisionModelWithProjection

        from .image import CLIPTeacher

        path = _need_path(cfg.path, "teachers.image.path", "a transformers CLIP folder or hub id")
        return CLIPTeacher(CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype), **frame_options)
    from iv2_encoders import create_model

    from .encoder import EncoderImageTeacher, EncoderTeacher

    if cfg.kind == "iv2_image":
        path = Path(_need_path(cfg.path, "teachers.image.path", "a save_pretrained folder or checkpoint"))
        # a save_pretrained folder knows its architecture; a bare checkpoint needs teachers.image.model
        name = None if (path / "config.json").is_file() else cfg.model
        model = create_model(name, pretrained=path)
        return EncoderImageTeacher(model.to(dtype), **frame_options)
    if cfg.kind == "iv2_video":
        if not cfg.model:
            raise ValueError("teachers.image.model is empty: name the encoder (e.g. internvideo2-1b.stage2-f4)")
        model = create_model(cfg.model, pretrained=cfg.path or True, num_frames=clip_frames,
                             checkpoint_num_frames=cfg.checkpoint_num_frames or None)
        return EncoderTeacher(model.to(dtype), **options)
    raise ValueError(f"teachers.image.kind {cfg.kind!r} is unknown")


def build_video_teacher(cfg: VideoTeacherConfig) -> FrozenTeacher | None:
    """The MAE teacher described by ``cfg`` (``None`` for ``kind="none"``), in ``cfg.dtype`` on the CPU."""
    if cfg.kind == "none":
        return None
    from transformers import VideoMAEConfig, VideoMAEModel

    from iv2_encoders import read_state_dict

    from .video import VideoMAETeacher, videomae_state_dict_from_official

    path = Path(_need_path(cfg.path, "teachers.video.path", "a VideoMAEModel folder or an official VideoMAE .pth"))
    if path.is_dir():
        model = VideoMAEModel.from_pretrained(str(path))
    else:
        if not cfg.config:
            raise ValueError(f"teachers.video.config is empty: {path} is an official checkpoint, give the "
                             "VideoMAEConfig fields of its architecture")
        model = VideoMAEModel(VideoMAEConfig(**cfg.config))
        model.load_state_dict(videomae_state_dict_from_official(read_state_dict(path)), strict=True)
    return VideoMAETeacher(model.to(_DTYPES[cfg.dtype]), return_layers=cfg.return_layers,
                           return_interval=cfg.return_interval, attention=cfg.attention)


def build_teachers(cfg: TeachersConfig, *, clip_frames: int, device: torch.device | str | None = None
                   ) -> DistillTeachers:
    """Both teachers of ``cfg`` behind :class:`DistillTeachers` (frozen, eval), moved to ``device``."""
    teachers = DistillTeachers(image=build_image_teacher(cfg.image, clip_frames=clip_frames),
                               video=build_video_teacher(cfg.video))
    return teachers.to(device) if device is not None else teachers


def teacher_fingerprint(cfg: TeachersConfig) -> dict[str, Any]:
    """What identifies the teachers' targets: per teacher its settings and a digest of its weight files."""
    out: dict[str, Any] = {}
    for name, section in (("image", cfg.image), ("video", cfg.video)):
        if section.kind == "none":
            continue
        settings = {k: v for k, v in dataclasses.asdict(section).items() if k not in ("path", "frames_per_batch")}
        out[name] = {**settings, "weights": _weights_digest(section.path) if section.path else "released:"
                     + getattr(section, "model", "")}
    return out


def _weights_digest(path: str) -> str:
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"teacher weights not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for file in files:
        if file.name.startswith(".") or (file.suffix in (".json", ".md", ".txt") and file.name != "config.json"):
            continue  # notes beside the weights (a teacher's report) do not change its targets
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if root.is_dir() else file.name}:{size}".encode())
        with open(file, "rb") as f:
            if size <= _WHOLE_FILE_LIMIT:
                digest.update(f.read())
            else:
                digest.update(f.read(_EDGE))
                f.seek(size - _EDGE)
                digest.update(f.read(_EDGE))
    return digest.hexdigest()


def _need_path(path: str, key: str, what: str) -> str:
    if not path:
        raise ValueError(f"{key} is empty: give {what}")
    return os.fspath(path)
