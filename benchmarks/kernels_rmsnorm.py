"""Benchmark: iv2_kernels.rms_norm / add_rms_norm (fused add + RMSNorm) forward + backward vs other RMSNorm implementations.

Rows (whichever are available on the device):

- ``iv2 triton`` — ``rms_norm`` / ``add_rms_norm(..., backend="triton")``, the fused Triton kernels (CUDA only; Triton's CPU
  interpreter is a debugging tool, not timed);
- ``iv2 torch`` — ``rms_norm(..., backend="torch")``, the reference the encoder runs on CPU;
- ``F.rms_norm`` — ``torch.nn.functional.rms_norm`` (plus a separate ``x + residual`` when fused add is on);
- ``compiled`` — ``torch.compile`` of the torch reference (CUDA only; inductor's CPU path needs a compiler);
- ``liger`` — liger-kernel's ``LigerRMSNormFunction`` if installed (CUDA only).

Time is the median forward + backward; "GB/s" counts the bytes an ideal fused kernel must move (read x [and
residual], write y [and the sum]; read dy [and the sum's grad], the saved input, write dx) over that time, and
"% of peak" divides by the device's memory bandwidth (``--peak-gbs``, or a small table of known GPUs).
Peak memory is measured as in kernels_contrastive.py; on CPU that pins glibc's mmap threshold, which adds
a page fault per tensor page to every run — pass ``--time-only`` for CPU timings with the default allocator.

    python benchmarks/kernels_rmsnorm.py [--device cuda] [--dtype bfloat16] [--rows 16384] [--widths 1408 3200]
                                         [--residual] [--repeats 20] [--markdown]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from kernels_contrastive import PeakMemory, describe, ensure_pinned_mmap_threshold, fmt_bytes

from iv2_kernels import add_rms_norm, add_rms_norm_reference, rms_norm, rms_norm_reference

KNOWN_BANDWIDTH_GBS = {"H100 80GB HBM3": 3352, "H100 PCIe": 2039, "H200": 4800, "A100-SXM4-80GB": 2039,
                       "A100-SXM4-40GB": 1555, "A100 80GB PCIe": 1935, "L4": 300, "L40S": 864}


def peak_bandwidth(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbs for key, gbs in KNOWN_BANDWIDTH_GBS.items() if key in name), None)


def candidates(device: torch.device, residual: bool, eps: float) -> dict[str, Callable]:
    def iv2(backend):
        def run(x, w, r):
            return rms_norm(x, w, eps, backend=backend) if r is None else add_rms_norm(x, r, w, eps, backend=backend)

        return run

    def functional(x, w, r):
        s = x + r if r is not None else x
        y = F.rms_norm(s, (s.shape[-1],), w, eps)
        return (y, s) if r is not None else y

    impls = {"iv2 torch": iv2("torch"), "F.rms_norm": functional}
    if device.type == "cuda":
        impls = {"iv2 triton": iv2("triton"), **impls,
                 "compiled": torch.compile(lambda x, w, r: rms_norm_reference(x, w, eps) if r is None
                                           else add_rms_norm_reference(x, r, w, eps))}
        if importlib.util.find_spec("liger_kernel") is not None:
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            def liger(x, w, r):
                s = x + r if r is not None else x
                y = LigerRMSNormFunction.apply(s, w, eps)
                return (y, s) if r is not None else y

            impls["liger"] = liger
    return impls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--rows", type=int, default=None, help="default: 16384 on CUDA, 2048 on CPU")
    parser.add_argument("--widths", type=int, nargs="+", default=[1408, 3200])
    parser.add_argument("--residual", action="store_true", help="fused residual add (y, x + residual)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 50 on CUDA, 5 on CPU")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peak-gbs", type=float, default=None, help="device memory bandwidth, GB/s")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--time-only", action="store_true",
                        help="CPU: keep glibc's default allocator (faster, no page fault per tensor); memory n/a")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda and not args.time_only:
        ensure_pinned_mmap_threshold()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    rows = args.rows or (16384 if cuda else 2048)
    repeats = args.repeats or (50 if cuda else 5)
    bandwidth = peak_bandwidth(device, args.peak_gbs)

    table = []
    for width in args.widths:
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(rows, width, device=device, dtype=dtype, generator=gen).requires_grad_()
        r = torch.randn(rows, width, device=device, dtype=dtype, generator=gen).requires_grad_() \
            if args.residual else None
        w = (1 + 0.1 * torch.randn(width, device=device, generator=gen)).to(dtype).requires_grad_()
        grad_y = torch.randn(rows, width, device=device, dtype=dtype, generator=gen)
        tensors_moved = 8 if args.residual else 5  # ideal fused fwd + bwd traffic, in (rows × width) tensors
        ideal_bytes = tensors_moved * rows * width * x.element_size()
        baseline = None
        for name, fn in candidates(device, args.residual, 1e-6).items():
            def reset(x=x, w=w, r=r):
                x.grad = w.grad = None
                if r is not None:
                    r.grad = None

            def step(fn=fn, x=x, w=w, r=r, grad_y=grad_y):
                out = fn(x, w, r)
                y = out[0] if isinstance(out, tuple) else out
                y.backward(grad_y)

            try:
                for _ in range(3):
                    reset()
                    step()  # warm-up (and compilation)
                reset()
                with PeakMemory(device) as mem:  # what one forward + backward allocates
                    step()
                times = []
                for _ in range(repeats):
                    reset()
                    if cuda:
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    step()
                    if cuda:
                        torch.cuda.synchronize(device)
                    times.append(time.perf_counter() - start)
            except Exception as error:  # a baseline that does not run here is reported, not fatal
                table.append([str(width), name, f"failed: {type(error).__name__}", "", "", "", ""])
                continue
            seconds = statistics.median(times)
            baseline = baseline or (name, seconds)
            gbs = ideal_bytes / seconds / 1e9
            table.append([str(width), name, f"{seconds * 1e3:,.3f} ms", f"{gbs:,.0f}" if gbs >= 10 else f"{gbs:.2f}",
                          f"{100 * gbs / bandwidth:.0f}%" if bandwidth else "n/a", fmt_bytes(mem.peak),
                          f"{seconds / baseline[1]:.2f}× {baseline[0]}"])

    print(f"device: {describe(device)} | dtype: {dtype} | rows: {rows} | residual: {args.residual} | "
          f"forward + backward, median of {repeats} | peak bandwidth: {bandwidth or 'unknown'} GB/s | "
          f"torch {torch.__version__}")
    cols = ["width", "implementation", "time", "GB/s", "% of peak", "peak memory", "time vs first"]
    if args.markdown:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
        for line in table:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(cols)]
        print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
        for line in table:
            print("  ".join(v.rjust(w) for v, w in zip(line, widths)))


if __name__ == "__main__":
    main()
