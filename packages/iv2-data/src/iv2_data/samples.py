"""What a sample is, for each kind of training data: one builder per kind, each with a typed schema.

A builder turns one annotation record and its media (:class:`~iv2_data.reading.MediaAccess`: files, shard
members in memory, or clips the synthetic corpus renders) into a sample dict. Where records come from is not
its business, so the file datasets (:mod:`iv2_data.datasets`), the shard reader (:mod:`iv2_data.shards`) and
the synthetic corpus (:mod:`iv2_data.synthetic`) all build their samples here and yield the same dicts.

Kinds (``kind``: builder → schema; record keys):

- ``video_text``: :class:`VideoTextBuilder` → :class:`VideoTextSample`; ``video``, ``caption``/``captions``
- ``image_text``: :class:`ImageTextBuilder` → :class:`VideoTextSample` (T = 1); ``image``, ``caption``/``captions``
- ``audio_text``: :class:`AudioTextBuilder` → :class:`AudioTextSample`; ``audio``, ``caption``
- ``video_audio_text``: :class:`VideoAudioTextBuilder` → :class:`VideoAudioTextSample`; ``video``, ``caption``,
  optional ``asr`` and ``audio``
- ``mcqa``: :class:`MultipleChoiceQABuilder` → :class:`MultipleChoiceQASample`; ``video``, ``question``,
  ``candidates``, ``answer``, optional ``start``/``end``
- ``instructions``: :class:`InstructionBuilder` → :class:`InstructionSample`; ``video`` or ``image``, ``QA``
- ``video_label``: :class:`VideoLabelBuilder` → :class:`VideoLabelSample`; ``video``, ``label``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import torch

from iv2_data.annotations import AnnotationError, get_captions, pre_text, require_keys
from iv2_data.media import AudioReadError
from iv2_data.reading import MediaAccess
from iv2_data.sampling import clip_window, mvbench_frame_indices, window_frame_indices

__all__ = [
    "OPTION_LETTERS",
    "SAMPLE_BUILDERS",
    "AudioTextBuilder",
    "AudioTextSample",
    "ImageTextBuilder",
    "InstructionBuilder",
    "InstructionSample",
    "MultipleChoiceQABuilder",
    "MultipleChoiceQASample",
    "SampleBuilder",
    "VideoAudioTextBuilder",
    "VideoAudioTextSample",
    "VideoLabelBuilder",
    "VideoLabelSample",
    "VideoTextBuilder",
    "VideoTextSample",
    "mcqa_prompt",
    "sample_builder",
]

logger = logging.getLogger("iv2_data")

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ---------------------------------------------------------------------------------------------------------
# Schemas. Pixels are always "video" float32 (3, T, size, size) (an image is a one-frame video); audio is the
# (998, 64) filter bank; "index" is the record's index in its annotation file, "path" its media path as written.


class VideoTextSample(TypedDict):
    video: torch.Tensor
    caption: str
    index: int
    path: str


class AudioTextSample(TypedDict):
    audio: torch.Tensor
    caption: str
    index: int
    path: str


class VideoAudioTextSample(TypedDict):
    video: torch.Tensor
    audio: torch.Tensor
    has_audio: bool
    caption: str
    asr: str
    index: int
    path: str


class MultipleChoiceQASample(TypedDict):
    video: torch.Tensor
    question: str
    candidates: list[str]
    answer: str
    answer_index: int
    answer_letter: str
    prompt: str
    target: str
    task: str
    index: int
    path: str


class InstructionSample(TypedDict):
    video: torch.Tensor
    media_type: str
    instruction: str
    qa: list[dict[str, str]]
    index: int
    path: str


class VideoLabelSample(TypedDict):
    video: torch.Tensor
    label: int
    label_name: str
    index: int
    path: str


# ---------------------------------------------------------------------------------------------------------
# Builders


@dataclass
class SampleBuilder:
    """Base of the builders: which record keys are required and which name media files, load-time checks
    (:meth:`validate`, :meth:`prepare`) and :meth:`build`. ``source`` in messages is the annotation file."""

    kind: ClassVar[str] = ""
    required_keys: ClassVar[tuple[str, ...]] = ()
    media_keys: ClassVar[tuple[str, ...]] = ()

    def validate(self, record: Mapping[str, Any], source: str, index: int) -> None:
        """Check one record when it is loaded; raise :class:`~iv2_data.AnnotationError` naming it."""
        require_keys(dict(record), self.required_keys, source, index)

    def prepare(self, records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        """Validate every record and return those to keep (a builder may drop some, as the official loaders)."""
        for index, record in enumerate(records):
            self.validate(record, source, index)
        return records

    def media_of(self, record: Mapping[str, Any]) -> dict[str, str]:
        """Record key → media path as written in the record, for the media keys it has."""
        return {key: record[key] for key in self.media_keys if record.get(key)}

    def build(self, record: Mapping[str, Any], index: int, media: MediaAccess, source: str = "") -> dict[str, Any]:
        """The sample of ``record`` (number ``index`` of ``source``) from its ``media``."""
        raise NotImplementedError


@dataclass
class _CaptionBuilder(SampleBuilder):
    """Caption choice and cleaning shared by the contrastive kinds: one caption per access (a random one with
    ``caption_sampling="random"``, else the first), cleaned by ``text_transform`` (the official
    :func:`~iv2_data.pre_text` by default); records whose captions all have fewer than ``min_caption_words``
    words are dropped at load time, as the official loaders do."""

    text_transform: Callable[[str], str] | None = pre_text
    caption_sampling: str = "random"
    min_caption_words: int = 2
    caption_key: str = "caption"

    def __post_init__(self) -> None:
        if self.caption_sampling not in ("random", "first"):
            raise ValueError(f"caption_sampling must be 'random' or 'first', got {self.caption_sampling!r}")

    def _clean(self, text: str) -> str:
        return self.text_transform(text) if self.text_transform else text

    def captions(self, record: Mapping[str, Any], source: str, index: int) -> list[str]:
        """All (cleaned) captions of a record, e.g. for retrieval evaluation."""
        return [self._clean(c) for c in get_captions(dict(record), source, index, self.caption_key)]

    def caption(self, record: Mapping[str, Any], source: str, index: int) -> str:
        captions = get_captions(dict(record), source, index, self.caption_key)
        pick = 0
        if self.caption_sampling == "random" and len(captions) > 1:
            pick = int(torch.randint(len(captions), ()).item())
        return self._clean(captions[pick])

    def validate(self, record: Mapping[str, Any], source: str, index: int) -> None:
        super().validate(record, source, index)
        get_captions(dict(record), source, index, self.caption_key)

    def prepare(self, records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        records = super().prepare(records, source)
        if self.min_caption_words <= 0:
            return records
        kept = [
            record
            for index, record in enumerate(records)
            if any(
                len(pre_text(c).split()) >= self.min_caption_words
                for c in get_captions(record, source, index, self.caption_key)
            )
        ]
        if len(kept) < len(records):
            logger.info(
                "%s: dropped %d of %d records with captions under %d words",
                source,
                len(records) - len(kept),
                len(records),
                self.min_caption_words,
            )
        return kept


@dataclass
class VideoTextBuilder(_CaptionBuilder):
    """``{"video", "caption" | "captions"}`` → :class:`VideoTextSample`."""

    kind: ClassVar[str] = "video_text"
    required_keys: ClassVar[tuple[str, ...]] = ("video",)
    media_keys: ClassVar[tuple[str, ...]] = ("video",)

    def build(self, record: Mapping[str, Any], index: int, media: MediaAccess, source: str = "") -> dict[str, Any]:
        key = self.media_keys[0]
        return VideoTextSample(
            video=media.video(key, num_frames=1 if key == "image" else None),
            caption=self.caption(record, source, index),
            index=index,
            path=str(record[key]),
        )


@dataclass
class ImageTextBuilder(VideoTextBuilder):
    """``{"image", "caption" | "captions"}`` → :class:`VideoTextSample` with a one-frame ``video``."""

    kind: ClassVar[str] = "image_text"
    required_keys: ClassVar[tuple[str, ...]] = ("image",)
    media_keys: ClassVar[tuple[str, ...]] = ("image",)


@dataclass
class AudioTextBuilder(_CaptionBuilder):
    """``{"audio", "caption" | "captions"}`` → :class:`AudioTextSample`. A file without an audio stream is a
    broken sample."""

    kind: ClassVar[str] = "audio_text"
    required_keys: ClassVar[tuple[str, ...]] = ("audio",)
    media_keys: ClassVar[tuple[str, ...]] = ("audio",)

    def build(self, record: Mapping[str, Any], index: int, media: MediaAccess, source: str = "") -> dict[str, Any]:
        fbank = media.audio("audio")
        if fbank is None:
            raise AudioReadError(str(record["audio"]), "the file has no audio stream")
        return AudioTextSample(audio=fbank, caption=self.caption(record, source, index), index=index,
                               path=str(record["audio"]))


@dataclass
class VideoAudioTextBuilder(_CaptionBuilder):
    """``{"video", "caption", "asr"?, "audio"?}`` → :class:`VideoAudioTextSample`.

    Audio comes from the record's ``audio`` file when there is one, else from the video's audio track; a video
    without audio gets the official zero filter bank and ``has_audio=False``. ``caption_key`` picks the caption
    field (the fused audio-visual-speech caption by default); ``asr`` is the transcript (``""`` when absent).
    """

    kind: ClassVar[str] = "video_audio_text"
    required_keys: ClassVar[tuple[str, ...]] = ("video",)
    media_keys: ClassVar[tuple[str, ...]] = ("video", "audio")
    asr_key: str = "asr"

    def validate(self, record: Mapping[str, Any], source: str, index: int) -> None:
        super().validate(record, source, index)
        if not isinstance(record.get(self.asr_key, ""), str):
            raise AnnotationError(f"{source}, record {index}: {self.asr_key!r} must be a string")

    def build(self, record: Mapping[str, Any], index: int, media: MediaAccess, source: str = "") -> dict[str, Any]:
        video = media.video("video")
        fbank = media.audio("audio" if media.has("audio") else "video")
        asr = record.get(self.asr_key, "")
        return VideoAudioTextSample(
            video=video,
            audio=fbank if fbank is not None else media.missing_audio(),
            has_audio=fbank is not None,
            caption=self.caption(record, source, index),
            asr=self._clean(asr) if asr else asr,
            index=index,
            path=str(record["video"]),
        )


def mcqa_prompt(question: str, candidates: Sequence[str]) -> str:
    """The MVBench question block: ``Question: {q}\\nOptions:\\n(A) …\\n(B) …`` (right-stripped)."""
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({OPTION_LETTERS[i]}) {c}" for i, c in enumerate(candidates)]
    return "\n".join(lines).rstrip()


def _check_time_bound(record: Mapping[str, Any], source: str, index: int) -> None:
    bound = [record.get(k) for k in ("start", "end")]
    if any(b is not None for b in bound) and not all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in bound
    ):
        raise AnnotationError(
            f"{source}, record {index}: a time bound needs numeric 'start' and 'end' (seconds), got {bound}"
        )


@dataclass
class MultipleChoiceQABuilder(SampleBuilder):
    """MVBench layout ``{"video", "question", "candidates", "answer"}`` → :class:`MultipleChoiceQASample`;
    ``prompt`` is the question block and ``target`` the ground truth ``"(B) …"``.

    A record with a time bound (``"start"``, ``"end"`` in seconds) is about that part of the video only: its
    frames follow :func:`~iv2_data.sampling.mvbench_frame_indices` over the bound, as the official evaluation
    reads them.
    """

    kind: ClassVar[str] = "mcqa"
    required_keys: ClassVar[tuple[str, ...]] = ("video", "question", "candidates", "answer")
    media_keys: ClassVar[tuple[str, ...]] = ("video",)

    def validate(self, record: Mapping[str, Any], source: str, index: int) -> None:
        super().validate(record, source, index)
        candidates = record["candidates"]
        if not isinstance(candidates, list) or not 2 <= len(candidates) <= len(OPTION_LETTERS):
            raise AnnotationError(f"{source}, record {index}: 'candidates' must be a list of >= 2 options")
        if record["answer"] not in candidates:
            raise AnnotationError(f"{source}, record {index}: answer {record['answer']!r} is not one of {candidates}")
        _check_time_bound(record, source, index)

    def build(self, record: Mapping[str, Any], index: int, media: MediaAccess, source: str = "") -> dict[str, Any]:
        candidates = [str(c) for c in record["candidates"]]
        answer_index = candidates.index(str(record["answer"]))
        letter = OPTION_LETTERS[answer_index]
        rule = None
        if record.get("start") is not None:
            start, end = float(record["start"]), float(record["end"])

            def rule(total: int, fps: float, num_frames: int, sampling: str) -> list[int]:
                return mvbench_frame_indices(total, fps, num_frames, start, end)

        return MultipleChoiceQASample(
            video=media.video("video", frames_rule=rule),
            question=record["question"],
            candidates=candidates,
            answer=candidates[answer_index],
            answer_index=answer_index,
            answer_letter=letter,
            prompt=mcqa_prompt(record["question"], candidates),
            target=f"({letter}) {candidates[answer_index]}",
            task=record.get("task", ""),
            index=index,
            path=str(record["video"]),
        )


@dataclass
class InstructionBuilder(SampleBuilder):
    """VideoChat2 layout ``{"video" | "image", "QA": [{"i", "q", "a"}, ...]}`` → :class:`InstructionSample`.

    ``instruction`` is the record-level instruction (``QA[0]["i"]``, what the official code feeds the QFormer);
    ``qa`` the ``{"q", "a"}`` turns in file order (prompt building, including the official shuffling of turns,
    belongs to the chat stage). Images are one-frame videos. A record with ``"start"`` and ``"end"`` (seconds)
    is read from that clip only, as the official VideoChat2 reader does (:func:`~iv2_data.sampling.clip_window`).
    """

    kind: ClassVar[str] = "instructions"
    media_keys: ClassVar[tuple[str, ...]] = ("video", "image")

    def validate(self, record: Mapping[str, Any], source: str, index: int) -> None:
        if not record.get("video") and not record.get("image"):
            raise AnnotationError(f"{source}, record {index}: needs a 'video' or an 'image' key")
        _check_time_bound(record, source, index)
        turns = record.get("QA")
        if not isinstance(turns, list) or not turns:
            raise AnnotationError(f"{source}, record {index}: 'QA' must be a non-empty list of turns")
        for number, turn in enumerate(turns):
            if not isinstance(turn, dict) or "a" not in turn:
                raise AnnotationError(f"{source}, record {index}, QA turn {number}: needs an 'a' key")

    def build(self, record: Mapping[str, Any], index: int, media: MediaAccess, source: str = "") -> dict[str, Any]:
        is_video = media.has("video")
        turns = record["QA"]
        if not is_video:
            video = media.video("image", num_frames=1)
        elif record.get("start") is not None and record.get("end") is not None:
            start, end = float(record["start"]), float(record["end"])

            def rule(total: int, fps: float, num_frames: int, sampling: str) -> list[int]:
                return window_frame_indices(*clip_window(total, fps, start, end), num_frames, sampling)

            video = media.video("video", frames_rule=rule)
        else:
            video = media.video("video")
        return InstructionSample(
            video=video,
            media_type="video" if is_video else "image",
            instruction=turns[0].get("i", ""),
            qa=[{"q": t.get("q", ""), "a": t["a"]} for t in turns],
            index=index,
            path=str(record["video"] if is_video else record["image"]),
        )


@dataclass
class VideoLabelBuilder(SampleBuilder):
    """``{"video", "label"}`` → :class:`VideoLabelSample`: a video with a class label, for classification,
    k-NN and linear-probe evaluation.

    ``label_key`` names the record field holding the class: an integer class index, or a class name looked up
    in ``classes``. Without ``classes``, names are numbered in sorted order over the annotation file (so give
    ``classes`` when train and test files must agree, and for shards, which stream). ``label_name`` comes from
    ``classes``, else the record's ``label_name``, else the label itself.
    """

    kind: ClassVar[str] = "video_label"
    required_keys: ClassVar[tuple[str, ...]] = ("video",)
    media_keys: ClassVar[tuple[str, ...]] = ("video",)
    label_key: str = "label"
    classes: Sequence[str] | None = None
    _index_of: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.classes is not None:
            self.classes = list(self.classes)
            self._index_of = {name: i for i, name in enumerate(self.classes)}

    def validate(self, record: Mapping[str, Any], source: str, index: int) -> None:
        super().validate(record, source, index)
        require_keys(dict(record), (self.label_key,), source, index)
        label = record[self.label_key]
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise AnnotationError(
                f"{source}, record {index}: {self.label_key!r} must be a class index or a class name, got {label!r}"
            )
        if isinstance(label, int) and (label < 0 or (self.classes is not None and label >= len(self.classes))):
            count = len(self.classes) if self.classes is not None else "any"
            raise AnnotationError(f"{source}, record {index}: class index {label} out of range ({count} classes)")
        if isinstance(label, str) and self.classes is not None and label not in self._index_of:
            raise AnnotationError(f"{source}, record {index}: unknown class {label!r}; classes are {self.classes}")

    def prepare(self, records: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
        records = super().prepare(records, source)
        names = sorted({r[self.label_key] for r in records if isinstance(r[self.label_key], str)})
        if names and self.classes is None:
            self.classes = names
            self._index_of = {name: i for i, name in enumerate(names)}
        return records

    def label_of(self, record: Mapping[str, Any]) -> tuple[int, str]:
        label = record[self.label_key]
        if isinstance(label, str):
            if label not in self._index_of:
                raise AnnotationError(
                    f"class {label!r} of {record.get('video')!r} is not among the classes {self.classes}; pass "
                    "classes= to the builder (needed for streamed records, whose class list is not known ahead)"
                )
            return self._index_of[label], label
        if self.classes is not None:
            return int(label), self.classes[int(label)]
        return int(label), str(record.get("label_name", label))

    def build(self, record: Mapping[str, Any], index: int, media: MediaAccess, source: str = "") -> dict[str, Any]:
        label, name = self.label_of(record)
        return VideoLabelSample(video=media.video("video"), label=label, label_name=name, index=index,
                                path=str(record["video"]))


SAMPLE_BUILDERS: dict[str, type[SampleBuilder]] = {
    builder.kind: builder
    for builder in (
        VideoTextBuilder,
        ImageTextBuilder,
        AudioTextBuilder,
        VideoAudioTextBuilder,
        MultipleChoiceQABuilder,
        InstructionBuilder,
        VideoLabelBuilder,
    )
}


def sample_builder(kind: str, **options: Any) -> SampleBuilder:
    """The builder of ``kind`` (a key of :data:`SAMPLE_BUILDERS`) with ``options``."""
    try:
        builder = SAMPLE_BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown sample kind {kind!r}; expected one of {sorted(SAMPLE_BUILDERS)}") from None
    return builder(**options)
