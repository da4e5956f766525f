"""Benchmark: iv2_kernels.contrastive_loss vs the plain ``a @ b.T`` + cross-entropy loss, forward + backward.

For each batch size, both implementations run on the same inputs; the table gives the median time of a
forward + backward and the peak extra memory of one (above what the inputs already hold):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
- CPU: the process's peak resident set (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before each
  run). torch's CPU allocator keeps no statistics, so the script re-executes itself with glibc's
  ``MALLOC_MMAP_THRESHOLD_`` pinned: every large tensor is then returned to the system when freed, and the
  resident set follows live tensor memory.

"ours" is ``backend="auto"``: Triton kernels on CUDA, the blockwise torch path on CPU. ``--idx-group K``
gives both losses official VTC targets with every id shared by K rows at random places (K
captions per video).

    python benchmarks/kernels_contrastive.py [--device cpu|cuda] [--dtype float32] [--batch 4096 12288]
                                             [--dim 256] [--repeats 3] [--threads N] [--idx-group K] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

from iv2_kernels import contrastive_loss, contrastive_loss_reference

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


# ---------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak extra memory of a block of work on ``device``, in bytes (``None`` where it cannot be measured)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        self.peak: int | None = None
        self.base: int | None = None
        if self.device.type == "cpu" and MMAP_ENV not in os.environ:
            return self  # without the pinned threshold the resident set does not follow tensors: n/a
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as clear:
                    clear.write("5")  # VmHWM := VmRSS
                self.base = _status_kib("VmRSS") * 1024
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        elif self.base is not None:
            self.peak = _status_kib("VmHWM") * 1024 - self.base


def ensure_pinned_mmap_threshold() -> None:
    """Re-execute this script with glibc's mmap threshold pinned (CPU memory numbers depend on it)."""
    if sys.platform.startswith("linux") and MMAP_ENV not in os.environ:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "65536"})


# ---------------------------------------------------------------------------------------------- timing
def measure(fn: Callable[[], None], reset: Callable[[], None], device: torch.device, repeats: int
            ) -> tuple[float, float, int | None]:
    """(median wall seconds, median process CPU seconds, peak extra bytes of one call) of ``fn``.

    One untimed warm-up call first; ``reset`` (dropping the previous call's gradients) runs before every call,
    outside the measured region, so the peak counts what one call allocates. Process CPU time is reported
    beside wall time because a shared machine makes wall time noisy (with one thread it is the better guide).
    """
    reset()
    fn()
    reset()
    with PeakMemory(device) as mem:
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        reset()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), mem.peak


def fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.1f} MiB"


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} thread(s)"


def run_batch(batch: int, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(batch, args.dim, device=device, dtype=dtype, generator=gen)
    b = torch.randn(batch, args.dim, device=device, dtype=dtype, generator=gen)
    a = torch.nn.functional.normalize(a, dim=1).requires_grad_()
    b = torch.nn.functional.normalize(b, dim=1).requires_grad_()
    idx = None
    if args.idx_group:
        idx = (torch.randperm(batch, generator=torch.Generator().manual_seed(1)) // args.idx_group).to(device)

    def reset() -> None:
        a.grad = b.grad = None

    def ours() -> None:
        contrastive_loss(a, b, args.temperature, idx=idx).backward()

    def plain() -> None:
        contrastive_loss_reference(a, b, args.temperature, idx=idx).backward()

    result = {"batch": batch, "ours": measure(ours, reset, device, args.repeats)}
    with torch.no_grad():
        value_ours = contrastive_loss(a, b, args.temperature, idx=idx).item()
    if args.skip_plain_above is None or batch <= args.skip_plain_above:
        result["plain"] = measure(plain, reset, device, args.repeats)
        with torch.no_grad():
            result["diff"] = abs(value_ours - contrastive_loss_reference(a, b, args.temperature, idx=idx).item())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, nargs="+", default=[4096, 12288])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-plain-above", type=int, default=None,
                        help="run only ours for batches above this (the plain loss may not fit)")
    parser.add_argument("--idx-group", type=int, default=None,
                        help="official VTC targets: every id shared by this many rows (default: no idx)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--time-only", action="store_true",
                        help="CPU: keep glibc's default allocator (faster, no page fault per tensor); memory n/a")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu" and not args.time_only:
        ensure_pinned_mmap_threshold()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    rows = [run_batch(batch, args, device, dtype) for batch in args.batch]

    header = (f"device: {describe(device)} | dtype: {args.dtype} | D = {args.dim} | temperature "
              f"{args.temperature} | idx: {f'groups of {args.idx_group}' if args.idx_group else 'none'} | forward + backward, median of {args.repeats} | torch {torch.__version__}")
    cpu = device.type == "cpu"
    cols = ["B", "ours time", "plain time", "time ratio"] + (["ours CPU time", "plain CPU time"] if cpu else [])
    cols += ["ours peak", "plain peak", "memory ratio", "|Δloss|"]
    lines = []
    for r in rows:
        t_ours, c_ours, m_ours = r["ours"]
        t_plain, c_plain, m_plain = r.get("plain", (None, None, None))
        line = [str(r["batch"]), f"{t_ours * 1e3:,.0f} ms", f"{t_plain * 1e3:,.0f} ms" if t_plain else "skipped",
                f"{t_ours / t_plain:.2f}×" if t_plain else "–"]
        if cpu:
            line += [f"{c_ours * 1e3:,.0f} ms", f"{c_plain * 1e3:,.0f} ms" if c_plain else "–"]
        line += [fmt_bytes(m_ours), fmt_bytes(m_plain), f"{m_plain / m_ours:.1f}× less" if m_plain and m_ours else "–",
                 f"{r['diff']:.1e}" if "diff" in r else "–"]
        lines.append(line)
    print(header)
    if args.markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
        for line in lines:
            print("  ".join(v.rjust(w) for v, w in zip(line, widths)))
    print(f"(peak RSS of the whole run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:,.0f} MiB)"
          if device.type == "cpu" else "")


if __name__ == "__main__":
    main()
