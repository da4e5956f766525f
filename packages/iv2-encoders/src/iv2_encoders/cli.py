"""``iv2-encoders`` command line (also ``iv2 extract`` and ``iv2 models``): ``extract`` features, ``models`` lists
the encoder names and released weight tags. Building the parser imports no torch, so ``--help`` is fast."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from iv2_data.command_line import (
    EXIT_CODES_HELP,
    EXIT_OK,
    HelpFormatter,
    non_negative_int,
    positive_int,
    run_command,
)

EXTRACT_DESCRIPTION = """Extract video features with an InternVideo2 encoder into one safetensors file per video.

Inputs are video files or folders (searched recursively). Outputs mirror each video's path relative to the
folder it was found in (a file given alone goes at the top of --output), with .safetensors appended:
  videos/a/clip.mp4 given as "videos"  ->  OUTPUT/a/clip.mp4.safetensors
Each file holds "pooled" (the attention-pooled embedding), with --tokens also "tokens", with --window also
"window_frames"; OUTPUT/manifest.jsonl has one row per input (status ok or error). A broken video is recorded
and the run goes on. Rerunning the same command skips finished outputs and resumes an interrupted run;
outputs made with other settings (weights, frames, size, preprocessing, windows) stop the run before any work
unless --overwrite. Read the features back with safetensors.torch.load_file(PATH)["pooled"]."""

EXTRACT_EPILOG = (
    "examples:\n"
    "  iv2 extract --model internvideo2-tiny --num-frames 4 --output out videos/\n"
    "  iv2 extract --model internvideo2-1b.stage2-f4 --dtype bfloat16 --output feats videos/  (released weights)\n"
    "  iv2 extract --model internvideo2-1b --checkpoint ckpt.pt --window 16 --stride 8 --output feats long.mp4\n\n"
    + EXIT_CODES_HELP
)


def build_parser(prog: str = "iv2-encoders") -> argparse.ArgumentParser:
    """The ``iv2-encoders`` parser; ``prog`` is the command as typed (``"iv2"`` through the umbrella, so that
    errors read ``iv2 extract: error: ...``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The InternVideo2 video encoder: extract features of videos, list the models.",
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser(
        "models", aliases=["list"], help="list the encoder names and the released weight tags",
        description="The encoder architectures (random weights unless --checkpoint is given) and the tagged "
        "names of released weights (fetched from the Hugging Face Hub when used as --model).",
        epilog=EXIT_CODES_HELP, formatter_class=HelpFormatter,
    )  # fmt: skip
    models.set_defaults(command_parser=models)

    ex = sub.add_parser(
        "extract", help="extract video features into safetensors files", description=EXTRACT_DESCRIPTION,
        epilog=EXTRACT_EPILOG, formatter_class=HelpFormatter,
    )  # fmt: skip
    ex.set_defaults(command_parser=ex)
    ex.add_argument("inputs", nargs="+", metavar="INPUT", help="video files or folders (searched recursively)")
    ex.add_argument("--model", required=True,
                    help="encoder name, e.g. internvideo2-1b, or a released-weights tag such as "
                         "internvideo2-1b.stage2-f4 (list them with: iv2 models)")
    ex.add_argument("--checkpoint", default=None,
                    help="weights: a file in any released layout, a folder written by save_pretrained, or a Hub "
                         "repo_id[:file] (default: the tag's released weights; none for a bare name)")
    ex.add_argument("--checkpoint-frames", type=positive_int, default=None,
                    help="frame count the checkpoint was trained with, when it cannot be inferred")
    ex.add_argument("--num-frames", type=positive_int, default=8, help="frames per clip")
    ex.add_argument("--size", type=positive_int, default=None,
                    help="frame size in pixels, a multiple of the patch size (default: the model's own size, "
                         "224; 56 for internvideo2-tiny)")
    ex.add_argument("--batch-size", type=positive_int, default=8, help="clips per forward pass")
    ex.add_argument("--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                    help="decoding processes (0: decode in the main process)")
    ex.add_argument("--device", default=None, help="cuda, cuda:1, cpu, mps (default: cuda when available)")
    ex.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="autocast dtype of the forward pass; outputs are saved as float32")
    ex.add_argument("--attn-impl", choices=["sdpa", "flash"], default=None,
                    help="attention kernel (default: sdpa; flash needs the flash extra)")
    ex.add_argument("--tokens", action="store_true", help="also save the token features (1 + N, D)")
    ex.add_argument("--window", type=positive_int, default=None,
                    help="sliding windows of N frames, one embedding each (for temporal localisation)")
    ex.add_argument("--stride", type=positive_int, default=None, help="window stride in frames (default: --window)")
    ex.add_argument("--output", "-o", required=True, help="output folder (mirrors the inputs' paths)")
    ex.add_argument("--overwrite", action="store_true",
                    help="recompute outputs made with other settings instead of stopping")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def list_models_text() -> str:
    """The ``models`` listing: architectures with their sizes, then released weight tags."""
    from .config import MODEL_CONFIGS
    from .pretrained import get_pretrained_cfg
    from .registry import list_models

    lines = ["architectures (random weights unless --checkpoint is given):",
             f"  {'name':28s} {'width':>5s} {'depth':>5s} {'frames':>6s} {'size':>5s}"]
    for name in list_models():
        cfg = MODEL_CONFIGS[name]
        lines.append(f"  {name:28s} {cfg.embed_dim:5d} {cfg.depth:5d} {cfg.num_frames:6d} {cfg.img_size:5d}")
    lines += ["", "released weights (use as --model: fetched from the Hugging Face Hub, or give --checkpoint FILE):",
              f"  {'name':28s} {'frames':>6s}  what"]
    for name in list_models(pretrained=True):
        cfg = get_pretrained_cfg(name)
        what = cfg.description.split(";")[0]
        lines.append(f"  {name:28s} {cfg.checkpoint_num_frames:6d}  {what}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, prog: str = "iv2-encoders") -> int:
    """Run one command; returns the exit code (0 done, 1 failed or some inputs failed or nothing found,
    2 usage, 130 interrupted)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    command_parser = args.command_parser
    if args.command in ("models", "list"):
        return run_command(command_parser.prog, lambda: print(list_models_text()) or EXIT_OK)
    if args.stride is not None and args.window is None:
        command_parser.error("--stride needs --window")
    from .extract import main_extract

    return run_command(command_parser.prog, lambda: main_extract(args, command_parser))


if __name__ == "__main__":
    sys.exit(main())
