"""(Fused residual-add +) RMSNorm.

``y = weight * x / sqrt(mean(x**2) + eps)`` over the last dimension, accumulated in float32 and cast back to
the input dtype before the weight is applied, as the official InternVideo2 ``RMSNorm`` does. With
``residual`` the input is ``x + residual`` and the sum is returned too (pre-norm transformer blocks carry it
as the residual stream).

Backends: ``"torch"`` runs :func:`rms_norm_reference` (autograd does the backward); ``"triton"`` runs the fused
kernels of ``_rms_norm_triton.py`` (one read of ``x`` and ``residual``, one write of ``y`` and the sum; a
fused backward giving the gradients of ``x``, ``weight`` and ``residual``), joined by an autograd Function.
"""

from __future__ import annotations

import torch

from ._backend import resolve_backend


def rms_norm_reference(
    x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch RMSNorm; the numerics every backend must match."""
    if residual is not None:
        x = x + residual
    summed = x
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    y = weight * y.to(x.dtype)
    return (y, summed) if residual is not None else y


def _check(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None) -> None:
    if x.ndim == 0:
        raise ValueError("rms_norm: x must have at least one dimension (normalised over the last), got shape ()")
    if weight.ndim != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"rms_norm: weight must have shape ({x.shape[-1]},) to match x {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"rms_norm: residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    for name, t in (("weight", weight), ("residual", residual)):
        if t is not None and t.device != x.device:
            raise ValueError(f"rms_norm: {name} is on {t.device} but x is on {x.device}")
    if not x.is_floating_point():
        raise ValueError(f"rms_norm: x must be floating point, got {x.dtype}")
    if not weight.is_floating_point():
        raise ValueError(f"rms_norm: weight must be floating point, got {weight.dtype}")
    if residual is not None and not residual.is_floating_point():
        raise ValueError(f"rms_norm: residual must be floating point, got {residual.dtype}")


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dimension; with ``residual`` returns ``(y, x + residual)``."""
    _check(x, weight, residual)
    chosen = resolve_backend(backend, x)
    if chosen == "triton":
        from ._rms_norm_triton import rms_norm_triton

        return rms_norm_triton(x, weight, eps, residual)
    return rms_norm_reference(x, weight, eps, residual)
