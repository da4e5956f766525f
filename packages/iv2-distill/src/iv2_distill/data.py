"""Stage-1 clips, read through iv2-data.

* :func:`training_records` — the ``"video"`` records of an annotation file minus the held-out tail;
* :func:`live_dataset` — the official stage-1 input (``iv2_data.VideoReadConfig.stage1``: TSN frames,
  GroupMultiScaleCrop, flips where records allow) through ``iv2_data.AnnotationDataset``;
* :class:`View`, :func:`draw_view`, :func:`read_view` — one *fixed* augmentation of a clip (its frame indices,
  crop box and flip), drawn as the stage-1 transform draws them; what the target cache records per item, so that
  training from the cache sees the very crops the teachers saw;
* :class:`ViewDataset` — clips read with given views (the cache's), optionally with their cached targets.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from iv2_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AnnotationDataset,
    GroupMultiScaleCrop,
    SampleBuilder,
    VideoReadConfig,
    load_annotations,
    probe_video,
    read_frames,
)
from iv2_data.reading import BrokenSamplePolicy, BrokenSamples
from iv2_data.transforms import normalize, resize_crop

log = logging.getLogger("iv2_distill")

TARGET_PREFIX = "targets."
"""Batch keys ``targets.<field>`` carry cached :class:`~iv2_distill.TeacherOutput` fields."""


@dataclass
class ClipBuilder(SampleBuilder):
    """``{"video"}`` → ``{"video", "index", "path"}``: stage 1 needs clips only (any other record keys, such
    as labels or captions, are ignored)."""

    kind: ClassVar[str] = "video"
    required_keys: ClassVar[tuple[str, ...]] = ("video",)
    media_keys: ClassVar[tuple[str, ...]] = ("video",)

    def build(self, record: Mapping[str, Any], index: int, media: Any, source: str = "") -> dict[str, Any]:
        return {"video": media.video("video"), "index": index, "path": str(record["video"])}


@dataclass(frozen=True)
class ClipRecords:
    """Records of an annotation file (``records[i]`` is record ``i`` of ``source``) and the folder their media
    paths are relative to."""

    records: list[dict[str, Any]]
    media_root: Path
    source: str

    def __len__(self) -> int:
        return len(self.records)

    def path(self, index: int) -> Path:
        path = Path(self.records[index]["video"])
        return path if path.is_absolute() else self.media_root / path


def read_records(annotations: str | os.PathLike, media_root: str | os.PathLike | None = None, *,
                 holdout_last: int = 0, part: str = "train") -> ClipRecords:
    """The records of ``annotations`` with a ``"video"`` key: ``part="train"`` all but the last ``holdout_last``,
    ``"holdout"`` the last ``holdout_last``, ``"all"`` every one."""
    records = load_annotations(annotations)
    source = str(annotations)
    for index, record in enumerate(records):
        ClipBuilder().validate(record, source, index)
    if holdout_last < 0 or holdout_last >= len(records):
        raise ValueError(f"{source}: holdout_last={holdout_last} must be in [0, {len(records)}) (it has "
                         f"{len(records)} records)")
    cut = len(records) - holdout_last
    chosen = {"train": records[:cut], "holdout": records[cut:], "all": records}[part]
    root = Path(media_root) if media_root else Path(annotations).parent
    return ClipRecords(list(chosen), root, source)


def training_records(annotations: str | os.PathLike, media_root: str | os.PathLike | None = None,
                     holdout_last: int = 0) -> ClipRecords:
    """The training clips: every record of ``annotations`` but the last ``holdout_last``."""
    return read_records(annotations, media_root, holdout_last=holdout_last, part="train")


def live_dataset(records: ClipRecords, num_frames: int, size: int, *,
                 broken: BrokenSamplePolicy | None = None) -> AnnotationDataset:
    """The official stage-1 training input over ``records``: ``num_frames`` TSN frames, GroupMultiScaleCrop to
    ``size`` with flips (none for records that forbid them), ImageNet normalisation. Samples: ``{"video":
    (3, num_frames, size, size), "index", "path"}``."""
    return AnnotationDataset(records.records, records.media_root, builder=ClipBuilder(),
                             video=VideoReadConfig.stage1(num_frames=num_frames, size=size), broken=broken)


# ------------------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class View:
    """One fixed augmentation of a clip: the frames read (``frame_indices``), the crop ``(top, left, height,
    width)`` of the decoded frames and whether it is mirrored."""

    frame_indices: tuple[int, ...]
    crop_box: tuple[int, int, int, int]
    flip: bool


def view_crop(size: int, record: Mapping[str, Any] | None = None) -> GroupMultiScaleCrop:
    """The stage-1 crop transform for ``record`` (flips off where the record forbids them)."""
    return VideoReadConfig.stage1(size=size).transform_for(record)  # type: ignore[return-value]


def draw_view(path: str | os.PathLike, num_frames: int, size: int, generator: torch.Generator, *,
              record: Mapping[str, Any] | None = None) -> View:
    """Draw a view of the clip at ``path`` as the stage-1 input does (TSN frame indices, a GroupMultiScaleCrop
    box, a flip), from ``generator``."""
    from iv2_data import sample_frame_indices

    info = probe_video(path)
    indices = sample_frame_indices(info.num_frames, num_frames, "tsn", generator=generator)
    crop = view_crop(size, record)
    box = crop.crop_box(info.height, info.width, generator)
    flip = bool(crop.flip_prob > 0 and torch.rand((), generator=generator).item() < crop.flip_prob)
    return View(tuple(indices), tuple(int(v) for v in box), flip)  # type: ignore[arg-type]


def read_view(path: str | os.PathLike, view: View, size: int, *, frame_stride: int = 1,
              interpolation: str = "bilinear") -> torch.Tensor:
    """The clip at ``path`` as ``view`` shows it: frames ``view.frame_indices[::frame_stride]``, cropped,
    resized to ``size`` (bilinear, as GroupMultiScaleCrop), mirrored if ``view.flip``, ImageNet-normalised:
    float32 ``(3, T, size, size)``."""
    frames = read_frames(path, indices=list(view.frame_indices[::frame_stride]))
    return crop_view(frames, view, size, interpolation=interpolation, source=path)


def crop_view(frames: torch.Tensor, view: View, size: int, *, interpolation: str = "bilinear",
              source: object = "frames") -> torch.Tensor:
    """The crop, resize, flip and normalisation of :func:`read_view` on decoded ``uint8 (T, H, W, 3)`` frames."""
    top, left, height, width = view.crop_box
    if top + height > frames.shape[1] or left + width > frames.shape[2]:
        raise ValueError(f"{source}: crop box {view.crop_box} (top, left, height, width) does not fit its frames of "
                         f"{frames.shape[1]}x{frames.shape[2]}; the file changed since the view was drawn")
    video = resize_crop(frames, view.crop_box, size, interpolation=interpolation)
    if view.flip:
        video = video.flip(-1)
    return normalize(video.contiguous(), IMAGENET_MEAN, IMAGENET_STD)


class _FrameCache:
    """Decoded frames kept in memory, least recently used out first, up to ``max_bytes`` (per process: each
    DataLoader worker has its own)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[Any, torch.Tensor] = OrderedDict()

    def get(self, key: Any) -> torch.Tensor | None:
        frames = self.entries.get(key)
        if frames is not None:
            self.entries.move_to_end(key)
        return frames

    def put(self, key: Any, frames: torch.Tensor) -> None:
        size = frames.numel() * frames.element_size()
        if size > self.max_bytes:
            return
        self.entries[key] = frames
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


class ViewDataset(Dataset):
    """Clips of ``records`` read with fixed views: item ``i`` is ``(record_of[i], views[i])``. Samples:
    ``{"video": (3, T, size, size), "index": i, "record": record index}`` plus ``targets.<field>`` tensors from
    ``targets(i)`` when given (a target cache). An unreadable clip is logged, counted by ``broken`` and replaced
    by the next item, as iv2-data's datasets do."""

    def __init__(
        self,
        records: ClipRecords,
        record_of: Sequence[int],
        views: Sequence[View],
        size: int,
        *,
        frame_stride: int = 1,
        targets: Callable[[int], Mapping[str, torch.Tensor]] | None = None,
        broken: BrokenSamplePolicy | None = None,
        frame_cache_mb: int = 0,
    ) -> None:
        if len(record_of) != len(views):
            raise ValueError(f"{len(record_of)} record indices for {len(views)} views")
        self.records, self.record_of, self.views = records, list(record_of), list(views)
        self.size, self.frame_stride, self.targets = size, frame_stride, targets
        self.guard = BrokenSamples(broken, owner=f"ViewDataset of {records.source}")
        # A small dataset read for many epochs decodes each view's frames once (its crop is fixed anyway).
        self.frames = _FrameCache(frame_cache_mb << 20) if frame_cache_mb > 0 else None

    def _read(self, item: int) -> torch.Tensor:
        view, record = self.views[item], self.record_of[item]
        path = self.records.path(record)
        if self.frames is None:
            return read_view(path, view, self.size, frame_stride=self.frame_stride)
        key = (record, view.frame_indices[:: self.frame_stride])
        frames = self.frames.get(key)
        if frames is None:
            frames = read_frames(path, indices=list(key[1]))
            self.frames.put(key, frames)
        return crop_view(frames, view, self.size, source=path)

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"ViewDataset has {len(self)} items, got {index}")
        for offset in range(min(self.guard.policy.max_consecutive, len(self))):
            item = (index + offset) % len(self)
            try:
                video = self._read(item)
            except OSError as error:
                self.guard.failure(self.records.path(self.record_of[item]), error)
                continue
            self.guard.success()
            sample: dict[str, Any] = {"video": video, "index": item, "record": self.record_of[item]}
            if self.targets is not None:
                sample.update({TARGET_PREFIX + k: v for k, v in self.targets(item).items()})
            return sample
        raise OSError(f"ViewDataset of {self.records.source}: {self.guard.policy.max_consecutive} clips in a row "
                      f"from item {index} could not be read; last failures: {self.guard.stats.failed_files[-5:]}")

