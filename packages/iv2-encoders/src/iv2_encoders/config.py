"""Encoder configuration, the table of named sizes (the official InternVideo2 vision towers) and the
configuration of a weight file (:class:`PretrainedCfg`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# ImageNet statistics, what every official InternVideo2 pipeline normalises with (REFERENCE d, n). The same
# numbers as iv2_data.transforms (a test holds them equal); not imported from there because importing iv2_data
# loads its decoders, which `import iv2_encoders` should not pay for.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    # Off (default): a clip must have the built frame count (or T = 1, an image) and size. On: other frame
    # counts and sizes interpolate the position table at run time (linear in time, bicubic in space, class row
    # kept), as the InternVideo2-Chat vision tower does; images at another size resample the image table.
    interpolate_pos_embed_at_runtime: bool = False
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


RESIZE_RULES = ("center_crop", "squash")
SAMPLING_RULES = ("middle", "get_index", "random")


@dataclass(frozen=True)
class HubFile:
    """One released file on the Hugging Face Hub. ``prefix``: where the vision tower's keys sit in it (e.g.
    ``"vision_encoder."``); None = found by its ``patch_embed.proj.weight`` key. A ``*.safetensors.index.json``
    filename is a sharded checkpoint: only the shards holding keys under ``prefix`` are fetched."""

    repo_id: str
    filename: str
    prefix: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/blob/main/{self.filename}"


@dataclass(frozen=True)
class PretrainedCfg:
    """What a weight file needs besides the architecture: where it comes from and how its inputs were made.

    ``model.pretrained_cfg`` carries one (a plain architecture gets the ImageNet defaults below). Fields:

    - ``architecture`` / ``tag``: e.g. ``"internvideo2-1b"`` / ``"stage2-f4"`` (``name`` joins them);
    - ``hub_files``: the released file(s), base first; later files overlay the earlier ones (e.g. the CLIP
      model's trained pooling head over the stage-2 tower);
    - ``checkpoint_num_frames``: the frame count the file's position table was trained with (the official
      ``origin_num_frames``; the loader interpolates from it to the model's frame count);
    - ``config``: the architecture changes the file needs (``num_frames``, ``sep_image_video_pos_embed``, the
      chat tower's ``depth``/``pool_head``/``layerscale_keys``/runtime interpolation ...);
    - preprocessing of the official evaluation: ``num_frames`` and ``img_size`` of a clip, ``mean``/``std``,
      ``resize`` (``"center_crop"``: short side to ``img_size`` then a centre crop; ``"squash"``: the whole
      frame resized to a square), ``interpolation`` and the frame ``sampling`` rule of ``iv2_data``.
    """

    architecture: str | None = None
    tag: str | None = None
    hub_files: tuple[HubFile, ...] = ()
    checkpoint_num_frames: int | None = None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_frames: int = 8
    img_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "center_crop"
    interpolation: str = "bicubic"
    sampling: str = "middle"
    description: str = ""

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"PretrainedCfg.resize must be one of {RESIZE_RULES}, got {self.resize!r}")
        if self.sampling not in SAMPLING_RULES:
            raise ValueError(f"PretrainedCfg.sampling must be one of {SAMPLING_RULES}, got {self.sampling!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"PretrainedCfg.mean/std need 3 values, got {self.mean} / {self.std}")

    @property
    def name(self) -> str | None:
        if self.architecture is None:
            return None
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    def replace(self, **changes: Any) -> PretrainedCfg:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hub_files"] = [dataclasses.asdict(f) for f in self.hub_files]
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainedCfg:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PretrainedCfg field(s) {unknown}; known: {sorted(known)}")
        data = dict(data)
        data["hub_files"] = tuple(HubFile(**f) for f in data.get("hub_files", ()))
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)
