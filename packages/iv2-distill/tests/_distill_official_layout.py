"""Official stage-1 state-dict layouts (key -> shape), written out from the official source independently of
iv2_distill and iv2_encoders:

* InternVideo2/single_modality/models/internvideo2_pretrain.py, ``PretrainInternVideo2`` (1B/6B stage 1: two
  teachers, ``Linear_Decoder`` CLIP heads and final head, ``MLP_Decoder`` MAE heads, ``mae_pos_embed``);
* InternVideo2/single_modality/models/internvideo2_distill.py, ``DistInternVideo2`` (S/B/L distilled from the
  1B: ``clip_student_decoder='MLP_Decoder'`` for the CLIP heads and the final head, no MAE parts);

both with ``sep_pos_embed=False``, patch 14, tubelet 1, no qkv bias, qk-norm, LayerScale, a 16-head attention
pooling ``clip_projector`` with qkv biases projecting to 768.
"""

from __future__ import annotations

# register functions: width, depth, int(width * mlp_ratio)
SIZES = {
    "internvideo2-s14": (384, 12, 1536),
    "internvideo2-b14": (768, 12, 3072),
    "internvideo2-l14": (1024, 24, 4096),
    "internvideo2-1b": (1408, 40, 6144),
    "internvideo2-6b": (3200, 48, 12800),
}

# what REFERENCE.md (section o) gives for the 224 px, 8-frame students with heads
OFFICIAL_COUNTS = {"internvideo2-1b": (592, 1_070_042_752), "internvideo2-6b": (696, 6_075_947_392)}


def _linear(name: str, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (n_out, n_in), f"{name}.bias": (n_out,)}


def _layer_norm(name: str, n: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (n,), f"{name}.bias": (n,)}


def linear_decoder(name: str, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
    """``Linear_Decoder``: ``head`` (Linear) then ``norm`` (LayerNorm)."""
    return {**_linear(f"{name}.head", n_in, n_out), **_layer_norm(f"{name}.norm", n_out)}


def mlp_decoder(name: str, n_in: int, n_out: int) -> dict[str, tuple[int, ...]]:
    """``MLP_Decoder``: ``head`` = Sequential(Linear(n_in, n_in), GELU, Linear(n_in, n_out)), then ``norm``."""
    return {**_linear(f"{name}.head.0", n_in, n_in), **_linear(f"{name}.head.2", n_in, n_out),
            **_layer_norm(f"{name}.norm", n_out)}


def encoder_layout(width: int, depth: int, hidden: int, *, tokens: int = 8 * 16 * 16, patch: int = 14,
                   pooled: int = 768) -> dict[str, tuple[int, ...]]:
    d = width
    out: dict[str, tuple[int, ...]] = {
        "patch_embed.proj.weight": (d, 3, 1, patch, patch), "patch_embed.proj.bias": (d,),
        "cls_token": (1, 1, d), "pos_embed": (1, 1 + tokens, d),
    }
    for i in range(depth):
        blk = f"blocks.{i}"
        out[f"{blk}.norm1.weight"] = (d,)
        out[f"{blk}.attn.qkv.weight"] = (3 * d, d)  # qkv_bias=False
        out[f"{blk}.attn.q_norm.weight"] = (d,)
        out[f"{blk}.attn.k_norm.weight"] = (d,)
        out.update(_linear(f"{blk}.attn.proj", d, d))
        out[f"{blk}.ls1.gamma"] = (d,)
        out[f"{blk}.norm2.weight"] = (d,)
        out.update(_linear(f"{blk}.mlp.fc1", d, hidden))
        out.update(_linear(f"{blk}.mlp.fc2", hidden, d))
        out[f"{blk}.ls2.gamma"] = (d,)
    for n in ("q", "k", "v"):
        out.update(_layer_norm(f"clip_projector.norm1_{n}", d))
        out[f"clip_projector.cross_attn.{n}.weight"] = (d, d)
        out[f"clip_projector.cross_attn.{n}_bias"] = (d,)
    out.update(_linear("clip_projector.cross_attn.proj", d, pooled))
    return out


def pretrain_layout(name: str, *, clip_teacher: int = 3200, clip_final: int = 768, clip_layers: int = 6,
                    mae_teacher: int = 1408, mae_layers: int = 4, tokens: int = 8 * 16 * 16):
    """``PretrainInternVideo2`` (1B/6B stage 1) with heads."""
    width, depth, hidden = SIZES[name]
    out = encoder_layout(width, depth, hidden, tokens=tokens)
    out["clip_pos_embed"] = (1, 1 + tokens, width)
    out["mae_pos_embed"] = (1, tokens, width)
    for k in range(clip_layers):
        out.update(linear_decoder(f"clip_decoder.{k}", width, clip_teacher))
    out.update(linear_decoder("final_clip_decoder", 768, clip_final))
    for k in range(mae_layers):
        out.update(mlp_decoder(f"mae_decoder.{k}", width, mae_teacher))
    return out


def distill_layout(name: str, *, clip_teacher: int = 1408, clip_final: int = 768, clip_layers: int = 6,
                   tokens: int = 8 * 16 * 16):
    """``DistInternVideo2`` (S/B/L from the 1B) with ``MLP_Decoder`` heads."""
    width, depth, hidden = SIZES[name]
    out = encoder_layout(width, depth, hidden, tokens=tokens)
    out["clip_pos_embed"] = (1, 1 + tokens, width)
    for k in range(clip_layers):
        out.update(mlp_decoder(f"clip_decoder.{k}", width, clip_teacher))
    out.update(mlp_decoder("final_clip_decoder", 768, clip_final))
    return out


def official_layout(name: str) -> dict[str, tuple[int, ...]]:
    return pretrain_layout(name) if name in ("internvideo2-1b", "internvideo2-6b") else distill_layout(name)
