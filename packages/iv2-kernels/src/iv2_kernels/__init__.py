"""iv2-kernels: fused ops for InternVideo2 with a plain PyTorch reference beside every Triton kernel.

Every op takes ``backend="auto"|"torch"|"triton"`` (default from the env var ``IV2_KERNELS``, else auto:
Triton on CUDA tensors, torch elsewhere). Triton kernels also run on CPU tensors under ``TRITON_INTERPRET=1``.
"""

from .attention_pool import attention_pool, attention_pool_reference
from .contrastive_loss import contrastive_loss, contrastive_loss_reference
from .rms_norm import rms_norm, rms_norm_reference

__all__ = [
    "attention_pool",
    "attention_pool_reference",
    "contrastive_loss",
    "contrastive_loss_reference",
    "rms_norm",
    "rms_norm_reference",
]

from importlib.metadata import version as _version

__version__ = _version("iv2-kernels")
