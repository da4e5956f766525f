"""Backend selection shared by every op: ``"auto"`` (Triton on CUDA tensors, torch elsewhere), ``"torch"``
or ``"triton"``. The default comes from the environment variable ``IV2_KERNELS``, read once at import."""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "torch", "triton")
DEFAULT_BACKEND = os.environ.get("IV2_KERNELS", "auto").strip().lower() or "auto"
if DEFAULT_BACKEND not in BACKENDS:
    raise ValueError(f"IV2_KERNELS must be one of {BACKENDS}, got {DEFAULT_BACKEND!r}")


def resolve_backend(backend: str | None, *tensors: torch.Tensor) -> str:
    """Return ``"torch"`` or ``"triton"`` for the given request and input tensors."""
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if all(t.is_cuda for t in tensors) else "torch"
    return backend
