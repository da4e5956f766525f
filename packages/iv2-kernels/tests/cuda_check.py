"""The Triton kernels compiled for a GPU (not interpreted), float32 and bfloat16, against float64.

Run by test_cuda.py in a process without TRITON_INTERPRET; exits non-zero on the first mismatch. Reuses the
float64 references and per-dtype checks of the CPU tests with ``device="cuda"``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import test_attention_pool
import test_contrastive_loss
import test_rms_norm
import torch

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def main() -> None:
    assert torch.cuda.is_available() and not os.environ.get("TRITON_INTERPRET")
    for dtype, tol in TOLERANCE.items():
        for shape in [*test_rms_norm.SHAPES, (4096, 1408)]:
            for residual in (False, True):
                test_rms_norm.run_case(shape, residual, dtype, "triton", tol, device="cuda")
        for batch in (1, 37, 300, 1000):
            test_contrastive_loss.check(batch, 64, "triton", None, dtype=dtype, tol=tol * 5, device="cuda")
        test_contrastive_loss.check(200, 64, "triton", None, dtype=dtype, tol=tol * 10, temperature=0.01,
                                    normalise=True, device="cuda")
        test_contrastive_loss.check(300, 64, "triton", None, dtype=dtype, tol=tol * 5, device="cuda",
                                    idx=test_contrastive_loss.make_idx(300, 40))
        for case in test_attention_pool.CASES:
            test_attention_pool.check(case, "triton", dtype=dtype, tol=tol * 5, device="cuda")
        print(f"{dtype}: ok")


if __name__ == "__main__":
    main()
