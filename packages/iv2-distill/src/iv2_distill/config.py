"""Configuration of the stage-1 distillation heads and the registered student layouts.

Field names are the official ``PretrainInternVideo2`` / ``DistInternVideo2`` arguments
(InternVideo2/single_modality/models/internvideo2_pretrain.py, internvideo2_distill.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from iv2_encoders import VideoEncoderConfig, get_config

_NORM_TYPES = ("l2", "none")
_DECODERS = ("linear", "mlp")


def return_layer_indices(depth: int, num_layers: int, interval: float) -> list[int]:
    """Blocks tapped for distillation, in ascending order: the official rule
    ``idx_i = depth - int(i * interval) - 1`` for ``i < num_layers`` (student and teacher alike, each with its
    own depth and interval). The official models stack the features in block order, so the k-th head of the
    student reads the k-th smallest index and is matched with the teacher's k-th smallest index.

    >>> return_layer_indices(40, 6, 3.34)   # the 1B teacher of the S/B/L distillation
    [23, 26, 29, 33, 36, 39]
    """
    if num_layers < 0 or interval <= 0:
        raise ValueError(f"need num_layers >= 0 and interval > 0, got {num_layers} and {interval}")
    indices = [depth - int(i * interval) - 1 for i in range(num_layers)]
    if len(set(indices)) != len(indices) or (indices and min(indices) < 0):
        raise ValueError(
            f"{num_layers} layers at interval {interval} of a {depth}-block model give block indices {indices}; "
            "they must be distinct and >= 0 (fewer layers or another interval)"
        )
    return sorted(indices)


@dataclass
class DistillHeadsConfig:
    """The distillation heads beside the student encoder (official argument names).

    ``clip_decoder``: ``"linear"`` (Linear -> LayerNorm -> L2, the 1B/6B stage-1 models) or ``"mlp"``
    (Linear -> GELU -> Linear -> LayerNorm -> L2 for every CLIP head, the final one included: the S/B/L models
    distilled from the 1B; official ``clip_student_decoder='MLP_Decoder'``). ``clip_teacher_final_dim = 0``
    builds no final head; ``mae_teacher_embed_dim = 0`` (or ``mae_return_layer = 0``) builds no MAE heads and
    no ``mae_pos_embed`` (the S/B/L layout). ``*_norm_type``: ``"l2"`` (official) or ``"none"`` (no final
    normalisation of the head output; the loss formula stays ``2 - 2<s, t>``).
    """

    clip_teacher_embed_dim: int = 3200
    clip_teacher_final_dim: int = 768
    clip_return_layer: int = 6
    clip_student_return_interval: float = 1.0
    clip_decoder: str = "linear"
    clip_norm_type: str = "l2"
    mae_teacher_embed_dim: int = 1408
    mae_return_layer: int = 4
    mae_student_return_interval: float = 1.0
    mae_norm_type: str = "l2"

    def __post_init__(self) -> None:
        if self.clip_decoder not in _DECODERS:
            raise ValueError(f"clip_decoder must be one of {_DECODERS}, got {self.clip_decoder!r}")
        for name in ("clip_norm_type", "mae_norm_type"):
            if getattr(self, name) not in _NORM_TYPES:
                # the official heads raise NotImplementedError for anything else ('l1' included)
                raise ValueError(f"{name} must be one of {_NORM_TYPES}, got {getattr(self, name)!r}")
        if self.clip_teacher_embed_dim <= 0 or self.clip_return_layer <= 0:
            raise ValueError(
                "the student needs CLIP heads: clip_teacher_embed_dim and clip_return_layer must be > 0, got "
                f"{self.clip_teacher_embed_dim} and {self.clip_return_layer}"
            )
        for name in ("clip_teacher_final_dim", "mae_teacher_embed_dim", "mae_return_layer"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def has_final_head(self) -> bool:
        return self.clip_teacher_final_dim > 0

    @property
    def has_mae_heads(self) -> bool:
        return self.mae_teacher_embed_dim > 0 and self.mae_return_layer > 0

    def clip_return_index(self, depth: int) -> list[int]:
        return return_layer_indices(depth, self.clip_return_layer, self.clip_student_return_interval)

    def mae_return_index(self, depth: int) -> list[int]:
        if not self.has_mae_heads:
            return []
        return return_layer_indices(depth, self.mae_return_layer, self.mae_student_return_interval)

    def replace(self, **overrides: Any) -> DistillHeadsConfig:
        return dataclasses.replace(self, **overrides)  # an unknown field is a TypeError naming it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Two frozen teachers (InternViT-6B: 3200-d middle layers and a 768-d pooled output; VideoMAEv2-g: 1408-d),
# linear CLIP heads, MLP MAE heads: SM/scripts/pretraining/{1B,6B}_pt.sh.
_TWO_TEACHERS = DistillHeadsConfig()
# One teacher, the 1B stage-2 model (1408-d middle layers, 768-d pooled), MLP heads, no MAE teacher:
# SM/scripts/distillation/{S14,B14,L14}_dist_1B_stage2.sh.
_FROM_1B = DistillHeadsConfig(
    clip_teacher_embed_dim=1408, clip_teacher_final_dim=768, clip_decoder="mlp", mae_teacher_embed_dim=0,
    mae_return_layer=0,
)

STUDENT_CONFIGS: dict[str, tuple[str, DistillHeadsConfig]] = {
    # encoder name in iv2_encoders, heads. The tiny student keeps both teachers' structure at toy widths.
    "internvideo2-tiny": ("internvideo2-tiny", DistillHeadsConfig(
        clip_teacher_embed_dim=48, clip_teacher_final_dim=32, clip_return_layer=2, mae_teacher_embed_dim=40,
        mae_return_layer=2,
    )),
    "internvideo2-s14": ("internvideo2-s14", _FROM_1B),
    "internvideo2-b14": ("internvideo2-b14", _FROM_1B),
    "internvideo2-l14": ("internvideo2-l14", _FROM_1B),
    "internvideo2-1b": ("internvideo2-1b", _TWO_TEACHERS),
    "internvideo2-6b": ("internvideo2-6b", _TWO_TEACHERS),
}


def get_student_configs(name: str, **overrides: Any) -> tuple[VideoEncoderConfig, DistillHeadsConfig]:
    """The encoder and head configs of a registered student; ``overrides`` name fields of either."""
    key = name.lower()
    if key not in STUDENT_CONFIGS:
        raise KeyError(f"unknown student {name!r}; registered: {sorted(STUDENT_CONFIGS)}")
    encoder_name, heads = STUDENT_CONFIGS[key]
    encoder_fields = {f.name for f in dataclasses.fields(VideoEncoderConfig)}
    head_fields = {f.name for f in dataclasses.fields(DistillHeadsConfig)}
    unknown = sorted(set(overrides) - encoder_fields - head_fields)
    if unknown:
        raise TypeError(
            f"unknown field(s) {unknown} for create_student; encoder fields: {sorted(encoder_fields)}; "
            f"head fields: {sorted(head_fields)}"
        )
    encoder = get_config(encoder_name, **{k: v for k, v in overrides.items() if k in encoder_fields})
    heads = heads.replace(**{k: v for k, v in overrides.items() if k in head_fields})
    return encoder, heads
