"""The stage-2 training recipe as one typed config (:class:`AlignConfig`) with named flavors.

``iv2-align train [FLAVOR|YAML] [key=value ...]`` and :func:`iv2_align.train` take it; loading (YAML, dotted
overrides, strict keys and types, errors naming the key) is ``iv2_train``'s. Sections:

- ``model``: which stage-2 model, its tokenizer and where its towers start from (a stage-1 encoder, a
  pretrained BERT, a BEATs checkpoint, or a whole stage-2 checkpoint);
- ``data``: the synthetic corpus (with a held-out split) or annotation files, the media sources the
  MetaLoader mixes (one per step) and their batch sizes;
- ``loss``: the official loss weights;
- ``masked`` / ``unmasked``: the paper's two phases — masked visual-audio-language alignment (random 80% video
  masks, the audio encoder frozen), then unmasked post-pretraining with the video encoder frozen. A phase with
  ``steps: 0`` is skipped. Each phase is one ``iv2_train`` run in ``train.output_dir/<phase>``;
  ``train.max_steps`` is replaced by the phase's ``steps``;
- ``evaluation``: held-out retrieval (during training every ``train.evaluation.every_steps`` and at the end);
- ``train``: the runtime (:class:`iv2_train.TrainConfig`: optimizer, schedule, strategy, precision, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from iv2_train import (
    TRAIN_FLAVORS,
    CheckpointConfig,
    DistributedConfig,
    EvaluationConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    load_config,
)

from .objective import MEDIA_TYPES, LossWeights

SYNTHETIC_TOKENIZER = "synthetic"
# MetaLoader source -> the sample kind (iv2-data builder / annotation file) it reads
SOURCE_KINDS = {"image": "image_text", "video": "video_text", "audio": "audio_text", "audio_video": "video_audio_text"}


@dataclass
class ModelSection:
    """Which stage-2 model and where its weights start from."""

    # a registered stage-2 model (iv2_align.list_stage2_models()) whose sizes the overrides below change
    name: str = "internvideo2-stage2-tiny-av"
    vision: dict[str, Any] = field(default_factory=dict)  # VideoEncoderConfig fields (depth, num_frames, ...)
    text: dict[str, Any] = field(default_factory=dict)  # BERT config fields; vocab_size follows the tokenizer
    audio: dict[str, Any] = field(default_factory=dict)  # BEATsConfig fields
    fusion_layer: int | None = None
    embed_dim: int | None = None
    av_concat_dim: int | None = None
    temp: float | None = None
    # "synthetic": a BertTokenizer over the synthetic corpus' words; else an HF BERT tokenizer (path or hub id)
    tokenizer: str = SYNTHETIC_TOKENIZER
    max_text_length: int = 32
    # a whole stage-2 checkpoint (official layout or an iv2-align export) to start from
    init: str | None = None
    # the video encoder from stage 1: a save_pretrained folder or an official stage-1 checkpoint; its position
    # table is interpolated to this model's frames (8 -> 4 as the official code)
    vision_init: str | None = None
    vision_init_num_frames: int | None = None  # frames the vision_init was trained with (inferred if None)
    text_init: str | None = None  # an HF BERT (path or hub id): the official BertForMaskedLM.from_pretrained
    audio_init: str | None = None  # an official BEATs checkpoint ({"cfg", "model"})
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.max_text_length < 2:
            raise ValueError(f"model.max_text_length must be >= 2, got {self.max_text_length}")


@dataclass
class DataSection:
    """Training and evaluation data. Either ``corpus`` (the synthetic corpus folder; written by
    ``iv2_data.write_corpus`` on first use, the last ``held_out`` clips kept for evaluation) or annotation files
    in the official layouts (``video_text`` ...; media paths relative to ``media_root`` or the file's folder)."""

    corpus: str | None = None
    corpus_clips: int = 256  # only used when the corpus is written here
    corpus_frames: int = 8
    corpus_size: int = 64
    corpus_seed: int = 0
    held_out: int = 64
    max_train_clips: int | None = None  # train on the first N non-held-out clips only (quick runs)
    video_text: str | None = None
    image_text: str | None = None
    audio_text: str | None = None
    video_audio_text: str | None = None
    media_root: str | None = None
    # the MetaLoader's sources, one per step in proportion to their number of batches
    sources: tuple[str, ...] = ("image", "video", "audio_video")
    batch_size: dict[str, int] = field(default_factory=lambda: {k: 32 for k in MEDIA_TYPES})  # per process
    num_frames: int | None = None  # default: the model's
    size: int | None = None  # default: the model's img_size
    # official training reads (random frame per segment, random resized crop, flips unless a record forbids
    # them); False reads training clips as evaluation does (middle frames, resize), which cache_media allows
    train_augment: bool = True
    caption_sampling: Literal["random", "first"] = "random"  # which caption of a multi-caption record per access
    cache_media: bool = False  # keep decoded clips and filter banks in memory (deterministic reads only)
    audio_seconds: float = 10.0  # filter-bank length (10 s = 998 rows, the official input)
    num_workers: int = 0
    max_broken_fraction: float = 0.05  # iv2_data.BrokenSamplePolicy: unreadable media skipped up to this share

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sources) - set(MEDIA_TYPES))
        if unknown or not self.sources:
            raise ValueError(f"data.sources must name some of {list(MEDIA_TYPES)}, got {list(self.sources)}")
        missing = [s for s in self.sources if s not in self.batch_size]
        if missing:
            raise ValueError(f"data.batch_size has no entry for sources {missing}")
        if any(int(v) < 1 for v in self.batch_size.values()):
            raise ValueError(f"data.batch_size values must be >= 1, got {self.batch_size}")
        if self.cache_media and self.train_augment:
            raise ValueError("data.cache_media needs deterministic reads: set data.train_augment=false too")
        if self.held_out < 0 or self.audio_seconds <= 0:
            raise ValueError("data.held_out must be >= 0 and data.audio_seconds > 0")
        if self.max_train_clips is not None and self.max_train_clips < 1:
            raise ValueError(f"data.max_train_clips must be >= 1 (or null), got {self.max_train_clips}")


@dataclass
class PhaseSection:
    """One phase of the schedule: its length, the video masks, which towers are frozen, its learning rate."""

    steps: int = 0
    video_mask_type: Literal["random", "tube", "none"] = "random"
    video_mask_ratio: float = 0.8
    image_mask_type: Literal["random", "tube", "none"] = "random"
    image_mask_ratio: float = 0.5
    freeze_vision: bool = False
    freeze_audio: bool = True
    freeze_text: bool = False
    lr: float | None = None  # default: train.optimizer.lr
    warmup_steps: int | None = None  # default: train.schedule.warmup_steps

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"phase steps must be >= 0, got {self.steps}")
        for name in ("video_mask_ratio", "image_mask_ratio"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class EvalSection:
    """Retrieval on the held-out data (the official ``evaluation`` + ``itm_eval``)."""

    k_test: int = 128
    batch_size: int = 32
    # every caption of a held-out clip is a query (the official multi-caption retrieval); else the first
    all_captions: bool = True
    # identical caption texts become one query whose ground truth is every clip that has it (the synthetic
    # corpus repeats texts, e.g. its audio captions); the official evaluation keeps duplicates apart
    merge_duplicate_captions: bool = True
    audio: bool = True  # also audio-text (ATC) and audio+video-text (AVTC, AVTM re-ranked) on AV models


@dataclass
class AlignConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossWeights = field(default_factory=LossWeights)
    masked: PhaseSection = field(default_factory=lambda: PhaseSection(steps=1000))
    unmasked: PhaseSection = field(default_factory=lambda: PhaseSection(
        steps=0, video_mask_type="none", image_mask_type="none", freeze_vision=True))
    evaluation: EvalSection = field(default_factory=EvalSection)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/align"))
    # torch intra-op threads while train() runs (None: torch's default). The tiny flavors use 1: their matrices
    # are too small to share, and on a loaded 2-core machine two OpenMP threads cost 5x the CPU time (README)
    threads: int | None = None

    def phases(self) -> list[tuple[str, PhaseSection]]:
        """The phases that run, in order."""
        return [(name, phase) for name, phase in (("masked", self.masked), ("unmasked", self.unmasked))
                if phase.steps > 0]

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or null for torch's default), got {self.threads}")
        if not self.phases():
            raise ValueError("masked.steps and unmasked.steps are both 0: nothing to train")
        for source in self.data.sources:
            if not self.loss.terms_for(source):
                raise ValueError(f"data.sources has {source!r} but all of its loss weights are 0 "
                                 f"({', '.join(LossWeights().terms_for(source)) or 'atc, amlm'})")


# ------------------------------------------------------------------------------------------------- flavors
def _tiny_synthetic(quick: bool = False) -> AlignConfig:
    # Sized for a 2-core CPU (README: measured time and retrieval). The audio-visual tiny model; a 64-d, 4-layer
    # BERT-style text encoder over the corpus vocabulary (2 text + 2 fusion layers); a tiny BEATs fed 2 s filter
    # banks (the clips are 1 s long; 10 s would be 90% padding). Decisions for learning from scratch in minutes,
    # each measured (README): no dropout, LayerScale starting at 0.1 instead of 1e-5, VTM negatives drawn
    # uniformly (with hard negatives the matching head stays at its prior at this scale), k_test 4 (the
    # official 128 of MSR-VTT's 1000 candidates is 13%; at this scale the matching head orders the top few ITC
    # candidates well but demotes good ones from further down: on the default run's 64 held-out clips k_test
    # 2/4/8/16 gave t2v R@1 12.0/10.9/7.8/7.3 against ITC's 14.1, v2t 10.9/17.2/12.5/12.5 against 9.4),
    # training clips read like evaluation clips and kept in memory (decoding costs 5x the model's step here).
    # quick: 120 + 30 steps; 80 + 20 left v2t R@1 at 2x chance on the demo's quick corpus (3 of 64 clips), too
    # close to chance to show learning (120 + 30: t2v 4.7x, v2t 3.9x chance; random init 4.3x / 5.8x).
    masked_steps, unmasked_steps = (120, 30) if quick else (600, 200)
    return AlignConfig(
        model=ModelSection(
            name="internvideo2-stage2-tiny-av",
            vision=dict(init_values=0.1),
            text=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                      max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
            fusion_layer=2, embed_dim=32, av_concat_dim=64, max_text_length=24,
        ),
        data=DataSection(
            corpus="runs/synthetic-corpus", corpus_clips=768, held_out=64,
            max_train_clips=192 if quick else None,
            sources=("image", "video", "audio_video") if quick else ("image", "video", "audio_video", "audio"),
            batch_size={"image": 32, "video": 32, "audio": 32, "audio_video": 32},
            train_augment=False, cache_media=True, audio_seconds=2.0,
        ),
        loss=LossWeights(atc=1.0, vtm_hard_neg=False),
        masked=PhaseSection(steps=masked_steps),
        unmasked=PhaseSection(steps=unmasked_steps, video_mask_type="none", image_mask_type="none",
                              freeze_vision=True),
        evaluation=EvalSection(k_test=4, batch_size=64),
        train=TrainConfig(
            output_dir="runs/align-tiny-synthetic" + ("-quick" if quick else ""),
            max_steps=1,
            seed=0,
            optimizer=OptimizerConfig(lr=3e-3, betas=(0.9, 0.98), weight_decay=0.05, grad_clip=3.0),
            schedule=ScheduleConfig(warmup_steps=10, min_lr_ratio=0.01, min_lr_mode="clamp"),
            distributed=DistributedConfig(find_unused_parameters=True),
            checkpoint=CheckpointConfig(every_steps=200, keep_last=1),
            logging=LoggingConfig(every_steps=10, progress="tqdm", tensorboard=False, plots=not quick),
            evaluation=EvaluationConfig(every_steps=0 if quick else 200),
        ),
        threads=1,
    )


def _stage2_runtime(output_dir: str) -> TrainConfig:
    train = TRAIN_FLAVORS["stage2"]()
    train.output_dir = output_dir
    train.distributed.find_unused_parameters = True
    return train


def _official_1b() -> AlignConfig:
    # scripts/pretraining/stage2/1B/config.py: video-text (no audio), BERT-large from bert-large-uncased, text
    # length 32, vtc/vtm/mlm = 1, 4 frames at 224, random masks 0.8 (video) / 0.5 (image). The stage-1 encoder
    # goes in model.vision_init; the annotation files in data.*. The unmasked phase's length is not in any
    # released config (REFERENCE i): 1 epoch-sized default, change it to your data.
    return AlignConfig(
        model=ModelSection(name="internvideo2-stage2-1b", tokenizer="bert-large-uncased",
                           text_init="bert-large-uncased", max_text_length=32, grad_checkpointing=True),
        data=DataSection(sources=("image", "video"), batch_size={"image": 64, "video": 64},
                         train_augment=True, audio_seconds=10.0),
        loss=LossWeights(avtc=0.0, avtm=0.0, avmlm=0.0),
        masked=PhaseSection(steps=10 * 1000, freeze_audio=True),
        unmasked=PhaseSection(steps=1000, video_mask_type="none", image_mask_type="none", freeze_vision=True),
        train=_stage2_runtime("runs/stage2-1b"),
    )


def _official_6b() -> AlignConfig:
    # scripts/pretraining/stage2/6B/config.py: audio-visual model, BEATs frozen (model.audio_init = beats.pth),
    # text length 40, vtc/vtm/mlm/avtc/avtm/avmlm = 1, batch 64 per GPU; image, video and audio_video loaders.
    return AlignConfig(
        model=ModelSection(name="internvideo2-stage2-6b", tokenizer="bert-large-uncased",
                           text_init="bert-large-uncased", max_text_length=40, grad_checkpointing=True),
        data=DataSection(sources=("image", "video", "audio_video"),
                         batch_size={"image": 64, "video": 64, "audio_video": 64}, train_augment=True),
        loss=LossWeights(),
        masked=PhaseSection(steps=5 * 1000, freeze_audio=True),
        unmasked=PhaseSection(steps=1000, video_mask_type="none", image_mask_type="none", freeze_vision=True),
        train=_stage2_runtime("runs/stage2-6b"),
    )


ALIGN_FLAVORS: dict[str, Callable[[], AlignConfig]] = {
    "tiny-synthetic": _tiny_synthetic,
    "tiny-synthetic-quick": lambda: _tiny_synthetic(quick=True),
    "1b": _official_1b,
    "6b": _official_6b,
}


def load_align_config(source: str | Path | None = "tiny-synthetic", overrides: Sequence[str] = ()) -> AlignConfig:
    """An :class:`AlignConfig` from a flavor name or YAML file plus ``key.sub=value`` overrides."""
    return load_config(AlignConfig, source, overrides, flavors=ALIGN_FLAVORS)


def synthetic_config(root: str | Path = "runs/align-synthetic", *, corpus: str | Path | None = None,
                     vision_init: str | Path | None = None, quick: bool = False) -> AlignConfig:
    """The CPU demo's stage 2 (the ``tiny-synthetic`` flavor, or ``tiny-synthetic-quick`` with ``quick``), every
    path under ``root``: the synthetic corpus (``corpus``, default ``root/corpus[-quick]``, written when missing:
    768 clips, 256 quick, of 8 frames at 64 px; a corpus that is there already is used as it is), the last 64
    clips held out for evaluation; the run in ``root/stage2-<init>[-quick]`` where ``<init>`` is ``stage1`` with
    a ``vision_init`` (a stage-1 ``iv2_encoders.save_pretrained`` folder; its position table is interpolated to
    4 frames) and ``random`` without, so that the demo's two runs in one root never meet; the exports in the
    run's ``export/`` (:attr:`AlignResult.encoder_dir` is the vision encoder for stage 3)."""
    cfg = _tiny_synthetic(quick=quick)
    root = Path(root)
    suffix = "-quick" if quick else ""
    cfg.data.corpus = str(Path(corpus) if corpus is not None else root / f"corpus{suffix}")
    cfg.data.corpus_clips = 256 if quick else 768
    cfg.model.vision_init = str(vision_init) if vision_init is not None else None
    cfg.train.output_dir = str(root / f"stage2-{'stage1' if vision_init is not None else 'random'}{suffix}")
    return cfg


def phase_train_config(cfg: AlignConfig, name: str, phase: PhaseSection) -> TrainConfig:
    """The runtime config of one phase: its own folder, steps, learning rate and warmup."""
    train = cfg.train
    optimizer = dataclasses.replace(train.optimizer, lr=phase.lr if phase.lr is not None else train.optimizer.lr)
    warmup = phase.warmup_steps if phase.warmup_steps is not None else train.schedule.warmup_steps
    schedule = dataclasses.replace(train.schedule, warmup_steps=min(warmup, phase.steps))
    return dataclasses.replace(train, output_dir=str(Path(train.output_dir) / name), max_steps=phase.steps,
                               optimizer=optimizer, schedule=schedule)
