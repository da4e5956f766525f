"""The official InternVideo2-Chat-8B state-dict layout, written out from the official source independently of
iv2_chat (used as reference data by the tests).

Read from: the InternVideo2-Chat HF remote code (modeling_base.py ``BaseMLLM``: ``vision_encoder``,
``vision_layernorm`` = LayerNorm(1408, eps 1e-12), ``qformer`` = BLIP-2 ``BertLMHeadModel`` with ``cls = None``
and word embeddings resized to the tokenizer with "[DEC]" (30523), ``query_tokens`` (1, 32, 768),
``extra_query_tokens`` (1, 64, 768), ``project_up`` = Linear(768, 4096), ``project_down`` = Linear(4096, 768),
``lm`` = Mistral-7B-Instruct-v0.3 under ``get_peft_model``), modeling_internvideo2_vit.py
(``PretrainVisionTransformer_clean``: depth 40 + (-2) + 1 = 39, bare ``ls1``/``ls2`` parameters, RMSNorm
``norm1``/``norm2``/``q_norm``/``k_norm`` weights, no qkv bias, ``img_pos_embed`` with
sep_image_video_pos_embed, no ``clip_projector`` with x_vis_only) and Ask-Anything models/blip2/Qformer.py
(``BertEmbeddings`` with a persistent ``position_ids`` buffer and ``LayerNorm``; ``BertLayer``: ``attention.self``
/ ``attention.output``, ``crossattention`` on layers i % 2 == 0 with key/value from ``encoder_width``,
``intermediate``/``output`` and ``intermediate_query``/``output_query``).
"""

from __future__ import annotations

LORA_TARGETS_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_TARGETS_MLP = ("gate_proj", "up_proj", "down_proj")


def vision_tower_layout(d=1408, depth=39, mlp=6144, frames=8, grid=16, patch=14):
    out = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 1 + frames * grid * grid, d),
        "img_pos_embed": (1, 1 + grid * grid, d),
        "patch_embed.proj.weight": (d, 3, 1, patch, patch),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        out.update({
            b + "norm1.weight": (d,), b + "attn.qkv.weight": (3 * d, d), b + "attn.proj.weight": (d, d),
            b + "attn.proj.bias": (d,), b + "attn.q_norm.weight": (d,), b + "attn.k_norm.weight": (d,),
            b + "ls1": (d,), b + "norm2.weight": (d,), b + "mlp.fc1.weight": (mlp, d), b + "mlp.fc1.bias": (mlp,),
            b + "mlp.fc2.weight": (d, mlp), b + "mlp.fc2.bias": (d,), b + "ls2": (d,),
        })
    return out


def qformer_layout(h=768, layers=12, inter=3072, vocab=30523, positions=512, encoder_width=1408, freq=2):
    out = {
        "embeddings.word_embeddings.weight": (vocab, h),
        "embeddings.position_embeddings.weight": (positions, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
        "embeddings.position_ids": (1, positions),
    }

    def dense(name, n_out, n_in):
        return {name + ".weight": (n_out, n_in), name + ".bias": (n_out,)}

    def ln(name):
        return {name + ".weight": (h,), name + ".bias": (h,)}

    for i in range(layers):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            out.update(dense(p + f"attention.self.{n}", h, h))
        out.update(dense(p + "attention.output.dense", h, h))
        out.update(ln(p + "attention.output.LayerNorm"))
        if i % freq == 0:
            out.update(dense(p + "crossattention.self.query", h, h))
            out.update(dense(p + "crossattention.self.key", h, encoder_width))
            out.update(dense(p + "crossattention.self.value", h, encoder_width))
            out.update(dense(p + "crossattention.output.dense", h, h))
            out.update(ln(p + "crossattention.output.LayerNorm"))
        for kind in ("", "_query"):
            out.update(dense(p + f"intermediate{kind}.dense", inter, h))
            out.update(dense(p + f"output{kind}.dense", h, inter))
            out.update(ln(p + f"output{kind}.LayerNorm"))
    return {"qformer.bert." + k: v for k, v in out.items()}


def mistral_lora_layout(prefix="lm.base_model.model.", vocab=32768, d=4096, inter=14336, layers=32, kv=1024, r=16):
    """Mistral-7B-v0.3 under peft (>= 0.7 names) with LoRA on q/k/v/o/gate/up/down and lm_head."""
    out = {prefix + "model.embed_tokens.weight": (vocab, d), prefix + "model.norm.weight": (d,)}

    def lora(name, n_out, n_in):
        return {f"{name}.base_layer.weight": (n_out, n_in), f"{name}.lora_A.default.weight": (r, n_in),
                f"{name}.lora_B.default.weight": (n_out, r)}

    for i in range(layers):
        p = f"{prefix}model.layers.{i}."
        shapes = {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, d)}
        for n in LORA_TARGETS_ATTN:
            out.update(lora(p + "self_attn." + n, *shapes[n]))
        shapes = {"gate_proj": (inter, d), "up_proj": (inter, d), "down_proj": (d, inter)}
        for n in LORA_TARGETS_MLP:
            out.update(lora(p + "mlp." + n, *shapes[n]))
        out[p + "input_layernorm.weight"] = (d,)
        out[p + "post_attention_layernorm.weight"] = (d,)
    out.update(lora(prefix + "lm_head", vocab, d))
    return out


def internvideo2_chat_8b_layout():
    out = {"vision_encoder." + k: v for k, v in vision_tower_layout().items()}
    out.update({"vision_layernorm.weight": (1408,), "vision_layernorm.bias": (1408,)})
    out.update(qformer_layout())
    out.update({"query_tokens": (1, 32, 768), "extra_query_tokens": (1, 64, 768),
                "project_up.weight": (4096, 768), "project_up.bias": (4096,),
                "project_down.weight": (768, 4096), "project_down.bias": (768,)})
    out.update(mistral_lora_layout())
    return out


BUFFERS = ("qformer.bert.embeddings.position_ids",)
# Published sizes: Mistral-7B-v0.3 has 7,248,023,552 parameters; the official LoRA (r 16 on q/k/v/o/gate/up/
# down of 32 layers + lm_head) adds 32·16·(2·(4096+4096) + 2·(4096+1024) + 3·(4096+14336)) + 16·(4096+32768).
MISTRAL_7B_V03_PARAMS = 7_248_023_552
OFFICIAL_LORA_PARAMS = 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432) + 16 * (4096 + 32768)
