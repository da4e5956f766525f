"""``iv2-data curate``: command-line front end of :func:`iv2_data.curate.curate`."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iv2_data.curate.pipeline import CurationConfig


DESCRIPTION = """Curate raw videos the InternVid2 way, in resumable stages: cut them into clips at scene changes,
caption each clip (video, audio and speech captioners fused into one caption), filter by caption-clip
similarity and near-duplicates, and write annotations.jsonl (and optionally webdataset shards).

Without captioning models every clip gets an empty caption and nothing is kept; name the models with
--video-captioner, --audio-captioner, --asr and --fuser (local paths or Hub ids of transformers pipelines)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="video files or folders")
    parser.add_argument("--output", "-o", required=True, help="output folder (resumable)")
    parser.add_argument(
        "--detector",
        choices=("content", "none"),
        default="content",
        help="scene detection: PySceneDetect content detector, or none (inputs are clips)",
    )
    parser.add_argument("--threshold", type=float, default=27.0, help="content detector threshold")
    parser.add_argument("--min-scene-frames", type=int, default=15)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="drop clips shorter than this")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="split scenes longer than this")
    parser.add_argument("--edge-seconds", type=float, default=0.0, help="trim this much at each cut")
    parser.add_argument("--video-captioner", metavar="MODEL", help="image-to-text model path for frames")
    parser.add_argument("--audio-captioner", metavar="MODEL", help="audio-classification model path")
    parser.add_argument("--asr", metavar="MODEL", help="speech recognition (whisper) model path")
    parser.add_argument(
        "--fuser",
        metavar="MODEL",
        default="template",
        help="text-generation model path fusing the captions, or 'template' (no model)",
    )
    parser.add_argument(
        "--embedder",
        metavar="MODULE:FACTORY",
        help="callable returning a ClipEmbedder (embed_videos, embed_texts), e.g. a wrapper "
        "around an iv2-align model; enables the similarity filter and dedup",
    )
    parser.add_argument("--min-similarity", type=float, default=0.0)
    parser.add_argument("--dedup-threshold", type=float, default=0.95)
    parser.add_argument("--samples-per-shard", type=int, default=None, help="also write webdataset shards")
    parser.add_argument("--device", default=None, help="device for the transformers pipelines")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _load_factory(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--embedder expects MODULE:FACTORY, got {spec!r}")
    return getattr(importlib.import_module(module_name), attribute)()


def config_from_args(args: argparse.Namespace) -> CurationConfig:
    # imported here: building the parser (``--help``) must not load torch
    from iv2_data.curate.caption import (
        HFAudioCaptioner,
        HFLLMFuser,
        HFVideoCaptioner,
        TemplateFuser,
        WhisperSpeechRecognizer,
    )
    from iv2_data.curate.pipeline import CurationConfig
    from iv2_data.curate.segment import ClipRules, ContentSceneDetector, WholeVideo

    device = args.device
    return CurationConfig(
        detector=ContentSceneDetector(args.threshold, args.min_scene_frames)
        if args.detector == "content"
        else WholeVideo(),
        rules=ClipRules(args.min_seconds, args.max_seconds, args.edge_seconds),
        video_captioner=HFVideoCaptioner(args.video_captioner, device=device) if args.video_captioner else None,
        audio_captioner=HFAudioCaptioner(args.audio_captioner, device=device) if args.audio_captioner else None,
        speech_recognizer=WhisperSpeechRecognizer(args.asr, device=device) if args.asr else None,
        fuser=TemplateFuser() if args.fuser == "template" else HFLLMFuser(args.fuser, device=device),
        embedder=_load_factory(args.embedder) if args.embedder else None,
        min_similarity=args.min_similarity,
        dedup_threshold=args.dedup_threshold,
        samples_per_shard=args.samples_per_shard,
        progress=not args.quiet,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Exit code 0 when every input was curated (even if no clip was kept: the reasons are counted), 1 when
    some inputs failed (recorded) or no input video was found."""
    from iv2_data.command_line import EXIT_FAILED, EXIT_OK
    from iv2_data.curate.pipeline import curate

    result = curate(args.inputs, args.output, config_from_args(args))
    prog = getattr(args, "prog", "iv2-data curate")
    for warning in result.warnings:
        print(f"{prog}: {warning}", file=sys.stderr)
    for error in result.errors[:20]:
        print(f"  failed ({error['stage']}): {error['item']}: {error['error']}", file=sys.stderr)
    print(
        json.dumps(
            {
                "inputs": result.num_inputs,
                "clips": result.num_clips,
                "kept": result.num_kept,
                "dropped": result.dropped,
                "errors": len(result.errors),
                "annotations": str(result.annotations),
                "shards": str(result.shards) if result.shards else None,
            }
        )
    )
    return EXIT_FAILED if result.errors or not result.num_inputs else EXIT_OK
