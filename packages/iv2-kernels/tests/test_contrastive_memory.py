"""Peak memory of contrastive_loss grows linearly in B; the plain a @ b.T loss grows quadratically.

Measured in a fresh process (memory_probe.py) with glibc's mmap threshold pinned, so every large tensor is
returned to the system when freed and the resident-set peak, reset before each run, follows live tensors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("memory_probe.py")
SMALL, LARGE, DIM = 1024, 4096, 64


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_is_linear_in_batch():
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    specs = [f"{impl}:{batch}" for impl in ("ours", "plain") for batch in (SMALL, LARGE)]
    proc = subprocess.run([sys.executable, str(PROBE), str(DIM), *specs], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    peak = {(impl, int(batch)): int(value) for impl, batch, value in map(str.split, proc.stdout.splitlines())}
    ours_growth = peak["ours", LARGE] - peak["ours", SMALL]
    plain_growth = peak["plain", LARGE] - peak["plain", SMALL]
    # linear: at most 16 float32 copies of the extra (B, D) rows, plus 4 MiB of allocator slack
    assert ours_growth <= 16 * (LARGE - SMALL) * DIM * 4 + (4 << 20), peak
    # the probe does see quadratic growth: the plain loss holds at least one more B × B float32 matrix
    assert plain_growth >= (LARGE**2 - SMALL**2) * 4, peak
    assert peak["ours", LARGE] * 10 < peak["plain", LARGE], peak
