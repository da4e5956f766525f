"""An independent float64 eager implementation of the official encoder maths (explicit softmax attention,
unfused norms, the official mask/position rules), reading weights from a state dict by their official
names. It shares no code with iv2_encoders: the tests compare the package against it."""

from __future__ import annotations

import math

import torch


def _rms(x, w, eps):
    return w * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _softmax_attention(q, k, v, heads):
    b, nq, c = q.shape
    nk = k.shape[1]
    hd = c // heads
    q = q.view(b, nq, heads, hd).permute(0, 2, 1, 3)
    k = k.view(b, nk, heads, hd).permute(0, 2, 1, 3)
    v = v.view(b, nk, heads, hd).permute(0, 2, 1, 3)
    logits = (q * hd**-0.5) @ k.transpose(-1, -2)
    logits = logits - logits.amax(-1, keepdim=True)
    p = logits.exp()
    p = p / p.sum(-1, keepdim=True)
    return (p @ v).permute(0, 2, 1, 3).reshape(b, nq, c)


def reference_forward(sd, video, *, heads, pool_heads, depth, patch, keep_index=None, image_pos="mean",
                      eps=1e-6, pool_eps=1e-5):
    """Returns (tokens, pooled) in float64. ``keep_index``: (B, K) indices of kept patch tokens."""
    sd = {k: v.double() for k, v in sd.items()}
    x = video.double()
    w = sd["patch_embed.proj.weight"]
    x = torch.nn.functional.conv3d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[2:])
    b, c = x.shape[:2]
    t = x.shape[2]
    x = x.reshape(b, c, -1).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(b, 1, c), x], dim=1)
    pos = sd["pos_embed"]
    if t == 1 and pos.shape[1] != x.shape[1]:
        if image_pos == "img_pos_embed":
            pos = sd["img_pos_embed"]
        else:
            hw = x.shape[1] - 1
            pos = torch.cat([pos[:, :1], pos[:, 1:].reshape(1, -1, hw, c).mean(1)], dim=1)
    x = x + pos
    if keep_index is not None:
        patches = torch.gather(x[:, 1:], 1, keep_index[..., None].expand(-1, -1, c))
        x = torch.cat([x[:, :1], patches], dim=1)
    for i in range(depth):
        p = f"blocks.{i}."
        h = _rms(x, sd[p + "norm1.weight"], eps)
        qkv = h @ sd[p + "attn.qkv.weight"].T
        q, k, v = qkv.chunk(3, dim=-1)
        q = _rms(q, sd[p + "attn.q_norm.weight"], eps)
        k = _rms(k, sd[p + "attn.k_norm.weight"], eps)
        a = _softmax_attention(q, k, v, heads) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + a * sd[p + "ls1.gamma"]
        h = _rms(x, sd[p + "norm2.weight"], eps)
        h = _gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        h = h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        x = x + h * sd[p + "ls2.gamma"]
    p = "clip_projector."
    qin = _ln(x.mean(1, keepdim=True), sd[p + "norm1_q.weight"], sd[p + "norm1_q.bias"], pool_eps)
    kin = _ln(x, sd[p + "norm1_k.weight"], sd[p + "norm1_k.bias"], pool_eps)
    vin = _ln(x, sd[p + "norm1_v.weight"], sd[p + "norm1_v.bias"], pool_eps)
    q = qin @ sd[p + "cross_attn.q.weight"].T + sd[p + "cross_attn.q_bias"]
    k = kin @ sd[p + "cross_attn.k.weight"].T + sd[p + "cross_attn.k_bias"]
    v = vin @ sd[p + "cross_attn.v.weight"].T + sd[p + "cross_attn.v_bias"]
    pooled = _softmax_attention(q, k, v, pool_heads)[:, 0]
    pooled = pooled @ sd[p + "cross_attn.proj.weight"].T + sd[p + "cross_attn.proj.bias"]
    return x, pooled
