"""The CLIP variant's training: post-pretraining from stage 2 with the contrastive loss only.

Official: MM/scripts/pretraining/clip/6B/config.py + models/internvideo2_clip.py (REFERENCE i): the stage-2 video
encoder (``vision_encoder.*``, position table at the stage-2 frame count, distillation heads dropped) frozen
except its attention-pooling head ``clip_projector``; a text tower frozen except ``text_projection``; VTC with
``temp`` 0.01 clamped from below at 0.01; lr 4e-4, wd 0.2, warmup 0.2 of 1 epoch, 8 frames.

The text tower is any Hugging Face text model (``text``: a local path or hub id; ``text_config``: a fresh one
from a config dict with ``model_type``); by default it is the stage-2 model's own text layers (``0 ..
fusion_layer - 1`` of its BERT, what its ITC feature is computed with) as an HF ``BertModel``. One iv2-train run
in ``train.output_dir``; products in ``output_dir/export``: ``clip/model.safetensors`` (the official CLIP key
layout) and ``vision_encoder/`` (``iv2_encoders.save_pretrained``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from iv2_train import (
    CheckpointConfig,
    EvaluationConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
)

from .train_config import DataSection, EvalSection

log = logging.getLogger("iv2_align")


@dataclass
class ClipTrainConfig:
    # a stage-2 model folder (iv2-align train's export/stage2): the video encoder, and the text tower unless
    # text / text_config say otherwise
    stage2: str | None = None
    # or the video encoder alone: an official stage-2 checkpoint / save_pretrained folder of architecture vision_arch
    vision_checkpoint: str | None = None
    vision_arch: str = "internvideo2-1b"
    num_frames: int | None = None  # frames per clip (default: the stage-2 model's; official CLIP: 8)
    text: str | None = None  # an HF text model (path or hub id)
    text_config: dict[str, Any] = field(default_factory=dict)  # or a fresh one: {"model_type": "bert", ...}
    tokenizer: str | None = None  # default: the stage-2 folder's tokenizer, or text's
    text_pooling: Literal["last", "first"] = "first"
    max_text_length: int = 32
    temp: float = 0.01
    temp_min: float = 0.01
    freeze_vision: bool = True
    open_vision_clip_projector: bool = True
    freeze_text: bool = True
    open_text_projection: bool = True
    steps: int = 1000
    data: DataSection = field(default_factory=lambda: DataSection(sources=("video",), batch_size={"video": 64}))
    evaluation: EvalSection = field(default_factory=lambda: EvalSection(audio=False))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/align-clip"))

    def __post_init__(self) -> None:
        if bool(self.stage2) == bool(self.vision_checkpoint):
            raise ValueError("give exactly one of stage2 (a stage-2 model folder) and vision_checkpoint")
        if self.text and self.text_config:
            raise ValueError("give text (a pretrained HF model) or text_config (a fresh one), not both")
        if self.stage2 is None and not (self.text or self.text_config):
            raise ValueError("without a stage-2 folder the text tower needs text or text_config")
        if set(self.data.sources) - {"image", "video"}:
            raise ValueError(f"the CLIP variant trains on image and video sources, got {list(self.data.sources)}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def _tiny_synthetic() -> ClipTrainConfig:
    # From the tiny-synthetic stage-2 run: its video encoder (pooling head trained) and its text layers
    # (frozen, new projection). Official optimisation (lr 4e-4 ... 20% warmup) scaled to a few seconds.
    return ClipTrainConfig(
        stage2="runs/align-tiny-synthetic/export/stage2", text_pooling="first", max_text_length=24, steps=60,
        data=DataSection(corpus="runs/synthetic-corpus", held_out=64, sources=("image", "video"),
                         batch_size={"image": 32, "video": 32}, train_augment=False, cache_media=True),
        evaluation=EvalSection(k_test=0, batch_size=64, audio=False),
        train=TrainConfig(
            output_dir="runs/align-clip-tiny-synthetic", max_steps=1,
            optimizer=OptimizerConfig(lr=4e-3, betas=(0.9, 0.98), weight_decay=0.2),
            schedule=ScheduleConfig(warmup_steps=12, min_lr_ratio=0.01, min_lr_mode="clamp"),
            checkpoint=CheckpointConfig(every_steps=100, keep_last=1),
            logging=LoggingConfig(every_steps=5, progress="tqdm", tensorboard=False),
            evaluation=EvaluationConfig(every_steps=0)),
    )


def _official_6b() -> ClipTrainConfig:
    # scripts/pretraining/clip/6B/config.py: InternVL-C's LLaMA text tower (give its HF folder in `text`),
    # 8 frames, lr 4e-4, wd 0.2, 1 epoch with 20% warmup, bf16.
    from iv2_train import TRAIN_FLAVORS

    train = TRAIN_FLAVORS["stage2"]()
    train.output_dir = "runs/clip-6b"
    train.optimizer.lr, train.optimizer.weight_decay = 4e-4, 0.2
    train.schedule.warmup_steps = 200
    return ClipTrainConfig(vision_checkpoint="InternVideo2-stage2_6b-224p-f4.pt", vision_arch="internvideo2-6b",
                           num_frames=8, text="OpenGVLab/InternVL-14B-224px", text_pooling="last", max_text_length=32,
                           steps=1000, train=train)


CLIP_TRAIN_FLAVORS: dict[str, Callable[[], ClipTrainConfig]] = {
    "tiny-synthetic": _tiny_synthetic,
    "6b": _official_6b,
}


@dataclass
class ClipTrainResult:
    output_dir: Path
    train: Any  # iv2_train.TrainResult
    metrics: dict[str, float]
    model_dir: Path | None
    vision_encoder_dir: Path | None


def _stage2_text_tower(bundle: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """The stage-2 text layers as an HF ``BertModel`` config and its weights (``embeddings.*``,
    ``encoder.layer.N.*`` for ``N < fusion_layer``)."""
    from transformers import BertConfig

    text = bundle.model.text_encoder
    config = BertConfig.from_dict({**text.config.to_dict(), "num_hidden_layers": text.fusion_layer})
    state = {}
    for key, value in text.bert.state_dict().items():
        if key.startswith("encoder.layer.") and int(key.split(".")[2]) >= text.fusion_layer:
            continue
        state[key] = value
    return config, state


def build_clip_model(cfg: ClipTrainConfig) -> tuple[Any, Any, int, int]:
    """``(model, tokenizer, num_frames, size)``: the CLIP model with its towers loaded and frozen as configured."""
    from transformers import AutoTokenizer

    from iv2_encoders import create_model, load_state_dict_checked

    from .clip import VideoCLIPConfig, VideoCLIPModel
    from .pretrained import load_stage2

    bundle = load_stage2(cfg.stage2) if cfg.stage2 else None
    if bundle is not None:
        vision_cfg = bundle.model.cfg.vision
        if cfg.num_frames:
            vision_cfg = vision_cfg.replace(num_frames=cfg.num_frames)
    else:
        vision_cfg = create_model(cfg.vision_arch, num_frames=cfg.num_frames or 4).cfg  # architecture only
    text_state = None
    if cfg.text:
        text_spec: Any = cfg.text
    elif cfg.text_config:
        text_spec = dict(cfg.text_config)
    else:
        text_spec, text_state = _stage2_text_tower(bundle)
    model = VideoCLIPModel(VideoCLIPConfig(
        vision=vision_cfg, text=text_spec, temp=cfg.temp, temp_min=cfg.temp_min, text_pooling=cfg.text_pooling,
        freeze_vision=cfg.freeze_vision, open_vision_clip_projector=cfg.open_vision_clip_projector,
        freeze_text=cfg.freeze_text, open_text_projection=cfg.open_text_projection))
    if bundle is not None:
        # the stage-2 tower at its own frame count; interpolated when the CLIP model uses another one
        from iv2_encoders import load_checkpoint as load_vision

        vision_state = {k: v for k, v in bundle.model.vision_encoder.state_dict().items()}
        load_vision(model.vision_encoder, vision_state, num_frames=bundle.model.cfg.vision.num_frames,
                    source=str(cfg.stage2))
    else:
        from iv2_encoders import load_checkpoint as load_vision

        load_vision(model.vision_encoder, cfg.vision_checkpoint, strict=False)
    if text_state is not None:
        load_state_dict_checked(model.text_encoder.transformer, text_state, source=f"{cfg.stage2} (text layers)",
                                allow_missing=("pooler.", "embeddings.position_ids"))
    tokenizer = (AutoTokenizer.from_pretrained(cfg.tokenizer) if cfg.tokenizer else
                 bundle.tokenizer if bundle is not None else AutoTokenizer.from_pretrained(cfg.text))
    model.freeze()
    return model, tokenizer, vision_cfg.num_frames, vision_cfg.img_size


def train_clip(cfg: ClipTrainConfig) -> ClipTrainResult:
    """Post-train the CLIP variant (module docstring); resumable like :func:`iv2_align.train`."""
    import dataclasses

    from iv2_encoders import PretrainedCfg, save_pretrained
    from iv2_train import MetaLoader, Trainer, barrier, check_config, get_rank, read_safetensors

    from .data import annotation_splits, media_geometry, training_sources
    from .training import HeldOutEvaluator, latest_evaluation

    check_config(cfg)
    if cfg.stage2 and not Path(cfg.stage2).is_dir():
        raise FileNotFoundError(f"stage2: {cfg.stage2} is not a stage-2 model folder; train one first "
                                "(iv2-align train tiny-synthetic writes runs/align-tiny-synthetic/export/stage2)")
    torch.manual_seed(cfg.train.seed)
    model, tokenizer, num_frames, size = build_clip_model(cfg)
    num_frames, size = media_geometry(cfg.data, num_frames, size)
    kinds = sorted({"video_text"} | {"image_text" for s in cfg.data.sources if s == "image"})
    splits = annotation_splits(cfg.data, kinds)
    evaluator = HeldOutEvaluator(cfg.evaluation, cfg.data, splits, tokenizer, num_frames=num_frames, size=size,
                                 max_text_length=cfg.max_text_length, audio_visual=False)
    sources = training_sources(cfg.data, splits, tokenizer, num_frames=num_frames, size=size,
                               max_text_length=cfg.max_text_length, seed=cfg.train.seed)
    train_cfg = dataclasses.replace(cfg.train, max_steps=cfg.steps)
    trainer = Trainer(model, MetaLoader(sources, seed=cfg.train.seed), train_cfg, run_config=cfg,
                      evaluate=evaluator if evaluator else None)
    result = trainer.fit()
    metrics = latest_evaluation(result.output_dir, result.step) or {
        k.removeprefix("eval/"): float(v) for k, v in result.eval_metrics.items() if k != "step"}
    model_dir = vision_dir = None
    root = Path(cfg.train.output_dir)
    if get_rank() == 0 and result.final_weights is not None:
        import shutil

        from iv2_data import atomic_write

        model_dir = root / "export" / "clip"
        model_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(model_dir / "model.safetensors") as partial:
            shutil.copyfile(result.final_weights, partial)
        state = read_safetensors(result.final_weights)
        vision = {k.removeprefix("vision_encoder."): v for k, v in state.items() if k.startswith("vision_encoder.")}
        model.vision_encoder.load_state_dict(vision)
        model.vision_encoder.pretrained_cfg = PretrainedCfg(num_frames=num_frames, img_size=size, resize="squash",
                                                            description="iv2-align CLIP variant")
        vision_dir = save_pretrained(model.vision_encoder, root / "export" / "vision_encoder")
    barrier()
    return ClipTrainResult(root, result, metrics, model_dir, vision_dir)

