"""iv2-kernels: fused ops for InternVideo2 with a plain PyTorch reference beside every Triton kernel.

Every op takes ``backend="auto"|"torch"|"triton"`` (default from the env var ``IV2_KERNELS``, else auto:
Triton on CUDA tensors, torch elsewhere). Triton kernels also run on CPU tensors under ``TRITON_INTERPRET=1``.

- :func:`rms_norm` ``(x, weight, eps) -> y``; :func:`add_rms_norm` ``(x, residual, weight, eps) -> (y, x +
  residual)``;
- :func:`attention_pool` ``(x, params, return_weights=False)`` with ``params`` an :class:`AttentionPoolParams`
  (or an object providing one), optionally also the head-averaged attention weights;
- :func:`contrastive_loss` ``(a, b, temperature, idx=None, group=None)``: symmetric InfoNCE in linear memory,
  official VTC targets with ``idx``, across ranks with ``group``.
"""

from .attention_pool import AttentionPoolParams, attention_pool, attention_pool_reference
from .contrastive_loss import contrastive_loss, contrastive_loss_reference
from .rms_norm import add_rms_norm, add_rms_norm_reference, rms_norm, rms_norm_reference

__all__ = [
    "AttentionPoolParams",
    "add_rms_norm",
    "add_rms_norm_reference",
    "attention_pool",
    "attention_pool_reference",
    "contrastive_loss",
    "contrastive_loss_reference",
    "rms_norm",
    "rms_norm_reference",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-kernels")
