"""contrastive_loss against a float64 symmetric InfoNCE written out here, forward and backward; with ``idx``
against the official VTC targets (same-idx pairs positive, rows normalised to sum 1) written out here."""

from __future__ import annotations

import math

import pytest
import torch

from iv2_kernels import contrastive_loss


def float64_infonce(a, b, temperature):
    logits = a @ b.T / temperature
    row = torch.log_softmax(logits, dim=1).diagonal()  # image → text: log p(j = i | i)
    col = torch.log_softmax(logits, dim=0).diagonal()  # text → image
    return -0.5 * (row.mean() + col.mean())


def float64_vtc(a, b, temperature, idx):
    """The official VTC loss (criterions.py ``vtc_loss``) in float64: soft targets from the idx mask."""
    logits = a @ b.T / temperature
    same = (idx.view(-1, 1) == idx.view(1, -1)).double()
    targets = same / same.sum(1, keepdim=True)
    v2t = -(torch.log_softmax(logits, dim=1) * targets).sum(1).mean()
    t2v = -(torch.log_softmax(logits.T, dim=1) * targets).sum(1).mean()  # sim_t2v = sim_v2t.T, same targets
    return (v2t + t2v) / 2


def make_idx(batch, groups, seed=0):
    """Ids with repeats scattered over the batch (several captions of one video, not adjacent)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(-groups, groups, (batch,), generator=gen)


def make_inputs(batch, dim, seed=0, normalise=False):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    b = a + 0.7 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)  # correlated pairs
    if normalise:
        a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    return a, b


def check(batch, dim, backend, block_size, dtype=torch.float32, tol=1e-5, temperature=0.3, normalise=False,
          device="cpu", idx=None):
    a, b = make_inputs(batch, dim, normalise=normalise)
    a, b = a.to(dtype).double(), b.to(dtype).double()  # both sides see the same rounded inputs
    leaves = [a.clone().requires_grad_(), b.clone().requires_grad_(),
              torch.tensor(temperature, dtype=torch.float64, requires_grad=True)]
    loss_ref = float64_infonce(*leaves) if idx is None else float64_vtc(*leaves, idx)
    grads_ref = torch.autograd.grad(loss_ref, leaves)

    ours = [a.to(device, dtype).requires_grad_(), b.to(device, dtype).requires_grad_(),
            torch.tensor(temperature, dtype=dtype, device=device, requires_grad=True)]
    loss = contrastive_loss(*ours, idx=None if idx is None else idx.to(device), backend=backend,
                            block_size=block_size)
    assert loss.shape == () and loss.dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(loss.double().cpu(), loss_ref.detach(), rtol=tol, atol=tol)
    grads = torch.autograd.grad(loss, ours)
    for name, got, want in zip(("a", "b", "temperature"), grads, grads_ref):
        assert got.dtype == dtype and got.shape == want.shape, name
        scale = want.abs().max().item()
        torch.testing.assert_close(got.double().cpu(), want, rtol=tol * 10, atol=tol * max(scale, 1e-3), msg=name)


@pytest.mark.parametrize(("batch", "block_size"), [(1, 16), (2, 16), (37, 16), (300, 64), (300, None)])
def test_torch_float32_matches_float64(batch, block_size):
    check(batch, 24, "torch", block_size)


@pytest.mark.parametrize(("batch", "block_size"), [(1, 16), (37, 16), (130, 32)])
def test_triton_float32_matches_float64(batch, block_size, triton_backend):
    check(batch, 20, triton_backend, block_size)


def test_float64_torch_path_is_exact():
    # blockwise online log-sum-exp changes only the summation order: float64 in, float64 accuracy out
    check(77, 16, "torch", 16, dtype=torch.float64, tol=1e-10)


def test_float16(backend):
    check(45, 32, backend, 16, dtype=torch.float16, tol=5e-3, temperature=0.5)


def test_bfloat16_torch():
    check(45, 32, "torch", 16, dtype=torch.bfloat16, tol=2e-2, temperature=0.5)


def test_autocast_keeps_float32_accumulation(backend):
    # under bfloat16 autocast the tile products still accumulate in float32 (the plain loss would not)
    a, b = make_inputs(40, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = contrastive_loss(a.float(), b.float(), 0.3, backend=backend, block_size=16)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(float64_infonce(a, b, 0.3).item(), rel=1e-5)


def test_sharp_temperature_is_stable(backend):
    # logits up to ±100: a naive exp() overflows float32; the online log-sum-exp does not
    check(50, 16, backend, 16, temperature=0.01, normalise=True, tol=1e-4)


def test_float_temperature_and_one_element_tensor(backend):
    a, b = make_inputs(20, 8)
    a, b = a.float(), b.float()
    want = float64_infonce(a.double(), b.double(), 0.25).item()
    assert contrastive_loss(a, b, 0.25, backend=backend, block_size=16).item() == pytest.approx(want, rel=1e-5)
    temperature = torch.tensor([0.25], requires_grad=True)
    loss = contrastive_loss(a, b, temperature, backend=backend, block_size=16)
    loss.backward()
    assert temperature.grad.shape == (1,)
    assert loss.item() == pytest.approx(want, rel=1e-5)


def test_gradient_only_where_asked(backend):
    a, b = make_inputs(20, 8)
    a = a.float().requires_grad_()
    loss = contrastive_loss(a, b.float(), 0.5, backend=backend, block_size=16)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


@pytest.mark.parametrize(
    ("a", "b", "temperature", "match"),
    [
        (torch.randn(4, 8), torch.randn(5, 8), 0.1, r"a \(4, 8\) and b \(5, 8\) must have the same shape"),
        (torch.randn(8), torch.randn(8), 0.1, r"a must be \(B, D\), got shape \(8,\)"),
        (torch.randn(4, 8), torch.randn(4, 8).double(), 0.1, "a is torch.float32 but b is torch.float64"),
        (torch.randn(4, 8), torch.randn(4, 8, device="meta"), 0.1, "a is on cpu but b is on meta"),
        (torch.ones(4, 8, dtype=torch.int64), torch.ones(4, 8, dtype=torch.int64), 0.1, "a must be floating"),
        (torch.randn(0, 8), torch.randn(0, 8), 0.1, "empty batch"),
        (torch.randn(4, 8), torch.randn(4, 8), math.nan, "temperature must be finite and > 0, got nan"),
        (torch.randn(4, 8), torch.randn(4, 8), torch.tensor(math.inf), "finite and > 0, got inf"),
        (torch.randn(4, 8), torch.randn(4, 8), 0.0, "finite and > 0"),
        (torch.randn(4, 8), torch.randn(4, 8), -0.1, "finite and > 0"),
        (torch.randn(4, 8), torch.randn(4, 8), torch.ones(2), r"one element\), got shape \(2,\)"),
        (torch.randn(4, 8), torch.randn(4, 8), torch.tensor(1, dtype=torch.int64), "temperature must be floating"),
        (torch.randn(4, 8), torch.randn(4, 8), torch.tensor(0.1, device="meta"), "temperature is on meta"),
    ],
)
def test_bad_input_raises_value_error(a, b, temperature, match, backend):
    with pytest.raises(ValueError, match=match):
        contrastive_loss(a, b, temperature, backend=backend)


@pytest.mark.parametrize(
    ("idx", "match"),
    [
        (torch.arange(3), r"idx must have shape \(4,\) \(one per row of a\), got \(3,\)"),
        (torch.arange(4).view(2, 2), r"idx must have shape \(4,\)"),
        (torch.arange(4.0), "idx must be an integer tensor, got torch.float32"),
        (torch.ones(4, dtype=torch.bool), "idx must be an integer tensor, got torch.bool"),
        (torch.arange(4, device="meta"), "idx is on meta but a is on cpu"),
        ([0, 1, 2, 3], "idx must be a tensor, got list"),
    ],
)
def test_bad_idx_raises_value_error(idx, match, backend):
    with pytest.raises(ValueError, match=match):
        contrastive_loss(torch.randn(4, 8), torch.randn(4, 8), 0.1, idx=idx, backend=backend)


@pytest.mark.parametrize(("batch", "groups", "block_size"), [(1, 1, 16), (37, 6, 16), (130, 20, 32), (45, 1, 16)])
def test_idx_targets_match_official_vtc_float64(batch, groups, block_size, backend):
    # repeated ids across tiles (blocks that do not divide B); groups=1: every pair is a positive
    idx = make_idx(batch, groups, seed=batch)
    assert batch == 1 or len(idx.unique()) < batch
    check(batch, 20, backend, block_size, idx=idx)


def test_idx_float64_torch_path_is_exact():
    check(77, 16, "torch", 16, dtype=torch.float64, tol=1e-10, idx=make_idx(77, 9))


def test_idx_at_sharp_temperature(backend):
    check(50, 16, backend, 16, temperature=0.01, normalise=True, tol=1e-4, idx=make_idx(50, 12))


def test_unique_idx_equals_no_idx(backend):
    a, b = make_inputs(40, 12)
    a, b = a.float(), b.float()
    plain = contrastive_loss(a, b, 0.2, backend=backend, block_size=16)
    shuffled_ids = torch.randperm(40, generator=torch.Generator().manual_seed(0)).to(torch.int32) * 7 - 100
    torch.testing.assert_close(contrastive_loss(a, b, 0.2, idx=shuffled_ids, backend=backend, block_size=16), plain)


def test_triton_block_size_must_be_a_power_of_two(triton_backend):
    with pytest.raises(ValueError, match="block_size 24"):
        contrastive_loss(torch.randn(4, 8), torch.randn(4, 8), 0.1, backend=triton_backend, block_size=24)
