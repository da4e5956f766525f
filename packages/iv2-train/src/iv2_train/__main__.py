"""``python -m iv2_train estimate ...``: will a model fit? Prints the per-GPU memory table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .estimate import estimate_memory, estimate_step_time


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iv2_train")
    sub = parser.add_subparsers(dest="command", required=True)
    est = sub.add_parser("estimate", help="per-GPU memory (and step time) of AdamW training")
    est.add_argument("--params", type=float, required=True, help="parameter count, e.g. 1e9")
    est.add_argument("--trainable", type=float, default=None, help="trainable parameters (default: all)")
    est.add_argument("--zero", type=int, default=1, choices=(0, 1, 2, 3), help="ZeRO stage")
    est.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs")
    est.add_argument("--precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    est.add_argument("--layers", type=int, default=0)
    est.add_argument("--hidden", type=int, default=0)
    est.add_argument("--heads", type=int, default=1)
    est.add_argument("--mlp-ratio", type=float, default=4.0)
    est.add_argument("--seq-len", type=int, default=0, help="tokens per sample")
    est.add_argument("--micro-batch", type=int, default=1, help="samples per GPU per micro-step")
    est.add_argument("--checkpointing", action="store_true", help="activation checkpointing on every block")
    est.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU")
    est.add_argument("--peak-tflops", type=float, default=0.0, help="one GPU's dense peak, for a step time")
    args = parser.parse_args(argv)

    result = estimate_memory(
        int(args.params),
        trainable_params=None if args.trainable is None else int(args.trainable),
        zero_stage=args.zero,
        world_size=args.gpus,
        precision=args.precision,
        num_layers=args.layers,
        hidden_size=args.hidden,
        seq_len=args.seq_len,
        micro_batch_size=args.micro_batch,
        num_heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        activation_checkpointing=args.checkpointing,
    )
    print(result.table())
    verdict = "fits" if result.fits(args.gpu_gib) else "does NOT fit"
    print(f"{verdict} in {args.gpu_gib:g} GiB (90% usable; a lower bound, real use is higher)")
    if args.peak_tflops > 0 and args.seq_len:
        timing = estimate_step_time(
            int(args.params),
            tokens_per_step=args.seq_len * args.micro_batch * args.gpus,
            world_size=args.gpus,
            peak_tflops=args.peak_tflops,
            num_layers=args.layers,
            hidden_size=args.hidden,
            seq_len=args.seq_len,
            activation_checkpointing=args.checkpointing,
        )
        print(f"about {timing['seconds_per_step']:.2f} s per step at 40% utilisation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
