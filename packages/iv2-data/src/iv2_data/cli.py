"""``iv2-data``: command-line tools of iv2-data.

- ``iv2-data shard ANNOTATION --output DIR [--media-root DIR] [--samples-per-shard N]``: webdataset shards.
- ``iv2-data synth --output DIR [--num-samples N] ...``: write the synthetic corpus.
- ``iv2-data curate INPUTS... --output DIR ...``: the InternVid2-style curation pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


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
    print(
        f"{len(manifest.shards)} shards, {manifest.num_samples} samples, {len(manifest.skipped)} skipped "
        f"-> {manifest.path}"
    )
    return 0


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
    return 0


def _curate(args: argparse.Namespace) -> int:
    from iv2_data.curate.cli import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iv2-data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    shard = commands.add_parser("shard", help="pack an annotation file and its media into webdataset tar shards")
    shard.add_argument("annotation", help="annotation file (.json list or .jsonl)")
    shard.add_argument("--output", "-o", required=True, help="output folder (shards + manifest.json)")
    shard.add_argument(
        "--media-root", default=None, help="folder media paths are relative to (default: the annotation file's folder)"
    )
    shard.add_argument("--samples-per-shard", type=int, default=1000)
    shard.add_argument("--prefix", default="shard")
    shard.add_argument("--quiet", action="store_true", help="no progress bar")
    shard.set_defaults(run=_shard)

    synth = commands.add_parser("synth", help="write the synthetic multimodal corpus")
    synth.add_argument("--output", "-o", required=True)
    synth.add_argument("--num-samples", type=int, default=64)
    synth.add_argument("--num-frames", type=int, default=8)
    synth.add_argument("--size", type=int, default=64)
    synth.add_argument("--fps", type=int, default=8)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--samples-per-shard", type=int, default=None, help="also write webdataset shards of every annotation file"
    )
    synth.add_argument("--quiet", action="store_true")
    synth.set_defaults(run=_synth)

    try:
        from iv2_data.curate.cli import add_arguments
    except ImportError:  # pragma: no cover - curate module missing from a partial install
        pass
    else:
        curate = commands.add_parser("curate", help="segment, caption, filter and package raw videos")
        add_arguments(curate)
        curate.set_defaults(run=_curate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (OSError, ValueError, KeyError) as error:
        print(f"iv2-data {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
