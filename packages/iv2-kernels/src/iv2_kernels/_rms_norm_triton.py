"""Triton kernels of :mod:`iv2_kernels.rms_norm`: fused residual add + RMSNorm, forward and backward.

Forward, one program per row (the whole row in registers, width padded to a power of two and masked, so
1408 or 3200 work): ``s = x + residual`` (stored, it is the next residual stream), ``rstd = 1/sqrt(mean(s²) +
eps)`` in float32, ``y = weight · (s · rstd)`` with the same casts as the reference (normalised value rounded
to the input dtype, product in the promoted dtype of input and weight). ``rstd`` is kept for backward.

Backward, each program walks a contiguous run of rows: with ``n = s·rstd`` and ``g = dy · weight``,
``ds = rstd · (g − n · mean(g · n))`` (+ the incoming gradient of the returned sum), which is the gradient of
both ``x`` and ``residual``; ``dweight`` is accumulated per program in float32 and the per-program partial
rows are summed by torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._backend import fix_triton_interpreter

fix_triton_interpreter()

_TORCH_TO_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16,
                torch.float64: tl.float64}


@triton.jit
def _rms_norm_fwd_kernel(x_ptr, res_ptr, w_ptr, y_ptr, sum_ptr, rstd_ptr, width, eps,
                         HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr, OUT_DTYPE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < width
    x = tl.load(x_ptr + row * width + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = x + tl.load(res_ptr + row * width + cols, mask=mask, other=0.0)
        tl.store(sum_ptr + row * width + cols, x, mask=mask)
    xf = x.to(tl.float32)
    # float32 whatever type eps arrives in (torch.compile passes Python floats as fp64 scalars).
    rstd = (1.0 / tl.sqrt(tl.sum(xf * xf, 0) / width + eps)).to(tl.float32)
    tl.store(rstd_ptr + row, rstd)
    normed = (xf * rstd).to(x.dtype)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    y = normed.to(OUT_DTYPE) * w.to(OUT_DTYPE)
    tl.store(y_ptr + row * width + cols, y, mask=mask)


@triton.jit
def _rms_norm_bwd_kernel(dy_ptr, dsum_ptr, s_ptr, w_ptr, rstd_ptr, ds_ptr, dw_partial_ptr, n_rows, width,
                         rows_per_program, HAS_DSUM: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < width
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], tl.float32)
    first = pid * rows_per_program
    for i in range(0, rows_per_program):
        row = first + i
        if row < n_rows:
            offs = row.to(tl.int64) * width + cols
            s = tl.load(s_ptr + offs, mask=mask, other=0.0)
            sf = s.to(tl.float32)
            rstd = tl.load(rstd_ptr + row)
            normed = (sf * rstd).to(s.dtype).to(tl.float32)  # the rounded value the weight multiplied
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dw += dy * normed
            g = dy * w
            ds = rstd * g - sf * (rstd * rstd * rstd * tl.sum(g * sf, 0) / width)
            if HAS_DSUM:
                ds += tl.load(dsum_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(ds_ptr + offs, ds, mask=mask)
    tl.store(dw_partial_ptr + pid * width + cols, dw, mask=mask)


def _num_warps(block: int) -> int:
    return min(16, max(1, block // 256))


class _RMSNormTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, residual):
        shape, width = x.shape, x.shape[-1]
        x2 = x.contiguous().view(-1, width)
        n_rows = x2.shape[0]
        out_dtype = torch.promote_types(x.dtype, weight.dtype)
        y = torch.empty((n_rows, width), dtype=out_dtype, device=x.device)
        summed = torch.empty_like(x2) if residual is not None else x2
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(width)
        if n_rows:
            res2 = residual.contiguous().view(-1, width) if residual is not None else x2
            _rms_norm_fwd_kernel[(n_rows,)](x2, res2, weight.contiguous(), y, summed, rstd, width, eps,
                                            HAS_RESIDUAL=residual is not None, BLOCK=block,
                                            OUT_DTYPE=_TORCH_TO_TL[out_dtype], num_warps=_num_warps(block))
        ctx.save_for_backward(summed, weight, rstd)
        ctx.shape, ctx.has_residual = shape, residual is not None
        if residual is not None:
            return y.view(shape), summed.view(shape)
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy, dsum=None):
        summed, weight, rstd = ctx.saved_tensors
        n_rows, width = summed.shape
        dy2 = dy.contiguous().view(-1, width)
        has_dsum = dsum is not None
        dsum2 = dsum.contiguous().view(-1, width) if has_dsum else dy2
        ds = torch.empty(summed.shape, dtype=summed.dtype, device=summed.device)
        if summed.is_cuda:
            programs = torch.cuda.get_device_properties(summed.device).multi_processor_count * 4
        else:
            programs = 8  # interpreter: each program is a Python loop, keep them few
        programs = max(1, min(programs, n_rows))
        rows_per_program = triton.cdiv(max(n_rows, 1), programs)
        dw_partial = torch.zeros((programs, width), dtype=torch.float32, device=summed.device)
        block = triton.next_power_of_2(width)
        if n_rows:
            _rms_norm_bwd_kernel[(programs,)](dy2, dsum2, summed, weight.contiguous(), rstd, ds, dw_partial,
                                              n_rows, width, rows_per_program, HAS_DSUM=has_dsum, BLOCK=block,
                                              num_warps=_num_warps(block))
        dweight = dw_partial.sum(0).to(weight.dtype)
        ds = ds.view(ctx.shape)
        return ds, dweight, None, (ds if ctx.has_residual else None)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None
                    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Fused (add +) RMSNorm with Triton forward and backward kernels; same results as the reference."""
    if residual is not None and residual.dtype != x.dtype:
        # as the reference's ``x + residual``: the sum (and the norm) in the promoted dtype, e.g. a float32
        # residual stream with bfloat16 branch outputs under autocast; autograd casts the gradients back
        common = torch.promote_types(x.dtype, residual.dtype)
        x, residual = x.to(common), residual.to(common)
    return _RMSNormTriton.apply(x, weight, eps, residual)
