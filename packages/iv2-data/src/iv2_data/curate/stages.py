"""The curation stages: objects with a ``name`` and ``run(items, context) -> items``, each keeping its own
:class:`~iv2_data.JsonlManifest` (``OUTPUT/manifests/<name>.jsonl``), so a rerun skips what is done and the
manifests say what happened to every video and clip.

Items are dicts that gain fields stage by stage: a video (``input``) becomes clips (``clip``, ``start``,
``end``, ``source``), which gain captions (``caption``, ``video_caption``, ``audio_caption``, ``asr``) and a
``similarity``. A stage that drops an item counts why in ``context.dropped`` — also for work a previous run
did — so every run can say why clips were dropped. Write your own stage (an aesthetic or OCR filter, ...)
with the same two members and insert it into the list :func:`~iv2_data.curate.curate` runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from iv2_data.curate.caption import AudioCaptioner, CaptionFuser, SpeechRecognizer, TemplateFuser, VideoCaptioner
from iv2_data.curate.filter import ClipEmbedder, caption_similarity, deduplicate
from iv2_data.curate.segment import ClipRules, ContentSceneDetector, SceneDetector, cut_clip
from iv2_data.files import JsonlManifest, atomic_write
from iv2_data.progress import progress

__all__ = [
    "CaptionStage",
    "CurationContext",
    "CurationStage",
    "FilterStage",
    "OutputStage",
    "SegmentStage",
]

logger = logging.getLogger("iv2_data")


@dataclass
class CurationContext:
    """What stages share: the output folder, the progress switch, and the run's account of drops and errors."""

    output_dir: Path
    show_progress: bool = True
    dropped: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # what stages produced: annotations, shards...

    def manifest(self, name: str, key: str) -> JsonlManifest:
        return JsonlManifest(self.output_dir / "manifests" / f"{name}.jsonl", key)

    def progress(self, items: Sequence[Any], desc: str) -> Iterable[Any]:
        return progress(items, enabled=self.show_progress, desc=desc, unit="item")


@runtime_checkable
class CurationStage(Protocol):
    """One step of curation: takes the items of the previous stage, returns those it keeps (extended)."""

    name: str

    def run(self, items: list[dict[str, Any]], context: CurationContext) -> list[dict[str, Any]]: ...


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------------------------------------------------
# 1. segmentation: input videos -> clips


def _clip_names(videos: Sequence[str], claimed: dict[str, str]) -> dict[str, str]:
    """A clip-file name per video: its stem, or ``stem~2``, ``stem~3``… when taken. ``claimed`` maps inputs
    of earlier runs (the segment manifest) to the names their clips already carry: those keep them, and no
    other video gets one of them, so a rerun with more inputs never points a new video at old clip files."""
    names: dict[str, str] = {}
    taken = set(claimed.values())
    for video in videos:
        if video in claimed:
            names[video] = claimed[video]
            continue
        stem = Path(video).stem
        name, k = stem, 1
        while name in taken:
            k += 1
            name = f"{stem}~{k}"
        taken.add(name)
        names[video] = name
    return names


def _claimed_names(rows: Iterable[dict[str, Any]]) -> dict[str, str]:
    """Input → clip-file name, for manifest rows that own clip files (``clips/<name>-<k>.mp4``)."""
    claimed = {}
    for row in rows:
        if row.get("name"):
            claimed[row["input"]] = row["name"]
        elif row.get("clips"):  # rows written before the name was recorded
            claimed[row["input"]] = row["clips"][0]["clip"].removeprefix("clips/").rsplit("-", 1)[0]
    return claimed


@dataclass
class SegmentStage:
    """Scene detection (``detector``) and clip rules (``rules``); clips are cut to ``clips/<video>-<k>.mp4``.
    A broken input is an error row (and a drop), never the end of the run."""

    detector: SceneDetector = field(default_factory=ContentSceneDetector)
    rules: ClipRules = field(default_factory=ClipRules)
    name: str = "segment"

    def run(self, items: list[dict[str, Any]], context: CurationContext) -> list[dict[str, Any]]:
        out = context.output_dir
        (out / "clips").mkdir(parents=True, exist_ok=True)
        manifest = context.manifest(self.name, "input")
        videos = [item["input"] for item in items]
        names = _clip_names(videos, _claimed_names(manifest))
        try:
            for video in context.progress(videos, self.name):
                if video not in manifest:
                    manifest.append(self._segment(video, names[video], out))
        finally:
            manifest.close()
        clips = []
        for video in videos:
            row = manifest.get(video)
            if row["status"] == "error":
                context.errors.append({"stage": self.name, "item": video, "error": row["error"]})
                context.dropped["input unreadable or segmentation failed"] += 1
                continue
            short = self.rules.split([tuple(s) for s in row.get("scenes", [])])[1]
            context.dropped[f"scene shorter than {self.rules.min_seconds:g} s"] += short
            if not row["scenes"]:
                context.dropped["no scene found"] += 1
            clips += [{**clip, "source": video} for clip in row["clips"]]
        return clips

    def _segment(self, video: str, name: str, out: Path) -> dict[str, Any]:
        try:
            scenes = self.detector.detect(video)
            clips = []
            for k, (start, end) in enumerate(self.rules.apply(scenes)):
                relative = f"clips/{name}-{k:03d}.mp4"
                if not (out / relative).exists():
                    cut_clip(video, out / relative, start, end)
                clips.append({"clip": relative, "start": round(start, 3), "end": round(end, 3)})
        except Exception as error:  # a broken input is recorded, never fatal
            logger.warning("curate: cannot segment %s: %s", video, error)
            # Clips cut before the error carry the name: no other input may take it.
            return {"input": video, "status": "error", "name": name, "clips": [], "error": _error_text(error)}
        return {
            "input": video,
            "status": "ok",
            "name": name,
            "scenes": [list(s) for s in scenes],
            "clips": clips,
            "error": None,
        }


# ---------------------------------------------------------------------------------------------------------
# 2. captioning: clips -> clips with captions


@dataclass
class CaptionStage:
    """Video, audio and speech captions (``None`` roles contribute empty text) fused into one caption by
    ``fuser``. Clips whose fused caption is empty are dropped (a training caption cannot be empty)."""

    video_captioner: VideoCaptioner | None = None
    audio_captioner: AudioCaptioner | None = None
    speech_recognizer: SpeechRecognizer | None = None
    fuser: CaptionFuser = field(default_factory=TemplateFuser)
    name: str = "caption"

    def run(self, items: list[dict[str, Any]], context: CurationContext) -> list[dict[str, Any]]:
        manifest = context.manifest(self.name, "clip")
        try:
            for clip in context.progress(items, self.name):
                if clip["clip"] not in manifest:
                    manifest.append(self._caption(clip["clip"], context.output_dir / clip["clip"]))
        finally:
            manifest.close()
        captioned = []
        for clip in items:
            row = manifest.get(clip["clip"])
            if row["status"] == "error":
                context.errors.append({"stage": self.name, "item": clip["clip"], "error": row["error"]})
                context.dropped["captioning failed"] += 1
            elif not row["caption"].strip():
                none = not any((self.video_captioner, self.audio_captioner, self.speech_recognizer))
                context.dropped["empty caption (no captioner configured)" if none else "empty caption"] += 1
            else:
                fields = ("caption", "video_caption", "audio_caption", "asr")
                captioned.append({**clip, **{k: row[k] for k in fields}})
        return captioned

    def _caption(self, clip: str, path: Path) -> dict[str, Any]:
        try:
            visual = self.video_captioner.caption_video(path) if self.video_captioner else ""
            audio = self.audio_captioner.caption_audio(path) if self.audio_captioner else ""
            speech = self.speech_recognizer.transcribe(path) if self.speech_recognizer else ""
            fused = self.fuser.fuse(visual, audio, speech)
        except Exception as error:
            logger.warning("curate: cannot caption %s: %s", path, error)
            return {"clip": clip, "status": "error", "error": _error_text(error)}
        return {
            "clip": clip,
            "status": "ok",
            "video_caption": visual,
            "audio_caption": audio,
            "asr": speech,
            "caption": fused,
            "error": None,
        }


# ---------------------------------------------------------------------------------------------------------
# 3. filtering: keep clips whose caption matches, drop near-duplicates


@dataclass
class FilterStage:
    """Video–caption similarity from a :class:`~iv2_data.curate.ClipEmbedder` (clips under ``min_similarity``
    are dropped) and greedy duplicate removal by video embedding (``dedup_threshold``, best caption first).
    Without an embedder everything is kept. Duplicates are a property of the whole set, so the stage reruns
    on all clips whenever a clip is new to it."""

    embedder: ClipEmbedder | None = None
    min_similarity: float = 0.0
    dedup_threshold: float | None = 0.95
    name: str = "filter"

    def run(self, items: list[dict[str, Any]], context: CurationContext) -> list[dict[str, Any]]:
        manifest = context.manifest(self.name, "clip")
        if any(c["clip"] not in manifest for c in items):
            manifest.rewrite(self._decide(items, context.output_dir))
        manifest.close()
        kept = []
        for clip in items:
            row = manifest.get(clip["clip"])
            if row["kept"]:
                kept.append({**clip, "similarity": row.get("similarity")})
            else:
                reason = row["reason"] or "filtered"
                context.dropped["duplicate" if reason.startswith("duplicate of") else self._rule()] += 1
        return kept

    def _rule(self) -> str:
        return f"caption similarity below {self.min_similarity:g}"

    def _decide(self, clips: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
        if self.embedder is None or not clips:
            return [{"clip": c["clip"], "similarity": None, "kept": True, "reason": None} for c in clips]
        similarity, embeddings = caption_similarity(
            self.embedder, [out / c["clip"] for c in clips], [c["caption"] for c in clips]
        )
        passing = [i for i in range(len(clips)) if float(similarity[i]) >= self.min_similarity]
        keep = set(passing)
        duplicate_of: dict[int, int] = {}
        if self.dedup_threshold is not None and passing:
            # Best-matching caption first, so of a group of duplicates the best-described clip survives.
            order = sorted(passing, key=lambda i: -float(similarity[i]))
            survivors = deduplicate(embeddings, self.dedup_threshold, order=order)
            for i in passing:
                if i not in survivors:
                    duplicate_of[i] = max(survivors, key=lambda j: float(embeddings[i] @ embeddings[j]))
            keep = set(survivors)
        rows = []
        for i, clip in enumerate(clips):
            reason = None
            if float(similarity[i]) < self.min_similarity:
                reason = f"caption similarity {float(similarity[i]):.3f} < {self.min_similarity}"
            elif i in duplicate_of:
                reason = f"duplicate of {clips[duplicate_of[i]]['clip']}"
            rows.append(
                {"clip": clip["clip"], "similarity": round(float(similarity[i]), 4), "kept": i in keep,
                 "reason": reason}
            )
        return rows


# ---------------------------------------------------------------------------------------------------------
# 4. output: annotations.jsonl (+ shards)


@dataclass
class OutputStage:
    """``annotations.jsonl`` in the video-audio-text layout the datasets read (with ``visual_caption``,
    ``audio_caption``, ``asr``, ``source``, ``start``, ``end``, ``similarity``) and, with
    ``samples_per_shard``, webdataset ``shards/`` of it (rebuilt when the kept clips changed)."""

    samples_per_shard: int | None = None
    name: str = "output"

    def run(self, items: list[dict[str, Any]], context: CurationContext) -> list[dict[str, Any]]:
        out = context.output_dir
        annotations = out / "annotations.jsonl"
        with atomic_write(annotations, "w", encoding="utf-8") as sink:
            for clip in items:
                row = {
                    "video": clip["clip"],
                    "caption": clip["caption"],
                    "visual_caption": clip["video_caption"],
                    "audio_caption": clip["audio_caption"],
                    "asr": clip["asr"],
                    "source": clip["source"],
                    "start": clip["start"],
                    "end": clip["end"],
                    "similarity": clip.get("similarity"),
                }
                sink.write(json.dumps(row) + "\n")
        context.outputs["annotations"] = annotations
        if self.samples_per_shard and items:
            from iv2_data.shards import write_shards

            shards = out / "shards"
            _drop_stale_shards(shards, annotations)
            write_shards(annotations, shards, out, samples_per_shard=self.samples_per_shard,
                         progress=context.show_progress)
            context.outputs["shards"] = shards
        return items


def _drop_stale_shards(shards: Path, annotations: Path) -> None:
    """The shards are derived from this run's ``annotations.jsonl``: shards written from another version of it
    (a rerun that kept other clips) are removed so that they are rebuilt, rather than refused as a resume."""
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
