"""Map-style datasets over annotation files, for the three training stages.

A dataset is records from an annotation file (or a list of records) plus a sample builder
(:mod:`iv2_data.samples`: what a sample of its kind is) plus how media is read (:class:`~iv2_data.VideoReadConfig`,
:class:`~iv2_data.AudioReadConfig`). The named classes only pick the builder::

    VideoTextDataset("train.json", video=VideoReadConfig(num_frames=8, size=224, train=True))
    VideoTextDataset("train.json", num_frames=8, size=224, train=True)       # the same, shorter
    VideoLabelDataset("k400.json", video=VideoReadConfig.stage1())           # stage-1 input

Pixel data is always under ``"video"`` as float32 ``(3, T, size, size)`` (an image is a one-frame video,
``T == 1``, the encoders' image convention); audio is the ``(998, 64)`` filter bank under ``"audio"``; text fields
are strings. ``index`` is the annotation record, ``path`` its media file.

Broken media (an unreadable file: :class:`~iv2_data.VideoReadError`, :class:`~iv2_data.AudioReadError` or any
other ``OSError``) is skipped: the dataset logs the file, counts it and returns the next readable record instead,
up to :class:`~iv2_data.BrokenSamplePolicy`'s failure fraction; past it :class:`~iv2_data.TooManyBrokenSamples`
stops the run with the files that failed. Counting is per process (per DataLoader worker), which is what keeps a
run with a few bad files going and a run on a bad mount from going on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from iv2_data.annotations import load_annotations
from iv2_data.reading import (
    AudioReadConfig,
    BrokenSamplePolicy,
    BrokenSamples,
    BrokenSampleStats,
    FileMedia,
    TooManyBrokenSamples,
    VideoReadConfig,
)
from iv2_data.samples import (
    OPTION_LETTERS,
    AudioTextBuilder,
    ImageTextBuilder,
    InstructionBuilder,
    MultipleChoiceQABuilder,
    SampleBuilder,
    VideoAudioTextBuilder,
    VideoLabelBuilder,
    VideoTextBuilder,
    mcqa_prompt,
)
from iv2_data.sampling import mvbench_frame_indices

__all__ = [
    "OPTION_LETTERS",
    "AnnotationDataset",
    "AudioTextDataset",
    "BrokenSamplePolicy",
    "BrokenSampleStats",
    "ImageTextDataset",
    "InstructionDataset",
    "MultipleChoiceQADataset",
    "TooManyBrokenSamples",
    "VideoAudioTextDataset",
    "VideoLabelDataset",
    "VideoTextDataset",
    "collate",
    "mcqa_prompt",
    "mvbench_frame_indices",
    "split_read_options",
]

# Shorthand keyword arguments of the datasets (and ShardDataset) → fields of the read configs.
_VIDEO_OPTIONS = {
    "num_frames": "num_frames",
    "size": "size",
    "sampling": "sampling",
    "train": "train",
    "transform": "transform",
    "video_reader": "reader",
}
_AUDIO_OPTIONS = {"max_audio_seconds": "max_seconds"}


def split_read_options(
    options: dict[str, Any], video: VideoReadConfig | None = None, audio: AudioReadConfig | None = None
) -> tuple[VideoReadConfig, AudioReadConfig, dict[str, Any]]:
    """Take the read shorthands (``num_frames``, ``size``, ``sampling``, ``train``, ``transform``,
    ``video_reader``, ``max_audio_seconds``) out of ``options`` into the read configs; the rest is left for
    the sample builder. ``train`` also turns on the random audio crop. Giving a config and its shorthands
    together is an error (which would win is not obvious)."""
    video_options = {field: options.pop(name) for name, field in _VIDEO_OPTIONS.items() if name in options}
    audio_options = {field: options.pop(name) for name, field in _AUDIO_OPTIONS.items() if name in options}
    if video is not None and video_options:
        raise TypeError(f"give video=VideoReadConfig(...) or the options {sorted(video_options)}, not both")
    if audio is not None and audio_options:
        raise TypeError(f"give audio=AudioReadConfig(...) or the options {sorted(audio_options)}, not both")
    video = video if video is not None else VideoReadConfig(**video_options)
    audio = audio if audio is not None else AudioReadConfig(random_crop=video.train, **audio_options)
    return video, audio, options


class AnnotationDataset(Dataset):
    """Records of an annotation file (or a list of records, as shards carry them) turned into samples by a
    :class:`~iv2_data.samples.SampleBuilder`; media paths resolve against ``media_root`` (default: the
    annotation file's folder).

    ``builder`` defaults to the class's :attr:`builder_type` built from the remaining keyword ``options``
    (e.g. ``caption_sampling="first"``); ``video``/``audio`` say how media is read, or pass their shorthands
    (``num_frames``, ``size``, ``sampling``, ``train``, ``transform``, ``video_reader``,
    ``max_audio_seconds``); ``broken`` bounds how many unreadable samples are tolerated.
    """

    builder_type: ClassVar[type[SampleBuilder] | None] = None

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Sequence[dict[str, Any]],
        media_root: str | os.PathLike[str] | None = None,
        *,
        builder: SampleBuilder | None = None,
        video: VideoReadConfig | None = None,
        audio: AudioReadConfig | None = None,
        broken: BrokenSamplePolicy | None = None,
        **options: Any,
    ) -> None:
        self.video, self.audio, options = split_read_options(dict(options), video, audio)
        if builder is None:
            if self.builder_type is None:
                raise TypeError(f"{type(self).__name__} needs builder=<a SampleBuilder>")
            builder = self.builder_type(**options)
        elif options:
            raise TypeError(f"unexpected options {sorted(options)}: configure the builder passed as builder=")
        self.builder = builder
        if isinstance(annotations, (str, os.PathLike)):
            self.source = str(annotations)
            records = load_annotations(annotations)
            default_root = Path(annotations).parent
        else:
            self.source = "<records>"
            records = [dict(r) for r in annotations]
            default_root = Path(".")
        self.media_root = Path(media_root) if media_root is not None else default_root
        self.records = builder.prepare(records, self.source)
        self.guard = BrokenSamples(broken, owner=f"{type(self).__name__} of {self.source}")

    @property
    def broken(self) -> BrokenSamplePolicy:
        return self.guard.policy

    @property
    def stats(self) -> BrokenSampleStats:
        return self.guard.stats

    def __len__(self) -> int:
        return len(self.records)

    def media_paths(self, record: Mapping[str, Any]) -> dict[str, Path]:
        """Record key → media file, relative paths resolved against :attr:`media_root`."""
        paths = {}
        for key, value in self.builder.media_of(record).items():
            path = Path(value)
            paths[key] = path if path.is_absolute() else self.media_root / path
        return paths

    def sample(self, record: Mapping[str, Any], index: int, sources: Mapping[str, Any]) -> dict[str, Any]:
        """Build the sample of ``record`` from ``sources`` (media key → path or in-memory file)."""
        return self.builder.build(record, index, FileMedia(sources, self.video, self.audio, record), self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__} of {self.source} has {len(self)} records, got {index}")
        tries = min(self.broken.max_consecutive, len(self))
        for offset in range(tries):
            current = (index + offset) % len(self)
            record = self.records[current]
            paths = self.media_paths(record)
            try:
                sample = self.sample(record, current, paths)
            except OSError as error:
                # Name the file that failed when the error knows it, else every media file of the record.
                named = getattr(error, "path", None) or getattr(error, "filename", None)
                where = named or ", ".join(str(p) for p in paths.values())
                self.record_failure(where or self.source, error)
                continue
            self.guard.success()
            return sample
        raise TooManyBrokenSamples(
            f"{type(self).__name__} of {self.source}: {tries} records in a row from "
            f"index {index} could not be read; last failures: {self.stats.failed_files[-5:]}"
        )

    def record_failure(self, path: Path | str, error: BaseException) -> None:
        """Count, log, and stop the run when the policy's budget is spent."""
        self.guard.failure(path, error)

    def captions(self, index: int) -> list[str]:
        """All (cleaned) captions of record ``index``, e.g. for retrieval evaluation (caption kinds only)."""
        if not hasattr(self.builder, "captions"):
            raise TypeError(f"{type(self).__name__} records have no captions")
        return self.builder.captions(self.records[index], self.source, index)  # type: ignore[attr-defined]


class VideoTextDataset(AnnotationDataset):
    """``{"video", "caption" | "captions"}`` → ``{"video", "caption", "index", "path"}``
    (:class:`~iv2_data.samples.VideoTextBuilder`: one caption per access, random or first; cleaned with
    ``pre_text``; records with captions under 2 words dropped). For data where left and right matter, give a
    training ``transform`` without flips (or records with ``"flip": false``)."""

    builder_type = VideoTextBuilder


class ImageTextDataset(AnnotationDataset):
    """``{"image", "caption" | "captions"}`` → ``{"video": (3, 1, size, size), "caption", "index", "path"}``."""

    builder_type = ImageTextBuilder


class AudioTextDataset(AnnotationDataset):
    """``{"audio", "caption" | "captions"}`` → ``{"audio": (998, 64), "caption", "index", "path"}``; a file
    without an audio stream counts as a broken sample. ``train=True`` crops long audio at a random offset."""

    builder_type = AudioTextBuilder


class VideoAudioTextDataset(AnnotationDataset):
    """``{"video", "caption", "asr"?, "audio"?}`` → ``{"video", "audio", "has_audio", "caption", "asr", "index",
    "path"}``: audio from the record's ``audio`` file, else the video's track; a video without audio gets the
    official zero filter bank and ``has_audio=False``. ``caption_key`` / ``asr_key`` pick the fields."""

    builder_type = VideoAudioTextBuilder


class MultipleChoiceQADataset(AnnotationDataset):
    """MVBench layout ``{"video", "question", "candidates", "answer"}`` → ``{"video", "question", "candidates",
    "answer", "answer_index", "answer_letter", "prompt", "target", "task", "index", "path"}``; a record with
    ``"start"``/``"end"`` is read over that segment by the official MVBench rule."""

    builder_type = MultipleChoiceQABuilder


class InstructionDataset(AnnotationDataset):
    """VideoChat2 layout ``{"video" | "image", "QA": [{"i", "q", "a"}, ...]}`` → ``{"video", "media_type",
    "instruction", "qa", "index", "path"}``; ``"start"``/``"end"`` read that clip only, as VideoChat2."""

    builder_type = InstructionBuilder


class VideoLabelDataset(AnnotationDataset):
    """``{"video", "label"}`` → ``{"video", "label", "label_name", "index", "path"}``: classification, k-NN
    and linear-probe evaluation (``label_key``, ``classes`` configure the builder)."""

    builder_type = VideoLabelBuilder


def collate(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch samples: tensors of equal shape are stacked, numbers and bools become tensors, anything else
    (strings, candidate lists, conversations) stays a list."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor) and all(v.shape == first.shape for v in values):
            batch[key] = torch.stack(values)
        elif isinstance(first, bool):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch
