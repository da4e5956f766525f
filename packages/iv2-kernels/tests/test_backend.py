"""Backend switch: argument, environment variable IV2_KERNELS, and the Triton-on-CPU guard."""

from __future__ import annotations

import importlib

import pytest
import torch

import iv2_kernels
from iv2_kernels import _backend


@pytest.fixture
def reload_backend(monkeypatch):
    """Re-read IV2_KERNELS after the test changed it; restore the original default afterwards."""
    yield lambda: importlib.reload(_backend)
    monkeypatch.undo()
    importlib.reload(_backend)


def test_auto_picks_torch_for_cpu_tensors():
    assert _backend.resolve_backend("auto", torch.zeros(1)) == "torch"
    assert _backend.resolve_backend("torch", torch.zeros(1)) == "torch"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        iv2_kernels.rms_norm(torch.randn(2, 4), torch.ones(4), backend="cuda")


def test_env_var_sets_the_default(monkeypatch, reload_backend):
    monkeypatch.setenv("IV2_KERNELS", "triton")
    reload_backend()
    assert _backend.resolve_backend(None, torch.zeros(1)) == "triton"
    calls = []

    def spy(*args):
        calls.append(args)
        return torch.zeros(())

    module = importlib.import_module("iv2_kernels.contrastive_loss")  # the package attribute is the function
    monkeypatch.setattr(module._ContrastiveLoss, "apply", spy)
    iv2_kernels.contrastive_loss(torch.randn(3, 4), torch.randn(3, 4), 0.5)
    assert calls and calls[0][4] == "triton"  # apply(a, b, temperature, idx, backend, ...)


def test_bad_env_var_fails_at_import(monkeypatch, reload_backend):
    monkeypatch.setenv("IV2_KERNELS", "fastest")
    with pytest.raises(ValueError, match="IV2_KERNELS must be one of"):
        reload_backend()


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        iv2_kernels.contrastive_loss(torch.randn(3, 4), torch.randn(3, 4), 0.5, backend="triton")
