"""Run the Triton kernels on CPU tensors through Triton's interpreter.

``TRITON_INTERPRET`` is read when a ``@triton.jit`` function is *defined*, i.e. when ``iv2_kernels`` first
imports one of its private ``_*_triton`` modules (lazily, on the first Triton call) — so setting it here, at
conftest import time, is early enough even if another package's tests imported ``triton`` before. Only code
that defines Triton kernels is affected (torch.compile's CPU backend generates C++, not Triton).
"""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")

_KERNEL_MODULES = ("_rms_norm_triton", "_attention_pool_triton", "_contrastive_triton")


def _kernels_interpreted() -> bool:
    """False if a kernel module was imported (compiled for a GPU) before this conftest set the variable."""
    for name in _KERNEL_MODULES:
        module = sys.modules.get(f"iv2_kernels.{name}")
        if module is not None:
            kernels = [v for k, v in vars(module).items() if k.endswith("_kernel")]
            if any(type(k).__name__ != "InterpretedFunction" for k in kernels):
                return False
    return os.environ.get("TRITON_INTERPRET") == "1"


def _require_interpreted_triton() -> None:
    pytest.importorskip("triton")
    if not _kernels_interpreted():
        pytest.skip("Triton kernels were imported before TRITON_INTERPRET=1 was set")


@pytest.fixture(params=["torch", "triton"])
def backend(request) -> str:
    """Both backends; Triton through its interpreter on CPU tensors."""
    if request.param == "triton":
        _require_interpreted_triton()
    return request.param


@pytest.fixture
def triton_backend() -> str:
    """The Triton backend alone (interpreter, CPU tensors)."""
    _require_interpreted_triton()
    return "triton"
