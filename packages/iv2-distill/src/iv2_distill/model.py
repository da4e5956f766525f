"""The stage-1 student: an InternVideo2 encoder with its distillation heads beside it.

Layout and numerics follow the official ``PretrainInternVideo2`` (1B/6B, two teachers) and ``DistInternVideo2``
(S/B/L, the 1B as teacher) in InternVideo2/single_modality/models/, so official stage-1 checkpoints (heads
included) load by key name:

    tapped residual stream of block idx_k (class token first)  + clip_pos_embed[visible] -> clip_decoder.k
    tapped residual stream of block idx_k (class token dropped) + mae_pos_embed[visible] -> mae_decoder.k
    attention-pooled output (clip_projector, over the visible tokens)                   -> final_clip_decoder

Each head ends with a LayerNorm (eps 1e-5) and ``x / ||x||`` (no epsilon, as the official code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from iv2_encoders import VideoEncoder, VideoEncoderConfig, sincos_3d

from .config import STUDENT_CONFIGS, DistillHeadsConfig, get_student_configs

HEAD_KEYS = ("clip_pos_embed", "clip_decoder", "final_clip_decoder", "mae_pos_embed", "mae_decoder")
"""First components of the state-dict keys that belong to the distillation heads, not to the encoder."""


@dataclass
class StudentOutput:
    """``clip_middle`` (K, B, 1 + N_visible, clip_teacher_embed_dim), class token first; ``clip_final``
    (B, clip_teacher_final_dim) or None without a final head; ``mae`` (K, B, N_visible, mae_teacher_embed_dim)
    or None without MAE heads. Unit vectors (with the official ``'l2'`` norm type), layers in ascending block
    order."""

    clip_middle: torch.Tensor
    clip_final: torch.Tensor | None
    mae: torch.Tensor | None


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||`` over the last dimension with no epsilon, as every official stage-1 head and teacher."""
    return x / x.norm(dim=-1, keepdim=True)


class LinearHead(nn.Module):
    """Official ``Linear_Decoder``: Linear -> LayerNorm(1e-5) -> L2 (``head.*``, ``norm.*``)."""

    def __init__(self, in_dim: int, out_dim: int, norm_type: str = "l2") -> None:
        super().__init__()
        self.head = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim, eps=1e-5)
        self.norm_type = norm_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.head(x))
        return l2_normalize(x) if self.norm_type == "l2" else x


class MLPHead(nn.Module):
    """Official ``MLP_Decoder``: Linear(d, d) -> GELU (exact) -> Linear(d, C) -> LayerNorm(1e-5) -> L2
    (``head.0.*``, ``head.2.*``, ``norm.*``)."""

    def __init__(self, in_dim: int, out_dim: int, norm_type: str = "l2") -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
        self.norm = nn.LayerNorm(out_dim, eps=1e-5)
        self.norm_type = norm_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.head(x))
        return l2_normalize(x) if self.norm_type == "l2" else x


def visible_index(mask: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` bool mask (True = dropped, same count per sample) -> ``(B, N_visible)`` patch indices of the
    visible tokens in ascending order (the order in which the encoder keeps them)."""
    b = mask.shape[0]
    return (~mask).nonzero()[:, 1].reshape(b, -1)


class DistillStudent(VideoEncoder):
    """An InternVideo2 :class:`~iv2_encoders.VideoEncoder` with the stage-1 distillation heads beside it.

    ``student(video, mask)`` -> :class:`StudentOutput`; ``video`` (B, 3, T, H, W), ``mask`` (B, T·HW) bool over
    patch tokens, True = dropped, the same count per sample (None: every token visible). The state dict holds
    the official unprefixed stage-1 names (the encoder's keys plus ``clip_pos_embed``, ``clip_decoder.K.*``,
    ``final_clip_decoder.*``, ``mae_pos_embed``, ``mae_decoder.K.*``); :meth:`encoder_state_dict` returns the
    encoder's keys alone. :meth:`encode` runs the plain encoder forward.
    """

    def __init__(self, encoder: VideoEncoderConfig, heads: DistillHeadsConfig) -> None:
        if not encoder.pool_head:
            raise ValueError("the student needs the attention-pooling head (VideoEncoderConfig.pool_head=True)")
        super().__init__(encoder)
        self.heads_cfg = heads
        d, n = encoder.embed_dim, encoder.num_patches
        self.clip_return_index = heads.clip_return_index(encoder.depth)
        self.mae_return_index = heads.mae_return_index(encoder.depth)
        head_cls = LinearHead if heads.clip_decoder == "linear" else MLPHead

        self.clip_pos_embed = nn.Parameter(torch.zeros(1, 1 + n, d))
        self.clip_decoder = nn.ModuleList(
            head_cls(d, heads.clip_teacher_embed_dim, heads.clip_norm_type) for _ in self.clip_return_index
        )
        self.final_clip_decoder = (
            head_cls(encoder.clip_embed_dim, heads.clip_teacher_final_dim, heads.clip_norm_type)
            if heads.has_final_head else None
        )
        if heads.has_mae_heads:
            self.mae_pos_embed = nn.Parameter(torch.zeros(1, n, d))
            self.mae_decoder = nn.ModuleList(
                MLPHead(d, heads.mae_teacher_embed_dim, heads.mae_norm_type) for _ in self.mae_return_index
            )
        else:
            self.register_parameter("mae_pos_embed", None)
            self.mae_decoder = None
        self._init_heads()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """Official initialisation of the encoder (:meth:`VideoEncoder.init_weights`) and of the heads."""
        super().init_weights()
        if hasattr(self, "clip_pos_embed"):  # VideoEncoder.__init__ calls this before the heads exist
            self._init_heads()

    @torch.no_grad()
    def _init_heads(self) -> None:
        # The official heads' Xavier init is overwritten by the model-wide ``apply(_init_weights)``: every head
        # Linear ends up trunc-normal(0.02) with a zero bias, LayerNorms at one/zero. The heads' position tables
        # start as the encoder's 3D sin-cos table (``mae_pos_embed`` without the class row).
        heads = [self.clip_decoder, self.final_clip_decoder, self.mae_decoder]
        for m in (m for h in heads if h is not None for m in h.modules()):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        _, side, _ = self.cfg.grid_size
        table = sincos_3d(self.cfg.embed_dim, side, self.cfg.grid_size[0])[None]
        self.clip_pos_embed.copy_(table)
        if self.mae_pos_embed is not None:
            self.mae_pos_embed.copy_(table[:, 1:])

    def no_weight_decay(self) -> set[str]:
        # official: position tables (the heads' included) and the class token
        return super().no_weight_decay() | {"clip_pos_embed", "mae_pos_embed"}

    # --------------------------------------------------------------- forward
    def encode(self, video: torch.Tensor, mask: torch.Tensor | None = None, **kwargs: Any):
        """The plain encoder forward (:meth:`VideoEncoder.forward`): ``EncoderOutput(tokens, pooled, ...)``."""
        return super().forward(video, mask, **kwargs)

    def forward(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> StudentOutput:  # type: ignore[override]
        tapped = sorted(set(self.clip_return_index) | set(self.mae_return_index))
        out = super().forward(video, mask, return_hidden_states=tapped)
        hidden = dict(zip(tapped, out.hidden_states))
        b = out.tokens.shape[0]
        if mask is None:
            mask = torch.zeros(b, self.cfg.num_patches, dtype=torch.bool, device=out.tokens.device)
        visible = visible_index(mask)

        # The heads' own position tables, gathered at the visible positions (class row always kept).
        cls_and_visible = torch.cat([visible.new_zeros(b, 1), visible + 1], dim=1)
        clip_pos = _gather_rows(self.clip_pos_embed, cls_and_visible)
        clip_middle = torch.stack([
            head(hidden[i] + clip_pos) for head, i in zip(self.clip_decoder, self.clip_return_index)
        ])
        clip_final = self.final_clip_decoder(out.pooled) if self.final_clip_decoder is not None else None
        mae = None
        if self.mae_decoder is not None:
            mae_pos = _gather_rows(self.mae_pos_embed, visible)
            mae = torch.stack([
                head(hidden[i][:, 1:] + mae_pos) for head, i in zip(self.mae_decoder, self.mae_return_index)
            ])
        return StudentOutput(clip_middle=clip_middle, clip_final=clip_final, mae=mae)

    # ---------------------------------------------------------------- export
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's keys alone (heads dropped): loads into ``iv2_encoders.VideoEncoder(student.cfg)``
        with nothing missing."""
        return {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] not in HEAD_KEYS}

    def to_encoder(self) -> VideoEncoder:
        """A plain :class:`~iv2_encoders.VideoEncoder` holding a copy of this student's encoder weights."""
        device = self.pos_embed.device
        with torch.device("meta"):
            encoder = VideoEncoder(self.cfg)
        encoder.load_state_dict({k: v.detach().clone() for k, v in self.encoder_state_dict().items()},
                                strict=True, assign=True)
        return encoder.to(device)


def _gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table`` (1, R, C), ``index`` (B, M) -> (B, M, C)."""
    b, m = index.shape
    return table.expand(b, -1, -1).gather(1, index[..., None].expand(b, m, table.shape[-1]))


def create_student(name: str, **overrides: Any) -> DistillStudent:
    """Build a registered student: ``internvideo2-1b`` / ``-6b`` (official stage-1 layout: two teachers, linear
    CLIP heads, MLP MAE heads), ``-s14`` / ``-b14`` / ``-l14`` (official distillation layout from the 1B: MLP
    heads to 1408, MLP final head to 768, no MAE heads), ``internvideo2-tiny`` (tests and demos). 8 frames at
    224 px by default; ``overrides`` name fields of :class:`~iv2_encoders.VideoEncoderConfig` or
    :class:`DistillHeadsConfig`. Under ``with torch.device("meta"):`` nothing is allocated."""
    encoder, heads = get_student_configs(name, **overrides)
    return DistillStudent(encoder, heads)


def list_students() -> list[str]:
    """Names accepted by :func:`create_student`."""
    return sorted(STUDENT_CONFIGS)
