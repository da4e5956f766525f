"""Attention pooling head of the InternVideo2 encoder (``clip_projector`` in the official code).

One query, the mean of all tokens (class token included), attends over all tokens. q, k and v inputs each go
through their own LayerNorm, then separate q/k/v projections with biases, multi-head softmax attention with
scale ``head_dim ** -0.5``, and an output projection to ``out_dim``. Returns ``(B, out_dim)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import resolve_backend


def attention_pool_reference(
    x: torch.Tensor,
    num_heads: int,
    norm_q: tuple[torch.Tensor, torch.Tensor],
    norm_k: tuple[torch.Tensor, torch.Tensor],
    norm_v: tuple[torch.Tensor, torch.Tensor],
    q_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_weight: torch.Tensor,
    k_bias: torch.Tensor | None,
    v_weight: torch.Tensor,
    v_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Plain PyTorch attention pooling; the numerics every backend must match."""
    b, n, c = x.shape
    query = x.mean(1, keepdim=True)
    q = F.linear(F.layer_norm(query, (c,), norm_q[0], norm_q[1], eps), q_weight, q_bias)
    k = F.linear(F.layer_norm(x, (c,), norm_k[0], norm_k[1], eps), k_weight, k_bias)
    v = F.linear(F.layer_norm(x, (c,), norm_v[0], norm_v[1], eps), v_weight, v_bias)
    inner = q.shape[-1]
    head_dim = inner // num_heads
    q = q.view(b, 1, num_heads, head_dim).transpose(1, 2)
    k = k.view(b, n, num_heads, head_dim).transpose(1, 2)
    v = v.view(b, n, num_heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)  # scale defaults to head_dim ** -0.5
    out = out.transpose(1, 2).reshape(b, inner)
    return F.linear(out, proj_weight, proj_bias)


def attention_pool(
    x: torch.Tensor,
    num_heads: int,
    norm_q: tuple[torch.Tensor, torch.Tensor],
    norm_k: tuple[torch.Tensor, torch.Tensor],
    norm_v: tuple[torch.Tensor, torch.Tensor],
    q_weight: torch.Tensor,
    q_bias: torch.Tensor | None,
    k_weight: torch.Tensor,
    k_bias: torch.Tensor | None,
    v_weight: torch.Tensor,
    v_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    eps: float = 1e-5,
    backend: str | None = None,
) -> torch.Tensor:
    """Attention pooling ``(B, N, C) -> (B, out_dim)``; see the module docstring."""
    if x.ndim != 3:
        raise ValueError(f"attention_pool: x must be (B, N, C), got shape {tuple(x.shape)}")
    if q_weight.shape[-1] != x.shape[-1]:
        raise ValueError(f"attention_pool: q_weight {tuple(q_weight.shape)} does not take width "
                         f"{x.shape[-1]}")
    if q_weight.shape[0] % num_heads:
        raise ValueError(f"attention_pool: inner width {q_weight.shape[0]} not divisible by "
                         f"{num_heads} heads")
    args = (x, num_heads, norm_q, norm_k, norm_v, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias,
            proj_weight, proj_bias, eps)
    if resolve_backend(backend, x) == "triton":
        from ._attention_pool_triton import attention_pool_triton

        return attention_pool_triton(*args)
    return attention_pool_reference(*args)
