"""The CLIP variant: a video tower and a text tower trained with the contrastive loss only.

Official: InternVideo2/multi_modality/models/internvideo2_clip.py (+ backbones/internvideo2/
internvideo2_clip_{vision,text}.py). Keys ``vision_encoder.*`` (an ``iv2_encoders.VideoEncoder``; the video
embedding is its attention-pooled ``clip_embed_dim`` feature, no further projection), ``text_encoder.transformer.*``
(any Hugging Face text model; officially InternVL-C's LLaMA), ``text_encoder.text_projection``
(``(text_width, clip_embed_dim)``, applied as ``x @ P``), ``temp`` (init 0.01, clamped from below at
``temp_min``). The text feature is the hidden state of the last non-padding token (official LLaMA tower);
``text_pooling="first"`` takes the first token instead (BERT-like towers). Post-pretraining from stage 2
freezes the video tower except its pooling head and the text tower except ``text_projection``
(:meth:`VideoCLIPModel.freeze`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iv2_encoders import VideoEncoder, VideoEncoderConfig

from .model import temperature_parameter

TEXT_POOLING = ("last", "first")


@dataclass
class VideoCLIPConfig:
    """``text``: a Hugging Face config (``transformers.PretrainedConfig`` or a dict with ``model_type``), or a
    local path / hub id of a pretrained text model (its weights are loaded)."""

    vision: VideoEncoderConfig
    text: Any
    temp: float = 0.01
    temp_min: float = 0.01
    text_pooling: str = "last"
    freeze_vision: bool = True
    open_vision_clip_projector: bool = True
    freeze_text: bool = True
    open_text_projection: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VideoEncoderConfig(**self.vision)
        if not self.vision.pool_head:
            raise ValueError("VideoCLIPConfig.vision needs the attention-pooling head (pool_head=True)")
        if self.text_pooling not in TEXT_POOLING:
            raise ValueError(f"text_pooling must be one of {TEXT_POOLING}, got {self.text_pooling!r}")


def _text_model(spec: Any) -> nn.Module:
    from transformers import AutoConfig, AutoModel, PretrainedConfig

    if isinstance(spec, (str, os.PathLike)):
        return AutoModel.from_pretrained(spec)
    if isinstance(spec, dict):
        spec = dict(spec)
        if "model_type" not in spec:
            raise ValueError("VideoCLIPConfig.text as a dict needs 'model_type' (e.g. 'llama', 'bert')")
        spec = AutoConfig.for_model(spec.pop("model_type"), **spec)
    if not isinstance(spec, PretrainedConfig):
        raise TypeError(f"VideoCLIPConfig.text must be a config, a dict or a path/hub id, got {type(spec).__name__}")
    return AutoModel.from_config(spec)


class CLIPTextTower(nn.Module):
    """``transformer`` (the HF base model) and ``text_projection``; pooled token -> ``@ text_projection``."""

    def __init__(self, transformer: nn.Module, embed_dim: int, pooling: str) -> None:
        super().__init__()
        self.transformer = transformer
        width = transformer.config.hidden_size
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        nn.init.normal_(self.text_projection, std=width**-0.5)
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "first":
            pooled = hidden[:, 0]
        else:  # last non-padding token of right-padded text
            last = attention_mask.long().sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
        return pooled @ self.text_projection.to(pooled.dtype)


class VideoCLIPModel(nn.Module):
    """The CLIP variant (see the module docstring)."""

    def __init__(self, cfg: VideoCLIPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_encoder = VideoEncoder(cfg.vision)
        self.text_encoder = CLIPTextTower(_text_model(cfg.text), cfg.vision.clip_embed_dim, cfg.text_pooling)
        self.temp = temperature_parameter(self, cfg.temp)

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """The official CLIP post-pretraining loss, VTC only (``internvideo2_clip.py``): ``batch`` is
        ``(media_type, inputs)`` as the MetaLoader yields it (image or video) with ``video``, ``input_ids``,
        ``attention_mask`` and ``idx``; ``temp`` is clamped from below first."""
        from .losses import vtc_loss
        from .objective import split_batch

        media_type, inputs = split_batch(batch)
        if media_type not in ("image", "video"):
            raise ValueError(f"the CLIP model trains on image and video batches, got {media_type!r}")
        self.clamp_temperature()
        loss = vtc_loss(self.encode_video(inputs["video"]), self.encode_text(inputs["input_ids"],
                                                                             inputs["attention_mask"]),
                        inputs.get("idx"), self.temp)
        return {"loss": loss, "loss_vtc": loss}

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, clip_embed_dim)`` video (or image, T = 1) feature, not normalised."""
        return self.vision_encoder(video).pooled

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, clip_embed_dim)`` text feature, not normalised."""
        return self.text_encoder(input_ids, attention_mask)

    @torch.no_grad()
    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encode_video(video), dim=-1)

    @torch.no_grad()
    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)

    @torch.no_grad()
    def clamp_temperature(self) -> None:
        """Clamp ``temp`` from below at ``temp_min``, as the official model does before every forward."""
        self.temp.clamp_(min=self.cfg.temp_min)

    def freeze(self) -> None:
        """Set ``requires_grad`` as the official post-pretraining: the video tower frozen except
        ``clip_projector`` (``open_vision_clip_projector``), the text tower frozen except ``text_projection``
        (``open_text_projection``); ``temp`` stays trainable."""
        for name, p in self.vision_encoder.named_parameters():
            opened = self.cfg.open_vision_clip_projector and name.startswith("clip_projector.")
            p.requires_grad_(not self.cfg.freeze_vision or opened)
        for name, p in self.text_encoder.named_parameters():
            opened = self.cfg.open_text_projection and name == "text_projection"
            p.requires_grad_(not self.cfg.freeze_text or opened)

    def no_weight_decay(self) -> set[str]:
        # official: no decay on temp, the vision position tables / class token, and the whole text tower
        return ({"temp"} | {"vision_encoder." + k for k in self.vision_encoder.no_weight_decay()}
                | {"text_encoder." + k for k, _ in self.text_encoder.named_parameters()})
