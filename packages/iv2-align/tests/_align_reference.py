"""Independent float64 reference of the official stage-2 maths, reading weights from a state dict by their
official names (no iv2_align or iv2_encoders code): InternVideo2 vision tower + attention pooling, xbert text
and fusion layers with the MLM head, the BEATs encoder, and the retrieval ranking of ``itm_eval``."""

from __future__ import annotations

import functools
import math

import torch


def f64(sd: dict) -> dict:
    return {k: v.detach().double() for k, v in sd.items()}


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def softmax(x):
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def linear(x, sd, name):
    y = x @ sd[name + ".weight"].T
    return y + sd[name + ".bias"] if name + ".bias" in sd else y


def heads_split(x, heads):
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)


def heads_merge(x):
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, h * d)


# ---------------------------------------------------------------------------------------------- vision
def vision_forward(sd, video, *, heads, pool_heads, keep=None, eps=1e-6, pool_eps=1e-5):
    """Official ``PretrainInternVideo2.forward`` (unfused path): returns ``(x_vis, x_pool_vis)``.
    ``keep``: (B, K) indices of the visible patch tokens (class token always kept)."""
    x = video.double()
    w = sd["patch_embed.proj.weight"]
    x = torch.nn.functional.conv3d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[2:])
    b, c, t = x.shape[:3]
    x = x.reshape(b, c, -1).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(b, 1, c), x], dim=1)
    if t == 1:  # image: img_pos_embed when present, else [cls row, mean over T of the video table]
        if "img_pos_embed" in sd:
            pos = sd["img_pos_embed"]
        else:
            pe = sd["pos_embed"]
            hw = x.shape[1] - 1
            pos = torch.cat([pe[:, :1], pe[:, 1:].reshape(1, -1, hw, c).mean(1)], dim=1)
    else:
        pos = sd["pos_embed"]
    x = x + pos
    if keep is not None:
        patches = torch.gather(x[:, 1:], 1, keep[..., None].expand(-1, -1, c))
        x = torch.cat([x[:, :1], patches], dim=1)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        p = f"blocks.{i}."
        h = rms_norm(x, sd[p + "norm1.weight"], eps)
        qkv = h @ sd[p + "attn.qkv.weight"].T
        q, k, v = qkv.chunk(3, dim=-1)
        q, k = rms_norm(q, sd[p + "attn.q_norm.weight"], eps), rms_norm(k, sd[p + "attn.k_norm.weight"], eps)
        q, k, v = (heads_split(z, heads) for z in (q, k, v))
        a = softmax(q * q.shape[-1] ** -0.5 @ k.transpose(-1, -2)) @ v
        x = x + sd[p + "ls1.gamma"] * linear(heads_merge(a), sd, p + "attn.proj")
        h = rms_norm(x, sd[p + "norm2.weight"], eps)
        x = x + sd[p + "ls2.gamma"] * linear(gelu(linear(h, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
    # attention pooling: the mean token queries every token; separate LayerNorms and biased projections
    pre = "clip_projector."
    sources = {"q": x.mean(1, keepdim=True), "k": x, "v": x}
    q, k, v = (heads_split(layer_norm(src, sd[f"{pre}norm1_{n}.weight"], sd[f"{pre}norm1_{n}.bias"], pool_eps)
                           @ sd[f"{pre}cross_attn.{n}.weight"].T + sd[f"{pre}cross_attn.{n}_bias"], pool_heads)
               for n, src in sources.items())
    a = softmax(q * q.shape[-1] ** -0.5 @ k.transpose(-1, -2)) @ v
    pooled = linear(heads_merge(a), sd, pre + "cross_attn.proj")[:, 0]
    return x, pooled


# ------------------------------------------------------------------------------------------------ text
def _bert_attention(sd, p, x, kv, add_mask, heads, eps):
    q = heads_split(linear(x, sd, p + "self.query"), heads)
    k = heads_split(linear(kv, sd, p + "self.key"), heads)
    v = heads_split(linear(kv, sd, p + "self.value"), heads)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if add_mask is not None:
        scores = scores + add_mask
    out = linear(heads_merge(softmax(scores) @ v), sd, p + "output.dense")
    return layer_norm(out + x, sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"], eps)


def bert_layer(sd, i, x, mask, heads, eps=1e-12, media=None):
    """xbert ``BertLayer``: self-attention (additive mask), cross-attention to ``media`` in fusion layers, FFN."""
    p = f"bert.encoder.layer.{i}."
    add = (1.0 - mask[:, None, None, :].double()) * -10000.0
    x = _bert_attention(sd, p + "attention.", x, x, add, heads, eps)
    if media is not None:
        x = _bert_attention(sd, p + "crossattention.", x, media.double(), None, heads, eps)
    h = gelu(linear(x, sd, p + "intermediate.dense"))
    return layer_norm(linear(h, sd, p + "output.dense") + x, sd[p + "output.LayerNorm.weight"],
                      sd[p + "output.LayerNorm.bias"], eps)


def bert_text(sd, ids, mask, fusion_layer, heads, eps=1e-12):
    """``mode="text"``: embeddings (token type 0, positions 0..L-1), LayerNorm, layers < fusion_layer."""
    e = "bert.embeddings."
    x = (sd[e + "word_embeddings.weight"][ids] + sd[e + "token_type_embeddings.weight"][0]
         + sd[e + "position_embeddings.weight"][: ids.shape[1]])
    x = layer_norm(x, sd[e + "LayerNorm.weight"], sd[e + "LayerNorm.bias"], eps)
    for i in range(fusion_layer):
        x = bert_layer(sd, i, x, mask, heads, eps)
    return x


def bert_fuse(sd, x, mask, media, fusion_layer, num_layers, heads, eps=1e-12):
    for i in range(fusion_layer, num_layers):
        x = bert_layer(sd, i, x, mask, heads, eps, media=media)
    return x


def mlm_head(sd, x, eps=1e-12):
    p = "cls.predictions."
    h = gelu(linear(x, sd, p + "transform.dense"))
    h = layer_norm(h, sd[p + "transform.LayerNorm.weight"], sd[p + "transform.LayerNorm.bias"], eps)
    return h @ sd["bert.embeddings.word_embeddings.weight"].T + sd[p + "bias"]


# ----------------------------------------------------------------------------------------------- audio
@functools.lru_cache(maxsize=8)
def t5_buckets(n, num_buckets, max_distance):
    out = torch.zeros(n, n, dtype=torch.long)
    half = num_buckets // 2
    exact = half // 2
    for i in range(n):
        for j in range(n):
            rel = j - i
            bucket = half if rel > 0 else 0
            rel = abs(rel)
            if rel < exact:
                bucket += rel
            else:
                large = exact + int(math.log(rel / exact) / math.log(max_distance / exact) * (half - exact))
                bucket += min(large, half - 1)
            out[i, j] = bucket
    return out


def beats_forward(sd, fbank, cfg):
    """Official BEATs on a fbank (eval mode): patch conv, LN, projection, weight-normed conv positions
    (SamePad + GELU), then post-LN DeepNorm layers with the gated T5 relative bias. Plain softmax here: the
    official ``(qk - rowmax) * 32`` trick and the ``/ 32`` on q leave the maths unchanged."""
    p = cfg["input_patch_size"]
    x = torch.nn.functional.conv2d(fbank.double()[:, None], sd["patch_embedding.weight"],
                                   sd.get("patch_embedding.bias"), stride=p)
    b, e = x.shape[:2]
    x = x.reshape(b, e, -1).transpose(1, 2)
    x = layer_norm(x, sd["layer_norm.weight"], sd["layer_norm.bias"], 1e-5)
    if "post_extract_proj.weight" in sd:
        x = linear(x, sd, "post_extract_proj")
    v, g = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
    weight = v * g / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    k = cfg["conv_pos"]
    conv = torch.nn.functional.conv1d(x.transpose(1, 2), weight, sd["encoder.pos_conv.0.bias"], padding=k // 2,
                                      groups=cfg["conv_pos_groups"])
    if k % 2 == 0:
        conv = conv[:, :, :-1]
    x = x + gelu(conv).transpose(1, 2)
    x = layer_norm(x, sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"], 1e-5)
    heads, layers = cfg["encoder_attention_heads"], cfg["encoder_layers"]
    alpha = (2 * layers) ** 0.25 if cfg["deep_norm"] else 1.0
    n = x.shape[1]
    bias = None
    if cfg["relative_position_embedding"]:
        table = sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]
        bias = table[t5_buckets(n, cfg["num_buckets"], cfg["max_distance"])].permute(2, 0, 1)[None]  # 1,H,L,L
    for i in range(layers):
        pre = f"encoder.layers.{i}."
        q = heads_split(linear(x, sd, pre + "self_attn.q_proj"), heads)
        kk = heads_split(linear(x, sd, pre + "self_attn.k_proj"), heads)
        vv = heads_split(linear(x, sd, pre + "self_attn.v_proj"), heads)
        logits = q @ kk.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if bias is not None:
            rel = bias
            if cfg["gru_rel_pos"]:
                gate = linear(q, sd, pre + "self_attn.grep_linear")  # B,H,L,8 on the unscaled query
                gate = 1.0 / (1.0 + torch.exp(-gate.reshape(*gate.shape[:-1], 2, 4).sum(-1)))
                ga, gb = gate[..., :1], gate[..., 1:]
                rel = (ga * (gb * sd[pre + "self_attn.grep_a"] - 1.0) + 2.0) * bias
            logits = logits + rel
        attn = linear(heads_merge(softmax(logits) @ vv), sd, pre + "self_attn.out_proj")
        x = layer_norm(x * alpha + attn, sd[pre + "self_attn_layer_norm.weight"],
                       sd[pre + "self_attn_layer_norm.bias"], 1e-5)
        h = linear(gelu(linear(x, sd, pre + "fc1")), sd, pre + "fc2")
        x = layer_norm(x * alpha + h, sd[pre + "final_layer_norm.weight"], sd[pre + "final_layer_norm.bias"], 1e-5)
    return x


# ------------------------------------------------------------------------------------------- retrieval
def itm_eval_reference(scores_i2t, scores_t2i, txt2img, img2txt):
    """The official ``itm_eval`` with an explicit stable sort: ascending by score with ties in ascending index,
    reversed (= numpy's ``argsort(...)[::-1]`` on small rows)."""
    def ranks(scores, gts):
        out = []
        for row, gt in zip(scores.tolist(), gts):
            order = sorted(range(len(row)), key=lambda j: (row[j], j))[::-1]
            gt = [gt] if isinstance(gt, int) else gt
            out.append(min(order.index(g) for g in gt))
        return out

    res = {}
    for name, scores, gts in (("v2t", scores_i2t, img2txt), ("t2v", scores_t2i, txt2img)):
        r = ranks(scores, gts)
        rec = [100.0 * sum(x < k for x in r) / len(r) for k in (1, 5, 10)]
        res.update({f"{name}_r1": rec[0], f"{name}_r5": rec[1], f"{name}_r10": rec[2], f"{name}_r_mean": sum(rec) / 3})
    res["r_mean"] = (res["v2t_r_mean"] + res["t2v_r_mean"]) / 2
    return {k: round(v, 2) for k, v in res.items()}
