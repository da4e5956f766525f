"""rms_norm and add_rms_norm against a float64 RMSNorm written out here, forward and backward, both backends."""

from __future__ import annotations

import pytest
import torch

from iv2_kernels import add_rms_norm, rms_norm

SHAPES = [(1, 8), (7, 96), (3, 5, 1408), (2, 3200)]


def float64_rms_norm(x, weight, eps, residual=None):
    summed = x + residual if residual is not None else x
    return weight * summed / torch.sqrt(summed.pow(2).mean(-1, keepdim=True) + eps), summed


def assert_close(actual, expected, tol):
    """Relative to the largest magnitude of the expected tensor (gradients vary a lot in scale)."""
    scale = expected.abs().max().item() + 1e-6
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=tol, atol=tol * scale)


def run_case(shape, with_residual, dtype, backend, tol, eps=1e-6, seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    weight = 1 + 0.5 * torch.randn(shape[-1], generator=gen, dtype=torch.float64)
    residual = torch.randn(shape, generator=gen, dtype=torch.float64) if with_residual else None
    grad_y = torch.randn(shape, generator=gen, dtype=torch.float64)
    grad_sum = torch.randn(shape, generator=gen, dtype=torch.float64)
    # round the float64 inputs to the tested dtype first so both sides see identical numbers
    leaves = [t.to(dtype).double().requires_grad_() for t in (x, weight) + ((residual,) if with_residual else ())]
    y_ref, sum_ref = float64_rms_norm(leaves[0], leaves[1], eps, leaves[2] if with_residual else None)
    objective = (y_ref * grad_y).sum() + ((sum_ref * grad_sum).sum() if with_residual else 0)
    grads_ref = torch.autograd.grad(objective, leaves)

    ours = [t.detach().to(device, dtype).requires_grad_() for t in leaves]
    grad_y, grad_sum = grad_y.to(device), grad_sum.to(device)
    if with_residual:
        y, summed = add_rms_norm(ours[0], ours[2], ours[1], eps, backend=backend)
        assert summed.dtype == dtype and summed.shape == shape
        assert_close(summed, sum_ref.detach(), tol)
        objective = (y * grad_y.to(y.dtype)).sum() + (summed * grad_sum.to(dtype)).sum()
    else:
        y = rms_norm(ours[0], ours[1], eps, backend=backend)
        assert isinstance(y, torch.Tensor)
        objective = (y * grad_y.to(y.dtype)).sum()
    assert y.shape == shape and y.dtype == dtype
    assert_close(y, y_ref.detach(), tol)
    for name, got, want in zip(("x", "weight", "residual"), torch.autograd.grad(objective, ours), grads_ref):
        assert got.dtype == dtype, name
        assert_close(got, want, tol * 10 if name == "weight" else tol)  # weight grad sums over all rows


@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float32_matches_float64(shape, with_residual, backend):
    run_case(shape, with_residual, torch.float32, backend, tol=1e-5)


@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_float16_matches_float64(with_residual, backend):
    run_case((3, 5, 1408), with_residual, torch.float16, backend, tol=2e-3)


def test_bfloat16_torch_matches_float64():
    run_case((7, 96), True, torch.bfloat16, "torch", tol=2e-2)


def test_bfloat16_triton_on_cpu_is_refused():
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16"):
        rms_norm(x, torch.ones(8, dtype=torch.bfloat16), backend="triton")


def test_weight_dtype_promotes_like_the_reference(backend):
    x = torch.randn(4, 24).half()
    weight = torch.rand(24) + 0.5  # float32 weights with half activations: the product is float32
    y = rms_norm(x, weight, backend=backend)
    assert y.dtype == torch.float32
    y_ref, _ = float64_rms_norm(x.double(), weight.double(), 1e-6)
    assert_close(y, y_ref, 2e-3)


def test_mixed_residual_dtype_promotes_like_the_reference(backend):
    # under autocast the encoder adds half-precision branch outputs to a float32 residual stream
    x = torch.randn(5, 48).half().requires_grad_()
    residual = torch.randn(5, 48).requires_grad_()
    weight = torch.rand(48) + 0.5
    y, summed = add_rms_norm(x, residual, weight, backend=backend)
    assert y.dtype == summed.dtype == torch.float32
    y_ref, sum_ref = float64_rms_norm(x.double(), weight.double(), 1e-6, residual.double())
    assert_close(summed, sum_ref, 1e-6)
    assert_close(y, y_ref, 1e-5)
    y.sum().backward()
    assert x.grad.dtype == torch.float16 and residual.grad.dtype == torch.float32
    assert_close(x.grad, residual.grad.double(), 1e-3)  # the same gradient, rounded to half for x


def test_non_contiguous_and_empty_inputs(backend):
    base = torch.randn(6, 40)
    x = base[:, ::2]  # width 20, strided
    weight = torch.randn(20)
    assert_close(rms_norm(x, weight, backend=backend), float64_rms_norm(x.double(), weight.double(), 1e-6)[0],
                 1e-5)
    empty = rms_norm(torch.randn(0, 20), weight, backend=backend)
    assert empty.shape == (0, 20)


def test_backends_agree_without_autograd(backend):
    x, residual, weight = torch.randn(3, 64), torch.randn(3, 64), torch.randn(64)
    y, summed = add_rms_norm(x, residual, weight, 1e-5, backend=backend)
    assert torch.equal(summed, x + residual)
    assert_close(y, float64_rms_norm(x.double(), weight.double(), 1e-5, residual.double())[0], 1e-5)


@pytest.mark.parametrize(
    ("x", "weight", "residual", "match"),
    [
        (torch.tensor(1.0), torch.ones(1), None, r"x must have at least one dimension .* got shape \(\)"),
        (torch.randn(2, 8), torch.ones(7), None, r"weight must have shape \(8,\)"),
        (torch.randn(2, 8), torch.ones(8, 1), None, r"weight must have shape \(8,\)"),
        (torch.randn(2, 8), torch.ones(8), torch.randn(3, 8), r"residual shape \(3, 8\) != x shape \(2, 8\)"),
        (torch.randn(2, 8), torch.ones(8), torch.ones(2, 8, dtype=torch.int32), "residual must be floating"),
        (torch.ones(2, 8, dtype=torch.int64), torch.ones(8), None, "x must be floating point"),
        (torch.randn(2, 8), torch.ones(8, dtype=torch.int64), None, "weight must be floating point"),
        (torch.randn(2, 8), torch.ones(8, device="meta"), None, "weight is on meta"),
    ],
)
def test_bad_input_raises_value_error(x, weight, residual, match, backend):
    with pytest.raises(ValueError, match=match):
        if residual is None:
            rms_norm(x, weight, backend=backend)
        else:
            add_rms_norm(x, residual, weight, backend=backend)


def test_return_types_are_fixed(backend):
    x, residual, weight = torch.randn(3, 16), torch.randn(3, 16), torch.randn(16)
    assert isinstance(rms_norm(x, weight, backend=backend), torch.Tensor)
    out = add_rms_norm(x, residual, weight, backend=backend)
    assert isinstance(out, tuple) and len(out) == 2
    with pytest.raises(TypeError):
        rms_norm(x, weight, residual=residual, backend=backend)  # the fused add is its own op now
