"""iv2-distill: InternVideo2 stage 1: unmasked token reconstruction from two frozen teachers.

The model layer::

    >>> from iv2_distill import create_student, attention_mask, distillation_loss
    >>> student = create_student("internvideo2-tiny")
    >>> teacher_out = teachers(clip)                          # TeacherOutput for the full clip (frozen, no_grad)
    >>> mask = attention_mask(teacher_out.saliency, 0.8)      # (B, T·HW) bool, True = dropped
    >>> out = student(teachers.student_frames(clip), mask)    # StudentOutput(clip_middle, clip_final, mae)
    >>> losses = distillation_loss(out, teacher_out, mask)    # {"clip_middle", "clip_final", "mae", "loss"}

Training, caching, export and evaluation (``iv2-distill train | cache-targets | teachers | export | eval``)::

    >>> from iv2_distill import synthetic_config, train
    >>> result = train(synthetic_config("runs/demo"))         # corpus, teachers, cached targets, student, k-NN
    >>> result.metrics["loss_first"], result.metrics["knn_top1_direction"], result.encoder_dir

Names are imported on first use (PEP 562), so ``iv2-distill --help`` does not load torch.
"""

from __future__ import annotations

from importlib.metadata import version as _version
from typing import TYPE_CHECKING

from iv2_data.lazy import lazy_exports

__version__ = _version("iv2-distill")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    # the student, its heads and checkpoints
    "HEAD_KEYS": "model",
    "DistillStudent": "model",
    "StudentOutput": "model",
    "create_student": "model",
    "list_students": "model",
    "STUDENT_CONFIGS": "config",
    "DistillHeadsConfig": "config",
    "get_student_configs": "config",
    "return_layer_indices": "config",
    "load_checkpoint": "checkpoint",
    "student_state_dict_from_checkpoint": "checkpoint",
    # the objective and the masks
    "cosine_distance_loss": "loss",
    "distillation_loss": "loss",
    "visible_targets": "loss",
    "attention_mask": "masking",
    "random_mask": "masking",
    "tube_mask": "masking",
    # teachers
    "CLIPTeacher": "teachers",
    "DistillTeachers": "teachers",
    "EncoderImageTeacher": "teachers",
    "EncoderTeacher": "teachers",
    "FrozenTeacher": "teachers",
    "ImageTeacher": "teachers",
    "InternViTTeacher": "teachers",
    "TeacherOutput": "teachers",
    "TimmTeacher": "teachers",
    "VideoMAETeacher": "teachers",
    "build_teachers": "teachers",
    "teacher_fingerprint": "teachers",
    "videomae_state_dict_from_official": "teachers",
    "prepare_synthetic_teachers": "synthetic_teachers",
    # the run: config, flavors, training
    "FLAVORS": "recipe",
    "CacheConfig": "recipe",
    "DataConfig": "recipe",
    "DistillConfig": "recipe",
    "EvalConfig": "recipe",
    "ImageTeacherConfig": "recipe",
    "MaskConfig": "recipe",
    "StudentConfig": "recipe",
    "SyntheticCorpusConfig": "recipe",
    "SyntheticTeachersConfig": "recipe",
    "TeachersConfig": "recipe",
    "VideoTeacherConfig": "recipe",
    "synthetic_config": "recipe",
    "DistillResult": "training",
    "DistillationModel": "training",
    "build_training": "training",
    "train": "training",
    # data and the target cache
    "View": "data",
    "ViewDataset": "data",
    "draw_view": "data",
    "live_dataset": "data",
    "read_view": "data",
    "training_records": "data",
    "CacheIncompleteError": "cache",
    "CacheMismatchError": "cache",
    "CacheReport": "cache",
    "TargetCache": "cache",
    "build_target_cache": "cache",
    # the product and what it learned
    "ExportResult": "export",
    "export_encoder": "export",
    "evaluate_encoder": "evaluation",
    "knn_top1": "evaluation",
    "linear_probe_top1": "evaluation",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # what static analysis and IDEs see; the table above is what runs
    from .cache import CacheIncompleteError, CacheMismatchError, CacheReport, TargetCache, build_target_cache  # noqa: F401
    from .checkpoint import load_checkpoint, student_state_dict_from_checkpoint  # noqa: F401
    from .config import STUDENT_CONFIGS, DistillHeadsConfig, get_student_configs, return_layer_indices  # noqa: F401
    from .data import View, ViewDataset, draw_view, live_dataset, read_view, training_records  # noqa: F401
    from .evaluation import evaluate_encoder, knn_top1, linear_probe_top1  # noqa: F401
    from .export import ExportResult, export_encoder  # noqa: F401
    from .loss import cosine_distance_loss, distillation_loss, visible_targets  # noqa: F401
    from .masking import attention_mask, random_mask, tube_mask  # noqa: F401
    from .model import HEAD_KEYS, DistillStudent, StudentOutput, create_student, list_students  # noqa: F401
    from .recipe import (  # noqa: F401
        FLAVORS,
        CacheConfig,
        DataConfig,
        DistillConfig,
        EvalConfig,
        ImageTeacherConfig,
        MaskConfig,
        StudentConfig,
        SyntheticCorpusConfig,
        SyntheticTeachersConfig,
        TeachersConfig,
        VideoTeacherConfig,
        synthetic_config,
    )
    from .synthetic_teachers import prepare_synthetic_teachers  # noqa: F401
    from .teachers import (  # noqa: F401
        CLIPTeacher,
        DistillTeachers,
        EncoderImageTeacher,
        EncoderTeacher,
        FrozenTeacher,
        ImageTeacher,
        InternViTTeacher,
        TeacherOutput,
        TimmTeacher,
        VideoMAETeacher,
        build_teachers,
        teacher_fingerprint,
        videomae_state_dict_from_official,
    )
    from .training import DistillationModel, DistillResult, build_training, train  # noqa: F401
