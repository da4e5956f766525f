"""Independent float64 maths of the official stage-1 student and loss, from the facts in REFERENCE.md (a, b, o)
and the official PretrainInternVideo2 / DistInternVideo2 forward: explicit attention (einsum + softmax),
unfused RMSNorm / LayerNorm, exact GELU, weights read from a state dict by their official names. It calls
nothing from iv2_distill or iv2_encoders."""

from __future__ import annotations

import math

import torch


def rms(x, w, eps=1e-6):
    return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def layer_norm(x, w, b, eps):
    centred = x - x.mean(-1, keepdim=True)
    return w * centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) + b


def gelu(x):
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def unit(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True))


def multi_head(q, k, v, heads):
    """q (B, Lq, C), k/v (B, Lk, C) -> (output (B, Lq, C), probabilities (B, heads, Lq, Lk))."""
    b, lq, c = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, c // heads)
    logits = torch.einsum("bqhd,bkhd->bhqk", split(q), split(k)) / math.sqrt(c // heads)
    p = torch.softmax(logits, dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, split(v)).reshape(b, lq, c), p


def decoder(sd, name, x, kind):
    """Linear_Decoder (``kind='linear'``) or MLP_Decoder (``'mlp'``), then LayerNorm(1e-5) and x/||x||."""
    if kind == "linear":
        y = x @ sd[f"{name}.head.weight"].T + sd[f"{name}.head.bias"]
    else:
        y = gelu(x @ sd[f"{name}.head.0.weight"].T + sd[f"{name}.head.0.bias"])
        y = y @ sd[f"{name}.head.2.weight"].T + sd[f"{name}.head.2.bias"]
    return unit(layer_norm(y, sd[f"{name}.norm.weight"], sd[f"{name}.norm.bias"], 1e-5))


def student_reference(state_dict, video, keep, *, heads, pool_heads, clip_index, mae_index, kind):
    """Returns (clip_middle, clip_final, mae) in float64. ``keep``: (B, N_visible) indices of the visible patch
    tokens (ascending); ``clip_index`` / ``mae_index``: tapped blocks, matched to heads 0, 1, ... in ascending
    block order."""
    sd = {k: v.double() for k, v in state_dict.items()}
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    w = sd["patch_embed.proj.weight"]
    x = torch.nn.functional.conv3d(video.double(), w, sd["patch_embed.proj.bias"], stride=tuple(w.shape[2:]))
    b, c = x.shape[:2]
    x = torch.cat([sd["cls_token"].expand(b, 1, c), x.flatten(2).transpose(1, 2)], dim=1) + sd["pos_embed"]
    rows = torch.cat([torch.zeros(b, 1, dtype=torch.long), keep + 1], dim=1)  # class row + visible patches
    pick = lambda t, idx: torch.stack([t[i, idx[i]] for i in range(b)])
    x = pick(x, rows)
    tapped = {}
    for i in range(depth):
        p = f"blocks.{i}."
        q, k, v = (rms(x, sd[p + "norm1.weight"]) @ sd[p + "attn.qkv.weight"].T).chunk(3, dim=-1)
        q, k = rms(q, sd[p + "attn.q_norm.weight"]), rms(k, sd[p + "attn.k_norm.weight"])
        a, _ = multi_head(q, k, v, heads)
        x = x + sd[p + "ls1.gamma"] * (a @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"])
        h = gelu(rms(x, sd[p + "norm2.weight"]) @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + sd[p + "ls2.gamma"] * (h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"])
        tapped[i] = x
    pooled = pool_reference(sd, x, pool_heads)[0]
    clip_pos = pick(sd["clip_pos_embed"].expand(b, -1, -1), rows)
    clip_middle = torch.stack([decoder(sd, f"clip_decoder.{j}", tapped[i] + clip_pos, kind)
                               for j, i in enumerate(clip_index)])
    clip_final = decoder(sd, "final_clip_decoder", pooled, kind) if "final_clip_decoder.norm.weight" in sd else None
    mae = None
    if mae_index:
        mae_pos = pick(sd["mae_pos_embed"].expand(b, -1, -1), keep)
        mae = torch.stack([decoder(sd, f"mae_decoder.{j}", tapped[i][:, 1:] + mae_pos, "mlp")
                           for j, i in enumerate(mae_index)])
    return clip_middle, clip_final, mae


def pool_reference(sd, x, pool_heads, prefix="clip_projector."):
    """The official AttentionPoolingBlock: query = mean token; LayerNorm(1e-5) on q/k/v inputs; separate
    biases. Returns (pooled (B, C_out), attention probabilities (B, heads, 1, L))."""
    sd = {k: v.double() for k, v in sd.items() if k.startswith(prefix)}
    ln = lambda t, n: layer_norm(t, sd[f"{prefix}norm1_{n}.weight"], sd[f"{prefix}norm1_{n}.bias"], 1e-5)
    proj = lambda t, n: t @ sd[f"{prefix}cross_attn.{n}.weight"].T + sd[f"{prefix}cross_attn.{n}_bias"]
    q = proj(ln(x.mean(1, keepdim=True), "q"), "q")
    out, p = multi_head(q, proj(ln(x, "k"), "k"), proj(ln(x, "v"), "v"), pool_heads)
    pooled = out[:, 0] @ sd[f"{prefix}cross_attn.proj.weight"].T + sd[f"{prefix}cross_attn.proj.bias"]
    return pooled, p


def official_loss_reference(s_middle, s_final, s_mae, t_middle, t_final, t_mae, mask_with_cls, ratios=(1, 1, 1)):
    """The official engine's loss: ``mask_with_cls`` (B, 1 + N) bool with the class column (False) first, as the
    official engine builds it; targets gathered as ``teacher[~mask]`` then reshaped (K, B, -1, C)."""
    k, _, _, c = t_middle.shape
    b = mask_with_cls.shape[0]
    mid = t_middle.double()[~mask_with_cls.unsqueeze(0).repeat(k, 1, 1)].reshape(k, b, -1, c)
    terms = [(2 - 2 * (s_middle.double() * mid).sum(-1)).mean()]
    terms.append((2 - 2 * (s_final.double() * t_final.double()).sum(-1)).mean() if s_final is not None
                 else torch.zeros((), dtype=torch.float64))
    if s_mae is not None:
        km, _, _, cm = t_mae.shape
        vis = t_mae.double()[~mask_with_cls[:, 1:].unsqueeze(0).repeat(km, 1, 1)].reshape(km, b, -1, cm)
        terms.append((2 - 2 * (s_mae.double() * vis).sum(-1)).mean())
    else:
        terms.append(torch.zeros((), dtype=torch.float64))
    return terms, sum(r * t for r, t in zip(ratios, terms))


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values of a sensible scale in every parameter, so that each weight matters in a comparison:
    LayerScale around 0.5 (not 1e-5), norm weights around 1, the rest scaled by the fan-in."""
    g = torch.Generator().manual_seed(seed)

    def value(name: str, shape: torch.Size) -> torch.Tensor:
        noise = torch.randn(shape, generator=g)
        if name.endswith("gamma"):
            return 0.5 + 0.1 * noise
        is_norm_weight = len(shape) == 1 and "norm" in name and name.endswith("weight")
        return 1.0 + 0.2 * noise if is_norm_weight else 0.3 * noise / max(1, shape[-1]) ** 0.25

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(value(name, p.shape))
    return model
