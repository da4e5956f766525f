"""Triton kernels of :mod:`iv2_kernels.contrastive_loss` (the math is in that module's docstring).

Two kernels, each over row blocks of ``x`` streaming column blocks of ``y`` (``S = x @ y.T / τ``):

- ``row_stats``: online log-sum-exp of every row of ``S`` (kept as max and log-sum) and the sum of the
  positive logits ``Σ_j [label_i = label_j] S_ij`` read from the same tiles (the target mask is rebuilt per
  tile from the two label vectors). The column statistics are the same kernel on ``(y, x)``, so neither pass
  ever holds more than a ``BLOCK × BLOCK`` tile.
- ``grad_rows``: ``coef · Σ_j (exp(S_ij − r_i) + exp(S_ij − k_j) − M_ij (1/c_i + 1/c_j)) y_j``, which is ``da``
  (and ``db`` when called on ``(b, a)``), recomputing each tile instead of storing it.

Each program keeps its ``x`` rows and a ``BLOCK × D`` float32 accumulator resident (D padded to a power
of two).
``1/τ`` and ``coef`` are read from one-element device tensors, so no host sync happens here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._backend import dot_precision, fix_triton_interpreter

fix_triton_interpreter()

# Masked logits: finite (not -inf) so that padding rows never compute inf - inf. A constexpr: compiled
# kernels may read only constexpr globals.
_MASKED = tl.constexpr(-1.0e30)


@triton.jit
def _row_stats_kernel(x_ptr, y_ptr, x_label_ptr, y_label_ptr, inv_temp_ptr, max_ptr, logsum_ptr, pos_ptr, n_x, n_y,
                      dim, stride_x, stride_y, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      DOT_PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    x = tl.load(x_ptr + rows[:, None] * stride_x + dims[None, :],
                mask=(rows[:, None] < n_x) & (dims[None, :] < dim), other=0.0)
    x_label = tl.load(x_label_ptr + rows, mask=rows < n_x, other=0)
    inv_temp = tl.load(inv_temp_ptr)
    run_max = tl.full([BLOCK_M], _MASKED, tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)
    positive = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, n_y, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        y = tl.load(y_ptr + cols[:, None] * stride_y + dims[None, :],
                    mask=(cols[:, None] < n_y) & (dims[None, :] < dim), other=0.0)
        y_label = tl.load(y_label_ptr + cols, mask=cols < n_y, other=0)
        logits = tl.dot(x, tl.trans(y), input_precision=DOT_PRECISION) * inv_temp
        logits = tl.where(cols[None, :] < n_y, logits, _MASKED)
        same = (x_label[:, None] == y_label[None, :]) & (cols[None, :] < n_y)
        positive += tl.sum(tl.where(same, logits, 0.0), 1)
        new_max = tl.maximum(run_max, tl.max(logits, 1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), 1)
        run_max = new_max
    row_ok = rows < n_x
    tl.store(max_ptr + rows, run_max, mask=row_ok)
    tl.store(logsum_ptr + rows, tl.log(run_sum), mask=row_ok)
    tl.store(pos_ptr + rows, positive, mask=row_ok)


@triton.jit
def _grad_rows_kernel(x_ptr, y_ptr, x_max_ptr, x_logsum_ptr, y_max_ptr, y_logsum_ptr, x_label_ptr, y_label_ptr,
                      x_inv_count_ptr, y_inv_count_ptr, inv_temp_ptr, coef_ptr, out_ptr, n_x, n_y, dim, stride_x,
                      stride_y, stride_out, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      DOT_PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < n_x
    x = tl.load(x_ptr + rows[:, None] * stride_x + dims[None, :],
                mask=row_ok[:, None] & (dims[None, :] < dim), other=0.0)
    x_max = tl.load(x_max_ptr + rows, mask=row_ok, other=0.0)
    x_logsum = tl.load(x_logsum_ptr + rows, mask=row_ok, other=0.0)
    x_label = tl.load(x_label_ptr + rows, mask=row_ok, other=0)
    x_inv_count = tl.load(x_inv_count_ptr + rows, mask=row_ok, other=0.0)
    inv_temp = tl.load(inv_temp_ptr)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, n_y, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_y
        y = tl.load(y_ptr + cols[:, None] * stride_y + dims[None, :],
                    mask=col_ok[:, None] & (dims[None, :] < dim), other=0.0)
        y_max = tl.load(y_max_ptr + cols, mask=col_ok, other=0.0)
        y_logsum = tl.load(y_logsum_ptr + cols, mask=col_ok, other=0.0)
        y_label = tl.load(y_label_ptr + cols, mask=col_ok, other=0)
        y_inv_count = tl.load(y_inv_count_ptr + cols, mask=col_ok, other=0.0)
        logits = tl.dot(x, tl.trans(y), input_precision=DOT_PRECISION) * inv_temp
        logits = tl.where(col_ok[None, :], logits, _MASKED)
        weights = (tl.exp((logits - x_max[:, None]) - x_logsum[:, None])
                   + tl.exp((logits - y_max[None, :]) - y_logsum[None, :]))
        # the −targets term, subtracted here where p_ii ≈ 1 is still exact
        same = (x_label[:, None] == y_label[None, :]) & col_ok[None, :]
        weights = tl.where(same, weights - (x_inv_count[:, None] + y_inv_count[None, :]), weights)
        acc += tl.dot(weights.to(y.dtype), y, input_precision=DOT_PRECISION)
    acc = acc * tl.load(coef_ptr)
    tl.store(out_ptr + rows[:, None] * stride_out + dims[None, :], acc,
             mask=row_ok[:, None] & (dims[None, :] < dim))


def _prepare(x: torch.Tensor) -> torch.Tensor:
    # float64 has no fast tl.dot; the Triton path computes in float32 (the torch path keeps float64)
    return x.float().contiguous() if x.dtype == torch.float64 else x.contiguous()


def _block_d(dim: int) -> int:
    return max(16, triton.next_power_of_2(dim))


def _num_warps(block: int, block_d: int) -> int:
    # an x tile and a float32 accumulator of block × block_d each: more warps spread the registers
    return 8 if block * block_d >= 64 * 256 else 4


def row_stats(x: torch.Tensor, y: torch.Tensor, inv_temp: torch.Tensor, block: int, x_labels: torch.Tensor,
              y_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 ``(n_x,)`` each: row max of ``S = x @ y.T · inv_temp``, log Σ exp(S − max), and
    ``Σ_j [x_labels_i = y_labels_j] S_ij``."""
    x, y = _prepare(x), _prepare(y)
    row_max, logsum, positive = (torch.empty(x.shape[0], dtype=torch.float32, device=x.device) for _ in range(3))
    grid = (triton.cdiv(x.shape[0], block),)
    _row_stats_kernel[grid](x, y, x_labels.contiguous(), y_labels.contiguous(), inv_temp.float().contiguous(),
                            row_max, logsum, positive, x.shape[0], y.shape[0], x.shape[1], x.stride(0),
                            y.stride(0), BLOCK_M=block,
                            BLOCK_N=block, BLOCK_D=_block_d(x.shape[1]), DOT_PRECISION=dot_precision(x.dtype),
                            num_warps=_num_warps(block, _block_d(x.shape[1])))
    return row_max, logsum, positive


def grad_rows(x: torch.Tensor, y: torch.Tensor, x_max: torch.Tensor, x_logsum: torch.Tensor,
              y_max: torch.Tensor, y_logsum: torch.Tensor, inv_temp: torch.Tensor, coef: torch.Tensor,
              block: int, x_labels: torch.Tensor, y_labels: torch.Tensor, x_inv_count: torch.Tensor,
              y_inv_count: torch.Tensor) -> torch.Tensor:
    """float32 ``(n_x, D)``: ``coef · Σ_j (exp(S_ij − r_i) + exp(S_ij − k_j) − M_ij (1/c_i + 1/c_j)) y_j`` with
    ``M_ij = [x_labels_i = y_labels_j]`` and ``1/c`` the inverse counts."""
    x, y = _prepare(x), _prepare(y)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(x.shape[0], block),)
    stats = [t.float().contiguous() for t in (x_max, x_logsum, y_max, y_logsum)]
    _grad_rows_kernel[grid](x, y, *stats, x_labels.contiguous(), y_labels.contiguous(),
                            x_inv_count.float().contiguous(), y_inv_count.float().contiguous(),
                            inv_temp.float().contiguous(), coef.float().contiguous(), out,
                            x.shape[0], y.shape[0], x.shape[1], x.stride(0), y.stride(0), out.stride(0),
                            BLOCK_M=block, BLOCK_N=block, BLOCK_D=_block_d(x.shape[1]),
                            DOT_PRECISION=dot_precision(x.dtype), num_warps=_num_warps(block, _block_d(x.shape[1])))
    return out
