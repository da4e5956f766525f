"""Triton path of :func:`iv2_kernels.attention_pool`: the token-sized work fused, the small rest in torch.

With one query per head, the keys and values over all ``N`` tokens never need to exist. For head ``h`` with
query ``q_h`` (``head_dim`` wide), ``x̂_n`` the LayerNorm-normalised token (no affine), ``γ, β`` the k/v
LayerNorm affines and ``W_h`` the head's rows of the k/v projections::

    logit_hn = scale · q_h · (W^k_h (γ_k ⊙ x̂_n + β_k) + b^k_h) = (scale · γ_k ⊙ W^k_hᵀ q_h) · x̂_n + const_h
    out_h    = Σ_n p_hn (W^v_h (γ_v ⊙ x̂_n + β_v) + b^v_h) = W^v_h (γ_v ⊙ pooled_h + β_v) + b^v_h,
    pooled_h = Σ_n p_hn x̂_n,    p_h = softmax_n(logit_h)

``const_h`` is the same for every token and cancels in the softmax (so ``k_bias`` and the k-norm bias get an
exact zero gradient, kept in the graph so optimisers see them as in the torch path). What touches the
``(B, N, C)`` tokens runs in three Triton kernels that normalise tokens on the fly (LayerNorm fused into the
loads; only per-token mean and rstd are stored):

- ``_ln_project``: per-token mean/rstd, then ``x̂ @ Wᵀ`` for a per-sample ``(J, C)`` matrix ``W`` — the logits
  ``(B, H, N)`` in forward and ``∂loss/∂p`` in backward;
- ``_ln_pool``: ``P @ x̂`` for per-sample ``(J, N)`` weights — ``pooled`` in forward, ``∂loss/∂w_k`` in backward;
- ``_ln_backward``: ``∂loss/∂x`` of ``x̂ ↦`` both uses, through the LayerNorm, in one pass.

The query (mean token), its LayerNorm and projection, the ``(B, H, C)`` folding of ``q`` into ``w_k``, the
softmax over ``(B, H, N)`` logits, the value/output projections of the ``(B, H, C)`` pooled tokens and every
parameter gradient are plain torch (small). The softmax probabilities ``p`` are also what
``return_weights=True`` returns (averaged over heads); their gradient, when used, joins ``∂loss/∂p`` in
backward. Memory: ``O(B·N·H + B·H·C)`` saved besides ``x``, instead of the
normalised q/k/v inputs and the ``(B, N, inner)`` keys and values of the reference; FLOPs over the tokens drop
from ``4·N·C·inner`` to ``≈ 4·N·C·H`` per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._backend import dot_precision, fix_triton_interpreter

fix_triton_interpreter()

BLOCK_N = 32  # tokens per tile
BLOCK_C = 64  # channels per tile


@triton.jit
def _ln_project_kernel(x_ptr, w_ptr, mean_ptr, rstd_ptr, out_ptr, n_tok, width, n_w, eps,
                       COMPUTE_STATS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_J: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """out[b, j, n] = Σ_c x̂[b, n, c] · w[b, j, c]; with COMPUTE_STATS also writes mean/rstd of each token."""
    b = tl.program_id(0).to(tl.int64)
    toks = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    tok_ok = toks < n_tok
    js = tl.arange(0, BLOCK_J)
    j_ok = js < n_w
    x_base = x_ptr + b * n_tok * width
    w_base = w_ptr + b * n_w * width
    if COMPUTE_STATS:
        total = tl.zeros([BLOCK_N], tl.float32)
        for c0 in range(0, width, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = tok_ok[:, None] & (cols[None, :] < width)
            total += tl.sum(tl.load(x_base + toks[:, None] * width + cols[None, :], mask=mask, other=0.0)
                            .to(tl.float32), 1)
        mean = total / width
        sq = tl.zeros([BLOCK_N], tl.float32)
        for c0 in range(0, width, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            mask = tok_ok[:, None] & (cols[None, :] < width)
            xt = tl.load(x_base + toks[:, None] * width + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            centred = tl.where(mask, xt - mean[:, None], 0.0)
            sq += tl.sum(centred * centred, 1)
        # eps in float32: torch.compile passes Python floats as fp64 scalars, which would make rstd fp64 and the
        # projection's tl.dot refuse mixed fp64 x fp32 operands (seen on an H100, benchmarks/results).
        rstd = (1.0 / tl.sqrt(sq / width + eps)).to(tl.float32)
        tl.store(mean_ptr + b * n_tok + toks, mean, mask=tok_ok)
        tl.store(rstd_ptr + b * n_tok + toks, rstd, mask=tok_ok)
    else:
        mean = tl.load(mean_ptr + b * n_tok + toks, mask=tok_ok, other=0.0)
        rstd = tl.load(rstd_ptr + b * n_tok + toks, mask=tok_ok, other=0.0)
    acc = tl.zeros([BLOCK_N, BLOCK_J], tl.float32)
    for c0 in range(0, width, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < width
        mask = tok_ok[:, None] & col_ok[None, :]
        xt = tl.load(x_base + toks[:, None] * width + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        xhat = tl.where(mask, (xt - mean[:, None]) * rstd[:, None], 0.0)
        wt = tl.load(w_base + js[:, None] * width + cols[None, :], mask=j_ok[:, None] & col_ok[None, :],
                     other=0.0)
        acc += tl.dot(xhat, tl.trans(wt), input_precision=DOT_PRECISION)
    tl.store(out_ptr + b * n_w * n_tok + js[None, :] * n_tok + toks[:, None], acc,
             mask=tok_ok[:, None] & j_ok[None, :])


@triton.jit
def _ln_pool_kernel(x_ptr, p_ptr, mean_ptr, rstd_ptr, out_ptr, n_tok, width, n_w,
                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    """out[b, j, c] = Σ_n p[b, j, n] · x̂[b, n, c]."""
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < width
    js = tl.arange(0, BLOCK_J)
    j_ok = js < n_w
    acc = tl.zeros([BLOCK_J, BLOCK_C], tl.float32)
    for n0 in range(0, n_tok, BLOCK_N):
        toks = n0 + tl.arange(0, BLOCK_N)
        tok_ok = toks < n_tok
        mask = tok_ok[:, None] & col_ok[None, :]
        xt = tl.load(x_ptr + b * n_tok * width + toks[:, None] * width + cols[None, :], mask=mask,
                     other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + b * n_tok + toks, mask=tok_ok, other=0.0)
        rstd = tl.load(rstd_ptr + b * n_tok + toks, mask=tok_ok, other=0.0)
        xhat = tl.where(mask, (xt - mean[:, None]) * rstd[:, None], 0.0)
        pt = tl.load(p_ptr + b * n_w * n_tok + js[:, None] * n_tok + toks[None, :],
                     mask=j_ok[:, None] & tok_ok[None, :], other=0.0)
        acc += tl.dot(pt, xhat, input_precision=DOT_PRECISION)
    tl.store(out_ptr + b * n_w * width + js[:, None] * width + cols[None, :], acc,
             mask=j_ok[:, None] & col_ok[None, :])


@triton.jit
def _ln_backward_kernel(x_ptr, a_ptr, m_ptr, mean_ptr, rstd_ptr, dx_ptr, n_tok, width, n_w,
                        BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
                        DOT_PRECISION: tl.constexpr):
    """g = ∂loss/∂x̂ = aᵀ m per token (a: (J, N), m: (J, C)); dx = rstd · (g − mean(g) − x̂ · mean(g · x̂))."""
    b = tl.program_id(0).to(tl.int64)
    toks = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    tok_ok = toks < n_tok
    js = tl.arange(0, BLOCK_J)
    j_ok = js < n_w
    x_base = x_ptr + b * n_tok * width
    m_base = m_ptr + b * n_w * width
    at = tl.load(a_ptr + b * n_w * n_tok + js[None, :] * n_tok + toks[:, None],
                 mask=tok_ok[:, None] & j_ok[None, :], other=0.0)
    mean = tl.load(mean_ptr + b * n_tok + toks, mask=tok_ok, other=0.0)
    rstd = tl.load(rstd_ptr + b * n_tok + toks, mask=tok_ok, other=0.0)
    sum_g = tl.zeros([BLOCK_N], tl.float32)
    sum_gx = tl.zeros([BLOCK_N], tl.float32)
    for c0 in range(0, width, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < width
        mask = tok_ok[:, None] & col_ok[None, :]
        mt = tl.load(m_base + js[:, None] * width + cols[None, :], mask=j_ok[:, None] & col_ok[None, :],
                     other=0.0)
        g = tl.dot(at, mt, input_precision=DOT_PRECISION)
        xt = tl.load(x_base + toks[:, None] * width + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        xhat = tl.where(mask, (xt - mean[:, None]) * rstd[:, None], 0.0)
        sum_g += tl.sum(g, 1)
        sum_gx += tl.sum(g * xhat, 1)
    mean_g = sum_g / width
    mean_gx = sum_gx / width
    for c0 in range(0, width, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < width
        mask = tok_ok[:, None] & col_ok[None, :]
        mt = tl.load(m_base + js[:, None] * width + cols[None, :], mask=j_ok[:, None] & col_ok[None, :],
                     other=0.0)
        g = tl.dot(at, mt, input_precision=DOT_PRECISION)
        xt = tl.load(x_base + toks[:, None] * width + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        xhat = (xt - mean[:, None]) * rstd[:, None]
        dx = rstd[:, None] * (g - mean_g[:, None] - xhat * mean_gx[:, None])
        tl.store(dx_ptr + b * n_tok * width + toks[:, None] * width + cols[None, :], dx, mask=mask)


def _block_j(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


class _LayerNormSoftmaxPool(torch.autograd.Function):
    """``pooled[b, h] = Σ_n p[b, h, n] x̂[b, n]`` with ``p[b, h] = softmax_n(x̂[b, n] · w[b, h])`` and ``x̂`` =
    LayerNorm(x) without affine; returns ``(pooled, p)``, both differentiable."""

    @staticmethod
    def forward(ctx, x, w, eps):
        b, n, c = x.shape
        heads = w.shape[1]
        prec = dot_precision(torch.float32)
        mean = torch.empty((b, n), dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        logits = torch.empty((b, heads, n), dtype=torch.float32, device=x.device)
        _ln_project_kernel[(b, triton.cdiv(n, BLOCK_N))](
            x, w, mean, rstd, logits, n, c, heads, eps, COMPUTE_STATS=True, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C,
            BLOCK_J=_block_j(heads), DOT_PRECISION=prec)
        p = torch.softmax(logits, -1)
        pooled = torch.empty((b, heads, c), dtype=torch.float32, device=x.device)
        _ln_pool_kernel[(b, triton.cdiv(c, BLOCK_C))](
            x, p, mean, rstd, pooled, n, c, heads, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C, BLOCK_J=_block_j(heads),
            DOT_PRECISION=prec)
        ctx.save_for_backward(x, w, mean, rstd, p, pooled)
        ctx.set_materialize_grads(False)  # an unused output (usually p) gets None, not a tensor of zeros
        return pooled, p

    @staticmethod
    def backward(ctx, dpooled, dp_out):
        x, w, mean, rstd, p, pooled = ctx.saved_tensors
        b, n, c = x.shape
        heads = w.shape[1]
        prec = dot_precision(torch.float32)
        dpooled = (torch.zeros_like(pooled) if dpooled is None else dpooled.float()).contiguous()
        # ∂loss/∂p[b, h, n] = dpooled[b, h] · x̂[b, n] (+ the gradient of the returned p, if it is used)
        dp = torch.empty_like(p)
        _ln_project_kernel[(b, triton.cdiv(n, BLOCK_N))](
            x, dpooled, mean, rstd, dp, n, c, heads, 0.0, COMPUTE_STATS=False, BLOCK_N=BLOCK_N,
            BLOCK_C=BLOCK_C, BLOCK_J=_block_j(heads), DOT_PRECISION=prec)
        # softmax backward; Σ_n p·dp = dpooled · pooled, no pass over the tokens needed
        row_dot = (dpooled * pooled).sum(-1, keepdim=True)
        if dp_out is not None:
            dp_out = dp_out.float()
            dp = dp + dp_out
            row_dot = row_dot + (p * dp_out).sum(-1, keepdim=True)
        dlogits = p * (dp - row_dot)
        dw = torch.empty_like(w)
        _ln_pool_kernel[(b, triton.cdiv(c, BLOCK_C))](
            x, dlogits, mean, rstd, dw, n, c, heads, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C,
            BLOCK_J=_block_j(heads), DOT_PRECISION=prec)
        # ∂loss/∂x̂[b, n] = Σ_h p[b,h,n] dpooled[b,h] + dlogits[b,h,n] w[b,h]: one (2H)-wide contraction
        weights = torch.cat([p, dlogits], 1).contiguous()
        mats = torch.cat([dpooled, w], 1).contiguous()
        dx = torch.empty((b, n, c), dtype=torch.float32, device=x.device)
        _ln_backward_kernel[(b, triton.cdiv(n, BLOCK_N))](
            x, weights, mats, mean, rstd, dx, n, c, 2 * heads, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C,
            BLOCK_J=_block_j(2 * heads), DOT_PRECISION=prec)
        return dx.to(x.dtype), dw, None


def _f32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def attention_pool_triton(x: torch.Tensor, params, return_weights: bool = False
                          ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`iv2_kernels.attention_pool.attention_pool_reference`; float32 accumulation.

    Under autocast the small torch parts still run in float32 (the kernels need float32 ``w_k``) and the result
    is returned in the autocast dtype, as the reference's last ``F.linear`` would be. The weights are the
    kernels' own softmax probabilities averaged over heads (float32, or the output dtype if wider).
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        out_dtype = torch.get_autocast_dtype(device_type)
    else:
        out_dtype = torch.promote_types(x.dtype, params.proj_weight.dtype)
    with torch.autocast(device_type, enabled=False):
        out, probs = _attention_pool_float32(x, params)
    if return_weights:
        return out.to(out_dtype), probs.mean(1).to(torch.promote_types(out_dtype, torch.float32))
    return out.to(out_dtype)


def _attention_pool_float32(x, p):
    b, _, c = x.shape
    num_heads, eps = p.num_heads, p.eps
    inner = p.q_weight.shape[0]
    head_dim = inner // num_heads
    query = x.mean(1, dtype=torch.float32)
    q = F.linear(F.layer_norm(query, (c,), _f32(p.norm_q[0]), _f32(p.norm_q[1]), eps), p.q_weight.float(),
                 _f32(p.q_bias))
    q = q.view(b, num_heads, head_dim) * head_dim ** -0.5
    w_k = torch.einsum("bhd,hdc->bhc", q, p.k_weight.float().view(num_heads, head_dim, c))
    if p.norm_k[0] is not None:
        w_k = w_k * p.norm_k[0].float()
    pooled, probs = _LayerNormSoftmaxPool.apply(x.contiguous(), w_k.float().contiguous(), eps)
    v_in = pooled * p.norm_v[0].float() if p.norm_v[0] is not None else pooled
    if p.norm_v[1] is not None:
        v_in = v_in + p.norm_v[1].float()
    out = torch.einsum("bhc,hdc->bhd", v_in, p.v_weight.float().view(num_heads, head_dim, c))
    if p.v_bias is not None:
        out = out + p.v_bias.float().view(num_heads, head_dim)
    out = F.linear(out.reshape(b, inner), p.proj_weight.float(), _f32(p.proj_bias))
    # k_bias and the k-norm bias shift every logit of a head equally: their gradient is exactly zero.
    for unused in (p.k_bias, p.norm_k[1]):
        if unused is not None and unused.requires_grad:
            out = out + 0.0 * unused.sum()
    return out, probs
