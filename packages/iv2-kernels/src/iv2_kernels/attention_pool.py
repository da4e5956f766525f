"""Attention pooling head of the InternVideo2 encoder (``clip_projector`` in the official code).

One query, the mean of all tokens (class token included), attends over all tokens. q, k and v inputs each go
through their own LayerNorm, then separate q/k/v projections with biases, multi-head softmax attention with
scale ``head_dim ** -0.5``, and an output projection to ``out_dim``. Returns ``(B, out_dim)``; with
``return_weights=True`` also the attention weights ``(B, N)``: the softmax over keys averaged over heads (the
official ``CrossAttention(return_attn=True)`` gives ``attn.mean(1)``), the saliency stage-1 masking samples
from.

The parameters come as one bundle, :class:`AttentionPoolParams`, or any object with an
``attention_pool_params()`` method returning one (the encoder's pooling head module is such an object).

Backends: ``"torch"`` runs :func:`attention_pool_reference` (the encoder's numerics). ``"triton"``
(``_attention_pool_triton.py``) never builds the keys, values or normalised copies of the tokens: the mean
query is folded into the key projection, so the per-token work is LayerNorm statistics, one ``H``-wide
projection for the logits and one softmax-weighted sum of the normalised tokens, each a Triton kernel with
the LayerNorm fused into its loads (and three matching kernels in backward); the small ``(B, H, C)`` parts
are torch. Same value and gradients up to float32 rounding; the weights come out of the same softmax and are
differentiable on both paths.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ._backend import resolve_backend


class AttentionPoolParams(NamedTuple):
    """Everything the pooling head needs besides the tokens. ``norm_*`` are ``(weight, bias)`` pairs of the
    LayerNorms on the query, key and value inputs; ``*_weight`` / ``*_bias`` the q/k/v/output projections
    (``(inner, C)`` and ``(out_dim, inner)`` weights; biases may be None); ``eps`` the LayerNorms' epsilon."""

    num_heads: int
    norm_q: tuple[torch.Tensor, torch.Tensor]
    norm_k: tuple[torch.Tensor, torch.Tensor]
    norm_v: tuple[torch.Tensor, torch.Tensor]
    q_weight: torch.Tensor
    q_bias: torch.Tensor | None
    k_weight: torch.Tensor
    k_bias: torch.Tensor | None
    v_weight: torch.Tensor
    v_bias: torch.Tensor | None
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor | None
    eps: float = 1e-5


_TENSOR_FIELDS = ("q_weight", "q_bias", "k_weight", "k_bias", "v_weight", "v_bias", "proj_weight", "proj_bias")


def _as_params(params: object) -> AttentionPoolParams:
    if isinstance(params, AttentionPoolParams):
        return params
    getter = getattr(params, "attention_pool_params", None)
    if callable(getter):
        bundle = getter()
        if isinstance(bundle, AttentionPoolParams):
            return bundle
    raise TypeError("attention_pool: params must be an AttentionPoolParams or have an attention_pool_params() "
                    f"method returning one, got {type(params).__name__}")


def attention_pool_reference(x: torch.Tensor, params: AttentionPoolParams, return_weights: bool = False
                             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch attention pooling; the numerics every backend must match.

    Without weights the attention runs through ``F.scaled_dot_product_attention``; with weights it is written
    out (the softmax in float32 at least), since SDPA does not return its probabilities."""
    p = _as_params(params)
    b, n, c = x.shape
    query = x.mean(1, keepdim=True)
    q = F.linear(F.layer_norm(query, (c,), p.norm_q[0], p.norm_q[1], p.eps), p.q_weight, p.q_bias)
    k = F.linear(F.layer_norm(x, (c,), p.norm_k[0], p.norm_k[1], p.eps), p.k_weight, p.k_bias)
    v = F.linear(F.layer_norm(x, (c,), p.norm_v[0], p.norm_v[1], p.eps), p.v_weight, p.v_bias)
    inner = q.shape[-1]
    head_dim = inner // p.num_heads
    q = q.view(b, 1, p.num_heads, head_dim).transpose(1, 2)
    k = k.view(b, n, p.num_heads, head_dim).transpose(1, 2)
    v = v.view(b, n, p.num_heads, head_dim).transpose(1, 2)
    if return_weights:
        logits = (q * head_dim**-0.5) @ k.transpose(-1, -2)  # (B, H, 1, N)
        probs = torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        out = probs.to(v.dtype) @ v
        weights = probs[:, :, 0].mean(1)  # (B, N): head-averaged softmax over keys
    else:
        out = F.scaled_dot_product_attention(q, k, v)  # scale defaults to head_dim ** -0.5
    out = F.linear(out.transpose(1, 2).reshape(b, inner), p.proj_weight, p.proj_bias)
    return (out, weights) if return_weights else out


def _check(x: torch.Tensor, p: AttentionPoolParams) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"attention_pool: x must be (B, N, C), got shape {tuple(getattr(x, 'shape', ()))}")
    if not x.is_floating_point():
        raise ValueError(f"attention_pool: x must be floating point, got {x.dtype}")
    _, n, c = x.shape
    if n == 0:
        raise ValueError(f"attention_pool: x has no tokens, shape {tuple(x.shape)}")
    inner = p.q_weight.shape[0]
    if p.num_heads < 1 or inner % p.num_heads:
        raise ValueError(f"attention_pool: inner width {inner} (q_weight {tuple(p.q_weight.shape)}) not divisible "
                         f"by {p.num_heads} heads")
    out_dim = p.proj_weight.shape[0]
    expected = {"q_weight": (inner, c), "k_weight": (inner, c), "v_weight": (inner, c),
                "q_bias": (inner,), "k_bias": (inner,), "v_bias": (inner,),
                "proj_weight": (out_dim, inner), "proj_bias": (out_dim,)}
    tensors = {name: getattr(p, name) for name in _TENSOR_FIELDS}
    for name in ("norm_q", "norm_k", "norm_v"):
        norm = getattr(p, name)
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
    params: AttentionPoolParams | object,
    *,
    backend: str | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention pooling ``(B, N, C) -> (B, out_dim)``; see the module docstring.

    ``params``: an :class:`AttentionPoolParams` or an object with ``attention_pool_params()`` (e.g. the
    encoder's ``AttentionPoolingHead``). With ``return_weights=True`` returns ``(pooled, weights)``, ``weights``
    ``(B, N)`` the head-averaged softmax over all N keys (each row sums to 1), in float32 (float64 for float64
    inputs on the torch path).
    """
    p = _as_params(params)
    _check(x, p)
    if resolve_backend(backend, x) == "triton":
        from ._attention_pool_triton import attention_pool_triton

        return attention_pool_triton(x, p, return_weights)
    return attention_pool_reference(x, p, return_weights)
