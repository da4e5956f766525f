"""Official stage-2 state-dict layouts, written out from the official source independently of iv2_align:

* vision tower: InternVideo2/multi_modality/models/backbones/internvideo2/internvideo2.py ``PretrainInternVideo2``
  (the stage-2 tower still builds the stage-1 heads: ``clip_pos_embed``, ``clip_img_pos_embed``,
  ``clip_decoder.K``, ``final_clip_decoder``);
* text: backbones/bert/xbert.py ``BertForMaskedLM`` (``position_ids`` is a persistent buffer there; the MLM
  decoder bias is registered under ``decoder.bias`` as well as ``predictions.bias``);
* audio: backbones/beats/{BEATs,backbone}.py (weight-normed ``pos_conv.0``; every layer lists the shared
  ``relative_attention_bias``);
* heads: internvideo2_stage2_visual.py / internvideo2_stage2_audiovisual.py and scripts/pretraining/stage2/
  {1B,6B}/config.py.
"""

from __future__ import annotations

Layout = dict[str, tuple[int, ...]]


def vision_layout(d: int, depth: int, mlp: int, *, clip_dim: int = 768, frames: int = 4, grid: int = 16,
                  patch: int = 14, sep_image_pos: bool, teacher_dim: int = 3200, teacher_final: int = 768,
                  return_layers: int = 6) -> tuple[Layout, Layout]:
    """``(tower, stage1_heads)`` of ``PretrainInternVideo2`` (no qkv bias, qk-norm, LayerScale)."""
    n, hw = frames * grid * grid, grid * grid
    tower: Layout = {"cls_token": (1, 1, d), "pos_embed": (1, n + 1, d),
                     "patch_embed.proj.weight": (d, 3, 1, patch, patch), "patch_embed.proj.bias": (d,)}
    heads: Layout = {"clip_pos_embed": (1, n + 1, d)}
    if sep_image_pos:
        tower["img_pos_embed"] = (1, hw + 1, d)
        heads["clip_img_pos_embed"] = (1, hw + 1, d)
    for i in range(depth):
        b = f"blocks.{i}."
        tower.update({
            b + "norm1.weight": (d,), b + "attn.qkv.weight": (3 * d, d), b + "attn.q_norm.weight": (d,),
            b + "attn.k_norm.weight": (d,), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "ls1.gamma": (d,), b + "norm2.weight": (d,), b + "mlp.fc1.weight": (mlp, d),
            b + "mlp.fc1.bias": (mlp,), b + "mlp.fc2.weight": (d, mlp), b + "mlp.fc2.bias": (d,),
            b + "ls2.gamma": (d,),
        })
    for n_ in ("norm1_q", "norm1_k", "norm1_v"):
        tower[f"clip_projector.{n_}.weight"] = (d,)
        tower[f"clip_projector.{n_}.bias"] = (d,)
    for n_ in ("q", "k", "v"):
        tower[f"clip_projector.cross_attn.{n_}.weight"] = (d, d)
        tower[f"clip_projector.cross_attn.{n_}_bias"] = (d,)
    tower["clip_projector.cross_attn.proj.weight"] = (clip_dim, d)
    tower["clip_projector.cross_attn.proj.bias"] = (clip_dim,)
    for i in range(return_layers):
        heads.update({f"clip_decoder.{i}.head.weight": (teacher_dim, d), f"clip_decoder.{i}.head.bias": (teacher_dim,),
                      f"clip_decoder.{i}.norm.weight": (teacher_dim,), f"clip_decoder.{i}.norm.bias": (teacher_dim,)})
    heads.update({"final_clip_decoder.head.weight": (teacher_final, clip_dim),
                  "final_clip_decoder.head.bias": (teacher_final,),
                  "final_clip_decoder.norm.weight": (teacher_final,), "final_clip_decoder.norm.bias": (teacher_final,)})
    return tower, heads


def bert_layout(*, hidden: int, layers: int, ffn: int, vocab: int, max_pos: int, type_vocab: int,
                fusion_layer: int, encoder_width: int, mlm_head: bool = True) -> Layout:
    """``BertForMaskedLM`` keys (``bert.*``, ``cls.*``) with cross-attention in layers >= fusion_layer."""
    h = hidden
    out: Layout = {
        "bert.embeddings.position_ids": (1, max_pos),
        "bert.embeddings.word_embeddings.weight": (vocab, h),
        "bert.embeddings.position_embeddings.weight": (max_pos, h),
        "bert.embeddings.token_type_embeddings.weight": (type_vocab, h),
        "bert.embeddings.LayerNorm.weight": (h,), "bert.embeddings.LayerNorm.bias": (h,),
    }

    def attention(p: str, kv_in: int) -> None:
        out.update({p + "self.query.weight": (h, h), p + "self.query.bias": (h,),
                    p + "self.key.weight": (h, kv_in), p + "self.key.bias": (h,),
                    p + "self.value.weight": (h, kv_in), p + "self.value.bias": (h,),
                    p + "output.dense.weight": (h, h), p + "output.dense.bias": (h,),
                    p + "output.LayerNorm.weight": (h,), p + "output.LayerNorm.bias": (h,)})

    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        attention(p + "attention.", h)
        if i >= fusion_layer:
            attention(p + "crossattention.", encoder_width)
        out.update({p + "intermediate.dense.weight": (ffn, h), p + "intermediate.dense.bias": (ffn,),
                    p + "output.dense.weight": (h, ffn), p + "output.dense.bias": (h,),
                    p + "output.LayerNorm.weight": (h,), p + "output.LayerNorm.bias": (h,)})
    if mlm_head:
        out.update({"cls.predictions.bias": (vocab,), "cls.predictions.transform.dense.weight": (h, h),
                    "cls.predictions.transform.dense.bias": (h,), "cls.predictions.transform.LayerNorm.weight": (h,),
                    "cls.predictions.transform.LayerNorm.bias": (h,), "cls.predictions.decoder.weight": (vocab, h),
                    "cls.predictions.decoder.bias": (vocab,)})
    return out


def beats_layout(cfg: dict) -> Layout:
    """Official ``BEATs(cfg)`` keys (not fine-tuned)."""
    e, c, f = cfg["embed_dim"], cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"]
    heads, p, k, g = cfg["encoder_attention_heads"], cfg["input_patch_size"], cfg["conv_pos"], cfg["conv_pos_groups"]
    out: Layout = {"patch_embedding.weight": (e, 1, p, p), "layer_norm.weight": (e,), "layer_norm.bias": (e,)}
    if cfg.get("conv_bias"):
        out["patch_embedding.bias"] = (e,)
    if e != c:
        out.update({"post_extract_proj.weight": (c, e), "post_extract_proj.bias": (c,)})
    out.update({"encoder.pos_conv.0.weight_g": (1, 1, k), "encoder.pos_conv.0.weight_v": (c, c // g, k),
                "encoder.pos_conv.0.bias": (c,), "encoder.layer_norm.weight": (c,), "encoder.layer_norm.bias": (c,)})
    for i in range(cfg["encoder_layers"]):
        b = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out[b + f"self_attn.{proj}.weight"] = (c, c)
            out[b + f"self_attn.{proj}.bias"] = (c,)
        if cfg["relative_position_embedding"]:
            out[b + "self_attn.relative_attention_bias.weight"] = (cfg["num_buckets"], heads)
        if cfg["gru_rel_pos"]:
            out.update({b + "self_attn.grep_linear.weight": (8, c // heads), b + "self_attn.grep_linear.bias": (8,),
                        b + "self_attn.grep_a": (1, heads, 1, 1)})
        out.update({b + "self_attn_layer_norm.weight": (c,), b + "self_attn_layer_norm.bias": (c,),
                    b + "fc1.weight": (f, c), b + "fc1.bias": (f,), b + "fc2.weight": (c, f), b + "fc2.bias": (c,),
                    b + "final_layer_norm.weight": (c,), b + "final_layer_norm.bias": (c,)})
    return out


def _prefixed(prefix: str, layout: Layout) -> Layout:
    return {prefix + k: v for k, v in layout.items()}


BEATS_ITER3_CFG = dict(input_patch_size=16, embed_dim=512, conv_bias=False, encoder_layers=12,
                       encoder_embed_dim=768, encoder_ffn_embed_dim=3072, encoder_attention_heads=12,
                       conv_pos=128, conv_pos_groups=16, relative_position_embedding=True, num_buckets=320,
                       gru_rel_pos=True)


def stage2_layout_for(*, vision: dict, bert: dict, embed_dim: int, clip_dim: int, text_width: int,
                      audio: dict | None = None, av_dim: int | None = None) -> tuple[Layout, Layout]:
    """``(model_keys, stage1_heads)`` of an official stage-2 model: ``vision`` are :func:`vision_layout`
    arguments, ``bert`` :func:`bert_layout` arguments without ``encoder_width``; ``audio`` (a BEATs cfg)
    makes it the audio-visual model with ``av_concat_dim = av_dim``."""
    tower, heads = vision_layout(**vision, clip_dim=clip_dim)
    d = vision["d"]
    out = _prefixed("vision_encoder.", tower)
    if audio is not None:
        out.update({"av_concat_vision_proj.0.weight": (av_dim, d), "av_concat_vision_proj.0.bias": (av_dim,),
                    "av_concat_vision_proj.1.weight": (av_dim,), "av_concat_vision_proj.1.bias": (av_dim,)})
    out.update(_prefixed("text_encoder.", bert_layout(**bert, encoder_width=av_dim if audio else d)))
    if audio is not None:
        a = audio["encoder_embed_dim"]
        out.update(_prefixed("audio_encoder.", beats_layout(audio)))
        out.update({"audio_proj.weight": (embed_dim, a), "audio_proj.bias": (embed_dim,),
                    "av_concat_audio_proj.0.weight": (av_dim, a), "av_concat_audio_proj.0.bias": (av_dim,),
                    "av_concat_audio_proj.1.weight": (av_dim,), "av_concat_audio_proj.1.bias": (av_dim,),
                    "av_fusion.weight": (embed_dim, 2 * embed_dim), "av_fusion.bias": (embed_dim,),
                    "avtm_head.weight": (2, text_width), "avtm_head.bias": (2,)})
    out.update({"vision_proj.weight": (embed_dim, clip_dim), "vision_proj.bias": (embed_dim,),
                "text_proj.weight": (embed_dim, text_width), "text_proj.bias": (embed_dim,), "temp": (),
                "itm_head.weight": (2, text_width), "itm_head.bias": (2,)})
    return out, _prefixed("vision_encoder.", heads)


_BERT_LARGE = dict(hidden=1024, layers=24, ffn=4096, vocab=30522, max_pos=512, type_vocab=2, fusion_layer=19)


def stage2_layout(size: str) -> tuple[Layout, Layout]:
    """The released stage-2 models: "1b" (video-text, bert-large fused at 19, encoder_width 1408, embed_dim 512,
    separate image position table) or "6b" (audio-visual, BEATs iter3, encoder_width = av_concat_dim = 768)."""
    if size == "1b":
        return stage2_layout_for(vision=dict(d=1408, depth=40, mlp=6144, sep_image_pos=True), bert=_BERT_LARGE,
                                 embed_dim=512, clip_dim=768, text_width=1024)
    if size == "6b":
        return stage2_layout_for(vision=dict(d=3200, depth=48, mlp=12800, sep_image_pos=False), bert=_BERT_LARGE,
                                 embed_dim=768, clip_dim=768, text_width=1024, audio=BEATS_ITER3_CFG, av_dim=768)
    raise ValueError(size)


# tiny official layouts (several test modules build them)
TINY_BEATS = dict(input_patch_size=16, embed_dim=24, encoder_layers=2, encoder_embed_dim=32,
                  encoder_ffn_embed_dim=64, encoder_attention_heads=4, conv_pos=8, conv_pos_groups=4,
                  relative_position_embedding=True, num_buckets=16, max_distance=32, gru_rel_pos=True,
                  deep_norm=True, dropout=0.0, attention_dropout=0.0)
TINY_BERT = dict(hidden=32, layers=3, ffn=64, vocab=64, max_pos=40, type_vocab=2, fusion_layer=2)


def tiny_official(audio_visual: bool):
    vision = dict(d=64, depth=2, mlp=256, frames=4, grid=4, sep_image_pos=not audio_visual, teacher_dim=48,
                  teacher_final=24, return_layers=2)
    if audio_visual:
        return stage2_layout_for(vision=vision, bert=TINY_BERT, embed_dim=16, clip_dim=32, text_width=32,
                                 audio=TINY_BEATS, av_dim=24)
    return stage2_layout_for(vision=vision, bert=TINY_BERT, embed_dim=16, clip_dim=32, text_width=32)
