"""The video teacher: a transformers ``VideoMAEModel`` (VideoMAEv2-g in the official recipe).

As the official ``mae_g14_hybrid`` teacher (SM/models/videomae.py): it sees every frame of the clip with
tubelet 2 (so 16 frames give the student's 8-frame grid), fixed sin-cos positions, and returns the tapped
blocks' outputs, L2-normalised per token; the final LayerNorm is applied to the last block's output only.

Attention. The official teacher hands ``(B, heads, N, d)`` tensors to ``flash_attn_func``, which reads them as
``(B, N, heads, d)``: it attends over the *heads* axis for every token and the output is reshaped without a
transpose (REFERENCE o). Its targets are not those of a standard ViT. ``attention="standard"`` (default) runs
the model's own attention (the VideoMAEv2 paper's model); ``attention="official"`` reproduces the released
code's computation, for comparability with the released stage-1 weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..config import return_layer_indices
from ..model import l2_normalize
from .base import FrozenTeacher, TeacherOutput, resize_clip

OFFICIAL_ATTENTION = "iv2_videomae_official"


def official_videomae_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The released VideoMAE teacher's attention as a transformers attention function. ``query``/``key``/
    ``value`` come as (B, heads, N, d); the official code passes them to ``flash_attn_func`` (layout
    (batch, seqlen, nheads, d)), i.e. softmax over the heads axis separately for every token, and reshapes the
    (B, heads, N, d) output straight to (B, N, heads·d). The returned tensor has that memory layout, viewed as
    (B, N, heads, d), so transformers' reshape to (B, N, C) gives the official result."""
    b, h, n, d = query.shape
    # sdpa layout (batch, nheads, seqlen, d) for flash's (batch=B, seqlen=heads, nheads=N, d): (B, N, heads, d)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, scale=scaling)  # (B, N, heads, d): per token, over heads
    flash_layout = out.transpose(1, 2).contiguous()  # what flash_attn_func returns: (B, heads, N, d)
    return flash_layout.view(b, n, h, d), None


def _register_official_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(OFFICIAL_ATTENTION, official_videomae_attention)


class VideoMAETeacher(FrozenTeacher):
    """A transformers ``VideoMAEModel`` as the motion-aware video teacher (``mae`` targets).

    The model must have its final LayerNorm (``VideoMAEConfig(use_mean_pooling=False)``, the pretraining
    encoder's ``norm``); ``return_layers`` / ``return_interval`` pick the tapped blocks by the official rule.
    Frames of another size are resized bicubically to the model's ``image_size``.
    """

    kind = "video teacher"

    def __init__(
        self,
        model: nn.Module,
        *,
        return_layers: int = 4,
        return_interval: float = 1.0,
        attention: str = "standard",
        norm_type: str = "l2",
    ) -> None:
        cfg = model.config
        if getattr(model, "layernorm", None) is None:
            raise ValueError(
                "VideoMAETeacher needs the encoder's final LayerNorm (build VideoMAEConfig with "
                "use_mean_pooling=False): the official teacher applies it to the last block's output"
            )
        if attention not in ("standard", "official"):
            raise ValueError(f"attention must be 'standard' or 'official', got {attention!r}")
        if norm_type not in ("l2", "none"):
            raise ValueError(f"norm_type must be 'l2' or 'none', got {norm_type!r}")
        if attention == "official":
            _register_official_attention()
            model.set_attn_implementation(OFFICIAL_ATTENTION)
        super().__init__(model)
        self.attention, self.norm_type = attention, norm_type
        self.depth = cfg.num_hidden_layers
        self.patch_size, self.input_size, self.tubelet_size = cfg.patch_size, cfg.image_size, cfg.tubelet_size
        self.num_frames = cfg.num_frames
        self.return_index = return_layer_indices(self.depth, return_layers, return_interval)

    def token_grid(self, num_frames: int, size: int) -> tuple[int, int, int]:
        side = self.input_size // self.patch_size
        return num_frames // self.tubelet_size, side, side

    def describe(self) -> str:
        return (f"VideoMAETeacher: patch {self.patch_size} at {self.input_size} px, tubelet {self.tubelet_size}, "
                f"{self.num_frames} frames")

    def _targets(self, video: torch.Tensor) -> TeacherOutput:
        t = video.shape[2]
        if t != self.num_frames:
            raise ValueError(f"{self.describe()}: got a clip of {t} frames (the fixed position table is built "
                             f"for {self.num_frames})")
        # transformers wants (B, T, 3, H, W)
        pixel_values = resize_clip(video, self.input_size).transpose(1, 2).to(self.dtype)
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        last = self.depth - 1
        layers = [out.last_hidden_state if i == last else out.hidden_states[i + 1] for i in self.return_index]
        mae = torch.stack(layers).float()
        return TeacherOutput(None, None, mae=l2_normalize(mae) if self.norm_type == "l2" else mae)


_OFFICIAL_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_BLOCK_RENAMES = {
    "norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
    "attn.q_bias": "attention.attention.query.bias", "attn.v_bias": "attention.attention.value.bias",
    "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
    "mlp.fc1.weight": "intermediate.dense.weight", "mlp.fc1.bias": "intermediate.dense.bias",
    "mlp.fc2.weight": "output.dense.weight", "mlp.fc2.bias": "output.dense.bias",
}
_TOP_RENAMES = {
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
}


def videomae_state_dict_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn an official VideoMAE(v2) encoder state dict (``blocks.N.attn.qkv.weight`` + ``q_bias``/``v_bias``)
    into ``VideoMAEModel`` keys; the fused qkv weight is split into query/key/value. A pretraining checkpoint's
    ``model`` dict holds the encoder under ``encoder.``: then only those keys are read (the decoder and mask
    token are left out, as the official teacher loader does). A key with no counterpart raises, naming it, so
    that nothing is silently lost."""
    if any(k.startswith("encoder.") for k in state_dict):
        state_dict = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key in _TOP_RENAMES:
            out[_TOP_RENAMES[key]] = value
            continue
        m = _OFFICIAL_BLOCK.match(key)
        rest = m.group(2) if m else None
        prefix = f"encoder.layer.{m.group(1)}." if m else ""
        if rest == "attn.qkv.weight":
            for name, part in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                out[f"{prefix}attention.attention.{name}.weight"] = part
        elif rest in _BLOCK_RENAMES:
            out[prefix + _BLOCK_RENAMES[rest]] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"keys with no VideoMAEModel counterpart (layer scale? not a VideoMAE encoder?): "
                       f"{sorted(unknown)[:8]}")
    return out
