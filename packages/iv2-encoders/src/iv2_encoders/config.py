"""Encoder configuration and the table of named sizes (the official InternVideo2 vision towers)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class VideoEncoderConfig:
    """Hyper-parameters of an InternVideo2 vision encoder.

    Field names follow the official ``PretrainInternVideo2`` arguments where one exists (``qk_norm`` is the
    official ``qk_normalization``). Defaults are the official stage-1 settings: 8 frames at 224 px, patch 14,
    tubelet 1, no qkv bias, qk-norm, LayerScale 1e-5, a 16-head attention-pooling head projecting to 768.
    """

    img_size: int = 224
    patch_size: int = 14
    num_frames: int = 8
    tubelet_size: int = 1
    in_chans: int = 3
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_ratio: float = 48 / 11
    qkv_bias: bool = False
    qk_norm: bool = True
    init_values: float | None = 1e-5
    norm_eps: float = 1e-6
    attn_pool_num_heads: int = 16
    clip_embed_dim: int = 768
    pool_norm_eps: float = 1e-5
    # False -> no attention-pooling head (``pooled`` is None), as the chat vision tower is built.
    pool_head: bool = True
    # Learnable image position embedding (official ``sep_image_video_pos_embed``: 1B stage 2 and chat).
    sep_image_video_pos_embed: bool = False
    # Official LayerScale computes in float32 unless ``layerscale_no_force_fp32`` is set.
    layerscale_force_fp32: bool = True
    # How LayerScale parameters are named in this model's state dict: "gamma" (``blocks.N.ls1.gamma``, the
    # stage-1/2 checkpoints) or "bare" (``blocks.N.ls1``, the InternVideo2-Chat vision tower). Only the key
    # names differ; ``load_checkpoint`` reads either layout into either model.
    layerscale_keys: str = "gamma"
    drop_path_rate: float = 0.0
    grad_checkpointing: bool = False
    # "sdpa" (default, torch.nn.functional.scaled_dot_product_attention) or "flash" (the `flash` extra).
    attn_impl: str = "sdpa"
    # Backend of the iv2-kernels ops (RMSNorm, attention pooling); None -> env IV2_KERNELS, else auto.
    kernel_backend: str | None = None

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.pool_head and self.embed_dim % self.attn_pool_num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by attn_pool_num_heads {self.attn_pool_num_heads}"
            )
        if self.embed_dim % 4:
            raise ValueError(f"embed_dim {self.embed_dim} must divide by 4 (3D sin-cos position embedding)")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_frames % self.tubelet_size:
            raise ValueError(f"num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet_size}")
        if self.layerscale_keys not in ("gamma", "bare"):
            raise ValueError(f"layerscale_keys must be 'gamma' or 'bare', got {self.layerscale_keys!r}")
        if self.attn_impl not in ("sdpa", "flash"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'flash', got {self.attn_impl!r}")

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` of a clip of ``num_frames`` frames at ``img_size``."""
        side = self.img_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid_size
        return t * h * w

    @property
    def mlp_hidden_dim(self) -> int:
        # int() of the float product, as the official Block computes it (1408 * 48/11 -> 6144).
        return int(self.embed_dim * self.mlp_ratio)

    def replace(self, **overrides: Any) -> VideoEncoderConfig:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown VideoEncoderConfig field(s) {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _size(embed_dim: int, depth: int, num_heads: int, mlp_ratio: float) -> VideoEncoderConfig:
    return VideoEncoderConfig(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)


# width / depth / heads / MLP ratio of the released encoders (SM/models/internvideo2*.py). The distilled
# S14/B14/L14 use the same block and the same 16-head pooling head to 768 as 1B/6B.
MODEL_CONFIGS: dict[str, VideoEncoderConfig] = {
    "internvideo2-tiny": VideoEncoderConfig(
        img_size=56, patch_size=14, num_frames=4, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
        attn_pool_num_heads=4, clip_embed_dim=32,
    ),
    "internvideo2-s14": _size(384, 12, 6, 4.0),
    "internvideo2-b14": _size(768, 12, 12, 4.0),
    "internvideo2-l14": _size(1024, 24, 16, 4.0),
    "internvideo2-1b": _size(1408, 40, 16, 48 / 11),
    "internvideo2-6b": _size(3200, 48, 25, 4.0),
}
