"""Attention pooling head of the InternVideo2 encoder (``clip_projector`` in the official code).

One query, the mean of all tokens (class token included), attends over all tokens. q, k and v inputs each go
through their own LayerNorm, then separate q/k/v projections with biases, multi-head softmax attention with
scale ``head_dim ** -0.5``, and an output projection to ``out_dim``. Returns ``(B, out_dim)``.

Backends: ``"torch"`` runs :func:`attention_pool_reference` (the encoder's numerics). ``"triton"``
(``_attention_pool_triton.py``) never builds the keys, values or normalised copies of the tokens: the mean
query is folded into the key projection, so the per-token work is LayerNorm statistics, one ``H``-wide
projection for the logits and one softmax-weighted sum of the normalised tokens, each a Triton kernel with
the LayerNorm fused into its loads (and three matching kernels in backward); the small ``(B, H, C)`` parts
are torch. Same value and gradients up to float32 rounding.
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


def _check(x, num_heads, norm_q, norm_k, norm_v, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias,
           proj_weight, proj_bias) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"attention_pool: x must be (B, N, C), got shape {tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise ValueError(f"attention_pool: x must be floating point, got {x.dtype}")
    _, n, c = x.shape
    if n == 0:
        raise ValueError(f"attention_pool: x has no tokens, shape {tuple(x.shape)}")
    inner = q_weight.shape[0]
    if num_heads < 1 or inner % num_heads:
        raise ValueError(f"attention_pool: inner width {inner} (q_weight {tuple(q_weight.shape)}) not divisible "
                         f"by {num_heads} heads")
    expected = {"q_weight": (inner, c), "k_weight": (inner, c), "v_weight": (inner, c),
                "q_bias": (inner,), "k_bias": (inner,), "v_bias": (inner,),
                "proj_weight": (proj_weight.shape[0], inner), "proj_bias": (proj_weight.shape[0],)}
    tensors = {"q_weight": q_weight, "k_weight": k_weight, "v_weight": v_weight, "q_bias": q_bias,
               "k_bias": k_bias, "v_bias": v_bias, "proj_weight": proj_weight, "proj_bias": proj_bias}
    for name, norm in (("norm_q", norm_q), ("norm_k", norm_k), ("norm_v", norm_v)):
        if len(norm) != 2:
            raise ValueError(f"attention_pool: {name} must be a (weight, bias) pair, got {len(norm)} items")
        for part, t in zip(("weight", "bias"), norm):
            expected[f"{name}.{part}"] = (c,)
            tensors[f"{name}.{part}"] = t
    for name, t in tensors.items():
        if t is None:
            continue
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"attention_pool: {name} must have shape {expected[name]} for x {tuple(x.shape)}, "
                             f"got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"attention_pool: {name} is on {t.device} but x is on {x.device}")
        if not t.is_floating_point():
            raise ValueError(f"attention_pool: {name} must be floating point, got {t.dtype}")
        if t.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            # the torch path's F.linear would fail deep inside, the Triton path silently promote: outside
            # autocast (which casts per op) every parameter must match x
            raise ValueError(f"attention_pool: {name} is {t.dtype} but x is {x.dtype} (outside autocast they must "
                             "match)")


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
    _check(x, num_heads, norm_q, norm_k, norm_v, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias,
           proj_weight, proj_bias)
    args = (x, num_heads, norm_q, norm_k, norm_v, q_weight, q_bias, k_weight, k_bias, v_weight, v_bias,
            proj_weight, proj_bias, eps)
    if resolve_backend(backend, x) == "triton":
        from ._attention_pool_triton import attention_pool_triton

        return attention_pool_triton(*args)
    return attention_pool_reference(*args)
