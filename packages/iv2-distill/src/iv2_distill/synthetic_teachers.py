"""Two small teachers that carry real information about the synthetic corpus, trained in seconds on its clips:
the stand-ins for the paper's image–text teacher (InternViT-6B) and motion-aware video teacher (VideoMAEv2-g).

* **Image teacher** — an ``iv2_encoders`` InternVideo2 model run on single frames (``T = 1``, attention-pooling
  head), trained to classify one random frame of a clip by its **object** (circle, square, …, digits) and
  **colour**. It sees no motion. As a teacher it runs per frame, and its pooling head's attention is the
  saliency the masks are drawn from — exactly how the official InternVL-C teacher gives it.
* **Video teacher** — a transformers ``VideoMAEModel`` (tubelet 2 over twice the student's frames, as
  VideoMAEv2-g is fed) trained to classify the clip's **motion direction** (left, right, up, down), which no
  single frame shows (the corpus' clips moving left are exactly the time-reversed clips moving right).

Both train with iv2-train's Trainer on the training clips only (the held-out tail never), with the stage-1 crop
(GroupMultiScaleCrop, no flips: the corpus names directions), deterministically for a seed. Each is saved
atomically as a folder — ``save_pretrained`` of iv2-encoders and of transformers — with a ``teacher.json``
saying what it is and its held-out accuracy. A folder that exists is reused ("trained once, cached"); one made
with other settings is an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iv2_data import AnnotationDataset, VideoReadConfig, atomic_write

from .data import ClipBuilder, ClipRecords, read_records, view_crop
from .recipe import DistillConfig
from .teachers.base import resize_clip

log = logging.getLogger("iv2_distill")

TEACHER_FILE = "teacher.json"
IMAGE_TASKS = ("object", "colour")
VIDEO_TASKS = ("direction",)


@dataclasses.dataclass(frozen=True)
class _RawFrames:
    """A 'transform' that keeps the decoded ``uint8 (T, H, W, 3)`` frames: augmentation happens per step."""

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return frames


class _Clips(torch.utils.data.Dataset):
    """Decoded training clips with their labels; each access crops them anew (GroupMultiScaleCrop, no flip) and,
    for the image teacher, picks one random frame. Randomness from torch's global RNG (which the Trainer
    checkpoints)."""

    def __init__(self, frames: torch.Tensor, labels: dict[str, torch.Tensor], size: int, one_frame: bool) -> None:
        self.frames, self.labels, self.one_frame = frames, labels, one_frame
        self.crop = dataclasses.replace(view_crop(size), flip_prob=0.0)

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames = self.frames[index]
        if self.one_frame:
            t = int(torch.randint(frames.shape[0], ()))
            frames = frames[t:t + 1]
        return {"video": self.crop(frames), **{k: v[index] for k, v in self.labels.items()}}


class _Classifier(nn.Module):
    """A backbone with one linear head per task, applied to its pooled feature and to every final token: the loss
    is the cross-entropy of both (summed over tasks). Supervising the tokens too makes every token of the teacher
    carry the task (what stage 1 reconstructs are tokens), not only their pooled summary."""

    def __init__(self, width: int, classes: Mapping[str, int]) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({task: nn.Linear(width, n) for task, n in classes.items()})

    def features(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled (B, C), tokens (B, N, C))``."""
        raise NotImplementedError

    def logits(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.features(video)[0]
        return {task: head(pooled) for task, head in self.heads.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled, tokens = self.features(batch["video"])
        losses = {}
        for task, head in self.heads.items():
            target = batch[task]
            per_token = head(tokens).flatten(0, 1)
            losses[f"loss_{task}"] = F.cross_entropy(head(pooled), target) + F.cross_entropy(
                per_token, target.repeat_interleave(tokens.shape[1]))
        return {"loss": sum(losses.values()), **losses}


class _ImageClassifier(_Classifier):
    def __init__(self, encoder: nn.Module, classes: Mapping[str, int]) -> None:
        super().__init__(encoder.cfg.clip_embed_dim, classes)
        self.encoder = encoder
        self.token_proj = nn.Linear(encoder.cfg.embed_dim, encoder.cfg.clip_embed_dim)

    def features(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.encoder(video)  # pooled: the attention-pooling head's output, the teacher's final target
        return out.pooled, self.token_proj(out.tokens[:, 1:])


class _VideoClassifier(_Classifier):
    def __init__(self, videomae: nn.Module, classes: Mapping[str, int]) -> None:
        super().__init__(videomae.config.hidden_size, classes)
        self.videomae = videomae

    def features(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # resized to the model's input as VideoMAETeacher feeds it; transformers wants (B, T, 3, H, W)
        video = resize_clip(video, self.videomae.config.image_size)
        tokens = self.videomae(pixel_values=video.transpose(1, 2)).last_hidden_state
        return tokens.mean(dim=1), tokens


def synthetic_teacher_settings(cfg: DistillConfig, role: str) -> dict[str, Any]:
    """What a synthetic teacher's weights depend on (recorded in its ``teacher.json``; a mismatch is an error)."""
    syn = cfg.teachers.synthetic
    return {
        "role": role,
        "annotations": str(Path(cfg.data.annotations).resolve()),
        "holdout_last": cfg.data.holdout_last,
        "frames": cfg.data.num_frames,
        "size": cfg.data.size,
        "steps": syn.image_steps if role == "image" else syn.video_steps,
        "batch_size": syn.batch_size,
        "lr": syn.lr,
        "seed": syn.seed,
        "architecture": (cfg.teachers.image.model, dict(syn.image_encoder)) if role == "image"
        else dict(syn.video_encoder),
    }


def prepare_synthetic_teachers(cfg: DistillConfig, *, progress: str | None = None) -> dict[str, dict[str, Any]]:
    """Train the image and video stand-in teachers into ``cfg.teachers.image.path`` / ``video.path`` unless they
    are there already (then check they were made with these settings). Returns each one's ``teacher.json``.
    Collective under several processes (they train together, rank 0 saves)."""
    from iv2_train import barrier, init_distributed

    init_distributed(cfg.train.distributed)
    out = {}
    decoded: dict[str, torch.Tensor] = {}  # the training clips, decoded once for both teachers
    for role in ("image", "video"):
        folder = Path(cfg.teachers.image.path if role == "image" else cfg.teachers.video.path)
        settings = synthetic_teacher_settings(cfg, role)
        if not (folder / TEACHER_FILE).is_file():
            _train_teacher(cfg, role, folder, settings, progress, decoded)
            barrier()
        report = json.loads((folder / TEACHER_FILE).read_text(encoding="utf-8"))
        saved, wanted = report.get("settings", {}), json.loads(json.dumps(settings))  # as JSON stores them
        if saved != wanted:
            changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise ValueError(f"{folder} holds a synthetic {role} teacher trained with other settings ({changed}); "
                             "delete it or point teachers.{role}.path elsewhere")
        out[role] = report
    return out


def _load_clips(cfg: DistillConfig, records: ClipRecords) -> torch.Tensor:
    """Every clip of ``records`` decoded once: uint8 ``(N, T, H, W, 3)`` (middle frame of each segment)."""
    dataset = AnnotationDataset(records.records, records.media_root, builder=ClipBuilder(),
                                video=VideoReadConfig(num_frames=cfg.data.num_frames, transform=_RawFrames()))
    return torch.stack([dataset[i]["video"] for i in range(len(dataset))])


def _labels(records: ClipRecords, tasks: tuple[str, ...], classes: Mapping[str, list[Any]]) -> dict[str, torch.Tensor]:
    out = {}
    for task in tasks:
        missing = [i for i, r in enumerate(records.records) if task not in r]
        if missing:
            raise ValueError(f"{records.source}: record {missing[0]} has no {task!r} field; the synthetic teachers "
                             "train on the synthetic corpus' video_label.json")
        out[task] = torch.tensor([classes[task].index(r[task]) for r in records.records])
    return out


def _train_teacher(cfg: DistillConfig, role: str, folder: Path, settings: dict[str, Any], progress: str | None,
                   decoded: dict[str, torch.Tensor]) -> None:
    from iv2_train import (
        CheckpointConfig,
        LoggingConfig,
        OptimizerConfig,
        ResumableBatches,
        ScheduleConfig,
        TrainConfig,
        Trainer,
        get_rank,
    )

    syn = cfg.teachers.synthetic
    tasks = IMAGE_TASKS if role == "image" else VIDEO_TASKS
    train_records = read_records(cfg.data.annotations, cfg.data.media_root or None,
                                 holdout_last=cfg.data.holdout_last, part="train")
    every = read_records(cfg.data.annotations, cfg.data.media_root or None, part="all").records
    classes = {task: sorted({r[task] for r in every if task in r}) for task in tasks}
    log.info("training the synthetic %s teacher (%s) on %d clips", role, ", ".join(tasks), len(train_records))
    if "train" not in decoded:
        decoded["train"] = _load_clips(cfg, train_records)
    clips = _Clips(decoded["train"], _labels(train_records, tasks, classes), cfg.data.size,
                   one_frame=role == "image")
    torch.manual_seed(syn.seed)  # the same initial weights on every rank and every run
    model = _build_classifier(cfg, role, {t: len(c) for t, c in classes.items()})
    steps = syn.image_steps if role == "image" else syn.video_steps
    train_cfg = TrainConfig(
        output_dir=str(folder.parent / "runs" / role),
        max_steps=steps,
        seed=syn.seed,
        optimizer=OptimizerConfig(lr=syn.lr, weight_decay=0.05, grad_clip=1.0),
        schedule=ScheduleConfig(warmup_steps=max(1, steps // 10)),
        checkpoint=CheckpointConfig(every_steps=max(steps // 2, 1), keep_last=1, export_final=False),
        logging=LoggingConfig(every_steps=max(steps // 10, 1), progress=progress or cfg.train.logging.progress,
                              tensorboard=False, plots=False),
    )
    data = ResumableBatches(clips, min(syn.batch_size, len(clips)), seed=syn.seed)
    Trainer(model, data, train_cfg, run_config=train_cfg).fit()
    if get_rank() != 0:
        return
    accuracy = _heldout_accuracy(cfg, model, role, tasks, classes)
    report = {
        "role": role,
        "what": _describe(role, model),
        "tasks": {task: classes[task] for task in tasks},
        "heldout_accuracy": accuracy,
        "settings": settings,
    }
    with atomic_write(folder, directory=True) as tmp:
        if role == "image":
            from iv2_encoders import save_pretrained

            save_pretrained(model.encoder, tmp)
        else:
            model.videomae.save_pretrained(str(tmp))
        (tmp / TEACHER_FILE).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    log.info("synthetic %s teacher saved to %s; held-out accuracy %s", role, folder, accuracy)


def _build_classifier(cfg: DistillConfig, role: str, classes: Mapping[str, int]) -> nn.Module:
    syn = cfg.teachers.synthetic
    if role == "image":
        from iv2_encoders import create_model

        encoder = create_model(cfg.teachers.image.model or "internvideo2-tiny",
                               **{"img_size": cfg.data.size, **syn.image_encoder})
        return _ImageClassifier(encoder, classes)
    from transformers import VideoMAEConfig, VideoMAEModel

    fields = {"image_size": cfg.data.size, "num_frames": cfg.data.num_frames, **syn.video_encoder}
    return _VideoClassifier(VideoMAEModel(VideoMAEConfig(**fields)), classes)


@torch.no_grad()
def _heldout_accuracy(cfg: DistillConfig, model: nn.Module, role: str, tasks: tuple[str, ...],
                      classes: Mapping[str, list[Any]]) -> dict[str, float]:
    """Top-1 (%) on the held-out clips, read as the evaluation reads them (middle frames, centre crop); the
    image teacher on each clip's middle frame."""
    if cfg.data.holdout_last == 0:
        return {}
    held = read_records(cfg.data.annotations, cfg.data.media_root or None, holdout_last=cfg.data.holdout_last,
                        part="holdout")
    frames = 1 if role == "image" else cfg.data.num_frames
    dataset = AnnotationDataset(held.records, held.media_root, builder=ClipBuilder(),
                                video=VideoReadConfig(num_frames=frames, size=cfg.data.size))
    device = next(model.parameters()).device  # the clips are read on the CPU; the teacher may be on a GPU
    video = torch.stack([dataset[i]["video"] for i in range(len(dataset))]).to(device)
    model.eval()
    logits = {task: out.cpu() for task, out in model.logits(video).items()}
    labels = _labels(held, tasks, classes)
    return {task: round(100.0 * (logits[task].argmax(1) == labels[task]).float().mean().item(), 2) for task in tasks}


def _describe(role: str, model: nn.Module) -> str:
    if role == "image":
        c = model.encoder.cfg
        return (f"image teacher: iv2-encoders InternVideo2 {c.embed_dim}-d x {c.depth} blocks, patch {c.patch_size} at "
                f"{c.img_size} px, run per frame; pooled {c.clip_embed_dim}-d; trained to classify one frame's object "
                "and colour")
    c = model.videomae.config
    return (f"video teacher: transformers VideoMAE {c.hidden_size}-d x {c.num_hidden_layers} layers, patch "
            f"{c.patch_size}, tubelet {c.tubelet_size} over {c.num_frames} frames at {c.image_size} px; trained to "
            "classify the clip's motion direction")
