"""Helpers of the training tests: a small synthetic corpus, random-weight teachers saved as the synthetic flavor
saves trained ones, and a tiny run config over them (seconds per run on a CPU)."""

from __future__ import annotations

from pathlib import Path

import torch

from iv2_distill import DistillConfig, synthetic_config
from iv2_train import apply_overrides

CORPUS_CLIPS = 40
HOLDOUT = 8


def write_small_corpus(root: Path) -> Path:
    from iv2_data import write_corpus

    write_corpus(root, CORPUS_CLIPS, num_frames=8, size=64, seed=0)
    return root


def write_random_teachers(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """An iv2-encoders image model (save_pretrained) and a transformers VideoMAE (save_pretrained) with random
    weights, shaped as the quick synthetic flavor's teachers (the student's 4 x 4 grid)."""
    from transformers import VideoMAEConfig, VideoMAEModel

    from iv2_encoders import create_model, save_pretrained

    torch.manual_seed(seed)
    image = create_model("internvideo2-tiny", num_frames=1, embed_dim=48, depth=3, num_heads=4, init_values=0.1,
                         attn_pool_num_heads=4, clip_embed_dim=32)
    save_pretrained(image, root / "image")
    video = VideoMAEModel(VideoMAEConfig(image_size=28, patch_size=7, num_frames=8, tubelet_size=2, hidden_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                         use_mean_pooling=False))
    video.save_pretrained(str(root / "video"))
    return root / "image", root / "video"


def tiny_config(root: Path, corpus: Path, teachers: Path | None, *overrides: str, cache: bool = True) -> DistillConfig:
    """The quick synthetic flavor shrunk for tests: the small corpus, given teachers (``None``: train the
    synthetic ones, few steps), 4 steps of 8 clips, cached targets (float32) unless ``cache=False``."""
    cfg = synthetic_config(root, corpus=corpus, quick=True)
    words = [
        f"data.corpus.num_samples={CORPUS_CLIPS}", f"data.holdout_last={HOLDOUT}", f"eval.holdout_last={HOLDOUT}",
        "data.batch_size=8", "eval.k=5", "eval.batch_size=16",
        "cache.items_per_shard=16", "cache.dtype=float32", "cache.batch_size=16",
        "train.max_steps=4", "train.schedule.warmup_steps=1", "train.checkpoint.every_steps=2",
        "train.logging.progress=none", "train.logging.plots=false",
        "teachers.synthetic.image_steps=3", "teachers.synthetic.video_steps=3", "teachers.synthetic.batch_size=8",
    ]
    if teachers is not None:
        words += ["teachers.synthetic.enabled=false", f"teachers.image.path={teachers / 'image'}",
                  f"teachers.video.path={teachers / 'video'}"]
    if not cache:
        words.append("cache.dir=")
    return apply_overrides(cfg, [*words, *overrides])
