"""Compile every Triton kernel ahead of time for a GPU target (default sm_90) — no GPU needed.

Catches what Triton's interpreter lets through (non-constexpr globals, mismatched ``tl.dot`` operand types,
loop-carried type changes, shapes ``tl.dot`` cannot tile) by running the full compiler down to a cubin.
Run as ``python compile_check.py [capability]``; exits non-zero if any kernel fails. Slow (about 10 s per
kernel variant on a CPU core), hence not part of the default test run (test_compile.py runs it on request).
"""

from __future__ import annotations

import os
import sys

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("compile_check.py must run without TRITON_INTERPRET")

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from iv2_kernels import _attention_pool_triton as pool
from iv2_kernels import _contrastive_triton as contrastive
from iv2_kernels import _rms_norm_triton as norm


def variants():
    """(kernel, pointer/scalar signature, constexprs, num_warps) for float32 and bfloat16 inputs."""
    for dt, tl_dt, prec in (("fp32", tl.float32, "ieee"), ("bf16", tl.bfloat16, None)):
        for flag in (False, True):
            yield norm._rms_norm_fwd_kernel, {
                "x_ptr": f"*{dt}", "res_ptr": f"*{dt}", "w_ptr": f"*{dt}", "y_ptr": f"*{dt}", "sum_ptr": f"*{dt}",
                "rstd_ptr": "*fp32", "width": "i32", "eps": "fp32"}, {
                "HAS_RESIDUAL": flag, "BLOCK": 4096, "OUT_DTYPE": tl_dt}, 16
            yield norm._rms_norm_bwd_kernel, {
                "dy_ptr": f"*{dt}", "dsum_ptr": f"*{dt}", "s_ptr": f"*{dt}", "w_ptr": f"*{dt}", "rstd_ptr": "*fp32",
                "ds_ptr": f"*{dt}", "dw_partial_ptr": "*fp32", "n_rows": "i32", "width": "i32",
                "rows_per_program": "i32"}, {"HAS_DSUM": flag, "BLOCK": 2048}, 8
            yield pool._ln_project_kernel, {
                "x_ptr": f"*{dt}", "w_ptr": "*fp32", "mean_ptr": "*fp32", "rstd_ptr": "*fp32", "out_ptr": "*fp32",
                "n_tok": "i32", "width": "i32", "n_w": "i32", "eps": "fp32"}, {
                "COMPUTE_STATS": flag, "BLOCK_N": pool.BLOCK_N, "BLOCK_C": pool.BLOCK_C, "BLOCK_J": 16,
                "DOT_PRECISION": "ieee"}, 4
        common = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": 256, "DOT_PRECISION": prec}
        warps = contrastive._num_warps(64, 256)
        yield contrastive._row_stats_kernel, {
            "x_ptr": f"*{dt}", "y_ptr": f"*{dt}", "x_label_ptr": "*i64", "y_label_ptr": "*i64", "inv_temp_ptr": "*fp32",
            "max_ptr": "*fp32", "logsum_ptr": "*fp32", "pos_ptr": "*fp32", "n_x": "i32", "n_y": "i32", "dim": "i32",
            "stride_x": "i32", "stride_y": "i32"}, common, warps
        yield contrastive._grad_rows_kernel, {
            "x_ptr": f"*{dt}", "y_ptr": f"*{dt}", "x_max_ptr": "*fp32", "x_logsum_ptr": "*fp32", "y_max_ptr": "*fp32",
            "y_logsum_ptr": "*fp32", "x_label_ptr": "*i64", "y_label_ptr": "*i64", "x_inv_count_ptr": "*fp32",
            "y_inv_count_ptr": "*fp32", "inv_temp_ptr": "*fp32", "coef_ptr": "*fp32", "out_ptr": "*fp32", "n_x": "i32",
            "n_y": "i32", "dim": "i32", "stride_x": "i32", "stride_y": "i32", "stride_out": "i32"}, common, warps
        blocks = {"BLOCK_N": pool.BLOCK_N, "BLOCK_C": pool.BLOCK_C, "DOT_PRECISION": "ieee"}
        yield pool._ln_pool_kernel, {
            "x_ptr": f"*{dt}", "p_ptr": "*fp32", "mean_ptr": "*fp32", "rstd_ptr": "*fp32", "out_ptr": "*fp32",
            "n_tok": "i32", "width": "i32", "n_w": "i32"}, {**blocks, "BLOCK_J": 16}, 4
        yield pool._ln_backward_kernel, {
            "x_ptr": f"*{dt}", "a_ptr": "*fp32", "m_ptr": "*fp32", "mean_ptr": "*fp32", "rstd_ptr": "*fp32",
            "dx_ptr": "*fp32", "n_tok": "i32", "width": "i32", "n_w": "i32"}, {**blocks, "BLOCK_J": 32}, 4


def main() -> None:
    target = GPUTarget("cuda", int(sys.argv[1]) if len(sys.argv) > 1 else 90, 32)
    failures = 0
    for kernel, signature, constexprs, num_warps in variants():
        source = ASTSource(fn=kernel, signature={**signature, **dict.fromkeys(constexprs, "constexpr")},
                           constexprs=constexprs)
        label = f"{kernel.__name__} {signature['x_ptr' if 'x_ptr' in signature else 'dy_ptr']} {constexprs}"
        try:
            compiled = triton.compile(source, target=target, options={"num_warps": num_warps})
            assert "cubin" in compiled.asm
            print(f"ok    {label}", flush=True)
        except Exception as error:
            failures += 1
            print(f"FAIL  {label}: {type(error).__name__}: {error}", flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
