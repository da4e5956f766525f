"""``iv2-data`` (also ``iv2 data``): the data tools of iv2-data — synth, shard, curate.

Exit codes, help format and one-line errors follow :mod:`iv2_data.command_line`. Building the parser imports
no torch, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from iv2_data.command_line import EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, HelpFormatter, positive_int, run_command

DESCRIPTION = """Data tools of iv2-data:

  synth    write the synthetic multimodal corpus (videos, audio, images and annotation files)
  shard    pack an annotation file and its media into webdataset tar shards
  curate   segment, caption, filter and package raw videos (InternVid2-style)

Every command resumes where an interrupted run stopped."""


def _shard(args: argparse.Namespace) -> int:
    from iv2_data.shards import write_shards

    manifest = write_shards(
        args.annotation,
        args.output,
        args.media_root,
        samples_per_shard=args.samples_per_shard,
        prefix=args.prefix,
        progress=not args.quiet,
    )
    records = sum(s["num_records"] for s in manifest.shards)
    print(
        f"{len(manifest.shards)} shards, {manifest.num_samples} samples, {len(manifest.skipped)} skipped "
        f"-> {manifest.path}"
    )
    for row in manifest.skipped[:20]:
        print(f"  skipped record {row['index']}: {row['error']}", file=sys.stderr)
    if len(manifest.skipped) > 20:
        print(f"  ... {len(manifest.skipped) - 20} more skipped records listed in {manifest.path}", file=sys.stderr)
    if records == 0:
        print(f"{args.prog}: warning: nothing to do: {args.annotation} holds no records", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if manifest.skipped else EXIT_OK


def _synth(args: argparse.Namespace) -> int:
    from iv2_data.synthetic import write_corpus

    paths = write_corpus(
        args.output,
        args.num_samples,
        num_frames=args.num_frames,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
        progress=not args.quiet,
    )
    if args.samples_per_shard:
        from iv2_data.shards import write_shards
        from iv2_data.synthetic import ANNOTATION_FILES

        for kind in ANNOTATION_FILES:
            shard_dir = paths["root"] / "shards" / kind
            write_shards(paths[kind], shard_dir, samples_per_shard=args.samples_per_shard, progress=not args.quiet)
            paths[f"{kind}_shards"] = shard_dir
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=1))
    return EXIT_OK


def _curate(args: argparse.Namespace) -> int:
    from iv2_data.curate.cli import run_from_args

    return run_from_args(args)


def build_parser(prog: str = "iv2-data") -> argparse.ArgumentParser:
    """The ``iv2-data`` parser; ``prog`` is the command as typed (``"iv2 data"`` through the umbrella)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EXIT_CODES_HELP, formatter_class=HelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    shard = commands.add_parser(
        "shard",
        help="pack an annotation file and its media into webdataset tar shards",
        description="Pack the records of an annotation file (.json list or .jsonl) and the media they name into "
        "webdataset tar shards, with a manifest.json listing the finished shards. Media is checked before it is "
        "packed; unreadable records are skipped and listed. A rerun continues an interrupted one.",
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    shard.add_argument("annotation", help="annotation file (.json list or .jsonl)")
    shard.add_argument("--output", "-o", required=True, help="output folder (shards + manifest.json)")
    shard.add_argument(
        "--media-root", default=None, help="folder media paths are relative to (default: the annotation file's folder)"
    )
    shard.add_argument("--samples-per-shard", type=positive_int, default=1000, help="records per tar file")
    shard.add_argument("--prefix", default="shard", help="shard file names: PREFIX-000000.tar")
    shard.add_argument("--quiet", action="store_true", help="no progress bar")
    shard.set_defaults(run=_shard)

    synth = commands.add_parser(
        "synth",
        help="write the synthetic multimodal corpus",
        description="Write the synthetic corpus (moving coloured objects with sound, captions, questions) as "
        "mp4/wav/png files and annotation files in the official layouts. Files that exist are kept.",
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    synth.add_argument("--output", "-o", required=True, help="output folder")
    synth.add_argument("--num-samples", type=positive_int, default=64, help="clips to write")
    synth.add_argument("--num-frames", type=positive_int, default=8, help="frames per clip")
    synth.add_argument("--size", type=positive_int, default=64, help="frame size in pixels")
    synth.add_argument("--fps", type=positive_int, default=8, help="frames per second")
    synth.add_argument("--seed", type=int, default=0, help="random seed of the corpus")
    synth.add_argument(
        "--samples-per-shard", type=positive_int, default=None, help="also write shards of each annotation file"
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_synth)

    from iv2_data.curate.cli import DESCRIPTION as CURATE_DESCRIPTION
    from iv2_data.curate.cli import add_arguments

    curate = commands.add_parser(
        "curate",
        help="segment, caption, filter and package raw videos",
        description=CURATE_DESCRIPTION,
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    add_arguments(curate)
    curate.set_defaults(run=_curate)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "iv2-data") -> int:
    """Run one command; returns the exit code (see :mod:`iv2_data.command_line`)."""
    args = build_parser(prog).parse_args(argv)
    args.prog = f"{prog} {args.command}"
    return run_command(args.prog, lambda: args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
