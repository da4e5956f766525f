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
    """Return ``"torch"`` or ``"triton"`` for the given request and input tensors.

    ``"triton"`` on CPU tensors is allowed only under ``TRITON_INTERPRET=1`` (Triton's interpreter, which the
    tests use); otherwise it raises here with a clear message instead of failing inside Triton.
    """
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if tensors and all(t.is_cuda for t in tensors) and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs the `triton` package (it ships with torch on Linux)")
        if not all(t.is_cuda for t in tensors) and not interpret_mode():
            raise ValueError("backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before triton is "
                             "imported (Triton's interpreter); use backend='torch' or CUDA tensors")
        if any(not t.is_cuda and t.dtype == torch.bfloat16 for t in tensors):
            # numpy has no bfloat16: the interpreter would silently compute garbage
            raise ValueError("backend='triton' cannot run bfloat16 CPU tensors in Triton's interpreter; use "
                             "float16/float32, backend='torch', or CUDA tensors")
    return backend


def interpret_mode() -> bool:
    """Whether Triton kernels run in Triton's interpreter (env ``TRITON_INTERPRET``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


_TRITON_AVAILABLE: bool | None = None


def triton_available() -> bool:
    global _TRITON_AVAILABLE
    if _TRITON_AVAILABLE is None:
        try:
            import triton  # noqa: F401
        except ImportError:
            _TRITON_AVAILABLE = False
        else:
            _TRITON_AVAILABLE = True
    return _TRITON_AVAILABLE


def dot_precision(dtype: torch.dtype) -> str | None:
    """``tl.dot`` input precision: exact float32 ("ieee") for float32 inputs so results match the torch path
    (TF32 would lose ~3 digits); ``None`` (Triton's default) for half-precision inputs, which use the tensor
    cores with float32 accumulation anyway."""
    return "ieee" if dtype == torch.float32 else None


def fix_triton_interpreter() -> None:
    """Under ``TRITON_INTERPRET=1``, let loops with runtime bounds (``range(0, n, BLOCK)``) run on numpy 2.4.

    Triton's interpreter (3.6) converts scalar arguments with ``int(array_of_one)``, which numpy 2.4 turned
    into a TypeError (triton-lang/triton#9171). We wrap its tensor patching to read the single element
    instead. A no-op outside interpret mode or when already applied; it touches nothing compiled for a GPU.
    """
    if not interpret_mode():
        return
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_iv2_fixed", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch_lang_tensor._iv2_fixed = True
    interpreter._patch_lang_tensor = patch_lang_tensor
