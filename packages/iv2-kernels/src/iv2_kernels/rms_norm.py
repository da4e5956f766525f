"""RMSNorm and fused residual add + RMSNorm.

``y = weight * x / sqrt(mean(x**2) + eps)`` over the last dimension, accumulated in float32 and cast back to
the input dtype before the weight is applied, as the official InternVideo2 ``RMSNorm`` does.

Two ops with fixed return types:

- :func:`rms_norm` ``(x, weight, eps) -> y``;
- :func:`add_rms_norm` ``(x, residual, weight, eps) -> (y, x + residual)``: the norm of ``x + residual`` and
  the sum itself, the residual stream's step in a pre-norm transformer block (the official fused
  ``DropoutAddRMSNorm(prenorm=True)``).

Backends: ``"torch"`` runs :func:`rms_norm_reference` / :func:`add_rms_norm_reference` (autograd does the
backward); ``"triton"`` runs the fused kernels of ``_rms_norm_triton.py`` (one read of ``x`` and ``residual``,
one write of ``y`` and the sum; a fused backward giving the gradients of ``x``, ``weight`` and ``residual``),
joined by an autograd Function.
"""

from __future__ import annotations

import torch

from ._backend import resolve_backend


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Plain PyTorch RMSNorm; the numerics every backend must match."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


def add_rms_norm_reference(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch ``(rms_norm(x + residual), x + residual)``."""
    summed = x + residual
    return rms_norm_reference(summed, weight, eps), summed


def _check(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None, op: str) -> None:
    if x.ndim == 0:
        raise ValueError(f"{op}: x must have at least one dimension (normalised over the last), got shape ()")
    if weight.ndim != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"{op}: weight must have shape ({x.shape[-1]},) to match x {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"{op}: residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    for name, t in (("weight", weight), ("residual", residual)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}")
    if not x.is_floating_point():
        raise ValueError(f"{op}: x must be floating point, got {x.dtype}")
    if not weight.is_floating_point():
        raise ValueError(f"{op}: weight must be floating point, got {weight.dtype}")
    if residual is not None and not residual.is_floating_point():
        raise ValueError(f"{op}: residual must be floating point, got {residual.dtype}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, backend: str | None = None
             ) -> torch.Tensor:
    """RMSNorm over the last dimension of ``x`` (any leading shape); returns ``y`` in the promoted dtype of
    ``x`` and ``weight``. Differentiable in ``x`` and ``weight``."""
    _check(x, weight, None, "rms_norm")
    if resolve_backend(backend, x) == "triton":
        from ._rms_norm_triton import rms_norm_triton

        return rms_norm_triton(x, weight, eps, None)
    return rms_norm_reference(x, weight, eps)


def add_rms_norm(
    x: torch.Tensor,
    residual: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused residual add + RMSNorm: returns ``(rms_norm(x + residual), x + residual)``.

    ``residual`` has the shape of ``x``; of another floating dtype it is promoted as ``x + residual`` would be
    (e.g. a float32 residual stream with bfloat16 branch outputs under autocast). Differentiable in ``x``,
    ``residual`` and ``weight``.
    """
    _check(x, weight, residual, "add_rms_norm")
    if resolve_backend(backend, x) == "triton":
        from ._rms_norm_triton import rms_norm_triton

        return rms_norm_triton(x, weight, eps, residual)
    return add_rms_norm_reference(x, residual, weight, eps)
