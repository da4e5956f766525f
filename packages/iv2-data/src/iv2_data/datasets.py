"""Map-style datasets over annotation files, for the three training stages.

Every dataset returns a dict. Pixel data is always under ``"video"`` as float32 ``(3, T, size, size)``
(an image is a one-frame video, ``T == 1``, the encoders' image convention); audio is the ``(998, 64)`` filter
bank under ``"audio"``; text fields are strings. ``index`` is the annotation record, ``path`` its media file.

Broken media (an unreadable file: :class:`~iv2_data.video.VideoReadError`,
:class:`~iv2_data.audio.AudioReadError` or any other ``OSError``) is skipped: the dataset logs the file, counts
it and returns the next readable record instead, up to :class:`BrokenSamplePolicy`'s failure fraction; past it
:class:`TooManyBrokenSamples` stops the run with the files that failed. Counting is per process (per
DataLoader worker), which is what keeps a run with a few bad files going and a run on a bad mount from going on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from iv2_data.annotations import (
    AnnotationError,
    get_captions,
    load_annotations,
    pre_text,
    require_keys,
)

__all__ = [
    "AudioTextDataset",
    "BrokenSamplePolicy",
    "ImageTextDataset",
    "InstructionDataset",
    "MultipleChoiceQADataset",
    "TooManyBrokenSamples",
    "VideoAudioTextDataset",
    "VideoTextDataset",
    "collate",
    "mcqa_prompt",
    "mvbench_frame_indices",
]

logger = logging.getLogger("iv2_data")

VideoReader = Callable[..., torch.Tensor]


class TooManyBrokenSamples(RuntimeError):
    """More samples failed to load than :class:`BrokenSamplePolicy` allows."""


@dataclass
class BrokenSamplePolicy:
    """How many unreadable samples a dataset tolerates before it stops.

    A failure is allowed while ``failures <= max_fraction * max(attempts, min_attempts)``: early in a run the
    budget is ``max_fraction * min_attempts`` failures, later the fraction of all attempts. ``max_fraction=0``
    fails on the first broken file. ``max_consecutive`` bounds how many records one ``__getitem__`` tries.
    """

    max_fraction: float = 0.05
    min_attempts: int = 100
    max_consecutive: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {self.max_fraction}")


@dataclass
class BrokenSampleStats:
    attempts: int = 0
    failures: int = 0
    failed_files: list[str] = field(default_factory=list)


def _pick_video_reader(video_reader: VideoReader | None) -> VideoReader:
    if video_reader is not None:
        return video_reader
    from iv2_data.video import read_clip

    return read_clip


class AnnotationDataset(Dataset):
    """Shared machinery: load and validate records, resolve media paths, skip broken samples.

    ``annotations`` is an annotation file or a list of records (as shards carry them); ``media_root`` defaults
    to the annotation file's folder.
    """

    required_keys: ClassVar[tuple[str, ...]] = ()
    media_keys: ClassVar[tuple[str, ...]] = ()  # record keys that name media files (present ones are loaded)

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Sequence[dict[str, Any]],
        media_root: str | os.PathLike[str] | None = None,
        *,
        broken: BrokenSamplePolicy | None = None,
    ) -> None:
        if isinstance(annotations, (str, os.PathLike)):
            self.source = str(annotations)
            records = load_annotations(annotations)
            default_root = Path(annotations).parent
        else:
            self.source = "<records>"
            records = list(annotations)
            default_root = Path(".")
        self.media_root = Path(media_root) if media_root is not None else default_root
        for index, record in enumerate(records):
            require_keys(record, self.required_keys, self.source, index)
            self.validate(record, index)
        self.records = self.filter_records(records)
        self.broken = broken or BrokenSamplePolicy()
        self.stats = BrokenSampleStats()

    # -- hooks for subclasses ---------------------------------------------------------------------------
    def validate(self, record: dict[str, Any], index: int) -> None:
        """Check one record at load time; raise :class:`AnnotationError` naming the record."""

    def filter_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return records

    def build_sample(self, record: dict[str, Any], media: Mapping[str, Path], index: int) -> dict[str, Any]:
        """Turn a record and its media files into a sample. Shared by map-style and shard datasets."""
        raise NotImplementedError

    # -- map-style protocol ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def media_paths(self, record: dict[str, Any]) -> dict[str, Path]:
        paths = {}
        for key in self.media_keys:
            if record.get(key):
                value = Path(record[key])
                paths[key] = value if value.is_absolute() else self.media_root / value
        return paths

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__} of {self.source} has {len(self)} records, got {index}")
        tries = min(self.broken.max_consecutive, len(self))
        for offset in range(tries):
            current = (index + offset) % len(self)
            record = self.records[current]
            paths = self.media_paths(record)
            try:
                sample = self.build_sample(record, paths, current)
            except OSError as error:
                # Name the file that failed when the error knows it, else every media file of the record.
                named = getattr(error, "path", None) or getattr(error, "filename", None)
                where = named or ", ".join(str(p) for p in paths.values())
                self.record_failure(where or self.source, error)
                continue
            self.stats.attempts += 1
            return sample
        raise TooManyBrokenSamples(
            f"{type(self).__name__} of {self.source}: {tries} records in a row from "
            f"index {index} could not be read; last failures: {self.stats.failed_files[-5:]}"
        )

    def record_failure(self, path: Path | str, error: BaseException) -> None:
        """Count, log, and stop the run when the policy's budget is spent."""
        self.stats.attempts += 1
        self.stats.failures += 1
        self.stats.failed_files.append(str(path))
        del self.stats.failed_files[:-100]  # keep the last 100 names
        logger.warning(
            "skipping unreadable sample %s (%s); %d of %d samples failed so far",
            path,
            error,
            self.stats.failures,
            self.stats.attempts,
        )
        allowed = self.broken.max_fraction * max(self.stats.attempts, self.broken.min_attempts)
        if self.stats.failures > allowed:
            raise TooManyBrokenSamples(
                f"{type(self).__name__} of {self.source}: {self.stats.failures} of {self.stats.attempts} "
                f"samples failed to load, more than the allowed fraction {self.broken.max_fraction} "
                f"(BrokenSamplePolicy); last failures: {self.stats.failed_files[-5:]}; "
                f"last error: {error}"
            ) from error


class _CaptionMixin:
    """Caption choice and cleaning shared by the contrastive datasets."""

    caption_key: str = "caption"
    source: str

    def _init_captions(
        self, text_transform: Callable[[str], str] | None, caption_sampling: str, min_caption_words: int
    ) -> None:
        if caption_sampling not in ("random", "first"):
            raise ValueError(f"caption_sampling must be 'random' or 'first', got {caption_sampling!r}")
        self.text_transform = text_transform
        self.caption_sampling = caption_sampling
        self.min_caption_words = min_caption_words

    def captions(self, index: int) -> list[str]:
        """All (cleaned) captions of record ``index``, e.g. for retrieval evaluation."""
        raw = get_captions(self.records[index], self.source, index, self.caption_key)  # type: ignore[attr-defined]
        return [self.text_transform(c) if self.text_transform else c for c in raw]

    def _caption(self, record: dict[str, Any], index: int) -> str:
        captions = get_captions(record, self.source, index, self.caption_key)
        if self.caption_sampling == "random" and len(captions) > 1:
            caption = captions[int(torch.randint(len(captions), ()).item())]
        else:
            caption = captions[0]
        return self.text_transform(caption) if self.text_transform else caption

    def _keep_long_captions(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # The official loaders drop records whose cleaned caption is shorter than min_caption_length (2).
        if self.min_caption_words <= 0:
            return records
        kept = []
        for index, record in enumerate(records):
            captions = get_captions(record, self.source, index, self.caption_key)
            if any(len(pre_text(c).split()) >= self.min_caption_words for c in captions):
                kept.append(record)
        if len(kept) < len(records):
            logger.info(
                "%s: dropped %d of %d records with captions under %d words",
                self.source,
                len(records) - len(kept),
                len(records),
                self.min_caption_words,
            )
        return kept


class _VideoMixin:
    def _init_video(
        self,
        num_frames: int,
        size: int,
        sampling: str | None,
        train: bool,
        transform: Callable[..., torch.Tensor] | None,
        video_reader: VideoReader | None,
    ) -> None:
        self.num_frames = num_frames
        self.size = size
        # Unless given: a random frame per segment in training, segment middles otherwise, as the official
        # pipelines (video_sample_type "rand" for training, "middle" for evaluation).
        self.sampling = sampling if sampling is not None else ("random" if train else "middle")
        self.train = train
        self.transform = transform
        self.video_reader = _pick_video_reader(video_reader)

    def _read_time_bound(self, path: Path, rule: Callable[[int, float], list[int]]) -> torch.Tensor:
        """Frames ``rule(frame_count, fps)`` of ``path`` (a record's time bound), through the video reader."""
        from iv2_data.video import VideoReadError, probe_video

        info = probe_video(path)
        if not info.average_rate:
            raise VideoReadError(path, "the container gives no frame rate to map the record's time bound to frames")
        indices = rule(info.num_frames, info.average_rate)
        kwargs: dict[str, Any] = {"train": self.train, "indices": indices}
        if self.transform is not None:
            kwargs["transform"] = self.transform
        return self.video_reader(path, self.num_frames, self.size, self.sampling, **kwargs)

    def _read_video(self, path: Path, num_frames: int | None = None) -> torch.Tensor:
        kwargs: dict[str, Any] = {"train": self.train}
        if self.transform is not None:
            kwargs["transform"] = self.transform
        return self.video_reader(
            path,
            num_frames or self.num_frames,
            self.size,
            "middle" if num_frames == 1 else self.sampling,
            **kwargs,
        )


class VideoTextDataset(_CaptionMixin, _VideoMixin, AnnotationDataset):
    """``{"video", "caption" | "captions"}`` → ``{"video", "caption", "index", "path"}``.

    Frames: ``sampling`` (see :func:`~iv2_data.video.sample_frame_indices`) defaults to ``"random"`` with
    ``train=True`` and ``"middle"`` otherwise, the official training / evaluation rules; this holds for every
    video dataset here. One caption per sample: a random one (``caption_sampling="random"``, training) or the
    first. Captions are
    cleaned with :func:`~iv2_data.annotations.pre_text` unless ``text_transform`` says otherwise. For data
    where left and right matter (the synthetic corpus), give a training ``transform`` without flips.
    """

    required_keys = ("video",)
    media_keys = ("video",)

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Sequence[dict[str, Any]],
        media_root: str | os.PathLike[str] | None = None,
        *,
        num_frames: int = 8,
        size: int = 224,
        sampling: str | None = None,
        train: bool = False,
        transform: Callable[..., torch.Tensor] | None = None,
        video_reader: VideoReader | None = None,
        text_transform: Callable[[str], str] | None = pre_text,
        caption_sampling: str = "random",
        min_caption_words: int = 2,
        broken: BrokenSamplePolicy | None = None,
    ) -> None:
        self._init_captions(text_transform, caption_sampling, min_caption_words)
        self._init_video(num_frames, size, sampling, train, transform, video_reader)
        super().__init__(annotations, media_root, broken=broken)

    def validate(self, record: dict[str, Any], index: int) -> None:
        get_captions(record, self.source, index, self.caption_key)

    def filter_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._keep_long_captions(records)

    def build_sample(self, record: dict[str, Any], media: Mapping[str, Path], index: int) -> dict[str, Any]:
        return {
            "video": self._read_video(media["video"]),
            "caption": self._caption(record, index),
            "index": index,
            "path": str(record["video"]),
        }


class ImageTextDataset(VideoTextDataset):
    """``{"image", "caption" | "captions"}`` → ``{"video": (3, 1, size, size), "caption", "index", "path"}``."""

    required_keys = ("image",)
    media_keys = ("image",)

    def build_sample(self, record: dict[str, Any], media: Mapping[str, Path], index: int) -> dict[str, Any]:
        return {
            "video": self._read_video(media["image"], num_frames=1),
            "caption": self._caption(record, index),
            "index": index,
            "path": str(record["image"]),
        }


class _AudioMixin:
    def _init_audio(self, max_audio_seconds: float, train: bool) -> None:
        from iv2_data.audio import read_audio_fbank

        self._read_fbank = read_audio_fbank
        self.max_audio_seconds = max_audio_seconds
        self.random_audio_crop = train

    def _read_audio(self, path: Path) -> torch.Tensor | None:
        return self._read_fbank(path, max_seconds=self.max_audio_seconds, random_crop=self.random_audio_crop)


class AudioTextDataset(_CaptionMixin, _AudioMixin, AnnotationDataset):
    """``{"audio", "caption" | "captions"}`` → ``{"audio": (998, 64), "caption", "index", "path"}``.

    An audio file without an audio stream counts as a broken sample.
    """

    required_keys = ("audio",)
    media_keys = ("audio",)

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Sequence[dict[str, Any]],
        media_root: str | os.PathLike[str] | None = None,
        *,
        train: bool = False,
        max_audio_seconds: float = 10.0,
        text_transform: Callable[[str], str] | None = pre_text,
        caption_sampling: str = "random",
        min_caption_words: int = 2,
        broken: BrokenSamplePolicy | None = None,
    ) -> None:
        self._init_captions(text_transform, caption_sampling, min_caption_words)
        self._init_audio(max_audio_seconds, train)
        super().__init__(annotations, media_root, broken=broken)

    def validate(self, record: dict[str, Any], index: int) -> None:
        get_captions(record, self.source, index, self.caption_key)

    def filter_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._keep_long_captions(records)

    def build_sample(self, record: dict[str, Any], media: Mapping[str, Path], index: int) -> dict[str, Any]:
        from iv2_data.audio import AudioReadError

        fbank = self._read_audio(media["audio"])
        if fbank is None:
            raise AudioReadError(media["audio"], "the file has no audio stream")
        return {"audio": fbank, "caption": self._caption(record, index), "index": index, "path": str(record["audio"])}


class VideoAudioTextDataset(_CaptionMixin, _VideoMixin, _AudioMixin, AnnotationDataset):
    """``{"video", "caption", "asr"?, "audio"?}`` → ``{"video", "audio", "has_audio", "caption", "asr",
    "index", "path"}``.

    Audio comes from the record's ``audio`` file when there is one, else from the video's audio track. A
    video without audio gets the official zero filter bank and ``has_audio=False``. ``caption_key`` picks the
    caption field (the fused audio-visual-speech caption by default); ``asr`` is the speech transcript
    (``""`` when absent).
    """

    required_keys = ("video",)
    media_keys = ("video", "audio")

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Sequence[dict[str, Any]],
        media_root: str | os.PathLike[str] | None = None,
        *,
        num_frames: int = 8,
        size: int = 224,
        sampling: str | None = None,
        train: bool = False,
        transform: Callable[..., torch.Tensor] | None = None,
        video_reader: VideoReader | None = None,
        max_audio_seconds: float = 10.0,
        caption_key: str = "caption",
        asr_key: str = "asr",
        text_transform: Callable[[str], str] | None = pre_text,
        caption_sampling: str = "random",
        min_caption_words: int = 2,
        broken: BrokenSamplePolicy | None = None,
    ) -> None:
        self.caption_key = caption_key
        self.asr_key = asr_key
        self._init_captions(text_transform, caption_sampling, min_caption_words)
        self._init_video(num_frames, size, sampling, train, transform, video_reader)
        self._init_audio(max_audio_seconds, train)
        super().__init__(annotations, media_root, broken=broken)

    def validate(self, record: dict[str, Any], index: int) -> None:
        get_captions(record, self.source, index, self.caption_key)
        asr = record.get(self.asr_key, "")
        if not isinstance(asr, str):
            raise AnnotationError(f"{self.source}, record {index}: {self.asr_key!r} must be a string")

    def filter_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._keep_long_captions(records)

    def build_sample(self, record: dict[str, Any], media: Mapping[str, Path], index: int) -> dict[str, Any]:
        from iv2_data.audio import missing_audio_fbank

        video = self._read_video(media["video"])
        fbank = self._read_audio(media.get("audio", media["video"]))
        asr = record.get(self.asr_key, "")
        return {
            "video": video,
            "audio": fbank if fbank is not None else missing_audio_fbank(self.max_audio_seconds),
            "has_audio": fbank is not None,
            "caption": self._caption(record, index),
            "asr": self.text_transform(asr) if (self.text_transform and asr) else asr,
            "index": index,
            "path": str(record["video"]),
        }


OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def mcqa_prompt(question: str, candidates: Sequence[str]) -> str:
    """The MVBench question block: ``Question: {q}\\nOptions:\\n(A) …\\n(B) …`` (right-stripped)."""
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(candidates)]
    return "\n".join(lines).rstrip()


def mvbench_frame_indices(
    num_video_frames: int,
    fps: float,
    num_frames: int,
    start: float | None = None,
    end: float | None = None,
    first_index: int = 0,
) -> list[int]:
    """The official MVBench ``get_index``: frames ``int(s + seg/2 + round(seg·i))`` with ``seg = (e − s)/n``,
    ``s = max(first_index, round(start·fps))`` and ``e = min(round(end·fps), N − 1)``; without a bound
    (``start``/``end`` ``None``) the whole video, where it equals the ``"get_index"`` sampling. Indices are
    clamped to ``[0, N)`` (a bound past the end of the file)."""
    if num_video_frames < 1 or num_frames < 1:
        raise ValueError(f"need >= 1 video frame and >= 1 frame to read, got {num_video_frames}, {num_frames}")
    last = num_video_frames - 1
    s = max(first_index, round(start * fps)) if start is not None else first_index
    e = min(round(end * fps), last) if end is not None else last
    seg = (e - s) / num_frames
    return [min(max(int(s + seg / 2 + round(seg * i)), 0), last) for i in range(num_frames)]


class MultipleChoiceQADataset(_VideoMixin, AnnotationDataset):
    """MVBench layout ``{"video", "question", "candidates", "answer"}`` →
    ``{"video", "question", "candidates", "answer", "answer_index", "answer_letter", "prompt", "target",
    "task", "index", "path"}``; ``prompt`` is the question block and ``target`` the ground truth ``"(B) …"``.

    A record with a time bound (MVBench's ``"start"`` and ``"end"``, in seconds) is about that part of the
    video only: its frames follow :func:`mvbench_frame_indices` over the bound (the video reader then gets
    ``indices=``), as the official evaluation reads them.
    """

    required_keys = ("video", "question", "candidates", "answer")
    media_keys = ("video",)

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Sequence[dict[str, Any]],
        media_root: str | os.PathLike[str] | None = None,
        *,
        num_frames: int = 8,
        size: int = 224,
        sampling: str | None = None,
        train: bool = False,
        transform: Callable[..., torch.Tensor] | None = None,
        video_reader: VideoReader | None = None,
        broken: BrokenSamplePolicy | None = None,
    ) -> None:
        self._init_video(num_frames, size, sampling, train, transform, video_reader)
        super().__init__(annotations, media_root, broken=broken)

    def validate(self, record: dict[str, Any], index: int) -> None:
        candidates = record["candidates"]
        if not isinstance(candidates, list) or not 2 <= len(candidates) <= len(OPTION_LETTERS):
            raise AnnotationError(f"{self.source}, record {index}: 'candidates' must be a list of >= 2 options")
        if record["answer"] not in candidates:
            raise AnnotationError(
                f"{self.source}, record {index}: answer {record['answer']!r} is not one of {candidates}"
            )
        _check_time_bound(record, self.source, index)

    def _read_bounded(self, path: Path, start: float, end: float) -> torch.Tensor:
        return self._read_time_bound(path, lambda n, fps: mvbench_frame_indices(n, fps, self.num_frames, start, end))

    def build_sample(self, record: dict[str, Any], media: Mapping[str, Path], index: int) -> dict[str, Any]:
        candidates = [str(c) for c in record["candidates"]]
        answer_index = candidates.index(str(record["answer"]))
        letter = OPTION_LETTERS[answer_index]
        if record.get("start") is not None:
            video = self._read_bounded(media["video"], float(record["start"]), float(record["end"]))
        else:
            video = self._read_video(media["video"])
        return {
            "video": video,
            "question": record["question"],
            "candidates": candidates,
            "answer": candidates[answer_index],
            "answer_index": answer_index,
            "answer_letter": letter,
            "prompt": mcqa_prompt(record["question"], candidates),
            "target": f"({letter}) {candidates[answer_index]}",
            "task": record.get("task", ""),
            "index": index,
            "path": str(record["video"]),
        }


class InstructionDataset(_VideoMixin, AnnotationDataset):
    """VideoChat2 layout ``{"video" | "image", "QA": [{"i", "q", "a"}, ...]}`` →
    ``{"video", "media_type", "instruction", "qa", "index", "path"}``.

    ``instruction`` is the record-level instruction (``QA[0]["i"]``, what the official code feeds the
    QFormer); ``qa`` is the list of ``{"q", "a"}`` turns in file order (prompt building, including the
    official shuffling of turns, belongs to the chat stage). Images are one-frame videos. A record with
    ``"start"`` and ``"end"`` (seconds) is read from that clip only, as the official VideoChat2 reader does:
    the segment rule over ``int((end − start)·fps)`` frames, offset by ``int(start·fps)``.
    """

    def _read_clip_of(self, path: Path, start: float, end: float) -> torch.Tensor:
        from iv2_data.video import sample_frame_indices

        def rule(total: int, fps: float) -> list[int]:
            first = min(int(start * fps), total - 1)
            length = max(1, min(int((end - start) * fps), total - first))
            return [first + i for i in sample_frame_indices(length, self.num_frames, self.sampling)]

        return self._read_time_bound(path, rule)

    media_keys = ("video", "image")

    def __init__(
        self,
        annotations: str | os.PathLike[str] | Sequence[dict[str, Any]],
        media_root: str | os.PathLike[str] | None = None,
        *,
        num_frames: int = 8,
        size: int = 224,
        sampling: str | None = None,
        train: bool = False,
        transform: Callable[..., torch.Tensor] | None = None,
        video_reader: VideoReader | None = None,
        broken: BrokenSamplePolicy | None = None,
    ) -> None:
        self._init_video(num_frames, size, sampling, train, transform, video_reader)
        super().__init__(annotations, media_root, broken=broken)

    def validate(self, record: dict[str, Any], index: int) -> None:
        if not record.get("video") and not record.get("image"):
            raise AnnotationError(f"{self.source}, record {index}: needs a 'video' or an 'image' key")
        _check_time_bound(record, self.source, index)
        turns = record.get("QA")
        if not isinstance(turns, list) or not turns:
            raise AnnotationError(f"{self.source}, record {index}: 'QA' must be a non-empty list of turns")
        for number, turn in enumerate(turns):
            if not isinstance(turn, dict) or "a" not in turn:
                raise AnnotationError(f"{self.source}, record {index}, QA turn {number}: needs an 'a' key")

    def build_sample(self, record: dict[str, Any], media: Mapping[str, Path], index: int) -> dict[str, Any]:
        is_video = "video" in media
        path = media["video"] if is_video else media["image"]
        turns = record["QA"]
        if not is_video:
            video = self._read_video(path, num_frames=1)
        elif record.get("start") is not None and record.get("end") is not None:
            video = self._read_clip_of(path, float(record["start"]), float(record["end"]))
        else:
            video = self._read_video(path)
        return {
            "video": video,
            "media_type": "video" if is_video else "image",
            "instruction": turns[0].get("i", ""),
            "qa": [{"q": t.get("q", ""), "a": t["a"]} for t in turns],
            "index": index,
            "path": str(record["video"] if is_video else record["image"]),
        }


def _check_time_bound(record: dict[str, Any], source: str, index: int) -> None:
    bound = [record.get(k) for k in ("start", "end")]
    if any(b is not None for b in bound) and not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in bound
    ):
        raise AnnotationError(
            f"{source}, record {index}: a time bound needs numeric 'start' and 'end' (seconds), got {bound}"
        )


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
