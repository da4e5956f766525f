"""The official InternVideo2 vision-encoder state-dict layout, written out from the official source
(InternVideo2/single_modality/models/internvideo2_pretrain.py, ``PretrainInternVideo2`` with
``sep_pos_embed=False``), independently of iv2_encoders. Used by the tests as the reference layout."""

from __future__ import annotations


def official_encoder_layout(
    embed_dim: int, depth: int, mlp_hidden: int, clip_embed_dim: int = 768, num_patches: int = 8 * 256,
    patch: int = 14, tubelet: int = 1, qkv_bias: bool = False,
) -> dict[str, tuple[int, ...]]:
    d = embed_dim
    layout: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, num_patches + 1, d),
        "patch_embed.proj.weight": (d, 3, tubelet, patch, patch),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        layout.update({
            b + "norm1.weight": (d,),
            b + "attn.qkv.weight": (3 * d, d),
            b + "attn.q_norm.weight": (d,),
            b + "attn.k_norm.weight": (d,),
            b + "attn.proj.weight": (d, d),
            b + "attn.proj.bias": (d,),
            b + "ls1.gamma": (d,),
            b + "norm2.weight": (d,),
            b + "mlp.fc1.weight": (mlp_hidden, d),
            b + "mlp.fc1.bias": (mlp_hidden,),
            b + "mlp.fc2.weight": (d, mlp_hidden),
            b + "mlp.fc2.bias": (d,),
            b + "ls2.gamma": (d,),
        })
        if qkv_bias:
            layout[b + "attn.qkv.bias"] = (3 * d,)
    p = "clip_projector."
    for n in ("norm1_q", "norm1_k", "norm1_v"):
        layout[p + n + ".weight"] = (d,)
        layout[p + n + ".bias"] = (d,)
    for n in ("q", "k", "v"):
        layout[p + f"cross_attn.{n}.weight"] = (d, d)
        layout[p + f"cross_attn.{n}_bias"] = (d,)
    layout[p + "cross_attn.proj.weight"] = (clip_embed_dim, d)
    layout[p + "cross_attn.proj.bias"] = (clip_embed_dim,)
    return layout


# name -> (width, depth, MLP hidden = int(width * ratio)) from the official register functions.
OFFICIAL_SIZES = {
    "internvideo2-s14": (384, 12, 1536),
    "internvideo2-b14": (768, 12, 3072),
    "internvideo2-l14": (1024, 24, 4096),
    "internvideo2-1b": (1408, 40, 6144),
    "internvideo2-6b": (3200, 48, 12800),
}


def official_distillation_heads(embed_dim: int, num_patches: int = 8 * 256, clip_layers: int = 6,
                                mae_layers: int = 4) -> dict[str, tuple[int, ...]]:
    """Stage-1 pretraining extras (dropped on load): CLIP/MAE decoders and their position tables."""
    d = embed_dim
    out = {"clip_pos_embed": (1, num_patches + 1, d), "mae_pos_embed": (1, num_patches, d)}
    for i in range(clip_layers):
        out.update({f"clip_decoder.{i}.head.weight": (3200, d), f"clip_decoder.{i}.head.bias": (3200,),
                    f"clip_decoder.{i}.norm.weight": (3200,), f"clip_decoder.{i}.norm.bias": (3200,)})
    out.update({"final_clip_decoder.head.weight": (768, 768), "final_clip_decoder.head.bias": (768,),
                "final_clip_decoder.norm.weight": (768,), "final_clip_decoder.norm.bias": (768,)})
    for i in range(mae_layers):
        out.update({f"mae_decoder.{i}.head.0.weight": (d, d), f"mae_decoder.{i}.head.0.bias": (d,),
                    f"mae_decoder.{i}.head.2.weight": (1408, d), f"mae_decoder.{i}.head.2.bias": (1408,),
                    f"mae_decoder.{i}.norm.weight": (1408,), f"mae_decoder.{i}.norm.bias": (1408,)})
    return out


def official_chat_tower_layout(embed_dim: int, depth: int, mlp_hidden: int, num_patches: int, img_patches: int,
                               patch: int = 14, tubelet: int = 1) -> dict[str, tuple[int, ...]]:
    """The InternVideo2-Chat vision tower (IV2-chat modeling_internvideo2_vit.py ``PretrainVisionTransformer_clean``
    with ``x_vis_only``, ``sep_image_video_pos_embed``): ``depth`` blocks built, LayerScale as bare parameters
    ``blocks.N.ls1`` / ``ls2``, a learnable ``img_pos_embed`` of one frame, no ``clip_projector``."""
    layout = {k: s for k, s in official_encoder_layout(embed_dim, depth, mlp_hidden, num_patches=num_patches,
                                                       patch=patch, tubelet=tubelet).items()
              if not k.startswith("clip_projector.")}
    for key in [k for k in layout if k.endswith((".ls1.gamma", ".ls2.gamma"))]:
        layout[key.removesuffix(".gamma")] = layout.pop(key)
    layout["img_pos_embed"] = (1, img_patches + 1, embed_dim)
    return layout


# what else an InternVideo2-Chat checkpoint holds beside ``vision_encoder.*`` (dropped by the encoder's loader)
CHAT_MODEL_OTHER_KEYS = ("vision_layernorm.weight", "vision_layernorm.bias", "query_tokens", "extra_query_tokens",
                         "qformer.bert.encoder.layer.0.attention.self.query.weight", "project_up.weight",
                         "project_up.bias", "lm.base_model.model.model.layers.0.self_attn.q_proj.weight")
