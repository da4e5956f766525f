"""Symmetric InfoNCE (CLIP loss) that never materialises the ``B × B`` logits.

``loss = ½ · (CE(L, diag) + CE(Lᵀ, diag))`` with ``L = a @ b.T / temperature``, the mean over rows of both
cross-entropies. Written out, with row and column log-sum-exps ``r_i = lse_j L_ij`` and ``c_j = lse_i L_ij``::

    loss = (Σ_i r_i + Σ_j c_j) / (2B) − Σ_i L_ii / B
    dL_ij = (exp(L_ij − r_i) + exp(L_ij − c_j)) / (2B) − δ_ij / B
    da = dL @ b / τ,   db = dLᵀ @ a / τ,   dτ = −Σ_i a_i · da_i / τ

The forward pass walks over ``block × block`` tiles of ``L`` keeping running (online) log-sum-exps for the
rows and for the columns, so only ``O(B·D + block²)`` memory is used. The backward pass recomputes each tile
from ``a``, ``b`` and the saved ``r``, ``c`` and accumulates ``da`` and ``db`` (the ``−δ_ij`` term is applied
inside the diagonal tiles, where ``p_ii ≈ 1`` is still exact); the temperature gradient follows from ``da``
without another pass. Two implementations: a torch one (tiles as matmuls; CPU and GPU)
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
# Row statistics are kept as (running max m, log of the sum of exp(L − m)) rather than one log-sum-exp: at
# sharp temperatures the logits are ~100 and the loss ~1e-4, and rounding m + log(s) to one float32 would cost
# more than the whole loss. The positive logit is read out of the same tile the maximum came from, so a
# dominant positive gives (m − L_ii) = 0 exactly.
def _tile_positives(i0: int, rows: int, j0: int, cols: int, offset: int, device) -> tuple[torch.Tensor, ...]:
    """Tile-local (row, col) indices of the positives ``(i, i + offset)`` inside tile ``[i0:+rows, j0:+cols]``."""
    r = torch.arange(rows, device=device)
    c = r + (i0 + offset - j0)
    keep = (c >= 0) & (c < cols)
    return r[keep], c[keep]


def _torch_row_stats(x: torch.Tensor, y: torch.Tensor, inv_temp: torch.Tensor, block: int, offset: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``S = x @ y.T / τ``: (max, log Σ exp(S − max), positive ``S[i, i + offset]``), online."""
    n = x.shape[0]
    row_max, row_logsum, positive = (torch.empty(n, dtype=x.dtype, device=x.device) for _ in range(3))
    for i in range(0, n, block):
        xi = x[i:i + block]
        run_max = torch.full((xi.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        run_sum = torch.zeros_like(run_max)
        for j in range(0, y.shape[0], block):
            tile = (xi @ y[j:j + block].T).mul_(inv_temp)
            r, c = _tile_positives(i, tile.shape[0], j, tile.shape[1], offset, x.device)
            positive[i + r] = tile[r, c]
            new_max = torch.maximum(run_max, tile.amax(1))
            run_sum = run_sum * torch.exp(run_max - new_max) + tile.sub_(new_max[:, None]).exp_().sum(1)
            run_max = new_max
        row_max[i:i + block], row_logsum[i:i + block] = run_max, run_sum.log()
    return row_max, row_logsum, positive


def _torch_both_stats(a: torch.Tensor, b: torch.Tensor, inv_temp: torch.Tensor, block: int
                      ) -> tuple[torch.Tensor, ...]:
    """Row and column statistics of ``a @ b.T / τ`` in one pass over the tiles (online in both directions)."""
    n = a.shape[0]
    row_max, row_logsum, positive = (torch.empty(n, dtype=a.dtype, device=a.device) for _ in range(3))
    col_max = torch.full((n,), -math.inf, dtype=a.dtype, device=a.device)
    col_sum = torch.zeros_like(col_max)
    for i in range(0, n, block):
        ai = a[i:i + block]
        run_max = torch.full((ai.shape[0],), -math.inf, dtype=a.dtype, device=a.device)
        run_sum = torch.zeros_like(run_max)
        for j in range(0, n, block):
            tile = (ai @ b[j:j + block].T).mul_(inv_temp)
            if i == j:
                positive[i:i + block] = tile.diagonal()
            new_row_max = torch.maximum(run_max, tile.amax(1))
            new_col_max = torch.maximum(col_max[j:j + block], tile.amax(0))
            run_sum = run_sum * torch.exp(run_max - new_row_max) + (tile - new_row_max[:, None]).exp_().sum(1)
            col_sum[j:j + block] = (col_sum[j:j + block] * torch.exp(col_max[j:j + block] - new_col_max)
                                    + tile.sub_(new_col_max[None, :]).exp_().sum(0))
            run_max = new_row_max
            col_max[j:j + block] = new_col_max
        row_max[i:i + block], row_logsum[i:i + block] = run_max, run_sum.log()
    return row_max, row_logsum, positive, col_max, col_sum.log(), positive


def _tile_weights(tile, x_max, x_logsum, y_max, y_logsum):
    """``exp(S − r_i) + exp(S − c_j)`` of one tile (overwrites ``tile``)."""
    weights = (tile - x_max[:, None]).sub_(x_logsum[:, None]).exp_()
    return weights.add_(tile.sub_(y_max[None, :]).sub_(y_logsum[None, :]).exp_())


def _torch_grad_rows(x, y, x_max, x_logsum, y_max, y_logsum, inv_temp, coef, block, offset):
    """``coef · Σ_j (exp(S_ij − r_i) + exp(S_ij − c_j) − 2δ_{i+offset,j}) y_j`` with ``S = x @ y.T / τ``."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], block):
        xi = x[i:i + block]
        acc = torch.zeros(xi.shape, dtype=x.dtype, device=x.device)
        sl = slice(i, i + block)
        for j in range(0, y.shape[0], block):
            yj, sj = y[j:j + block], slice(j, j + block)
            weights = _tile_weights((xi @ yj.T).mul_(inv_temp), x_max[sl], x_logsum[sl], y_max[sj], y_logsum[sj])
            r, c = _tile_positives(i, weights.shape[0], j, weights.shape[1], offset, x.device)
            weights[r, c] -= 2  # the −δ_ij / B term, subtracted where p_ii ≈ 1 is still exact
            acc.addmm_(weights, yj)
        out[sl] = acc.mul_(coef)
    return out


def _torch_grad_both(a, b, row_max, row_logsum, col_max, col_logsum, inv_temp, coef, block):
    """``da`` and ``db`` in one pass over the tiles (each tile computed once)."""
    da = torch.zeros(a.shape, dtype=a.dtype, device=a.device)
    db = torch.zeros(b.shape, dtype=b.dtype, device=b.device)
    for i in range(0, a.shape[0], block):
        ai, si = a[i:i + block], slice(i, i + block)
        for j in range(0, b.shape[0], block):
            bj, sj = b[j:j + block], slice(j, j + block)
            weights = _tile_weights((ai @ bj.T).mul_(inv_temp), row_max[si], row_logsum[si], col_max[sj],
                                    col_logsum[sj])
            if i == j:
                weights.diagonal().sub_(2)
            da[si].addmm_(weights, bj)
            db[sj].addmm_(weights.T, ai)
    return da.mul_(coef), db.mul_(coef)


# ------------------------------------------------------------------------------------------ autograd glue
def _all_gather(t: torch.Tensor, group) -> torch.Tensor:
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t, group=group)
    return torch.cat(parts)


def _row_stats(backend: str, x, y, inv_temp, block, offset):
    if backend == "triton":
        from ._contrastive_triton import row_stats

        return row_stats(x, y, inv_temp, block, offset)
    return _torch_row_stats(x, y, inv_temp, block, offset)


def _grad_rows(backend: str, x, y, x_stats, y_stats, inv_temp, coef, block, offset):
    if backend == "triton":
        from ._contrastive_triton import grad_rows

        return grad_rows(x, y, *x_stats, *y_stats, inv_temp, coef, block, offset)
    return _torch_grad_rows(x, y, *x_stats, *y_stats, inv_temp, coef, block, offset)


class _ContrastiveLoss(torch.autograd.Function):
    # Autocast is switched off inside: the tiles must accumulate in float32 (bfloat16 tile matmuls would cost
    # the loss ~3 digits), and the inputs are cast explicitly.
    @staticmethod
    def forward(ctx, a, b, temperature, backend, block, group):
        with torch.autocast(a.device.type, enabled=False):
            return _ContrastiveLoss._forward(ctx, a, b, temperature, backend, block, group)

    @staticmethod
    def backward(ctx, grad):
        with torch.autocast(grad.device.type, enabled=False):
            return _ContrastiveLoss._backward(ctx, grad)

    @staticmethod
    def _forward(ctx, a, b, temperature, backend, block, group):
        if backend == "triton":  # the kernels load tiles in the input dtype and accumulate in float32
            acc_dtype = torch.float32
            x, y = a.detach().contiguous(), b.detach().contiguous()
        else:  # float32 (float64 for float64 inputs) copies, O(B·D): every tile product accumulates in it
            acc_dtype = torch.promote_types(a.dtype, torch.float32)
            x, y = a.detach().to(acc_dtype), b.detach().to(acc_dtype)
        temp = temperature.detach().to(acc_dtype).reshape(1)
        inv_temp = 1.0 / temp

        if group is None:
            world, offset, x_all, y_all = 1, 0, x, y
            if backend == "triton":  # one kernel: rows of (a, b), then rows of (b, a) for the columns
                row_max, row_logsum, row_pos = _row_stats(backend, x, y, inv_temp, block, 0)
                col_max, col_logsum, col_pos = _row_stats(backend, y, x, inv_temp, block, 0)
            else:
                row_max, row_logsum, row_pos, col_max, col_logsum, col_pos = _torch_both_stats(x, y, inv_temp, block)
        else:
            world = dist.get_world_size(group)
            offset = dist.get_rank(group) * a.shape[0]  # global index of this rank's first row
            x_all, y_all = _all_gather(x, group), _all_gather(y, group)
            row_max, row_logsum, row_pos = _row_stats(backend, x, y_all, inv_temp, block, offset)
            col_max, col_logsum, col_pos = _row_stats(backend, y, x_all, inv_temp, block, offset)
        n_global = a.shape[0] * world
        loss = (((row_max - row_pos) + row_logsum).sum() + ((col_max - col_pos) + col_logsum).sum()) / (2 * n_global)
        row_stats = torch.stack([row_max, row_logsum])
        col_stats = torch.stack([col_max, col_logsum])
        if group is None:
            row_stats_all, col_stats_all = row_stats, col_stats
        else:  # backward needs every rank's statistics (2·B_global floats each) for its own rows' gradients
            row_stats_all = _all_gather(row_stats.T, group).T
            col_stats_all = _all_gather(col_stats.T, group).T
            dist.all_reduce(loss, group=group)
        ctx.save_for_backward(x, y, x_all, y_all, row_stats, col_stats, row_stats_all, col_stats_all, temp)
        ctx.backend, ctx.block, ctx.n_global, ctx.offset = backend, block, n_global, offset
        ctx.single = group is None
        ctx.temperature_meta = (temperature.dtype, temperature.shape)
        ctx.input_dtype = a.dtype
        return loss.reshape(()).to(torch.promote_types(acc_dtype, torch.float32))

    @staticmethod
    def _backward(ctx, grad):
        x, y, x_all, y_all, row_stats, col_stats, row_stats_all, col_stats_all, temp = ctx.saved_tensors
        acc_dtype = temp.dtype
        inv_temp = 1.0 / temp
        coef = grad.to(acc_dtype).reshape(1) * inv_temp / (2 * ctx.n_global)  # dL = coef·τ·weights; L = S/τ
        if ctx.backend == "torch" and ctx.single:
            da, db = _torch_grad_both(x, y, *row_stats, *col_stats, inv_temp, coef, ctx.block)
        else:
            da = _grad_rows(ctx.backend, x, y_all, row_stats, col_stats_all, inv_temp, coef, ctx.block, ctx.offset)
            db = _grad_rows(ctx.backend, y, x_all, col_stats, row_stats_all, inv_temp, coef, ctx.block, ctx.offset)
        da, db = da.to(acc_dtype), db.to(acc_dtype)
        grad_temp = None
        if ctx.needs_input_grad[2]:  # Σ_ij dL_ij L_ij = Σ_i a_i · da_i
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
        # float32 at least: a Python temperature must not be rounded to bfloat16/float16
        temperature = torch.tensor(value, dtype=torch.promote_types(a.dtype, torch.float32), device=a.device)
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
    scalar (float64 for float64 inputs on the torch path). ``group``: a ``torch.distributed`` process group
    (``dist.group.WORLD`` for all ranks) for the distributed form; every rank must pass the same local batch
    size. ``block_size``: tile edge (default 1024 for torch, 64 for Triton; Triton needs a power of two ≥ 16).
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
