"""Symmetric InfoNCE (CLIP loss / the official VTC) that never materialises the ``B × B`` logits.

With ``L = a @ b.T / temperature`` and targets ``T`` (rows summing to 1)::

    loss = ½ · (mean_i CE(L_i·, T_i·) + mean_j CE(L_·j, T_j·))

Without ``idx`` the targets are the identity (row ``i`` of ``a`` matches row ``i`` of ``b``). With ``idx``
(official VTC, REFERENCE e) every pair sharing an idx is a positive: ``M_ij = [idx_i == idx_j]`` and
``T_ij = M_ij / c_i`` with ``c_i = Σ_j M_ij`` (each row normalised to sum 1; ``M`` is symmetric, so the
text-to-video direction uses the same targets, as the official code does). Written out, with row and column
log-sum-exps ``r_i = lse_j L_ij``, ``k_j = lse_i L_ij``::

    loss  = (Σ_i (r_i − Σ_j M_ij L_ij / c_i) + Σ_j (k_j − Σ_i M_ij L_ij / c_j)) / (2B)
    dL_ij = (exp(L_ij − r_i) + exp(L_ij − k_j) − M_ij (1/c_i + 1/c_j)) / (2B)
    da = dL @ b / τ,   db = dLᵀ @ a / τ,   dτ = −Σ_i a_i · da_i / τ

The forward pass walks over ``block × block`` tiles of ``L`` keeping running (online) log-sum-exps for the
rows and for the columns and the target-weighted positive sums, so only ``O(B·D + block²)`` memory is used
(the per-tile target mask is rebuilt from the idx vectors). The backward pass recomputes each tile from ``a``,
``b`` and the saved statistics and accumulates ``da`` and ``db`` (the ``−M_ij(…)`` term is applied inside the
tile, where ``p_ii ≈ 1`` is still exact); the temperature gradient follows from ``da`` without another pass.
Two implementations: a torch one (tiles as matmuls; CPU and GPU) and Triton kernels
(``_contrastive_triton.py``).

Distributed form (``group=``): every rank passes its local rows (and idx); ``a``, ``b`` and ``idx`` are
all-gathered once (``O(B_global·D)``), negatives and positives come from every rank, and the returned value is
the loss over the global batch, identical on every rank. Gradients are those of a single process computing
that global loss: each rank receives exactly its own rows of ``∂loss/∂a`` and ``∂loss/∂b``, and the whole
``∂loss/∂temperature`` (the per-rank shares are summed across the group in backward, so every rank must call
``backward()``). Against the official all-gather (forward gather, backward keeps the local slice of each
rank's own gradient, no ``×world_size``) this is the same gradient for ``a``, ``b`` and the temperature;
see the README for what DDP's averaging then makes of it.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._backend import resolve_backend

TORCH_BLOCK = 1024  # tile edge of the torch path: 4 MiB float32 tiles, large enough for fast CPU matmuls
TRITON_BLOCK = 64  # tile edge of the Triton kernels (rows per program and columns per step)


def contrastive_loss_reference(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor,
                               idx: torch.Tensor | None = None) -> torch.Tensor:
    """The plain formulation with the full ``B × B`` logits (quadratic memory); for tests and benchmarks."""
    logits = a @ b.T / temperature
    if idx is None:
        labels = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    same = (idx.view(-1, 1) == idx.view(1, -1)).to(logits.dtype)
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


# ---------------------------------------------------------------------------------------------- torch path
# Row statistics are kept as (running max m, log of the sum of exp(L − m)) rather than one log-sum-exp: at
# sharp temperatures the logits are ~100 and the loss ~1e-4, and rounding m + log(s) to one float32 would cost
# more than the whole loss. The positive logits are read out of the same tile the maximum came from, so a
# dominant positive gives (m − L_ii) = 0 exactly.
def _torch_row_stats(x: torch.Tensor, y: torch.Tensor, inv_temp: torch.Tensor, block: int,
                     x_labels: torch.Tensor, y_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``S = x @ y.T / τ``: (max, log Σ exp(S − max), Σ_j [label_i = label_j] S_ij), online."""
    n = x.shape[0]
    row_max, row_logsum, positive = (torch.empty(n, dtype=x.dtype, device=x.device) for _ in range(3))
    for i in range(0, n, block):
        xi, li = x[i:i + block], x_labels[i:i + block]
        run_max = torch.full((xi.shape[0],), -math.inf, dtype=x.dtype, device=x.device)
        run_sum, run_pos = torch.zeros_like(run_max), torch.zeros_like(run_max)
        for j in range(0, y.shape[0], block):
            tile = (xi @ y[j:j + block].T).mul_(inv_temp)
            run_pos += torch.where(li[:, None] == y_labels[None, j:j + block], tile, 0).sum(1)
            new_max = torch.maximum(run_max, tile.amax(1))
            run_sum = run_sum * torch.exp(run_max - new_max) + tile.sub_(new_max[:, None]).exp_().sum(1)
            run_max = new_max
        row_max[i:i + block], row_logsum[i:i + block], positive[i:i + block] = run_max, run_sum.log(), run_pos
    return row_max, row_logsum, positive


def _torch_both_stats(a: torch.Tensor, b: torch.Tensor, inv_temp: torch.Tensor, block: int, labels: torch.Tensor
                      ) -> tuple[torch.Tensor, ...]:
    """Row and column statistics of ``a @ b.T / τ`` in one pass over the tiles (online in both directions)."""
    n = a.shape[0]
    row_max, row_logsum, row_pos = (torch.empty(n, dtype=a.dtype, device=a.device) for _ in range(3))
    col_max = torch.full((n,), -math.inf, dtype=a.dtype, device=a.device)
    col_sum, col_pos = torch.zeros_like(col_max), torch.zeros_like(col_max)
    for i in range(0, n, block):
        ai, li = a[i:i + block], labels[i:i + block]
        run_max = torch.full((ai.shape[0],), -math.inf, dtype=a.dtype, device=a.device)
        run_sum, run_pos = torch.zeros_like(run_max), torch.zeros_like(run_max)
        for j in range(0, n, block):
            sj = slice(j, j + block)
            tile = (ai @ b[sj].T).mul_(inv_temp)
            positives = torch.where(li[:, None] == labels[None, sj], tile, 0)
            run_pos += positives.sum(1)
            col_pos[sj] += positives.sum(0)
            new_row_max = torch.maximum(run_max, tile.amax(1))
            new_col_max = torch.maximum(col_max[sj], tile.amax(0))
            run_sum = run_sum * torch.exp(run_max - new_row_max) + (tile - new_row_max[:, None]).exp_().sum(1)
            col_sum[sj] = (col_sum[sj] * torch.exp(col_max[sj] - new_col_max)
                           + tile.sub_(new_col_max[None, :]).exp_().sum(0))
            run_max = new_row_max
            col_max[sj] = new_col_max
        row_max[i:i + block], row_logsum[i:i + block], row_pos[i:i + block] = run_max, run_sum.log(), run_pos
    return row_max, row_logsum, row_pos, col_max, col_sum.log(), col_pos


def _tile_weights(tile, x_max, x_logsum, y_max, y_logsum, same, x_inv_count, y_inv_count):
    """``exp(S − r_i) + exp(S − k_j) − M_ij (1/c_i + 1/c_j)`` of one tile (overwrites ``tile``)."""
    weights = (tile - x_max[:, None]).sub_(x_logsum[:, None]).exp_()
    weights.add_(tile.sub_(y_max[None, :]).sub_(y_logsum[None, :]).exp_())
    # the −targets term, subtracted here where p_ii ≈ 1 is still exact
    return weights.sub_(torch.where(same, x_inv_count[:, None] + y_inv_count[None, :], 0))


def _torch_grad_rows(x, y, x_max, x_logsum, y_max, y_logsum, inv_temp, coef, block, x_labels, y_labels,
                     x_inv_count, y_inv_count):
    """``coef · Σ_j (exp(S_ij − r_i) + exp(S_ij − k_j) − M_ij (1/c_i + 1/c_j)) y_j`` with ``S = x @ y.T / τ``."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], block):
        xi, si = x[i:i + block], slice(i, i + block)
        acc = torch.zeros(xi.shape, dtype=x.dtype, device=x.device)
        for j in range(0, y.shape[0], block):
            yj, sj = y[j:j + block], slice(j, j + block)
            weights = _tile_weights((xi @ yj.T).mul_(inv_temp), x_max[si], x_logsum[si], y_max[sj], y_logsum[sj],
                                    x_labels[si, None] == y_labels[None, sj], x_inv_count[si], y_inv_count[sj])
            acc.addmm_(weights, yj)
        out[si] = acc.mul_(coef)
    return out


def _torch_grad_both(a, b, row_max, row_logsum, col_max, col_logsum, inv_temp, coef, block, labels, inv_count):
    """``da`` and ``db`` in one pass over the tiles (each tile computed once)."""
    da = torch.zeros(a.shape, dtype=a.dtype, device=a.device)
    db = torch.zeros(b.shape, dtype=b.dtype, device=b.device)
    for i in range(0, a.shape[0], block):
        ai, si = a[i:i + block], slice(i, i + block)
        for j in range(0, b.shape[0], block):
            bj, sj = b[j:j + block], slice(j, j + block)
            weights = _tile_weights((ai @ bj.T).mul_(inv_temp), row_max[si], row_logsum[si], col_max[sj],
                                    col_logsum[sj], labels[si, None] == labels[None, sj], inv_count[si],
                                    inv_count[sj])
            da[si].addmm_(weights, bj)
            db[sj].addmm_(weights.T, ai)
    return da.mul_(coef), db.mul_(coef)


# ------------------------------------------------------------------------------------------ autograd glue
def _all_gather(t: torch.Tensor, group) -> torch.Tensor:
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t, group=group)
    return torch.cat(parts)


def _inverse_counts(labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``1 / #{j : labels_j = labels_i}`` for every i (the row normalisation of the targets), in O(B log B)."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return counts.to(dtype).reciprocal()[inverse]


def _row_stats(backend: str, x, y, inv_temp, block, x_labels, y_labels):
    if backend == "triton":
        from ._contrastive_triton import row_stats

        return row_stats(x, y, inv_temp, block, x_labels, y_labels)
    return _torch_row_stats(x, y, inv_temp, block, x_labels, y_labels)


def _grad_rows(backend: str, x, y, x_stats, y_stats, inv_temp, coef, block, x_labels, y_labels, x_inv_count,
               y_inv_count):
    if backend == "triton":
        from ._contrastive_triton import grad_rows

        return grad_rows(x, y, *x_stats, *y_stats, inv_temp, coef, block, x_labels, y_labels, x_inv_count,
                         y_inv_count)
    return _torch_grad_rows(x, y, *x_stats, *y_stats, inv_temp, coef, block, x_labels, y_labels, x_inv_count,
                            y_inv_count)


class _ContrastiveLoss(torch.autograd.Function):
    # Autocast is switched off inside: the tiles must accumulate in float32 (bfloat16 tile matmuls would cost
    # the loss ~3 digits), and the inputs are cast explicitly.
    @staticmethod
    def forward(ctx, a, b, temperature, idx, backend, block, group):
        with torch.autocast(a.device.type, enabled=False):
            return _ContrastiveLoss._forward(ctx, a, b, temperature, idx, backend, block, group)

    @staticmethod
    def backward(ctx, grad):
        with torch.autocast(grad.device.type, enabled=False):
            return _ContrastiveLoss._backward(ctx, grad)

    @staticmethod
    def _forward(ctx, a, b, temperature, idx, backend, block, group):
        if backend == "triton":  # the kernels load tiles in the input dtype and accumulate in float32
            acc_dtype = torch.float32
            x, y = a.detach().contiguous(), b.detach().contiguous()
        else:  # float32 (float64 for float64 inputs) copies, O(B·D): every tile product accumulates in it
            acc_dtype = torch.promote_types(a.dtype, torch.float32)
            x, y = a.detach().to(acc_dtype), b.detach().to(acc_dtype)
        temp = temperature.detach().to(acc_dtype).reshape(1)
        inv_temp = 1.0 / temp

        n_local = a.shape[0]
        world = 1 if group is None else dist.get_world_size(group)
        start = 0 if group is None else dist.get_rank(group) * n_local  # global index of this rank's first row
        if idx is None:  # a row's only positive is its own pair: labels = global row indices
            labels_all = torch.arange(n_local * world, device=a.device)
        else:
            labels_all = idx.to(torch.int64) if group is None else _all_gather(idx.to(torch.int64), group)
        labels = labels_all[start:start + n_local]
        inv_count_all = _inverse_counts(labels_all, acc_dtype)
        inv_count = inv_count_all[start:start + n_local]

        if group is None:
            x_all, y_all = x, y
            if backend == "triton":  # one kernel: rows of (a, b), then rows of (b, a) for the columns
                row_max, row_logsum, row_pos = _row_stats(backend, x, y, inv_temp, block, labels, labels)
                col_max, col_logsum, col_pos = _row_stats(backend, y, x, inv_temp, block, labels, labels)
            else:
                row_max, row_logsum, row_pos, col_max, col_logsum, col_pos = _torch_both_stats(
                    x, y, inv_temp, block, labels)
        else:
            x_all, y_all = _all_gather(x, group), _all_gather(y, group)
            row_max, row_logsum, row_pos = _row_stats(backend, x, y_all, inv_temp, block, labels, labels_all)
            col_max, col_logsum, col_pos = _row_stats(backend, y, x_all, inv_temp, block, labels, labels_all)
        n_global = n_local * world
        # CE of a row = r_i − Σ_j T_ij L_ij; the positives' mean is subtracted from the maximum first (exact
        # for a dominant single positive)
        row_terms = (row_max - row_pos.to(acc_dtype) * inv_count) + row_logsum
        col_terms = (col_max - col_pos.to(acc_dtype) * inv_count) + col_logsum
        loss = (row_terms.sum() + col_terms.sum()) / (2 * n_global)
        row_stats = torch.stack([row_max, row_logsum])
        col_stats = torch.stack([col_max, col_logsum])
        if group is None:
            row_stats_all, col_stats_all = row_stats, col_stats
        else:  # backward needs every rank's statistics (2·B_global floats each) for its own rows' gradients
            row_stats_all = _all_gather(row_stats.T, group).T
            col_stats_all = _all_gather(col_stats.T, group).T
            dist.all_reduce(loss, group=group)
        ctx.save_for_backward(x, y, x_all, y_all, row_stats, col_stats, row_stats_all, col_stats_all, temp,
                              labels, labels_all, inv_count, inv_count_all)
        ctx.backend, ctx.block, ctx.n_global, ctx.group = backend, block, n_global, group
        ctx.temperature_meta = (temperature.dtype, temperature.shape)
        ctx.input_dtype = a.dtype
        return loss.reshape(()).to(torch.promote_types(acc_dtype, torch.float32))

    @staticmethod
    def _backward(ctx, grad):
        (x, y, x_all, y_all, row_stats, col_stats, row_stats_all, col_stats_all, temp, labels, labels_all,
         inv_count, inv_count_all) = ctx.saved_tensors
        acc_dtype = temp.dtype
        inv_temp = 1.0 / temp
        coef = grad.to(acc_dtype).reshape(1) * inv_temp / (2 * ctx.n_global)  # dL = coef·τ·weights; L = S/τ
        if ctx.backend == "torch" and ctx.group is None:
            da, db = _torch_grad_both(x, y, *row_stats, *col_stats, inv_temp, coef, ctx.block, labels, inv_count)
        else:
            da = _grad_rows(ctx.backend, x, y_all, row_stats, col_stats_all, inv_temp, coef, ctx.block, labels,
                            labels_all, inv_count, inv_count_all)
            db = _grad_rows(ctx.backend, y, x_all, col_stats, row_stats_all, inv_temp, coef, ctx.block, labels,
                            labels_all, inv_count, inv_count_all)
        da, db = da.to(acc_dtype), db.to(acc_dtype)
        grad_temp = None
        if ctx.needs_input_grad[2]:  # Σ_ij dL_ij L_ij = Σ_i a_i · da_i over this rank's rows i
            grad_temp = -(x.to(acc_dtype) * da).sum() * inv_temp
            if ctx.group is not None:  # every rank's rows: the whole ∂loss/∂τ on every rank
                dist.all_reduce(grad_temp, group=ctx.group)
            t_dtype, t_shape = ctx.temperature_meta
            grad_temp = grad_temp.reshape(t_shape).to(t_dtype)
        return da.to(ctx.input_dtype), db.to(ctx.input_dtype), grad_temp, None, None, None, None


def _check(a: torch.Tensor, b: torch.Tensor, temperature: float | torch.Tensor, idx: torch.Tensor | None
           ) -> torch.Tensor:
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
    if idx is not None:
        if not isinstance(idx, torch.Tensor):
            raise ValueError(f"contrastive_loss: idx must be a tensor, got {type(idx).__name__}")
        if idx.shape != (a.shape[0],):
            raise ValueError(f"contrastive_loss: idx must have shape ({a.shape[0]},) (one per row of a), got "
                             f"{tuple(idx.shape)}")
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise ValueError(f"contrastive_loss: idx must be an integer tensor, got {idx.dtype}")
        if idx.device != a.device:
            raise ValueError(f"contrastive_loss: idx is on {idx.device} but a is on {a.device}")
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
    idx: torch.Tensor | None = None,
    backend: str | None = None,
    group: dist.ProcessGroup | None = None,
    *,
    block_size: int | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE on ``a @ b.T / temperature`` in ``O(B·D)`` memory; see the module docstring.

    ``a``, ``b``: ``(B, D)`` rows that match pairwise (same shape, dtype and device). ``temperature``: a
    positive float or one-element tensor (its gradient is returned when it requires grad). ``idx``: optional
    ``(B,)`` integer ids; rows sharing an id are all positives of each other (official VTC targets, each row
    normalised to sum 1). Returns a float32 scalar (float64 for float64 inputs on the torch path).
    ``group``: a ``torch.distributed`` process group (``dist.group.WORLD`` for all ranks) for the distributed
    form; every rank passes the same local batch size and calls ``backward()`` (the temperature gradient is
    summed across the group there). ``block_size``: tile edge (default 1024 for torch, 64 for Triton; Triton
    needs a power of two ≥ 16).
    """
    temperature = _check(a, b, temperature, idx)
    chosen = resolve_backend(backend, a, b)
    block = block_size or (TRITON_BLOCK if chosen == "triton" else TORCH_BLOCK)
    if block < 1 or (chosen == "triton" and (block < 16 or block & (block - 1))):
        raise ValueError(f"contrastive_loss: block_size {block} must be positive (a power of two ≥ 16 for "
                         "Triton)")
    if group is not None:
        sizes = _all_gather(torch.tensor([a.shape[0]], device=a.device), group).tolist()
        if len(set(sizes)) != 1:
            raise ValueError(f"contrastive_loss: every rank must pass the same local batch size, got {sizes}")
        has_idx = _all_gather(torch.tensor([int(idx is not None)], device=a.device), group).tolist()
        if len(set(has_idx)) != 1:
            raise ValueError("contrastive_loss: idx must be given on every rank or on none")
    return _ContrastiveLoss.apply(a, b, temperature, idx, chosen, block, group)
