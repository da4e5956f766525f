"""Peak extra memory of one contrastive-loss forward + backward, measured in a fresh process.

Usage: ``python memory_probe.py DIM IMPL:BATCH [IMPL:BATCH ...]`` with IMPL ``ours`` or ``plain``. For each
run prints ``IMPL BATCH BYTES``: how far the resident set rose above its level before that run (inputs
allocated, a tiny warm-up done). Run it with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave
the resident set at once and successive runs in one process do not see each other. On Linux the peak is reset first
(``/proc/self/clear_refs``) and read back as ``VmHWM``; elsewhere ``ru_maxrss`` is used, which can only
under-report. torch's CPU allocator keeps no statistics, hence the resident set. Used by
test_contrastive_memory.py and benchmarks/kernels_contrastive.py.
"""

from __future__ import annotations

import resource
import sys

import torch

from iv2_kernels import contrastive_loss, contrastive_loss_reference


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def start_peak() -> int:
    """Reset the peak to the current resident set and return that baseline in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_bytes() -> int:
    try:
        return _status_kib("VmHWM") * 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(impl: str, batch: int, dim: int) -> int:
    fn = (lambda a, b: contrastive_loss(a, b, 0.07, backend="torch")) if impl == "ours" else (
        lambda a, b: contrastive_loss_reference(a, b, 0.07))
    fn(torch.randn(8, dim, requires_grad=True), torch.randn(8, dim, requires_grad=True)).backward()  # warm-up
    a = torch.randn(batch, dim, requires_grad=True)
    b = torch.randn(batch, dim, requires_grad=True)
    before = start_peak()
    fn(a, b).backward()
    return peak_bytes() - before


if __name__ == "__main__":
    torch.set_num_threads(1)
    dim = int(sys.argv[1])
    for spec in sys.argv[2:]:
        impl, batch = spec.split(":")
        print(impl, batch, run(impl, int(batch), dim), flush=True)
