"""``iv2-encoders`` command line: ``extract`` features, ``list`` the registered models."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iv2-encoders", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list the registered encoder names")

    ex = sub.add_parser("extract", help="extract video features into safetensors files")
    ex.add_argument("inputs", nargs="+", help="video files or folders (searched recursively)")
    ex.add_argument("--model", required=True, help="registered name, e.g. internvideo2-1b (see `list`)")
    ex.add_argument("--checkpoint", help="weights: a file in any released layout, or a Hub repo_id[:file]")
    ex.add_argument("--checkpoint-frames", type=int, default=None,
                    help="frame count the checkpoint was trained with, when it cannot be inferred")
    ex.add_argument("--num-frames", type=int, default=8, help="frames per clip (default 8)")
    ex.add_argument("--size", type=int, default=None, help="frame size (default: the model's, 224)")
    ex.add_argument("--batch-size", type=int, default=8, help="clips per forward pass")
    ex.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes")
    ex.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda when available)")
    ex.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="autocast dtype of the forward pass (outputs are saved as float32)")
    ex.add_argument("--attn-impl", choices=["sdpa", "flash"], default=None, help="attention kernel")
    ex.add_argument("--tokens", action="store_true", help="also save the token features (1 + N, D)")
    ex.add_argument("--window", type=int, default=None,
                    help="sliding windows of N frames (one embedding each, for temporal localisation)")
    ex.add_argument("--stride", type=int, default=None, help="window stride in frames (default: --window)")
    ex.add_argument("--output", "-o", required=True, help="output folder (mirrors the inputs' paths)")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        from .registry import list_models

        print("\n".join(list_models()))
        return 0
    if args.stride is not None and args.window is None:
        build_parser().error("--stride needs --window")
    for name in ("num_frames", "batch_size", "window", "stride"):
        value = getattr(args, name)
        if value is not None and value < 1:
            build_parser().error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    from .extract import main_extract

    return main_extract(args)


if __name__ == "__main__":
    sys.exit(main())
