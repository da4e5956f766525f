"""Triton kernels of :mod:`iv2_kernels.contrastive_loss` (the math is in that module's docstring).

Two kernels, each over row blocks of ``x`` streaming column blocks of ``y`` (``S = x @ y.T / τ``):

- ``lse_rows``: online log-sum-exp of every row of ``S``. The column log-sum-exps are the same kernel on
  ``(y, x)``, so neither pass ever holds more than a ``BLOCK × BLOCK`` tile.
- ``grad_rows``: ``coef · Σ_j (exp(S_ij − lse_x_i) + exp(S_ij − lse_y_j)) y_j``, the softmax part of ``da``
  (and of ``db`` when called on ``(b, a)``), recomputing each tile instead of storing it.

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

# Masked logits: finite (not -inf) so that padding rows never compute inf - inf.
_MASKED = -1.0e30


@triton.jit
def _lse_rows_kernel(x_ptr, y_ptr, inv_temp_ptr, lse_ptr, n_x, n_y, dim, stride_x, stride_y,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     DOT_PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    x = tl.load(x_ptr + rows[:, None] * stride_x + dims[None, :],
                mask=(rows[:, None] < n_x) & (dims[None, :] < dim), other=0.0)
    inv_temp = tl.load(inv_temp_ptr)
    run_max = tl.full([BLOCK_M], _MASKED, tl.float32)
    run_sum = tl.zeros([BLOCK_M], tl.float32)
    for start in range(0, n_y, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        y = tl.load(y_ptr + cols[:, None] * stride_y + dims[None, :],
                    mask=(cols[:, None] < n_y) & (dims[None, :] < dim), other=0.0)
        logits = tl.dot(x, tl.trans(y), input_precision=DOT_PRECISION) * inv_temp
        logits = tl.where(cols[None, :] < n_y, logits, _MASKED)
        new_max = tl.maximum(run_max, tl.max(logits, 1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), 1)
        run_max = new_max
    tl.store(lse_ptr + rows, run_max + tl.log(run_sum), mask=rows < n_x)


@triton.jit
def _grad_rows_kernel(x_ptr, y_ptr, lse_x_ptr, lse_y_ptr, inv_temp_ptr, coef_ptr, out_ptr, n_x, n_y, dim,
                      stride_x, stride_y, stride_out,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                      DOT_PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < n_x
    x = tl.load(x_ptr + rows[:, None] * stride_x + dims[None, :],
                mask=row_ok[:, None] & (dims[None, :] < dim), other=0.0)
    lse_x = tl.load(lse_x_ptr + rows, mask=row_ok, other=0.0)
    inv_temp = tl.load(inv_temp_ptr)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(0, n_y, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_y
        y = tl.load(y_ptr + cols[:, None] * stride_y + dims[None, :],
                    mask=col_ok[:, None] & (dims[None, :] < dim), other=0.0)
        lse_y = tl.load(lse_y_ptr + cols, mask=col_ok, other=0.0)
        logits = tl.dot(x, tl.trans(y), input_precision=DOT_PRECISION) * inv_temp
        logits = tl.where(col_ok[None, :], logits, _MASKED)
        weights = tl.exp(logits - lse_x[:, None]) + tl.exp(logits - lse_y[None, :])
        acc += tl.dot(weights.to(y.dtype), y, input_precision=DOT_PRECISION)
    acc = acc * tl.load(coef_ptr)
    tl.store(out_ptr + rows[:, None] * stride_out + dims[None, :], acc,
             mask=row_ok[:, None] & (dims[None, :] < dim))


def _prepare(x: torch.Tensor) -> torch.Tensor:
    # float64 has no fast tl.dot; the Triton path computes in float32 (the torch path keeps float64)
    return x.float().contiguous() if x.dtype == torch.float64 else x.contiguous()


def _block_d(dim: int) -> int:
    return max(16, triton.next_power_of_2(dim))


def lse_rows(x: torch.Tensor, y: torch.Tensor, inv_temp: torch.Tensor, block: int) -> torch.Tensor:
    """float32 ``(n_x,)``: ``lse_j (x_i · y_j · inv_temp)``."""
    x, y = _prepare(x), _prepare(y)
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(x.shape[0], block),)
    _lse_rows_kernel[grid](x, y, inv_temp.float().contiguous(), out, x.shape[0], y.shape[0], x.shape[1],
                           x.stride(0), y.stride(0), BLOCK_M=block, BLOCK_N=block,
                           BLOCK_D=_block_d(x.shape[1]), DOT_PRECISION=dot_precision(x.dtype))
    return out


def grad_rows(x: torch.Tensor, y: torch.Tensor, lse_x: torch.Tensor, lse_y: torch.Tensor,
              inv_temp: torch.Tensor, coef: torch.Tensor, block: int) -> torch.Tensor:
    """float32 ``(n_x, D)``: ``coef · Σ_j (exp(S_ij − lse_x_i) + exp(S_ij − lse_y_j)) y_j``."""
    x, y = _prepare(x), _prepare(y)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    grid = (triton.cdiv(x.shape[0], block),)
    _grad_rows_kernel[grid](x, y, lse_x.float().contiguous(), lse_y.float().contiguous(),
                            inv_temp.float().contiguous(), coef.float().contiguous(), out, x.shape[0],
                            y.shape[0], x.shape[1], x.stride(0), y.stride(0), out.stride(0),
                            BLOCK_M=block, BLOCK_N=block, BLOCK_D=_block_d(x.shape[1]),
                            DOT_PRECISION=dot_precision(x.dtype))
    return out
