"""The stage-2 model in the official module and state-dict layout.

Official: InternVideo2/multi_modality/models/internvideo2_stage2_visual.py (1B, video-text) and
internvideo2_stage2_audiovisual.py (6B, audio-visual). Keys: ``vision_encoder.*`` (an
``iv2_encoders.VideoEncoder``; the stage-1 distillation heads the official tower still carries are not built and
are dropped on load), ``text_encoder.bert.*`` / ``text_encoder.cls.*``, ``vision_proj``, ``text_proj``,
``itm_head``, ``temp``; audio-visual: ``audio_encoder.*`` (BEATs), ``av_concat_vision_proj``,
``av_concat_audio_proj``, ``audio_proj``, ``av_fusion``, ``avtm_head``.

Conventions: video ``(B, 3, T, H, W)`` (the official code takes ``(B, T, 3, H, W)``); ``T == 1`` is an image
(the encoder's image position-embedding rule). The audio-visual model projects the vision tokens with
``av_concat_vision_proj`` (class token included) in every ``encode_video`` call, as the official
``encode_vision`` does, so its video-only matching, MLM and retrieval use projected tokens too.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iv2_encoders import VideoEncoder

from .beats import BEATs
from .config import STAGE2_CONFIGS, Stage2Config
from .text import BertFusionEncoder

TEMP_MIN, TEMP_MAX = 0.001, 0.5  # official clip_contrastive_temperature bounds


class Stage2Model(nn.Module):
    """InternVideo2 stage 2: video (and audio) aligned with a BERT text encoder. See the module docstring."""

    def __init__(self, cfg: Stage2Config) -> None:
        super().__init__()
        self.cfg = cfg
        text_cfg = cfg.text_config()
        hidden = text_cfg.hidden_size
        self.vision_encoder = VideoEncoder(cfg.vision)
        if cfg.is_audio_visual:
            self.av_concat_vision_proj = nn.Sequential(
                nn.Linear(cfg.vision.embed_dim, cfg.av_concat_dim), nn.LayerNorm(cfg.av_concat_dim)
            )
        self.text_encoder = BertFusionEncoder(text_cfg, cfg.fusion_layer, cfg.encoder_width)
        if cfg.is_audio_visual:
            audio_width = cfg.audio.encoder_embed_dim
            self.audio_encoder = BEATs(cfg.audio)
            self.audio_proj = nn.Linear(audio_width, cfg.embed_dim)
            self.av_concat_audio_proj = nn.Sequential(
                nn.Linear(audio_width, cfg.av_concat_dim), nn.LayerNorm(cfg.av_concat_dim)
            )
            self.av_fusion = nn.Linear(2 * cfg.embed_dim, cfg.embed_dim)
            self.avtm_head = nn.Linear(hidden, 2)
        self.vision_proj = nn.Linear(cfg.vision.clip_embed_dim, cfg.embed_dim)
        self.text_proj = nn.Linear(hidden, cfg.embed_dim)
        self.temp = temperature_parameter(self, cfg.temp)
        self.itm_head = nn.Linear(hidden, 2)
        # what forward() computes (losses, masks, MLM ids); a plain attribute, not part of the state dict
        self.objective = None

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        """The training losses of one batch, as the official model's ``forward``: ``batch`` is ``(media_type,
        inputs)`` as :class:`iv2_train.MetaLoader` yields it (``media_type`` one of ``image``, ``video``,
        ``audio``, ``audio_video``). Returns ``{"loss": total, "loss_vtc": ..., ...}``; what is computed comes
        from ``model.objective`` (:class:`iv2_align.Stage2Objective`, set it before training)."""
        from .objective import split_batch, stage2_losses

        if self.objective is None:
            raise RuntimeError("set model.objective = Stage2Objective.for_tokenizer(tokenizer, ...) before training")
        media_type, inputs = split_batch(batch)
        return stage2_losses(self, media_type, inputs, self.objective)

    # ------------------------------------------------------------------ towers
    def encode_video(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, pooled)``: ``tokens`` ``(B, 1 + N_kept, encoder_width)`` are what the fusion layers
        attend to (audio-visual model: after ``av_concat_vision_proj``), ``pooled`` the attention-pooled
        ``(B, clip_embed_dim)``. ``mask`` bool ``(B, T'H'W')``, True = dropped (same count per sample)."""
        with _no_grad_if_frozen(self.vision_encoder):
            out = self.vision_encoder(video, mask)
        tokens = out.tokens
        if self.cfg.is_audio_visual:
            tokens = self.av_concat_vision_proj(tokens)
        return tokens, out.pooled

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, cls)``: the text-only layers' hidden states ``(B, L, hidden)`` and their ``[CLS]``."""
        tokens = self.text_encoder.encode(input_ids, attention_mask)
        return tokens, tokens[:, 0]

    def encode_audio(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens, pooled)`` of a ``(B, frames, 64)`` fbank: tokens after ``av_concat_audio_proj``, pooled
        = mean of the raw BEATs tokens (taken before the projection, as the official code)."""
        self._require_audio("encode_audio")
        with _no_grad_if_frozen(self.audio_encoder):
            raw = self.audio_encoder(fbank)
        return self.av_concat_audio_proj(raw), raw.mean(dim=1)

    def fuse(self, media_tokens: torch.Tensor, text_tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the fusion layers on ``text_tokens`` (from :meth:`encode_text`) cross-attending to
        ``media_tokens``; returns ``(B, L, hidden)``."""
        return self.text_encoder.fuse(text_tokens, attention_mask, media_tokens)

    def mlm_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, media_tokens: torch.Tensor
    ) -> torch.Tensor:
        """MLM prediction scores ``(B, L, vocab)``: text mode on ``input_ids``, fusion mode with the media,
        then the ``text_encoder.cls`` head (the official MLM forward)."""
        text_tokens = self.text_encoder.encode(input_ids, attention_mask)
        return self.text_encoder.mlm_head(self.fuse(media_tokens, text_tokens, attention_mask))

    def match_logits(self, media_tokens: torch.Tensor, text_tokens: torch.Tensor, attention_mask: torch.Tensor,
                     head: str = "itm") -> torch.Tensor:
        """``(B, 2)`` matching logits of the fusion ``[CLS]``: ``head="itm"`` (``itm_head``, video/image) or
        ``"avtm"`` (``avtm_head``, media tokens ``[audio, vision]``)."""
        return self.match_head(head)(self.fuse(media_tokens, text_tokens, attention_mask)[:, 0])

    def match_head(self, head: str) -> nn.Linear:
        if head == "itm":
            return self.itm_head
        if head == "avtm":
            self._require_audio("the avtm head")
            return self.avtm_head
        raise ValueError(f"head must be 'itm' or 'avtm', got {head!r}")

    # ------------------------------------------------------- shared space
    def video_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """``vision_proj`` of the pooled video feature (not normalised; the losses normalise)."""
        return self.vision_proj(pooled)

    def text_features(self, cls: torch.Tensor) -> torch.Tensor:
        return self.text_proj(cls)

    def audio_video_features(self, audio_pooled: torch.Tensor, video_pooled: torch.Tensor) -> torch.Tensor:
        """``av_fusion([audio_proj(audio), vision_proj(video)])``, the audio-visual contrastive feature."""
        self._require_audio("audio_video_features")
        return self.av_fusion(torch.cat([self.audio_proj(audio_pooled), self.vision_proj(video_pooled)], dim=-1))

    @torch.no_grad()
    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """L2-normalised video (or image, T = 1) embeddings ``(B, embed_dim)`` in the shared space."""
        return F.normalize(self.video_features(self.encode_video(video)[1]), dim=-1)

    @torch.no_grad()
    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings ``(B, embed_dim)`` (``text_proj`` of the text-layer ``[CLS]``)."""
        return F.normalize(self.text_features(self.encode_text(input_ids, attention_mask)[1]), dim=-1)

    @torch.no_grad()
    def embed_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio_proj(self.encode_audio(fbank)[1]), dim=-1)

    @torch.no_grad()
    def embed_audio_video(self, fbank: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        audio = self.encode_audio(fbank)[1]
        return F.normalize(self.audio_video_features(audio, self.encode_video(video)[1]), dim=-1)

    # ------------------------------------------------------------- training
    @torch.no_grad()
    def clamp_temperature(self, min_val: float = TEMP_MIN, max_val: float = TEMP_MAX) -> None:
        """Clamp ``temp`` in place, as the official model does before every training forward."""
        self.temp.clamp_(min_val, max_val)

    def no_weight_decay(self) -> set[str]:
        return {"temp"} | {"vision_encoder." + k for k in self.vision_encoder.no_weight_decay()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.vision_encoder.set_grad_checkpointing(enable)
        self.text_encoder.set_grad_checkpointing(enable)

    def _require_audio(self, what: str) -> None:
        if not self.cfg.is_audio_visual:
            raise ValueError(f"{what} needs the audio-visual model (Stage2Config.audio); this one is video-text")


def temperature_parameter(module: nn.Module, value: float, name: str = "temp") -> nn.Parameter:
    """The learnable temperature as a 1-element 1-D parameter, stored in state dicts as the official 0-dim
    scalar (hooks reshape it both ways). DeepSpeed cannot broadcast or flatten 0-dim parameters (it views
    each one as bytes), so a true scalar would keep the model off ZeRO."""

    def to_scalar(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        key = prefix + name
        if key in state_dict and state_dict[key].dim() == 1:
            state_dict[key] = state_dict[key].reshape(())

    def from_scalar(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        key = prefix + name
        if key in state_dict and state_dict[key].dim() == 0:
            state_dict[key] = state_dict[key].reshape(1)

    module.register_state_dict_post_hook(to_scalar)
    module.register_load_state_dict_pre_hook(from_scalar)
    return nn.Parameter(torch.full((1,), float(value)))


def _no_grad_if_frozen(tower: nn.Module) -> contextlib.AbstractContextManager:
    """A frozen tower (no parameter requires grad: the official freeze_vision / freeze_audio) runs without
    autograd, as DINOv2 runs its frozen parts; the outputs are the same, only no graph is kept."""
    if any(p.requires_grad for p in tower.parameters()):
        return contextlib.nullcontext()
    return torch.no_grad()


def list_stage2_models() -> list[str]:
    return sorted(STAGE2_CONFIGS)


def get_stage2_config(name: str, **vision_overrides: Any) -> Stage2Config:
    """A named stage-2 configuration; ``vision_overrides`` replace fields of its vision config."""
    if name not in STAGE2_CONFIGS:
        raise KeyError(f"unknown stage-2 model {name!r}; registered: {list_stage2_models()}")
    return STAGE2_CONFIGS[name](**vision_overrides)


def create_stage2_model(name: str, **vision_overrides: Any) -> Stage2Model:
    """Build a named stage-2 model with fresh weights (load them with :func:`iv2_align.load_checkpoint`).
    Under ``with torch.device("meta"):`` nothing is allocated."""
    return Stage2Model(get_stage2_config(name, **vision_overrides))
