"""On a machine with a CUDA GPU: the compiled Triton kernels (float32 and bfloat16) against float64."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_match_float64():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # this process interprets Triton
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("cuda_check.py"))], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch.bfloat16: ok" in proc.stdout
