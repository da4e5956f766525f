"""An independent float64 eager implementation of the official encoder maths (explicit softmax attention,
unfused norms, the official mask/position rules, the chat tower's run-time position interpolation with its own
linear/bicubic resampling), reading weights from a state dict by their official names. It shares no code with
iv2_encoders: the tests compare the package against it."""

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


def _softmax_attention(q, k, v, heads, return_probs=False):
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
    out = (p @ v).permute(0, 2, 1, 3).reshape(b, nq, c)
    return (out, p) if return_probs else out


# --- resampling matrices, written from the definitions of linear / bicubic interpolation with half-pixel
# centres (align_corners=False): output i samples input coordinate (i + 0.5) * n_in / n_out - 0.5.
def linear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): linear interpolation, coordinates below 0 clamped to 0, the last sample repeated."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(math.floor(src), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1 - frac
        m[i, hi] += frac
    return m


def bicubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> torch.Tensor:
    """(n_out, n_in): Keys cubic convolution (a = -0.75, as PIL/OpenCV/torch), samples outside the input
    clamped to its border."""

    def kernel(x):
        x = abs(x)
        if x <= 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        if x < 2:
            return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
        return 0.0

    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for j in range(base - 1, base + 3):
            m[i, min(max(j, 0), n_in - 1)] += kernel(src - j)
    return m


def resample_position_table(table, src_grid, dst_grid):
    """(1, 1 + T*H*W, C) -> (1, 1 + T'*H'*W', C): class row kept, time linear first, then space bicubic."""
    (t0, h0, w0), (t1, h1, w1) = src_grid, dst_grid
    c = table.shape[-1]
    body = table[0, 1:].reshape(t0, h0, w0, c).double()
    body = torch.einsum("st,thwc->shwc", linear_matrix(t0, t1), body)
    body = torch.einsum("yh,shwc->sywc", bicubic_matrix(h0, h1), body)
    body = torch.einsum("xw,sywc->syxc", bicubic_matrix(w0, w1), body)
    return torch.cat([table[:, :1].double(), body.reshape(1, t1 * h1 * w1, c)], dim=1)


def reference_forward(sd, video, *, heads, pool_heads, depth, patch, keep_index=None, image_pos="mean",
                      eps=1e-6, pool_eps=1e-5, layerscale="gamma", built_grid=None, return_attention=False):
    """Returns (tokens, pooled) in float64 (pooled None without ``clip_projector.*`` weights), or with
    ``return_attention`` (tokens, pooled, attention): the pooling softmax over keys averaged over heads with
    the class key dropped. ``keep_index``: (B, K) indices of kept patch tokens. ``layerscale``: "gamma"
    (``blocks.N.ls1.gamma``, stage 1/2) or "bare" (``blocks.N.ls1``, the chat tower). ``built_grid``: the
    (T, H, W) token grid ``pos_embed`` was built for; a clip of another grid gets the table resampled (the
    chat tower's run-time rule); default: the clip's own grid."""
    sd = {k: v.double() for k, v in sd.items()}
    x = video.double()
    w = sd["patch_embed.proj.weight"]
    x = torch.nn.functional.conv3d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[2:])
    b, c, t, gh, gw = x.shape
    x = x.reshape(b, c, -1).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(b, 1, c), x], dim=1)
    pos = sd["pos_embed"]
    if built_grid is None:
        hw = gh * gw
        built_grid = ((pos.shape[1] - 1) // hw, gh, gw)
    bt, bh, bw = built_grid
    if video.shape[2] == 1 and bt != 1:  # an image
        if image_pos == "img_pos_embed":
            pos = sd["img_pos_embed"]
        else:
            pos = torch.cat([pos[:, :1], pos[:, 1:].reshape(1, bt, bh * bw, c).mean(1)], dim=1)
        bt = 1
    if (bt, bh, bw) != (t, gh, gw):
        pos = resample_position_table(pos, (bt, bh, bw), (t, gh, gw))
    x = x + pos
    if keep_index is not None:
        patches = torch.gather(x[:, 1:], 1, keep_index[..., None].expand(-1, -1, c))
        x = torch.cat([x[:, :1], patches], dim=1)
    for i in range(depth):
        p = f"blocks.{i}."
        ls1, ls2 = (p + "ls1.gamma", p + "ls2.gamma") if layerscale == "gamma" else (p + "ls1", p + "ls2")
        h = _rms(x, sd[p + "norm1.weight"], eps)
        qkv = h @ sd[p + "attn.qkv.weight"].T
        q, k, v = qkv.chunk(3, dim=-1)
        q = _rms(q, sd[p + "attn.q_norm.weight"], eps)
        k = _rms(k, sd[p + "attn.k_norm.weight"], eps)
        a = _softmax_attention(q, k, v, heads) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + a * sd[ls1]
        h = _rms(x, sd[p + "norm2.weight"], eps)
        h = _gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        h = h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        x = x + h * sd[ls2]
    p = "clip_projector."
    if p + "norm1_q.weight" not in sd:
        return (x, None, None) if return_attention else (x, None)
    qin = _ln(x.mean(1, keepdim=True), sd[p + "norm1_q.weight"], sd[p + "norm1_q.bias"], pool_eps)
    kin = _ln(x, sd[p + "norm1_k.weight"], sd[p + "norm1_k.bias"], pool_eps)
    vin = _ln(x, sd[p + "norm1_v.weight"], sd[p + "norm1_v.bias"], pool_eps)
    q = qin @ sd[p + "cross_attn.q.weight"].T + sd[p + "cross_attn.q_bias"]
    k = kin @ sd[p + "cross_attn.k.weight"].T + sd[p + "cross_attn.k_bias"]
    v = vin @ sd[p + "cross_attn.v.weight"].T + sd[p + "cross_attn.v_bias"]
    pooled, probs = _softmax_attention(q, k, v, pool_heads, return_probs=True)
    pooled = pooled[:, 0] @ sd[p + "cross_attn.proj.weight"].T + sd[p + "cross_attn.proj.bias"]
    if return_attention:
        return x, pooled, probs[:, :, 0].mean(1)[:, 1:]  # (B, heads, 1, N) -> heads averaged, class key dropped
    return x, pooled
