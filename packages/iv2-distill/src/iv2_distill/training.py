"""Stage-1 training on iv2-train: :class:`DistillationModel` (what the Trainer steps) and :func:`train`.

One step, as the official engine (SM/engines/engine_for_pretraining.py, engine_for_distill.py): the frozen
teachers give the full-clip targets under ``no_grad`` (or the target cache does), a mask is drawn from the CLIP
teacher's saliency, the student sees every ``frame_stride``-th frame — cast to bf16 first under bf16 precision, as
the official loop casts its input — with the mask, and the loss is :func:`~iv2_distill.distillation_loss`, each
term logged (``loss_clip_middle``, ``loss_clip_final``, ``loss_mae``).

Masks are drawn per sample from a generator seeded with ``(train.seed, draw, sample index)`` — ``draw`` counts
training forwards and is a buffer of the model, so it is checkpointed — which makes them independent of how a
batch is split over processes (2 processes equal 1 on the same global batch) and exact on resume.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import TARGET_PREFIX
from .loss import distillation_loss
from .masking import attention_mask, random_mask, tube_mask
from .model import DistillStudent
from .recipe import DistillConfig, MaskConfig, check_ready
from .teachers.base import DistillTeachers, TeacherOutput

log = logging.getLogger("iv2_distill")

_PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def mask_seed(seed: int, draw: int, index: int) -> int:
    """The generator seed of the mask of sample ``index`` at training forward ``draw``."""
    return ((seed * 1_000_003 + draw) * 1_000_033 + index) % 2**63


class DistillationModel(nn.Module):
    """The student and (unless targets come from a cache) the frozen teachers; ``forward(batch)`` returns the
    stage-1 losses for the Trainer.

    ``batch``: ``video`` — the full clip ``(B, 3, stride·T, H, W)`` with live teachers, or the student's frames
    ``(B, 3, T, H, W)`` beside cached ``targets.<field>`` tensors (per item, layers second, as
    :class:`~iv2_distill.cache.TargetCache` stores them) — and ``index`` (the sample's index, seeding its mask).
    Returns ``{"loss", "loss_clip_middle", "loss_clip_final", "loss_mae"}``.
    """

    def __init__(
        self,
        student: DistillStudent,
        teachers: DistillTeachers | None = None,
        *,
        mask: MaskConfig | None = None,
        loss_weights: Sequence[float] = (1.0, 1.0, 1.0),
        per_frame: bool = True,
        input_dtype: torch.dtype | None = None,
        seed: int = 0,
    ) -> None:
        from iv2_train import freeze

        super().__init__()
        self.student = student
        # Teachers are frozen, kept in eval() and left out of checkpoints: they are rebuilt from their own files
        # on every start and resume (REFERENCE: the official teachers are never saved with the student).
        self.teachers = freeze(teachers, checkpoint=False) if teachers is not None else None
        self.mask_cfg = mask or MaskConfig()
        self.loss_weights = tuple(loss_weights)
        self.per_frame = per_frame
        self.input_dtype = input_dtype
        self.seed = seed
        self.register_buffer("mask_draws", torch.zeros((), dtype=torch.long))

    def targets_and_input(self, batch: Mapping[str, Any]) -> tuple[TeacherOutput, torch.Tensor]:
        """The teacher targets for the batch's clips and the student's input frames."""
        from .cache import from_item_major

        video = batch["video"]
        cached = {k[len(TARGET_PREFIX):]: v for k, v in batch.items() if k.startswith(TARGET_PREFIX)}
        if cached:
            return from_item_major(cached), video
        if self.teachers is None:
            raise RuntimeError("the batch holds no cached targets (targets.*) and the model has no teachers")
        with torch.no_grad():  # the teachers only give targets
            targets = self.teachers(video)
        return targets, self.teachers.student_frames(video)

    def draw_mask(self, targets: TeacherOutput, index: Sequence[int], device: torch.device) -> torch.Tensor:
        """``(B, T·HW)`` bool, True = dropped; one generator per sample (see the module docstring)."""
        cfg, grid = self.mask_cfg, self.student.cfg.grid_size
        draw = int(self.mask_draws)
        if self.training:
            self.mask_draws += 1
        masks = []
        for row, sample in enumerate(index):
            generator = torch.Generator(device=device).manual_seed(mask_seed(self.seed, draw, int(sample)))
            if cfg.kind == "attention":
                if targets.saliency is None:
                    raise ValueError("mask.kind=attention needs the CLIP teacher's saliency; this teacher gives none")
                saliency = targets.saliency[row:row + 1].to(device)
                masks.append(attention_mask(saliency, cfg.ratio, generator, per_frame=self.per_frame))
            elif cfg.kind == "random":
                masks.append(random_mask(1, grid, cfg.ratio, generator, device=device))
            else:
                masks.append(tube_mask(1, grid, cfg.ratio, generator, device=device))
        return torch.cat(masks)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        targets, student_input = self.targets_and_input(batch)
        index = torch.as_tensor(batch["index"]).tolist()
        mask = self.draw_mask(targets, index, student_input.device)
        if self.input_dtype is not None:  # REFERENCE o: the student input is cast before the forward
            student_input = student_input.to(self.input_dtype)
        out = self.student(student_input, mask)
        terms = distillation_loss(out, targets, mask, self.loss_weights)
        return {"loss": terms["loss"], **{f"loss_{k}": terms[k] for k in ("clip_middle", "clip_final", "mae")}}


@dataclasses.dataclass
class DistillResult:
    """What :func:`train` returns. ``metrics``: ``loss_first`` / ``loss_last`` (the first and last logged
    training loss), the final evaluation (``knn_top1_<key>``, ``linear_top1_<key>``, ``chance_<key>``) and the
    random-init baseline (``random_knn_top1_<key>`` …) when evaluated; also written to ``metrics_path``."""

    train: Any  # iv2_train.TrainResult
    output_dir: Path
    weights: Path | None  # final/model.safetensors: the student encoder in iv2_encoders layout
    encoder_dir: Path | None  # final/encoder: the same as a save_pretrained folder
    metrics: dict[str, float]
    metrics_path: Path | None
    teachers: dict[str, Any] = dataclasses.field(default_factory=dict)  # synthetic teachers' reports


# ----------------------------------------------------------------------------------------------- preparation
def prepare_corpus(cfg: DistillConfig) -> Path | None:
    """Write the synthetic corpus of ``cfg.data.corpus`` if asked for and missing or of older records
    (rank 0; collective). A corpus already there is used as it is (its clips decide; the teachers and the
    target cache record which)."""
    from iv2_data.synthetic import corpus_is_current
    from iv2_train import barrier, get_rank

    corpus = cfg.data.corpus
    if corpus.num_samples <= 0:
        return None
    root = Path(corpus.dir)
    if get_rank() == 0 and not corpus_is_current(root):  # whole (corpus.json comes last), current records
        from iv2_data import write_corpus

        log.info("writing the synthetic corpus (%d clips) to %s", corpus.num_samples, root)
        write_corpus(root, corpus.num_samples, num_frames=corpus.num_frames, size=corpus.size, fps=corpus.fps,
                     seed=corpus.seed, progress=cfg.train.logging.progress != "none")
    barrier()
    return root


def frame_stride(cfg: DistillConfig, student_frames: int) -> int:
    if cfg.data.num_frames % student_frames:
        raise ValueError(f"data.num_frames={cfg.data.num_frames} is not a multiple of the student's {student_frames} "
                         "frames (the clip holds frame_stride x the student's frames)")
    return cfg.data.num_frames // student_frames


def _per_frame(cfg: DistillConfig) -> bool:
    if cfg.mask.per_frame is not None:
        return cfg.mask.per_frame
    return cfg.teachers.image.kind != "iv2_video"  # a whole-clip CLIP teacher: masks over the clip (S/B/L)


def _resolve_schedule(cfg: DistillConfig, num_samples: int, world_size: int) -> DistillConfig:
    """``base_lr`` and ``epochs`` turned into the runtime's absolute lr and step counts (official scaling)."""
    cfg = copy.deepcopy(cfg)
    global_batch = cfg.data.batch_size * world_size * cfg.train.grad_accum_steps
    if cfg.base_lr > 0:
        cfg.train.optimizer.lr = cfg.base_lr * global_batch / 256
    if cfg.epochs > 0:
        per_epoch = max(1, num_samples // global_batch)
        cfg.train.max_steps = max(1, round(cfg.epochs * per_epoch))
        cfg.train.schedule.warmup_steps = round(cfg.warmup_epochs * per_epoch)
    return cfg


def build_training(cfg: DistillConfig, *, teachers: DistillTeachers | None = None
                   ) -> tuple[DistillationModel, Any, DistillConfig]:
    """The model the Trainer steps, its resumable data and the config with the schedule resolved: what
    :func:`train` runs. Collective (the corpus, the synthetic teachers and the target cache are prepared first
    when the config asks for them)."""
    from iv2_data import collate
    from iv2_train import ResumableBatches, get_world_size, init_distributed

    from .cache import TargetCache, build_target_cache, cache_spec
    from .checkpoint import load_checkpoint
    from .data import ViewDataset, live_dataset, training_records
    from .model import create_student
    from .synthetic_teachers import prepare_synthetic_teachers
    from .teachers.build import build_teachers

    check_ready(cfg)
    env = init_distributed(cfg.train.distributed)
    prepare_corpus(cfg)
    if cfg.teachers.synthetic.enabled:
        prepare_synthetic_teachers(cfg)
    torch.manual_seed(cfg.train.seed)  # the same initial student on every rank
    student = create_student(cfg.model.name, **cfg.model.overrides)
    if cfg.model.init:
        load_checkpoint(student, cfg.model.init, num_frames=cfg.model.init_num_frames or None,
                        strict=cfg.model.init_strict)
    stride = frame_stride(cfg, student.cfg.num_frames)
    records = training_records(cfg.data.annotations, cfg.data.media_root or None, cfg.data.holdout_last)
    if cfg.cache.dir:
        spec = cache_spec(cfg, records, stride)
        if cfg.cache.build:
            build_target_cache(cfg, teachers=teachers, progress=cfg.train.logging.progress != "none")
        cache = TargetCache(cfg.cache.dir, expected=spec)
        dataset = ViewDataset(records, cache.record_of, cache.views, cfg.data.size, frame_stride=stride,
                              targets=cache.targets, frame_cache_mb=cfg.data.frame_cache_mb)
        teachers = None  # the point of the cache: no teacher in memory while training
    else:
        if teachers is None:
            teachers = build_teachers(cfg.teachers, clip_frames=cfg.data.num_frames, device=env.device)
        teachers.check_student(student.cfg)
        if teachers.frame_stride != stride:
            raise ValueError(f"data.num_frames={cfg.data.num_frames} gives {stride} clip frames per student frame, "
                             f"but the teachers take every {teachers.frame_stride}-th (the video teacher's tubelet)")
        dataset = live_dataset(records, cfg.data.num_frames, cfg.data.size)
    cfg = _resolve_schedule(cfg, len(dataset), get_world_size())
    model = DistillationModel(student, teachers, mask=cfg.mask, loss_weights=cfg.loss_weights,
                              per_frame=_per_frame(cfg), input_dtype=_PRECISION_DTYPES.get(
                                  cfg.train.distributed.precision), seed=cfg.train.seed)
    data = ResumableBatches(dataset, cfg.data.batch_size, seed=cfg.train.seed, collate_fn=collate,
                            num_workers=cfg.data.num_workers)
    return model, data, cfg


class _Evaluation:
    """The run's frozen-feature evaluation: the labelled clips are read once (on rank 0, which evaluates; the set
    is small next to training) and serve every evaluation and the random-init baseline."""

    def __init__(self, cfg: DistillConfig) -> None:
        self.cfg = cfg
        self.clips: Any = None

    def run(self, encoder: Any) -> dict[str, float]:
        from .evaluation import evaluate_encoder, read_labelled_clips

        e = self.cfg.eval
        if self.clips is None:
            self.clips = read_labelled_clips(e.annotations, num_frames=encoder.cfg.num_frames,
                                             size=encoder.cfg.img_size, holdout_last=e.holdout_last,
                                             media_root=e.media_root or None, label_keys=e.label_keys,
                                             batch_size=e.batch_size)
        return evaluate_encoder(encoder, self.clips, label_keys=tuple(e.label_keys), feature=e.feature, k=e.k,
                                temperature=e.temperature, linear_probe=e.linear_probe, batch_size=e.batch_size)

    def __call__(self, trainer: Any) -> dict[str, float]:
        """The Trainer's ``evaluate`` hook: rank 0 evaluates the student, every rank gets its numbers."""
        from iv2_train import broadcast_object, get_rank

        return broadcast_object(self.run(trainer.module.student) if get_rank() == 0 else None)

    def random_baseline(self, encoder_cfg: Any) -> dict[str, float]:
        """The evaluation of a randomly initialised encoder of the student's architecture (seeded)."""
        from iv2_encoders import VideoEncoder

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.train.seed)
            encoder = VideoEncoder(encoder_cfg)
        return self.run(encoder)


def train(cfg: DistillConfig) -> DistillResult:
    """Run stage 1 as ``cfg`` says (see :class:`~iv2_distill.recipe.DistillConfig`); resumes from the newest
    checkpoint in ``train.output_dir``. Writes ``final/model.safetensors`` (the student encoder alone, heads
    dropped, ``iv2_encoders`` layout), ``final/encoder/`` (the same as a ``save_pretrained`` folder) and
    ``eval.json`` (the metrics of :class:`DistillResult`)."""
    from iv2_data import atomic_write
    from iv2_train import Trainer, barrier, get_rank, read_metrics

    from .export import export_encoder, student_encoder_state

    model, data, cfg = build_training(cfg)
    evaluation = _Evaluation(cfg) if cfg.eval.annotations else None
    trainer = Trainer(model, data, cfg.train, run_config=cfg, evaluate=evaluation, export=student_encoder_state)
    result = trainer.fit()
    out = Path(cfg.train.output_dir)
    teachers = {}
    if cfg.teachers.synthetic.enabled:
        from .synthetic_teachers import TEACHER_FILE

        for role, section in (("image", cfg.teachers.image), ("video", cfg.teachers.video)):
            teachers[role] = json.loads((Path(section.path) / TEACHER_FILE).read_text(encoding="utf-8"))
    metrics: dict[str, float] = {}
    encoder_dir = metrics_path = None
    if get_rank() == 0:
        rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
        if rows:
            metrics.update(loss_first=float(rows[0]["loss"]), loss_last=float(rows[-1]["loss"]))
        metrics.update({k.removeprefix("eval/"): float(v) for k, v in result.eval_metrics.items() if k != "step"})
        if result.final_weights is not None:
            encoder_dir = export_encoder(result.final_weights, out / "final" / "encoder", model=cfg.model.name,
                                         overrides=cfg.model.overrides).output
        if evaluation is not None and cfg.eval.random_baseline:
            metrics.update({f"random_{k}": v for k, v in evaluation.random_baseline(model.student.cfg).items()
                            if not k.startswith(("chance", "queries", "bank"))})
        metrics_path = out / "eval.json"
        with atomic_write(metrics_path, "w", encoding="utf-8") as f:
            json.dump({"metrics": metrics, "teachers": teachers}, f, indent=1)
    barrier()
    return DistillResult(result, out, result.final_weights, encoder_dir, metrics, metrics_path, teachers)
