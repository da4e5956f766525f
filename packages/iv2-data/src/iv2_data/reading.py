"""How samples read their media: the value objects :class:`VideoReadConfig` / :class:`AudioReadConfig`, the media
a sample builder sees (:class:`MediaAccess`, :class:`FileMedia`), and the broken-sample policy.

One :class:`VideoReadConfig` says how every video of a dataset is read — frames, size, sampling, training or
evaluation, transform, reader, normalisation — for file datasets, shards and the synthetic corpus alike::

    VideoReadConfig(num_frames=8, size=224, train=True)          # stage 2: TSN-style random frames + RRC + flip
    VideoReadConfig.stage1()                                      # stage 1: 16 TSN frames, GroupMultiScaleCrop
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from iv2_data.media import MediaSource, VideoReadError
from iv2_data.sampling import SAMPLING_MODES
from iv2_data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCropTransform,
    GroupMultiScaleCrop,
    RandomResizedCropTransform,
)

__all__ = [
    "AudioReadConfig",
    "BrokenSamplePolicy",
    "BrokenSampleStats",
    "BrokenSamples",
    "FileMedia",
    "FramesRule",
    "MediaAccess",
    "TooManyBrokenSamples",
    "VideoReadConfig",
    "VideoReader",
]

logger = logging.getLogger("iv2_data")

VideoReader = Callable[..., torch.Tensor]
"""A :func:`~iv2_data.read_clip`-compatible reader: ``reader(source, num_frames, size, sampling, *, train,
transform, indices=None, generator=None) -> (3, T, size, size)``."""

FramesRule = Callable[[int, float, int, str], list[int]]
"""``rule(num_video_frames, fps, num_frames, sampling) -> frame indices``: which frames a record's time bound
asks for (``num_frames`` and ``sampling`` are the reader's)."""


@dataclass(frozen=True)
class VideoReadConfig:
    """How a dataset reads video: ``num_frames`` frames, ``size`` pixels square, picked by ``sampling``
    (:func:`~iv2_data.sample_frame_indices`; default ``"random"`` when ``train`` else ``"middle"``, the official
    training / evaluation rules), through ``transform`` (default: random resized crop + flip when ``train``,
    else centre crop; both normalised with ``mean``/``std``) and ``reader`` (default :func:`~iv2_data.read_clip`).

    ``no_flip_sources``: records whose ``"source"`` is one of these (or that say ``"flip": false``) are read
    without horizontal flips — the official stage-1 rule for Something-Something, where left and right carry
    the label (:meth:`transform_for`).
    """

    num_frames: int = 8
    size: int = 224
    sampling: str | None = None
    train: bool = False
    transform: Callable[..., torch.Tensor] | None = None
    reader: VideoReader | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    no_flip_sources: frozenset[str] = field(default_factory=lambda: frozenset({"ssv2"}))

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.size < 1:
            raise ValueError(f"num_frames and size must be >= 1, got {self.num_frames} and {self.size}")
        if self.sampling is not None and self.sampling not in SAMPLING_MODES:
            raise ValueError(f"unknown sampling {self.sampling!r}; expected one of {SAMPLING_MODES}")
        object.__setattr__(self, "no_flip_sources", frozenset(self.no_flip_sources))

    @classmethod
    def stage1(cls, num_frames: int = 16, size: int = 224, **overrides: Any) -> VideoReadConfig:
        """The official stage-1 training input (REFERENCE.md d.): TSN sampling of ``num_frames`` segments with
        one random frame each, :class:`~iv2_data.transforms.GroupMultiScaleCrop` to ``size`` with horizontal
        flips (none for ``ssv2`` records), ImageNet normalisation."""
        mean, std = overrides.pop("mean", IMAGENET_MEAN), overrides.pop("std", IMAGENET_STD)
        transform = overrides.pop("transform", None) or GroupMultiScaleCrop(size, mean=mean, std=std)
        options = {"sampling": "tsn", "train": True, "transform": transform, "mean": mean, "std": std, **overrides}
        return cls(num_frames, size, **options)

    @property
    def frame_sampling(self) -> str:
        """The sampling actually used: ``sampling``, or the train/eval default."""
        return self.sampling if self.sampling is not None else ("random" if self.train else "middle")

    def default_transform(self) -> Callable[..., torch.Tensor]:
        if self.train:
            return RandomResizedCropTransform(self.size, mean=self.mean, std=self.std)
        return CenterCropTransform(self.size, mean=self.mean, std=self.std)

    def transform_for(self, record: Mapping[str, Any] | None = None) -> Callable[..., torch.Tensor]:
        """The transform for one record: without flips where the record forbids them (``"flip": false``, or a
        ``"source"`` in :attr:`no_flip_sources`) and the transform has a ``flip_prob``."""
        transform = self.transform if self.transform is not None else self.default_transform()
        forbids_flip = record is not None and (
            record.get("flip") is False or record.get("source") in self.no_flip_sources
        )
        if forbids_flip and getattr(transform, "flip_prob", 0) and dataclasses.is_dataclass(transform):
            transform = dataclasses.replace(transform, flip_prob=0.0)  # type: ignore[type-var]
        return transform

    def read(
        self,
        source: MediaSource,
        *,
        record: Mapping[str, Any] | None = None,
        num_frames: int | None = None,
        frames_rule: FramesRule | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Read one clip ``(3, T, size, size)``. ``num_frames=1`` reads an image (its middle frame);
        ``frames_rule`` maps the video's frame count and rate to the frames to read (a record's time bound)."""
        from iv2_data.video import probe_video, read_clip

        reader = self.reader if self.reader is not None else read_clip
        kwargs: dict[str, Any] = {"train": self.train, "transform": self.transform_for(record)}
        if frames_rule is not None:
            info = probe_video(source)
            if not info.average_rate:
                name = getattr(source, "name", source)
                raise VideoReadError(name, "the container gives no frame rate to map the record's time bound to frames")
            kwargs["indices"] = frames_rule(info.num_frames, info.average_rate, num_frames or self.num_frames,
                                            self.frame_sampling)
        if generator is not None:
            kwargs["generator"] = generator
        sampling = "middle" if num_frames == 1 else self.frame_sampling
        return reader(source, num_frames or self.num_frames, self.size, sampling, **kwargs)


@dataclass(frozen=True)
class AudioReadConfig:
    """How a dataset reads audio: the official filter bank of ``max_seconds`` (998 × 64 rows for 10 s), cropped
    at a random offset when ``random_crop`` (training), else from the start."""

    max_seconds: float = 10.0
    random_crop: bool = False

    def read(self, source: MediaSource) -> torch.Tensor | None:
        """The fbank, or ``None`` when the file has no audio stream."""
        from iv2_data.audio import read_audio_fbank

        return read_audio_fbank(source, max_seconds=self.max_seconds, random_crop=self.random_crop)

    def missing(self) -> torch.Tensor:
        """The official zero filter bank for a video without audio."""
        from iv2_data.audio import missing_audio_fbank

        return missing_audio_fbank(self.max_seconds)


class MediaAccess(Protocol):
    """The media of one record, as a sample builder sees it: decoded on request, wherever it lives (files, shard
    members in memory, or rendered by the synthetic corpus)."""

    def has(self, key: str) -> bool: ...

    def video(self, key: str, *, num_frames: int | None = None, frames_rule: FramesRule | None = None) -> torch.Tensor:
        ...

    def audio(self, key: str) -> torch.Tensor | None: ...

    def missing_audio(self) -> torch.Tensor: ...


@dataclass
class FileMedia:
    """Media of one record from files or in-memory bytes (``sources``: record key → path or file object),
    read by the dataset's configs."""

    sources: Mapping[str, MediaSource]
    video_config: VideoReadConfig
    audio_config: AudioReadConfig
    record: Mapping[str, Any] | None = None

    def has(self, key: str) -> bool:
        return key in self.sources

    def video(self, key: str, *, num_frames: int | None = None, frames_rule: FramesRule | None = None) -> torch.Tensor:
        return self.video_config.read(self.sources[key], record=self.record, num_frames=num_frames,
                                      frames_rule=frames_rule)

    def audio(self, key: str) -> torch.Tensor | None:
        return self.audio_config.read(self.sources[key])

    def missing_audio(self) -> torch.Tensor:
        return self.audio_config.missing()


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


class BrokenSamples:
    """Counts attempts and failures of one reader (per process: per DataLoader worker), logs each failure with
    the file, and raises :class:`TooManyBrokenSamples` once the policy's budget is spent."""

    def __init__(self, policy: BrokenSamplePolicy | None = None, owner: str = "dataset") -> None:
        self.policy = policy or BrokenSamplePolicy()
        self.stats = BrokenSampleStats()
        self.owner = owner

    def success(self) -> None:
        self.stats.attempts += 1

    def failure(self, where: object, error: BaseException) -> None:
        """Count, log, and stop the run when the policy's budget is spent."""
        stats, policy = self.stats, self.policy
        stats.attempts += 1
        stats.failures += 1
        stats.failed_files.append(str(where))
        del stats.failed_files[:-100]  # keep the last 100 names
        logger.warning(
            "skipping unreadable sample %s (%s); %d of %d samples failed so far",
            where,
            error,
            stats.failures,
            stats.attempts,
        )
        allowed = policy.max_fraction * max(stats.attempts, policy.min_attempts)
        if stats.failures > allowed:
            raise TooManyBrokenSamples(
                f"{self.owner}: {stats.failures} of {stats.attempts} samples failed to load, more than the allowed "
                f"fraction {policy.max_fraction} (BrokenSamplePolicy); last failures: {stats.failed_files[-5:]}; "
                f"last error: {error}"
            ) from error
