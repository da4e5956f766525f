"""Symmetric InfoNCE (CLIP loss) that never materialises the ``B × B`` logits.

``loss = ½ · (CE(L, diag) + CE(Lᵀ, diag))`` with ``L = a @ b.T / temperature``, the mean over rows of both
cross-entropies. Written out, with row and column log-sum-exps ``r_i = lse_j L_ij`` and ``c_j = lse_i L_ij``::

    loss = (Σ_i r_i + Σ_j c_j) / (2B) − Σ_i L_ii / B
    dL_ij = (exp(L_ij − r_i) + exp(L_ij − c_j)) / (2B) − δ_ij / B
    da = dL @ b / τ,   db = dLᵀ @ a / τ,   dτ = −Σ_i a_i · da_i / τ

The forward pass walks over ``block × block`` tiles of ``L`` keeping running (online) log-sum-exps for the
rows and for the columns, so only ``O(B·D + block²)`` memory is used. The backward pass recomputes each tile
from ``a``, ``b`` and the saved ``r``, ``c`` and accumulates ``da`` and ``db``; the temperature gradient
follows from ``da`` without another pass. Two implementations: a torch one (tiles as matmuls; CPU and GPU)
and Triton kernels (``_contrastive_triton.py``).

Distributed form (``group=``): every rank passes its local rows; ``a`` and ``b`` are all-gathered once
(``O(B_global·D)``), negatives come from every rank, and the returned value is the loss over the global
batch, identical on every rank. Each rank's backward yields *its share* of the global gradient: the rows of
``∂loss/∂a`` and ``∂loss/∂b`` that belong to its local inputs exactly, and the part of ``∂loss/∂τ`` that
flows through them — summed over ranks these equal the single-process gradient over the global batch.
DistributedDataParallel *averages* gradients over ranks, so multiply the loss by the world size before
``backward()`` there to train on exactly the global-batch gradient.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._backend import resolve_backend

TORCH_BLOCK = 1024  # tile edge of the torch path: 4 MiB float32 tiles, large enough for fast CPU matmuls
TRITON_BLOCK = 64  # tile edge of the Triton kernels (rows per program and columns per step)


def contrastive_loss_reference(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor
                               ) -> torch.Tensor:
    """The plain formulation with the full ``B × B`` logits (quadratic memory); for tests and benchmarks."""
    logits = a @ b.T / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


# ---------------------------------------------------------------------------------------------- torch path
def _torch_lse_rows(x: torch.Tensor, y: torch.Tensor, inv_temp: torch.Tensor, block: int) -> torch.Tensor:
    """``lse_j (x_i · y_j / τ)`` for every row of ``x``, online over column tiles (in ``x``'s dtype)."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], block):
        xi = x[i:i + block]
        run_max = torch.full((xi.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        run_sum = torch.zeros_like(run_max)
        for j in range(0, y.shape[0], block):
            tile = (xi @ y[j:j + block].T).mul_(inv_temp)
            new_max = torch.maximum(run_max, tile.amax(1))
            run_sum = run_sum * torch.exp(run_max - new_max) + tile.sub_(new_max[:, None]).exp_().sum(1)
            run_max = new_max
        out[i:i + block] = run_max + run_sum.log()
    return out


def _torch_lse_both(a: torch.Tensor, b: torch.Tensor, inv_temp: torch.Tensor, block: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column log-sum-exps of ``a @ b.T / τ`` in one pass over the tiles (float32)."""
    n = a.shape[0]
    row_lse = torch.empty(n, dtype=a.dtype, device=a.device)
    col_max = torch.full((n,), -math.inf, dtype=a.dtype, device=a.device)
    col_sum = torch.zeros_like(col_max)
    for i in range(0, n, block):
        ai = a[i:i + block]
        row_max = torch.full((ai.shape[0],), -math.inf, dtype=a.dtype, device=a.device)
        row_sum = torch.zeros_like(row_max)
        for j in range(0, n, block):
            tile = (ai @ b[j:j + block].T).mul_(inv_temp)
            new_row_max = torch.maximum(row_max, tile.amax(1))
            new_col_max = torch.maximum(col_max[j:j + block], tile.amax(0))
            row_sum = row_sum * torch.exp(row_max - new_row_max) + (tile - new_row_max[:, None]).exp_().sum(1)
            col_sum[j:j + block] = (col_sum[j:j + block] * torch.exp(col_max[j:j + block] - new_col_max)
                                    + tile.sub_(new_col_max[None, :]).exp_().sum(0))
            row_max = new_row_max
            col_max[j:j + block] = new_col_max
        row_lse[i:i + block] = row_max + row_sum.log()
    return row_lse, col_max + col_sum.log()


def _torch_grad_rows(x: torch.Tensor, y: torch.Tensor, lse_x: torch.Tensor, lse_y: torch.Tensor,
                     inv_temp: torch.Tensor, coef: torch.Tensor, block: int) -> torch.Tensor:
    """``coef · Σ_j (exp(S_ij − lse_x_i) + exp(S_ij − lse_y_j)) y_j`` with ``S = x @ y.T / τ`` (float32)."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], block):
        xi = x[i:i + block]
        acc = torch.zeros(xi.shape, dtype=x.dtype, device=x.device)
        for j in range(0, y.shape[0], block):
            tile = (xi @ y[j:j + block].T).mul_(inv_temp)
            weights = (tile - lse_x[i:i + block, None]).exp_()
            weights.add_(tile.sub_(lse_y[None, j:j + block]).exp_())
            acc.addmm_(weights, y[j:j + block])
        out[i:i + block] = acc.mul_(coef)
    return out


def _torch_grad_both(a: torch.Tensor, b: torch.Tensor, row_lse: torch.Tensor, col_lse: torch.Tensor,
                     inv_temp: torch.Tensor, coef: torch.Tensor, block: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax parts of ``da`` and ``db`` in one pass over the tiles (each tile computed once)."""
    da = torch.zeros(a.shape, dtype=a.dtype, device=a.device)
    db = torch.zeros(b.shape, dtype=b.dtype, device=b.device)
    for i in range(0, a.shape[0], block):
        ai = a[i:i + block]
        for j in range(0, b.shape[0], block):
            bj = b[j:j + block]
            tile = (ai @ bj.T).mul_(inv_temp)
            weights = (tile - row_lse[i:i + block, None]).exp_()
            weights.add_(tile.sub_(col_lse[None, j:j + block]).exp_())
            da[i:i + block].addmm_(weights, bj)
            db[j:j + block].addmm_(weights.T, ai)
    return da.mul_(coef), db.mul_(coef)


# ------------------------------------------------------------------------------------------ autograd glue
def _all_gather(t: torch.Tensor, group) -> torch.Tensor:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts)


def _lse_rows(backend: str, x, y, inv_temp, block):
    if backend == "triton":
        from ._contrastive_triton import lse_rows

        return lse_rows(x, y, inv_temp, block)
    return _torch_lse_rows(x, y, inv_temp, block)


def _grad_rows(backend: str, x, y, lse_x, lse_y, inv_temp, coef, block):
    if backend == "triton":
        from ._contrastive_triton import grad_rows

        return grad_rows(x, y, lse_x, lse_y, inv_temp, coef, block)
    return _torch_grad_rows(x, y, lse_x, lse_y, inv_temp, coef, block)


class _ContrastiveLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, temperature, backend, block, group):
        if backend == "triton":  # the kernels load tiles in the input dtype and accumulate in float32
            acc_dtype = torch.float32
            x, y = a.detach().contiguous(), b.detach().contiguous()
        else:  # float32 (float64 for float64 inputs) copies, O(B·D): every tile product accumulates in it
            acc_dtype = torch.promote_types(a.dtype, torch.float32)
            x, y = a.detach().to(acc_dtype), b.detach().to(acc_dtype)
        temp = temperature.detach().to(acc_dtype).reshape(1)
        inv_temp = 1.0 / temp

        if group is None:
            world, x_all, y_all = 1, x, y
            if backend == "triton":  # one kernel, rows of (a, b) then rows of (b, a)
                row_lse = _lse_rows(backend, x, y, inv_temp, block)
                col_lse = _lse_rows(backend, y, x, inv_temp, block)
            else:
                row_lse, col_lse = _torch_lse_both(x, y, inv_temp, block)
        else:
            world = dist.get_world_size(group)
            x_all, y_all = _all_gather(x, group), _all_gather(y, group)
            row_lse = _lse_rows(backend, x, y_all, inv_temp, block)
            col_lse = _lse_rows(backend, y, x_all, inv_temp, block)
        row_lse, col_lse = row_lse.to(acc_dtype), col_lse.to(acc_dtype)
        n_global = a.shape[0] * world
        positives = (x.to(acc_dtype) * y.to(acc_dtype)).sum(1) * inv_temp
        loss = (row_lse.sum() + col_lse.sum()) / (2 * n_global) - positives.sum() / n_global
        if group is None:
            row_lse_all, col_lse_all = row_lse, col_lse
        else:  # backward needs every rank's log-sum-exps (B_global floats) for its own rows' gradients
            row_lse_all, col_lse_all = _all_gather(row_lse, group), _all_gather(col_lse, group)
            dist.all_reduce(loss, group=group)
        ctx.save_for_backward(x, y, x_all, y_all, row_lse, col_lse, row_lse_all, col_lse_all, temp)
        ctx.backend, ctx.block, ctx.n_global, ctx.single = backend, block, n_global, group is None
        ctx.temperature_meta = (temperature.dtype, temperature.shape)
        ctx.input_dtype = a.dtype
        return loss.reshape(()).to(torch.promote_types(acc_dtype, torch.float32))

    @staticmethod
    def backward(ctx, grad):
        x, y, x_all, y_all, row_lse, col_lse, row_lse_all, col_lse_all, temp = ctx.saved_tensors
        acc_dtype = temp.dtype
        inv_temp = 1.0 / temp
        coef = grad.to(acc_dtype).reshape(1) * inv_temp / (2 * ctx.n_global)  # softmax part of dL, times 1/τ
        if ctx.backend == "torch" and ctx.single:
            da, db = _torch_grad_both(x, y, row_lse, col_lse, inv_temp, coef, ctx.block)
        else:
            da = _grad_rows(ctx.backend, x, y_all, row_lse, col_lse_all, inv_temp, coef, ctx.block)
            db = _grad_rows(ctx.backend, y, x_all, col_lse, row_lse_all, inv_temp, coef, ctx.block)
        da, db = da.to(acc_dtype), db.to(acc_dtype)
        diag = 2 * coef  # the −δ_ij / B term of dL
        da.sub_(y.to(acc_dtype) * diag)
        db.sub_(x.to(acc_dtype) * diag)
        grad_temp = None
        if ctx.needs_input_grad[2]:
            t_dtype, t_shape = ctx.temperature_meta
            grad_temp = (-(x.to(acc_dtype) * da).sum() * inv_temp).reshape(t_shape).to(t_dtype)
        return da.to(ctx.input_dtype), db.to(ctx.input_dtype), grad_temp, None, None, None


def _check(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"contrastive_loss: {name} must be a tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"contrastive_loss: {name} must be (B, D), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"contrastive_loss: {name} must be floating point, got {t.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"contrastive_loss: a {tuple(a.shape)} and b {tuple(b.shape)} must have the same "
                         "shape")
    if a.shape[0] == 0:
        raise ValueError(f"contrastive_loss: empty batch, a has shape {tuple(a.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"contrastive_loss: a is {a.dtype} but b is {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"contrastive_loss: a is on {a.device} but b is on {b.device}")
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError("contrastive_loss: temperature must be a scalar (one element), got shape "
                             f"{tuple(temperature.shape)}")
        if not temperature.is_floating_point():
            raise ValueError(f"contrastive_loss: temperature must be floating point, got {temperature.dtype}")
        if temperature.device != a.device:
            raise ValueError(f"contrastive_loss: temperature is on {temperature.device} but a is on "
                             f"{a.device}")
        value = float(temperature.detach())  # one host sync: a non-finite temperature must not train silently
    else:
        value = float(temperature)
        temperature = torch.tensor(value, dtype=a.dtype, device=a.device)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"contrastive_loss: temperature must be finite and > 0, got {value}")
    return temperature


def contrastive_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float | torch.Tensor,
    backend: str | None = None,
    *,
    group: dist.ProcessGroup | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE on ``a @ b.T / temperature`` in ``O(B·D)`` memory; see the module docstring.

    ``a``, ``b``: ``(B, D)`` rows that match pairwise (same shape, dtype and device). ``temperature``: a
    positive float or one-element tensor (its gradient is returned when it requires grad). Returns a float32
    scalar. ``group``: a ``torch.distributed`` process group (``dist.group.WORLD`` for all ranks) for the
    distributed form; every rank must pass the same local batch size. ``block_size``: tile edge (default
    1024 for torch, 64 for Triton; Triton needs a power of two ≥ 16).
    """
    temperature = _check(a, b, temperature)
    chosen = resolve_backend(backend, a, b)
    block = block_size or (TRITON_BLOCK if chosen == "triton" else TORCH_BLOCK)
    if block < 1 or (chosen == "triton" and (block < 16 or block & (block - 1))):
        raise ValueError(f"contrastive_loss: block_size {block} must be positive (a power of two ≥ 16 for "
                         "Triton)")
    if group is not None:
        sizes = _all_gather(torch.tensor([a.shape[0]], device=a.device), group).tolist()
        if len(set(sizes)) != 1:
            raise ValueError(f"contrastive_loss: every rank must pass the same local batch size, got {sizes}")
    return _ContrastiveLoss.apply(a, b, temperature, chosen, block, group)
