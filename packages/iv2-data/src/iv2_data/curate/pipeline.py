"""The InternVid2-style curation pipeline: segment → caption → filter → output (annotations and shards).

Each stage records one JSON line per item in ``OUTPUT/manifests/<stage>.jsonl`` as it goes (``status`` ok or
error, with the error text), so a rerun skips what is done, a broken input never stops the run, and the
manifests say what happened to every video and clip. Layout of ``OUTPUT``::

    clips/<video>-<k>.mp4          one file per clip (inside one scene)
    manifests/segment.jsonl        per input video: its clips, or the error
    manifests/caption.jsonl        per clip: video / audio / speech captions and the fused caption
    manifests/filter.jsonl         per clip: caption similarity, duplicate-of, kept or why not
    annotations.jsonl              the kept clips, in the video-audio-text layout the datasets read
    shards/                        webdataset shards of them (when samples_per_shard is set)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iv2_data._progress import progress
from iv2_data.curate.caption import (
    AudioCaptioner,
    CaptionFuser,
    SpeechRecognizer,
    TemplateFuser,
    VideoCaptioner,
)
from iv2_data.curate.filter import ClipEmbedder, caption_similarity, deduplicate
from iv2_data.curate.segment import ClipRules, ContentSceneDetector, SceneDetector, cut_clip

__all__ = ["VIDEO_SUFFIXES", "CurationConfig", "CurationResult", "curate", "find_videos"]

logger = logging.getLogger("iv2_data")

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class CurationConfig:
    """Which implementation plays each role. ``None`` captioners contribute empty text; without an
    ``embedder`` the filter stage keeps everything."""

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


@dataclass
class CurationResult:
    output_dir: Path
    annotations: Path
    num_inputs: int
    num_clips: int
    num_kept: int
    errors: list[dict[str, Any]]
    shards: Path | None = None


class _StageManifest:
    """Append-only JSON Lines keyed by ``key``; rows already there are what a rerun skips."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by an interruption: redo that item
                        continue
                    self.rows[row[key]] = row

    def __contains__(self, item: str) -> bool:
        return item in self.rows

    def add(self, row: dict[str, Any]) -> None:
        self.rows[row[self.key]] = row
        with self.path.open("a") as sink:
            sink.write(json.dumps(row) + "\n")


def find_videos(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand folders (recursively, by video suffix) and keep files as given; sorted, without repeats."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        else:
            found.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def _check_input(video: Path) -> None:
    """Refuse what is not a regular file before any decoder opens it: FFmpeg/OpenCV would block forever on
    a FIFO with no writer, and a missing path deserves a plain message."""
    if not video.exists():
        raise FileNotFoundError(f"no such file: {video}")
    if not video.is_file():
        raise OSError(f"not a regular file (a directory, FIFO or device): {video}")


def _clip_names(videos: Sequence[Path], claimed: dict[str, str] | None = None) -> dict[Path, str]:
    """A clip-file name per video: its stem, or ``stem~2``, ``stem~3``… when taken. ``claimed`` maps inputs
    of earlier runs (the segment manifest) to the names their clips already carry: those keep them, and no
    other video gets one of them, so a rerun with more inputs never points a new video at old clip files."""
    claimed = claimed or {}
    names: dict[Path, str] = {}
    taken = set(claimed.values())
    for video in videos:
        if str(video) in claimed:
            names[video] = claimed[str(video)]
            continue
        name, k = video.stem, 1
        while name in taken:
            k += 1
            name = f"{video.stem}~{k}"
        taken.add(name)
        names[video] = name
    return names


def _claimed_names(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Input → clip-file name, for manifest rows that own clip files (``clips/<name>-<k>.mp4``)."""
    claimed = {}
    for video, row in rows.items():
        if row.get("name"):
            claimed[video] = row["name"]
        elif row.get("clips"):  # rows written before the name was recorded
            claimed[video] = row["clips"][0]["clip"].removeprefix("clips/").rsplit("-", 1)[0]
    return claimed


def _progress(items: Sequence[Any], desc: str, enabled: bool) -> Iterable[Any]:
    return progress(items, enabled=enabled, desc=desc, unit="item")


def curate(
    inputs: Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    config: CurationConfig | None = None,
) -> CurationResult:
    """Run (or resume) the pipeline on ``inputs`` (video files and folders) into ``output_dir``."""
    config = config or CurationConfig()
    out = Path(output_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    (out / "manifests").mkdir(exist_ok=True)
    videos = find_videos(inputs)
    # 1. segmentation ------------------------------------------------------------------------------------
    segment = _StageManifest(out / "manifests" / "segment.jsonl", "input")
    names = _clip_names(videos, _claimed_names(segment.rows))
    for video in _progress(videos, "segment", config.progress):
        if str(video) in segment:
            continue
        try:
            _check_input(video)
            scenes = config.detector.detect(video)
            clips = []
            for k, (start, end) in enumerate(config.rules.apply(scenes)):
                relative = f"clips/{names[video]}-{k:03d}.mp4"
                if not (out / relative).exists():
                    cut_clip(video, out / relative, start, end)
                clips.append({"clip": relative, "start": round(start, 3), "end": round(end, 3)})
            segment.add(
                {
                    "input": str(video),
                    "status": "ok",
                    "name": names[video],
                    "scenes": [list(s) for s in scenes],
                    "clips": clips,
                    "error": None,
                }
            )
        except Exception as error:  # a broken input is recorded, never fatal
            logger.warning("curate: cannot segment %s: %s", video, error)
            segment.add(
                {
                    "input": str(video),
                    "status": "error",
                    "name": names[video],  # clips cut before the error carry it: no other input may take it
                    "clips": [],
                    "error": f"{type(error).__name__}: {error}",
                }
            )
    clip_rows = [
        {**clip, "source": row["input"]}
        for video in videos
        for row in [segment.rows[str(video)]]
        for clip in row["clips"]
    ]

    # 2. captioning --------------------------------------------------------------------------------------
    caption = _StageManifest(out / "manifests" / "caption.jsonl", "clip")
    for clip in _progress(clip_rows, "caption", config.progress):
        if clip["clip"] in caption:
            continue
        path = out / clip["clip"]
        try:
            visual = config.video_captioner.caption_video(path) if config.video_captioner else ""
            audio = config.audio_captioner.caption_audio(path) if config.audio_captioner else ""
            speech = config.speech_recognizer.transcribe(path) if config.speech_recognizer else ""
            fused = config.fuser.fuse(visual, audio, speech)
            caption.add(
                {
                    "clip": clip["clip"],
                    "status": "ok",
                    "video_caption": visual,
                    "audio_caption": audio,
                    "asr": speech,
                    "caption": fused,
                    "error": None,
                }
            )
        except Exception as error:
            logger.warning("curate: cannot caption %s: %s", path, error)
            caption.add({"clip": clip["clip"], "status": "error", "error": f"{type(error).__name__}: {error}"})
    captioned = [
        c for c in clip_rows if caption.rows[c["clip"]]["status"] == "ok" and caption.rows[c["clip"]]["caption"].strip()
    ]

    # 3. filtering (one pass over all clips: duplicates are a property of the set) ------------------------
    filter_path = out / "manifests" / "filter.jsonl"
    filtered = _StageManifest(filter_path, "clip")
    if any(c["clip"] not in filtered for c in captioned):
        filter_path.unlink(missing_ok=True)
        filtered = _StageManifest(filter_path, "clip")
        for row in _filter(captioned, caption.rows, out, config):
            filtered.add(row)
    kept = [c for c in captioned if filtered.rows[c["clip"]]["kept"]]

    # 4. output --------------------------------------------------------------------------------------------
    annotations = out / "annotations.jsonl"
    with annotations.open("w") as sink:
        for clip in kept:
            row = caption.rows[clip["clip"]]
            sink.write(
                json.dumps(
                    {
                        "video": clip["clip"],
                        "caption": row["caption"],
                        "visual_caption": row["video_caption"],
                        "audio_caption": row["audio_caption"],
                        "asr": row["asr"],
                        "source": clip["source"],
                        "start": clip["start"],
                        "end": clip["end"],
                        "similarity": filtered.rows[clip["clip"]].get("similarity"),
                    }
                )
                + "\n"
            )
    shards = None
    if config.samples_per_shard and kept:
        from iv2_data.shards import write_shards

        shards = out / "shards"
        _drop_stale_shards(shards, annotations)
        write_shards(annotations, shards, out, samples_per_shard=config.samples_per_shard, progress=config.progress)
    errors = [
        {"stage": "segment", "item": r["input"], "error": r["error"]}
        for r in segment.rows.values()
        if r["status"] == "error"
    ] + [
        {"stage": "caption", "item": r["clip"], "error": r["error"]}
        for r in caption.rows.values()
        if r["status"] == "error"
    ]
    return CurationResult(out, annotations, len(videos), len(clip_rows), len(kept), errors, shards)


def _drop_stale_shards(shards: Path, annotations: Path) -> None:
    """The shards are derived from this run's ``annotations.jsonl``: shards written from another version of it
    (a rerun that kept other clips) are removed so that they are rebuilt, rather than refused as a resume."""
    import hashlib
    import shutil

    manifest = shards / "manifest.json"
    if not manifest.is_file():
        return
    try:
        previous = json.loads(manifest.read_text()).get("annotation_sha256")
    except json.JSONDecodeError:
        previous = None
    if previous != hashlib.sha256(annotations.read_bytes()).hexdigest():
        logger.info("curate: the kept clips changed since %s was written; rebuilding the shards", shards)
        shutil.rmtree(shards)


def _filter(
    clips: list[dict[str, Any]], captions: dict[str, dict[str, Any]], out: Path, config: CurationConfig
) -> list[dict[str, Any]]:
    if config.embedder is None or not clips:
        return [{"clip": c["clip"], "similarity": None, "kept": True, "reason": None} for c in clips]
    similarity, embeddings = caption_similarity(
        config.embedder, [out / c["clip"] for c in clips], [captions[c["clip"]]["caption"] for c in clips]
    )
    rows = []
    passing = [i for i in range(len(clips)) if float(similarity[i]) >= config.min_similarity]
    keep = set(passing)
    duplicate_of: dict[int, int] = {}
    if config.dedup_threshold is not None and passing:
        # Best-matching caption first, so of a group of duplicates the best-described clip survives.
        order = sorted(passing, key=lambda i: -float(similarity[i]))
        survivors = deduplicate(embeddings, config.dedup_threshold, order=order)
        for i in passing:
            if i not in survivors:
                twin = max(survivors, key=lambda j: float(embeddings[i] @ embeddings[j]))
                duplicate_of[i] = twin
        keep = set(survivors)
    for i, clip in enumerate(clips):
        reason = None
        if float(similarity[i]) < config.min_similarity:
            reason = f"caption similarity {float(similarity[i]):.3f} < {config.min_similarity}"
        elif i in duplicate_of:
            reason = f"duplicate of {clips[duplicate_of[i]]['clip']}"
        rows.append(
            {"clip": clip["clip"], "similarity": round(float(similarity[i]), 4), "kept": i in keep, "reason": reason}
        )
    return rows
