"""Independent float64 references of the official chat model's maths, reading weights by their official
state-dict names (``model.state_dict()`` of the model under test gives those names; nothing else of iv2_chat
is called). Facts: REFERENCE.md j/o and the official code (chat vision tower: pre-norm RMSNorm blocks with bare
LayerScale, qk RMSNorm over the full width, exact GELU; BLIP-2 QFormer: post-LN BERT layers, queries ⊕ text
self-attention with additive −10000 masks, queries-only cross-attention every ``freq`` layers, separate query
FFNs, text positions 0..L−1 over the padded text)."""

from __future__ import annotations

import math

import torch


def _f64(sd, prefix=""):
    return {k[len(prefix):]: v.double() for k, v in sd.items() if k.startswith(prefix) and v.is_floating_point()}


def rms(x, w, eps=1e-6):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def layer_norm(x, w, b, eps):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * w + b


def gelu(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def attention(q, k, v, heads, additive=None):
    """Multi-head softmax attention; q (B, Nq, C), k/v (B, Nk, C), additive (B, 1, 1, Nk) or None."""
    b, nq, c = q.shape
    d = c // heads
    split = lambda t: t.reshape(b, t.shape[1], heads, d).transpose(1, 2)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
    if additive is not None:
        scores = scores + additive
    probs = torch.softmax(scores, dim=-1)
    return (probs @ split(v)).transpose(1, 2).reshape(b, nq, c)


def expand_pos_embed(pos, built_frames, frames, side):
    """The chat tower's run-time ``expand_pos_embed`` (IV2-chat modeling_internvideo2_vit): class row kept;
    the rest linear in time (``F.interpolate(mode="linear")`` over frames), then bicubic in space
    (``align_corners=False``), in float64."""
    cls, rest = pos[:, :1], pos[:, 1:]
    c = pos.shape[-1]
    old_side = round((rest.shape[1] // built_frames) ** 0.5)
    if frames != built_frames:
        t = rest.reshape(1, built_frames, -1, c).permute(0, 2, 3, 1).reshape(-1, c, built_frames)
        t = torch.nn.functional.interpolate(t, size=frames, mode="linear")
        rest = t.reshape(1, -1, c, frames).permute(0, 3, 1, 2).reshape(1, -1, c)
    if side != old_side:
        s = rest.reshape(frames, old_side, old_side, c).permute(0, 3, 1, 2)
        s = torch.nn.functional.interpolate(s, size=(side, side), mode="bicubic", align_corners=False)
        rest = s.permute(0, 2, 3, 1).reshape(1, -1, c)
    return torch.cat([cls, rest], dim=1)


def vision_tower(sd, video, heads, depth, eps=1e-6):
    """Chat tower (no pooling): tokens (B, 1 + T·HW, D), class first; T == 1 uses img_pos_embed; other frame
    counts / sizes than the position table's are interpolated at run time (:func:`expand_pos_embed`)."""
    w = _f64(sd, "vision_encoder.")
    x = torch.nn.functional.conv3d(video.double(), w["patch_embed.proj.weight"], w["patch_embed.proj.bias"],
                                   stride=tuple(w["patch_embed.proj.weight"].shape[2:]))
    b, c = x.shape[:2]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w["cls_token"].expand(b, 1, c), x], dim=1)
    frames, side = video.shape[2], int(round((x.shape[1] - 1) / video.shape[2]) ** 0.5)
    pos = w["img_pos_embed"] if frames == 1 else w["pos_embed"]
    built_side = int(round(w["img_pos_embed"].shape[1] - 1) ** 0.5)
    built_frames = 1 if frames == 1 else (pos.shape[1] - 1) // built_side**2
    if pos.shape[1] != x.shape[1]:
        pos = expand_pos_embed(pos, built_frames, frames, side)
    x = x + pos
    for i in range(depth):
        p = f"blocks.{i}."
        h = rms(x, w[p + "norm1.weight"], eps)
        q, k, v = (h @ w[p + "attn.qkv.weight"].T).chunk(3, dim=-1)
        q, k = rms(q, w[p + "attn.q_norm.weight"], eps), rms(k, w[p + "attn.k_norm.weight"], eps)
        a = attention(q, k, v, heads) @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        x = x + w[p + "ls1"] * a
        h = rms(x, w[p + "norm2.weight"], eps)
        h = gelu(h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"]) @ w[p + "mlp.fc2.weight"].T
        x = x + w[p + "ls2"] * (h + w[p + "mlp.fc2.bias"])
    return x


def _dense(w, name, x):
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _post_ln(w, name, h, residual, eps):
    return layer_norm(_dense(w, name + ".dense", h) + residual, w[name + ".LayerNorm.weight"],
                      w[name + ".LayerNorm.bias"], eps)


def qformer(sd, queries, vision_tokens, heads, layers, freq=2, input_ids=None, text_mask=None, eps=1e-12):
    """Official BLIP-2 QFormer (BertModel, is_decoder False) on [queries, text]; returns (B, Q + L, H)."""
    w = _f64(sd, "qformer.bert.")
    x = queries.double()
    b, nq, _ = x.shape
    additive = None
    if input_ids is not None:
        length = input_ids.shape[1]
        text = w["embeddings.word_embeddings.weight"][input_ids] + w["embeddings.position_embeddings.weight"][:length]
        x = torch.cat([x, text], dim=1)
        keep = torch.cat([torch.ones(b, nq, dtype=torch.float64), text_mask.double()], dim=1)
        additive = ((1.0 - keep) * -10000.0)[:, None, None, :]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    enc = vision_tokens.double()
    for i in range(layers):
        p = f"encoder.layer.{i}."
        sa = p + "attention.self."
        ctx = attention(_dense(w, sa + "query", x), _dense(w, sa + "key", x), _dense(w, sa + "value", x), heads,
                        additive)
        a = _post_ln(w, p + "attention.output", ctx, x, eps)
        qa, ta = a[:, :nq], a[:, nq:]
        if i % freq == 0:
            ca = p + "crossattention.self."
            ctx = attention(_dense(w, ca + "query", qa), _dense(w, ca + "key", enc), _dense(w, ca + "value", enc),
                            heads)
            qa = _post_ln(w, p + "crossattention.output", ctx, qa, eps)
        q_out = _post_ln(w, p + "output_query", gelu(_dense(w, p + "intermediate_query.dense", qa)), qa, eps)
        parts = [q_out]
        if ta.shape[1]:
            parts.append(_post_ln(w, p + "output", gelu(_dense(w, p + "intermediate.dense", ta)), ta, eps))
        x = torch.cat(parts, dim=1)
    return x


def visual_embeds(sd, video, *, vision_heads, depth, q_heads, q_layers, freq=2, input_ids=None, text_mask=None):
    """(vision_tokens, query_output, embeds) of the official encode_vision + project_up, in float64."""
    w = _f64(sd)
    tokens = vision_tower(sd, video, vision_heads, depth)
    tokens = layer_norm(tokens, w["vision_layernorm.weight"], w["vision_layernorm.bias"], 1e-12)
    queries = torch.cat([w["query_tokens"], w["extra_query_tokens"]], dim=1).expand(video.shape[0], -1, -1)
    hidden = qformer(sd, queries, tokens, q_heads, q_layers, freq, input_ids, text_mask)
    query_output = hidden[:, : queries.shape[1]]
    embeds = query_output @ w["project_up.weight"].T + w["project_up.bias"]
    return tokens, query_output, embeds
