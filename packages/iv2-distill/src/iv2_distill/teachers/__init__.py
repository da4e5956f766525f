"""Frozen teachers of stage 1 behind one protocol (see :mod:`iv2_distill.teachers.base`)."""

from .base import DistillTeachers, FrozenTeacher, ImageTeacher, TeacherOutput, image_targets
from .image import CLIPTeacher, InternViTTeacher, TimmTeacher
from .video import VideoMAETeacher, official_videomae_attention, videomae_state_dict_from_official

__all__ = [
    "CLIPTeacher",
    "DistillTeachers",
    "FrozenTeacher",
    "ImageTeacher",
    "InternViTTeacher",
    "TeacherOutput",
    "TimmTeacher",
    "VideoMAETeacher",
    "image_targets",
    "official_videomae_attention",
    "videomae_state_dict_from_official",
]
