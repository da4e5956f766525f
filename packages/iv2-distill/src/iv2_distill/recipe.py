"""The stage-1 run configuration (:class:`DistillConfig`) and its named flavors.

A run is a student (``model``), its teachers (``teachers``), the clips (``data``), the masking (``mask``), where
teacher targets come from (live teachers, or a target cache: ``cache``), an evaluation (``eval``) and the shared
training runtime's settings (``train``: :class:`iv2_train.TrainConfig`). ``iv2-distill train FLAVOR|YAML
[key=value ...]`` builds one with :func:`iv2_train.load_config`; unknown keys and wrong types are errors naming
the dotted key.

Flavors: ``tiny-synthetic`` / ``tiny-synthetic-quick`` (the CPU demo: the synthetic corpus of iv2-data, two small
teachers trained on it first, cached targets; see :func:`synthetic_config`), ``1b`` / ``6b`` (the official
stage-1 recipe: InternViT-6B + VideoMAEv2-g teachers, REFERENCE d), ``s14`` / ``b14`` / ``l14`` (the official
distillation of the small models from the 1B stage-2 model, REFERENCE a/o).

This module imports no torch: the command line's ``--help`` reads the flavor names from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from iv2_train.config import (
    CheckpointConfig,
    ConfigError,
    DistributedConfig,
    EvaluationConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)

TeacherDtype = Literal["float32", "bfloat16", "float16"]


@dataclasses.dataclass
class StudentConfig:
    """The student: a registered :func:`~iv2_distill.create_student` name and field overrides (of
    ``VideoEncoderConfig`` or ``DistillHeadsConfig``, e.g. ``drop_path_rate``, ``grad_checkpointing``,
    ``clip_teacher_embed_dim``)."""

    name: str = "internvideo2-tiny"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Start from this checkpoint instead of the random initialisation: an official stage-1 file (heads
    # included: training continues from it), a run's checkpoint or any file load_checkpoint reads.
    init: str = ""
    # The frame count ``init`` was trained with, when it differs from the student's (0: the same).
    init_num_frames: int = 0
    # False: an encoder-only file may leave the heads at their initialisation.
    init_strict: bool = True


@dataclasses.dataclass
class ImageTeacherConfig:
    """The CLIP teacher (middle-layer and final targets, and the saliency the masks are drawn from).

    ``kind``: ``internvit`` (InternViT / InternVL-C through transformers remote code, ``path`` a local folder or
    hub id: the official 1B/6B teacher), ``timm`` (``model`` a timm ViT name, ``path`` an optional weight file),
    ``clip`` (a transformers CLIP vision model folder), ``iv2_image`` (an iv2-encoders model run per frame:
    ``create_model(model, pretrained=path)``; the synthetic image teacher), ``iv2_video`` (an iv2-encoders model
    run on the whole clip, the S/B/L recipe: ``model`` e.g. ``internvideo2-1b.stage2-f4``; ``path`` its file, or
    empty to fetch the tag's released file) or ``none``.
    """

    kind: Literal["none", "internvit", "timm", "clip", "iv2_image", "iv2_video"] = "none"
    path: str = ""
    model: str = ""
    # iv2_video: the frame count of the teacher's file (official stage-2 1B: 4, interpolated to the clip's).
    checkpoint_num_frames: int = 0
    return_layers: int = 6
    return_interval: float = 1.0
    dtype: TeacherDtype = "float32"
    # Frames per teacher forward (0: all frames of the batch at once).
    frames_per_batch: int = 0


@dataclasses.dataclass
class VideoTeacherConfig:
    """The motion-aware video teacher (MAE targets): ``videomae`` = a transformers ``VideoMAEModel``, ``path`` a
    ``save_pretrained`` folder, or an official VideoMAE(v2) ``.pth`` converted on load into a model built from
    ``config`` (``VideoMAEConfig`` fields; the 1B/6B flavors give VideoMAEv2-g's)."""

    kind: Literal["none", "videomae"] = "none"
    path: str = ""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    return_layers: int = 4
    return_interval: float = 1.0
    # "official": the released teacher's attention over the heads axis (REFERENCE o); "standard": VideoMAEv2's.
    attention: Literal["standard", "official"] = "standard"
    dtype: TeacherDtype = "float32"


@dataclasses.dataclass
class SyntheticTeachersConfig:
    """Train the two stand-in teachers on the training clips first, when their folders are missing (the
    ``tiny-synthetic`` flavors): an iv2-encoders image model classifying single frames (object, colour) saved to
    ``teachers.image.path``, and a VideoMAE video model classifying clips (motion direction) saved to
    ``teachers.video.path``. See :mod:`iv2_distill.synthetic_teachers`."""

    enabled: bool = False
    image_steps: int = 150
    video_steps: int = 150
    batch_size: int = 32
    lr: float = 2e-3
    seed: int = 0
    # VideoEncoderConfig fields of the image teacher (on the architecture teachers.image.model).
    image_encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    # VideoMAEConfig fields of the video teacher.
    video_encoder: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TeachersConfig:
    image: ImageTeacherConfig = dataclasses.field(default_factory=ImageTeacherConfig)
    video: VideoTeacherConfig = dataclasses.field(default_factory=VideoTeacherConfig)
    synthetic: SyntheticTeachersConfig = dataclasses.field(default_factory=SyntheticTeachersConfig)


@dataclasses.dataclass
class SyntheticCorpusConfig:
    """The iv2-data synthetic corpus (:func:`iv2_data.write_corpus`), written to ``dir`` before the run when
    ``num_samples > 0`` and it is not there yet (a corpus already in ``dir`` is used as it is)."""

    num_samples: int = 0
    dir: str = ""
    num_frames: int = 8
    size: int = 64
    fps: int = 8
    seed: int = 0


@dataclasses.dataclass
class DataConfig:
    """Training clips: the ``"video"`` records of an annotation file (JSON / JSONL, e.g. the corpus'
    ``video_label.json``), read as the official stage 1 reads them (``iv2_data.VideoReadConfig.stage1``: TSN
    sampling of ``num_frames`` frames, GroupMultiScaleCrop to ``size``, flips except where a record forbids them).
    The student and the image teacher see every ``frame_stride``-th frame (official 16 → 8)."""

    annotations: str = ""
    media_root: str = ""
    # The last N records are held out: never trained on (and the evaluation's queries on the same file).
    holdout_last: int = 0
    num_frames: int = 16
    size: int = 224
    batch_size: int = 32
    num_workers: int = 4
    # Training from a target cache: keep up to this many MiB of decoded frames in memory per process (a small
    # dataset read for many epochs then decodes each clip once; its views are fixed). 0: decode every time.
    frame_cache_mb: int = 0
    corpus: SyntheticCorpusConfig = dataclasses.field(default_factory=SyntheticCorpusConfig)


@dataclasses.dataclass
class MaskConfig:
    """``attention``: semantic masking from the CLIP teacher's saliency (official, ratio 0.8); ``per_frame``
    None = per frame for an image teacher, over the clip for a video model as CLIP teacher (S/B/L). ``random`` /
    ``tube`` need no saliency."""

    kind: Literal["attention", "random", "tube"] = "attention"
    ratio: float = 0.8
    per_frame: bool | None = None


@dataclasses.dataclass
class CacheConfig:
    """Teacher-target cache. ``dir`` empty: live teachers every step. Otherwise training reads the targets from
    ``dir`` (built first when missing or unfinished, if ``build``); ``views`` fixed augmentations per clip
    (frame indices, crop box, flip drawn once from ``seed``)."""

    dir: str = ""
    build: bool = True
    views: int = 1
    dtype: Literal["float16", "float32"] = "float16"
    items_per_shard: int = 256
    batch_size: int = 16
    seed: int = 0


@dataclasses.dataclass
class EvalConfig:
    """Frozen-feature evaluation (:func:`~iv2_distill.evaluate_encoder`): k-NN and linear-probe top-1 on a
    labelled annotation file; queries are its last ``holdout_last`` records, the rest the k-NN bank and the
    probe's training set. Empty ``annotations``: no evaluation."""

    annotations: str = ""
    media_root: str = ""
    holdout_last: int = 0
    # Record fields to classify by (each gives its own top-1): e.g. label, object, direction, colour.
    label_keys: tuple[str, ...] = ("label",)
    feature: Literal["pooled", "cls", "mean"] = "pooled"
    k: int = 10
    temperature: float = 0.07
    linear_probe: bool = True
    # Also evaluate a randomly initialised encoder of the same architecture after training (the baseline).
    random_baseline: bool = True
    batch_size: int = 32


@dataclasses.dataclass
class DistillConfig:
    """A stage-1 run; see the module docstring and the package README."""

    model: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    teachers: TeachersConfig = dataclasses.field(default_factory=TeachersConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    mask: MaskConfig = dataclasses.field(default_factory=MaskConfig)
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    # clip_loss_ratio (middle, final) and mae_loss_ratio.
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # The official --lr: per 256 clips. > 0: train.optimizer.lr = base_lr × global batch / 256 at start.
    base_lr: float = 0.0
    # > 0: train.max_steps and train.schedule.warmup_steps from epochs of the training clips at start.
    epochs: float = 0.0
    warmup_epochs: float = 0.0
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if len(self.loss_weights) != 3 or any(w < 0 for w in self.loss_weights):
            raise ConfigError(f"config key 'loss_weights' has an invalid value: {self.loss_weights!r} (expected "
                              "three weights >= 0: clip_middle, clip_final, mae)")
        if not 0 <= self.mask.ratio < 1:
            raise ConfigError(f"config key 'mask.ratio' has an invalid value: {self.mask.ratio!r} (expected in [0, 1))")
        for key, value in (("cache.views", self.cache.views), ("cache.items_per_shard", self.cache.items_per_shard),
                           ("data.batch_size", self.data.batch_size), ("eval.k", self.eval.k)):
            if value < 1:
                raise ConfigError(f"config key {key!r} has an invalid value: {value!r} (expected >= 1)")


def check_ready(cfg: DistillConfig) -> None:
    """Cross-field checks of a config about to run (raises :class:`iv2_train.ConfigError` naming the key)."""
    if not cfg.data.annotations:
        raise ConfigError("config key 'data.annotations' is empty: give the annotation file of the training clips "
                          "(JSON/JSONL records with a 'video' path)")
    if cfg.teachers.image.kind == "none" and cfg.teachers.video.kind == "none" and not cfg.cache.dir:
        raise ConfigError("no teacher: set teachers.image.kind and/or teachers.video.kind (or cache.dir to train "
                          "from cached targets)")
    if cfg.mask.kind == "attention" and cfg.teachers.image.kind == "none":
        raise ConfigError("mask.kind=attention draws masks from the CLIP teacher's saliency, but teachers.image.kind "
                          "is 'none': set an image teacher or mask.kind=random|tube")
    if cfg.teachers.synthetic.enabled and not (cfg.teachers.image.path and cfg.teachers.video.path):
        raise ConfigError("teachers.synthetic.enabled trains the teachers into teachers.image.path and "
                          "teachers.video.path: both must be set")


# ------------------------------------------------------------------------------------------------- flavors
# The two sizes of the synthetic flavors: steps of the two teachers and of the student, fixed views per clip.
# The video teacher's held-out direction accuracy jumps late: 46.9% after 300 steps, 98.4% after 600 (demo
# corpus, seed 0; about 9 s more), so the default trains it 600 steps.
_SYNTHETIC_SIZES: dict[str, dict[str, int]] = {
    "default": {"clips": 512, "student_steps": 300, "image_steps": 200, "video_steps": 600, "views": 2},
    "quick": {"clips": 256, "student_steps": 60, "image_steps": 100, "video_steps": 40, "views": 1},
}


def synthetic_config(root: str | Path = "runs/tiny-synthetic", *, corpus: str | Path | None = None,
                     quick: bool = False) -> DistillConfig:
    """The CPU demo's stage 1, every path under ``root``: the synthetic corpus (``corpus``, default
    ``root/corpus``, written when missing: 512 clips of 8 frames at 64 px, the last 64 held out; a corpus that is
    there already is used as it is), two small
    teachers trained on the other clips first (``root/teachers``, see :mod:`iv2_distill.synthetic_teachers`),
    their targets cached (``root/targets``), the ``internvideo2-tiny`` student (56 px, 4 frames, patch 14, 64-d,
    depth 2) trained into ``root/stage1`` and evaluated by k-NN / linear probe on
    the held-out clips (label, object, direction, colour) against chance and a random encoder.

    ``quick``: the same path at a smaller size (256 clips by default, fewer teacher and student steps, one view
    per clip); its corpus, teachers, targets and run live in ``*-quick`` folders beside the default ones.
    """
    size = _SYNTHETIC_SIZES["quick" if quick else "default"]
    root = Path(root)
    suffix = "-quick" if quick else ""
    corpus_dir = Path(corpus) if corpus is not None else root / f"corpus{suffix}"
    teacher_dir = root / f"teachers{suffix}"
    steps = size["student_steps"]
    return DistillConfig(
        # heads sized to the teachers: 48-d image-teacher layers, its 32-d pooled vector, 64-d video-teacher tokens
        model=StudentConfig(name="internvideo2-tiny", overrides={"mae_teacher_embed_dim": 64}),
        teachers=TeachersConfig(
            # The stand-ins keep the official structure at toy widths: a per-frame image model whose pooling-head
            # attention is the saliency (as InternVL-C's), and a VideoMAE over twice the student's frames with
            # tubelet 2 (as VideoMAEv2-g), both on the student's token grid.
            image=ImageTeacherConfig(kind="iv2_image", path=str(teacher_dir / "image"), model="internvideo2-tiny",
                                     return_layers=2),
            video=VideoTeacherConfig(kind="videomae", path=str(teacher_dir / "video"), return_layers=2),
            synthetic=SyntheticTeachersConfig(
                enabled=True, image_steps=size["image_steps"], video_steps=size["video_steps"], batch_size=32,
                lr=5e-3,
                # LayerScale 0.1 (InternViT's) rather than the student's 1e-5: a teacher must learn in seconds
                image_encoder={"num_frames": 1, "embed_dim": 48, "depth": 3,
                               "num_heads": 4, "init_values": 0.1, "attn_pool_num_heads": 4, "clip_embed_dim": 32},
                # 28 px (frames resized for it, as the official clip_input_resolution; patch 7 keeps the student's
                # 4 x 4 grid): direction needs no detail, and it learns faster and cheaper
                video_encoder={"image_size": 28, "patch_size": 7, "num_frames": 8,
                               "tubelet_size": 2, "hidden_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "intermediate_size": 128, "use_mean_pooling": False},
            ),
        ),
        data=DataConfig(
            annotations=str(corpus_dir / "video_label.json"), holdout_last=64, num_frames=8, size=56,
            batch_size=32, num_workers=0, frame_cache_mb=256,
            corpus=SyntheticCorpusConfig(num_samples=size["clips"], dir=str(corpus_dir), num_frames=8, size=64,
                                         fps=8),
        ),
        mask=MaskConfig(kind="attention", ratio=0.8),
        cache=CacheConfig(dir=str(root / f"targets{suffix}"), views=size["views"], dtype="float16",
                          items_per_shard=256, batch_size=64),
        eval=EvalConfig(annotations=str(corpus_dir / "video_label.json"), holdout_last=64,
                        label_keys=("label", "object", "direction", "colour"), feature="pooled", k=10),
        train=TrainConfig(
            output_dir=str(root / f"stage1{suffix}"),
            max_steps=steps,
            optimizer=OptimizerConfig(lr=5e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05, grad_clip=3.0),
            schedule=ScheduleConfig(warmup_steps=max(1, steps // 10), min_lr_ratio=0.05),
            checkpoint=CheckpointConfig(every_steps=100, keep_last=1),
            logging=LoggingConfig(every_steps=1, progress="tqdm", tensorboard=False),
            evaluation=EvaluationConfig(every_steps=0),
        ),
    )


# VideoMAEv2-g (mae_g14_hybrid: ViT-g/14, 1408-d, 40 blocks, 16 heads, MLP 6144, qkv bias, LN 1e-6), 16 frames
# at 224 px with tubelet 2: REFERENCE d.
VIDEOMAE_V2_G = {
    "image_size": 224, "patch_size": 14, "num_frames": 16, "tubelet_size": 2, "hidden_size": 1408,
    "num_hidden_layers": 40, "num_attention_heads": 16, "intermediate_size": 6144, "layer_norm_eps": 1e-6,
    "qkv_bias": True, "use_mean_pooling": False,
}


def _official_train(output_dir: str, *, clip_grad: float, min_lr_ratio: float) -> TrainConfig:
    # REFERENCE d: DeepSpeed AdamW (0.9, 0.98), eps 1e-6, wd 0.05 (none on 1-D, biases, pos_embeds, cls), bf16,
    # ZeRO-1, linear warmup from 0 then per-step cosine to min_lr; steps and lr come from epochs and base_lr.
    return TrainConfig(
        output_dir=output_dir,
        optimizer=OptimizerConfig(lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05, grad_clip=clip_grad,
                                  no_weight_decay_keywords=("pos_embed", "cls_token")),
        schedule=ScheduleConfig(kind="cosine", min_lr_ratio=min_lr_ratio, min_lr_mode="rescale"),
        distributed=DistributedConfig(strategy="deepspeed", zero_stage=1, precision="bf16"),
        checkpoint=CheckpointConfig(every_steps=1000, keep_last=2),
        logging=LoggingConfig(every_steps=10, progress="tqdm"),
    )


def _pretraining(size: str) -> DistillConfig:
    """1B / 6B stage 1 (SM/scripts/pretraining/{1B,6B}_pt.sh): InternViT-6B (InternVL-C, 6 layers at interval 1)
    and VideoMAEv2-g (4 layers) teachers, attention masking 0.8 per frame, 16 TSN frames (the student and
    InternViT see 8), GroupMultiScaleCrop 224; lr 1.5e-4 per 256 clips, min 1e-5 per 256, 40 of 301 epochs
    warmup, clip 3, drop-path 0.25 (1B) / 0.3 (6B), activation checkpointing on every block, 32 (1B) / 8 (6B)
    clips per GPU."""
    one_b = size == "1b"
    return DistillConfig(
        model=StudentConfig(name=f"internvideo2-{size}",
                            overrides={"drop_path_rate": 0.25 if one_b else 0.3, "grad_checkpointing": True}),
        teachers=TeachersConfig(
            image=ImageTeacherConfig(kind="internvit", return_layers=6, return_interval=1.0, dtype="bfloat16"),
            video=VideoTeacherConfig(kind="videomae", config=dict(VIDEOMAE_V2_G), return_layers=4,
                                     return_interval=1.0, attention="official", dtype="bfloat16"),
        ),
        data=DataConfig(num_frames=16, size=224, batch_size=32 if one_b else 8, num_workers=12),
        mask=MaskConfig(kind="attention", ratio=0.8),
        base_lr=1.5e-4,
        epochs=301,
        warmup_epochs=40,
        train=_official_train(f"runs/stage1-{size}", clip_grad=3.0, min_lr_ratio=1e-5 / 1.5e-4),
    )


def _distillation(size: str) -> DistillConfig:
    """S14 / B14 / L14 distilled from the 1B stage-2 model (SM/scripts/distillation/*_dist_1B_stage2.sh): the
    teacher sees the student's 8 frames (its 4-frame table interpolated), 6 layers at interval 3.34, MLP heads;
    attention masking 0.8 over the whole clip; lr 1e-3 per 256 clips, min 1e-5 per 256, 20 of 101 epochs warmup,
    clip 5, drop-path 0.05, 128 clips per GPU."""
    return DistillConfig(
        model=StudentConfig(name=f"internvideo2-{size}", overrides={"drop_path_rate": 0.05}),
        teachers=TeachersConfig(
            image=ImageTeacherConfig(kind="iv2_video", model="internvideo2-1b.stage2-f4", checkpoint_num_frames=4,
                                     return_layers=6, return_interval=3.34, dtype="bfloat16"),
        ),
        data=DataConfig(num_frames=8, size=224, batch_size=128, num_workers=12),
        mask=MaskConfig(kind="attention", ratio=0.8),
        base_lr=1e-3,
        epochs=101,
        warmup_epochs=20,
        train=_official_train(f"runs/distill-{size}", clip_grad=5.0, min_lr_ratio=1e-5 / 1e-3),
    )


FLAVORS: dict[str, Callable[[], DistillConfig]] = {
    "tiny-synthetic": synthetic_config,
    "tiny-synthetic-quick": lambda: synthetic_config(quick=True),
    "1b": lambda: _pretraining("1b"),
    "6b": lambda: _pretraining("6b"),
    "s14": lambda: _distillation("s14"),
    "b14": lambda: _distillation("b14"),
    "l14": lambda: _distillation("l14"),
}
"""Named configs for ``iv2-distill train FLAVOR`` (and ``load_config(DistillConfig, FLAVOR, flavors=FLAVORS)``)."""
