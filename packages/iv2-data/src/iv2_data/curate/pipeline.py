"""The InternVid2-style curation pipeline: a list of stages (segment → caption → filter → output) run in order.

Each stage records one JSON line per item in ``OUTPUT/manifests/<stage>.jsonl`` as it goes (``status`` ok or
error, with the error text), so a rerun skips what is done, a broken input never stops the run, and the
manifests say what happened to every video and clip. Layout of ``OUTPUT``::

    clips/<video>-<k>.mp4          one file per clip (inside one scene)
    manifests/segment.jsonl        per input video: its scenes and clips, or the error
    manifests/caption.jsonl        per clip: video / audio / speech captions and the fused caption
    manifests/filter.jsonl         per clip: caption similarity, duplicate-of, kept or why not
    annotations.jsonl              the kept clips, in the video-audio-text layout the datasets read
    shards/                        webdataset shards of them (when samples_per_shard is set)

The result says how many clips each rule dropped, and warns when nothing was kept (with default options —
no captioner — every caption is empty, so nothing is).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iv2_data.curate.caption import AudioCaptioner, CaptionFuser, SpeechRecognizer, TemplateFuser, VideoCaptioner
from iv2_data.curate.filter import ClipEmbedder
from iv2_data.curate.segment import ClipRules, ContentSceneDetector, SceneDetector
from iv2_data.curate.stages import (
    CaptionStage,
    CurationContext,
    CurationStage,
    FilterStage,
    OutputStage,
    SegmentStage,
)
from iv2_data.media import find_media

__all__ = ["CurationConfig", "CurationResult", "curate", "default_stages", "find_videos"]

logger = logging.getLogger("iv2_data")


@dataclass
class CurationConfig:
    """Which implementation plays each role of the default stages. ``None`` captioners contribute empty text;
    without an ``embedder`` the filter stage keeps everything."""

    detector: SceneDetector = field(default_factory=ContentSceneDetector)
    rules: ClipRules = field(default_factory=ClipRules)
    video_captioner: VideoCaptioner | None = None
    audio_captioner: AudioCaptioner | None = None
    speech_recognizer: SpeechRecognizer | None = None
    fuser: CaptionFuser = field(default_factory=TemplateFuser)
    embedder: ClipEmbedder | None = None
    min_similarity: float = 0.0
    dedup_threshold: float | None = 0.95
    samples_per_shard: int | None = None
    progress: bool = True


def default_stages(config: CurationConfig) -> list[CurationStage]:
    """The recipe's four stages, configured from ``config``."""
    return [
        SegmentStage(config.detector, config.rules),
        CaptionStage(config.video_captioner, config.audio_captioner, config.speech_recognizer, config.fuser),
        FilterStage(config.embedder, config.min_similarity, config.dedup_threshold),
        OutputStage(config.samples_per_shard),
    ]


@dataclass
class CurationResult:
    """What a run did. ``dropped``: why items were dropped, with counts (per rule); ``skipped``: paths the
    input search passed over; ``warnings``: what a user should read (printed by the CLI)."""

    output_dir: Path
    annotations: Path
    num_inputs: int
    num_clips: int
    num_kept: int
    errors: list[dict[str, Any]]
    shards: Path | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_videos(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Video files among ``inputs`` (folders searched by :func:`~iv2_data.find_media`), as absolute paths."""
    return [p.resolve() for p in find_media(inputs, ("video",))]


def curate(
    inputs: Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    config: CurationConfig | None = None,
    *,
    stages: Sequence[CurationStage] | None = None,
) -> CurationResult:
    """Run (or resume) curation on ``inputs`` (video files and folders) into ``output_dir``.

    ``stages`` replaces the default list (:func:`default_stages` of ``config``); the first stage gets one
    item ``{"input": absolute path}`` per video found.
    """
    config = config or CurationConfig()
    stages = list(stages) if stages is not None else default_stages(config)
    out = Path(output_dir)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    search = find_media(inputs, ("video",))
    videos = list(dict.fromkeys(str(p.resolve()) for p in search))
    context = CurationContext(out, show_progress=config.progress)
    items: list[dict[str, Any]] = [{"input": video} for video in videos]
    num_clips = 0
    for stage in stages:
        items = stage.run(items, context)
        if isinstance(stage, SegmentStage):
            num_clips = len(items)
    dropped = {reason: count for reason, count in context.dropped.most_common() if count}
    result = CurationResult(
        output_dir=out,
        annotations=context.outputs.get("annotations", out / "annotations.jsonl"),
        num_inputs=len(videos),
        num_clips=num_clips,
        num_kept=len(items),
        errors=context.errors,
        shards=context.outputs.get("shards"),
        dropped=dropped,
        skipped=list(search.skipped),
        warnings=search.report(("video",)) if not videos or search.skipped else [],
    )
    if not items:
        reasons = "; ".join(f"{reason}: {count}" for reason, count in dropped.items()) or "no input video"
        hint = ""
        if "empty caption (no captioner configured)" in dropped:
            hint = " — configure a video captioner (--video-captioner) or an audio captioner / ASR model"
        result.warnings.append(f"nothing was kept ({reasons}){hint}")
    for warning in result.warnings:
        logger.warning("curate: %s", warning)
    return result
