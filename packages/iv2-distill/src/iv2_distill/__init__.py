"""iv2-distill: InternVideo2 stage 1: unmasked token reconstruction from two frozen teachers.

>>> from iv2_distill import create_student, attention_mask, distillation_loss
>>> student = create_student("internvideo2-tiny")
>>> teacher_out = teachers(clip)                          # TeacherOutput for the full clip (frozen, no_grad)
>>> mask = attention_mask(teacher_out.saliency, 0.8)      # (B, T·HW) bool, True = dropped
>>> out = student(teachers.student_frames(clip), mask)    # StudentOutput(clip_middle, clip_final, mae)
>>> losses = distillation_loss(out, teacher_out, mask)    # {"clip_middle", "clip_final", "mae", "loss"}
"""

from .checkpoint import load_checkpoint, student_state_dict_from_checkpoint
from .config import STUDENT_CONFIGS, DistillHeadsConfig, get_student_configs, return_layer_indices
from .loss import cosine_distance_loss, distillation_loss, visible_targets
from .masking import attention_mask, random_mask, tube_mask
from .model import HEAD_KEYS, DistillStudent, StudentOutput, create_student, list_students
from .teachers import (
    CLIPTeacher,
    DistillTeachers,
    FrozenTeacher,
    ImageTeacher,
    InternViTTeacher,
    TeacherOutput,
    TimmTeacher,
    VideoMAETeacher,
    videomae_state_dict_from_official,
)

__all__ = [
    "HEAD_KEYS",
    "STUDENT_CONFIGS",
    "CLIPTeacher",
    "DistillHeadsConfig",
    "DistillStudent",
    "DistillTeachers",
    "FrozenTeacher",
    "ImageTeacher",
    "InternViTTeacher",
    "StudentOutput",
    "TeacherOutput",
    "TimmTeacher",
    "VideoMAETeacher",
    "attention_mask",
    "cosine_distance_loss",
    "create_student",
    "distillation_loss",
    "get_student_configs",
    "list_students",
    "load_checkpoint",
    "random_mask",
    "return_layer_indices",
    "student_state_dict_from_checkpoint",
    "tube_mask",
    "videomae_state_dict_from_official",
    "visible_targets",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-distill")
