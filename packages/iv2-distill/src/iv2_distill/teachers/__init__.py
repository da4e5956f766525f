"""Frozen teachers of stage 1 behind one protocol (see :mod:`iv2_distill.teachers.base`)."""

from .base import DistillTeachers, FrozenTeacher, ImageTeacher, TeacherOutput, image_targets
from .build import build_image_teacher, build_teachers, build_video_teacher, teacher_fingerprint
from .encoder import EncoderImageTeacher, EncoderTeacher
from .image import CLIPTeacher, InternViTTeacher, TimmTeacher
from .video import VideoMAETeacher, official_videomae_attention, videomae_state_dict_from_official

__all__ = [
    "CLIPTeacher",
    "DistillTeachers",
    "EncoderImageTeacher",
    "EncoderTeacher",
    "FrozenTeacher",
    "ImageTeacher",
    "InternViTTeacher",
    "TeacherOutput",
    "TimmTeacher",
    "VideoMAETeacher",
    "build_image_teacher",
    "build_teachers",
    "build_video_teacher",
    "image_targets",
    "official_videomae_attention",
    "teacher_fingerprint",
    "videomae_state_dict_from_official",
]
