"""Read video clips with PyAV: sample frame indices, decode only those frames, crop and normalise.

:func:`read_clip` is the one call most users need::

    clip = read_clip("video.mp4")                      # (3, 8, 224, 224), evaluation sampling
    clip = read_clip("video.mp4", 16, sampling="random", train=True, generator=g)   # training

Frame indices are chosen by :func:`sample_frame_indices` over the frames the file really holds (counted by
demuxing, which reads packets but decodes nothing), then :func:`read_frames` decodes just those frames: it
seeks to the keyframe before a wanted frame when that skips decoding, and otherwise decodes forward.
"""

from __future__ import annotations

import bisect
import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch
from torch.utils.data import get_worker_info

from iv2_data.media import MediaSource, VideoReadError, open_media
from iv2_data.sampling import SAMPLING_MODES, sample_frame_indices
from iv2_data.transforms import CenterCropTransform, RandomResizedCropTransform

__all__ = [
    "SAMPLING_MODES",
    "VideoInfo",
    "VideoReadError",
    "iter_frames",
    "probe_video",
    "read_clip",
    "read_frames",
    "sample_frame_indices",
]

# A decode error on a packet is tolerated (the frame is skipped) up to this many times in a row; a file that
# fails more often than that is treated as undecodable rather than decoded on and on.
_MAX_CONSECUTIVE_DECODE_ERRORS = 16


# ---------------------------------------------------------------------------------------------------------
# Probing


@dataclass(frozen=True)
class VideoInfo:
    """What demuxing a video stream found (without decoding it)."""

    num_frames: int  # frames the stream really holds (packets demuxed), not the header's claim
    width: int  # the coded picture; read_frames turns frames with a display rotation upright
    height: int
    codec: str
    container: str  # FFmpeg's name of the container format, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    # Presentation timestamps of all frames, sorted (stream time base); None where the file has no usable
    # ones (raw streams, AVI, duplicates): frames are then counted from the start instead.
    frame_pts: tuple[int, ...] | None
    keyframe_pts: tuple[int, ...]  # presentation timestamps of the keyframes, sorted; empty if unknown
    keyframe_dts: tuple[int, ...]  # their decode timestamps (what demuxers seek by), same order
    average_rate: float | None


# Containers whose packet timestamps are not presentation timestamps: AVI stores none, so FFmpeg numbers its
# packets in decode order, which differs from display order as soon as there are B-frames.
_UNORDERED_TIMESTAMP_FORMATS = {"avi"}


def _scan(container: av.container.InputContainer, stream, path: str) -> VideoInfo:
    """Demux every packet of ``stream`` (no decoding) to count frames and find keyframes."""
    pts: list[int] = []
    keyframes: list[tuple[int, int]] = []
    count = discarded = 0
    missing_pts = False
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            if packet.is_discard:  # a frame an edit list hides
                discarded += 1
                continue
            count += 1
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                missing_pts = True
                continue
            pts.append(ts)
            if packet.is_keyframe:
                keyframes.append((ts, packet.dts if packet.dts is not None else ts))
    except av.error.FFmpegError:
        # A truncated or damaged file: keep what demuxed cleanly; decoding below decides whether it is enough.
        pass
    if count == 0:
        raise VideoReadError(path, "the video stream holds no frames (truncated or empty stream)")
    fmt = container.format.name
    # MP4/MOV headers list every frame, so fewer demuxed frames mean the file lost its tail. (Other containers'
    # counts are estimates or absent.)
    if "mp4" in fmt.split(",") and stream.frames and count + discarded < stream.frames:
        warnings.warn(
            f"{path!r}: the container lists {stream.frames} frames but only {count} could be demuxed "
            "(truncated file?); sampling from those",
            stacklevel=4,
        )
    usable = not missing_pts and len(set(pts)) == len(pts) and fmt not in _UNORDERED_TIMESTAMP_FORMATS
    keyframes.sort()
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        num_frames=count,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        codec=stream.codec_context.name,
        container=fmt,
        frame_pts=tuple(sorted(pts)) if usable else None,
        keyframe_pts=tuple(k[0] for k in keyframes) if usable else (),
        keyframe_dts=tuple(k[1] for k in keyframes) if usable else (),
        average_rate=float(rate) if rate else None,
    )


def probe_video(path: MediaSource) -> VideoInfo:
    """Frame count, size, codec and timestamps of a video's first video stream (demuxes, never decodes)."""
    with open_media(path, "video") as media:
        return _scan(media.container, media.video_stream(), media.name)


# ---------------------------------------------------------------------------------------------------------
# Decoding


class _UnreliableTimestamps(Exception):
    """Seeking or the frames' timestamps did not behave; the caller falls back to counting frames."""


class _Decoder:
    """Decodes frames of one stream in presentation order, packet by packet, tolerating damaged packets."""

    def __init__(
        self,
        container,
        stream,
        path: str,
        wanted_pts: frozenset[int] | None = None,
        *,
        auto_rotate: bool = True,
    ) -> None:
        self.container, self.stream, self.path = container, stream, path
        self.auto_rotate = auto_rotate
        self.keyframe_set: frozenset[int] = frozenset()
        # With the timestamps of the wanted frames known, packets of other frames that no frame refers to
        # (non-reference B-frames) need not be decoded at all: FFmpeg's skip_frame=NONREF drops them. It is
        # switched per packet, before the packet is sent, so each wanted frame is decoded in full.
        self.wanted_pts = wanted_pts
        self.decode_errors = 0
        self.last_error: Exception | None = None

    def rgb(self, frame) -> np.ndarray:
        return _to_rgb(frame, self.auto_rotate)

    def frames(self, seek_dts: int | None = None):
        """Frames from the keyframe at or before ``seek_dts`` (stream time base), or from where the demuxer
        stands when ``None``."""
        if seek_dts is not None:
            try:
                self.container.seek(seek_dts, stream=self.stream, backward=True, any_frame=False)
            except av.error.FFmpegError as e:
                raise _UnreliableTimestamps(f"seek failed: {e}") from e
        consecutive = 0
        codec = self.stream.codec_context
        skipping = False
        codec.skip_frame = "DEFAULT"
        demux = self.container.demux(self.stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as e:  # damaged container: stop here, keep what decoded
                self.last_error = e
                return
            if self.wanted_pts is not None:
                skip = packet.pts is not None and packet.pts not in self.wanted_pts
                if skip != skipping:
                    codec.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                self.decode_errors += 1
                self.last_error = e
                consecutive += 1
                if consecutive > _MAX_CONSECUTIVE_DECODE_ERRORS:
                    return
                continue
            consecutive = 0
            yield from frames


def _to_rgb(
    frame, auto_rotate: bool = True, pixel_format: str = "rgb24", size: tuple[int, int] | None = None
) -> np.ndarray:
    width, height = size if size is not None else (None, None)
    rgb = frame.to_ndarray(format=pixel_format, width=width, height=height)
    if auto_rotate and frame.rotation:
        # The display matrix (phone videos) says how to turn the coded picture to show it upright;
        # ``rotation`` is that angle counter-clockwise, which is what np.rot90 turns by.
        rgb = np.ascontiguousarray(np.rot90(rgb, round(frame.rotation / 90) % 4))
    return rgb


def _prepare(stream, threads: int | None) -> None:
    if threads is None:
        # DataLoader workers already run one per core; FFmpeg threads on top would oversubscribe the CPU.
        threads = 1 if get_worker_info() is not None else 0
    stream.thread_type = "AUTO"  # frame + slice threads
    stream.thread_count = threads


def read_frames(
    path: MediaSource,
    num_frames: int = 8,
    sampling: str = "middle",
    *,
    indices: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    threads: int | None = None,
    auto_rotate: bool = True,
) -> torch.Tensor:
    """Decode ``num_frames`` frames picked by ``sampling`` (or the given frame ``indices``) as RGB ``uint8``
    ``(T, H, W, 3)``.

    ``path`` is a file path, or a video in memory: its ``bytes`` or a seekable binary file object (e.g. a
    sample read from a tar shard), so nothing needs writing to disk first.

    Raises :class:`VideoReadError` for a missing, empty, non-video, truncated or undecodable file. Frames the
    container lists but that do not decode are replaced by the next frame that does (or the last one, at the
    end); a file of which no frame decodes is an error. ``threads`` is FFmpeg's decoding thread count (0: as
    many as it sees fit; the default ``None`` means 1 inside a DataLoader worker, else 0). ``auto_rotate``
    turns frames of videos with a display rotation (phone videos) upright, as players show them.
    """
    by_index = None
    with open_media(path, "video") as media:
        container, stream, path = media.container, media.video_stream(), media.name
        info = _scan(container, stream, path)
        if indices is None:
            indices = sample_frame_indices(info.num_frames, num_frames, sampling, generator=generator)
        else:
            indices = [int(i) for i in indices]
            if not indices or min(indices) < 0 or max(indices) >= info.num_frames:
                raise ValueError(f"frame indices must lie in [0, {info.num_frames}) for {path!r}: {indices}")
        wanted = sorted(set(indices))
        decoder = None
        if info.frame_pts is not None:
            _prepare(stream, threads)
            wanted_pts = frozenset(info.frame_pts[i] for i in wanted)
            decoder = _Decoder(container, stream, path, wanted_pts, auto_rotate=auto_rotate)
            decoder.keyframe_set = frozenset(info.keyframe_pts)
            try:
                by_index = _decode_by_pts(decoder, info, wanted)
            except _UnreliableTimestamps:
                by_index = None
    if by_index is None:
        # No usable timestamps (or seeking misbehaved): decode from the start of a fresh demuxer, counting.
        with media.reopen() as fresh:
            stream = fresh.video_stream()
            _prepare(stream, threads)
            decoder = _Decoder(fresh.container, stream, path, auto_rotate=auto_rotate)
            by_index = _decode_by_count(decoder, wanted)
    if not by_index:
        detail = f" (last error: {decoder.last_error})" if decoder.last_error else ""
        raise VideoReadError(path, f"none of the {info.num_frames} frames the container lists could be decoded{detail}")
    arrays = [by_index[i] for i in indices]
    if len({a.shape for a in arrays}) > 1:  # resolution changes mid-stream: bring all to the first's size
        arrays = _same_size(arrays)
    return torch.from_numpy(np.stack(arrays))


def _same_size(arrays: list[np.ndarray]) -> list[np.ndarray]:
    h, w = arrays[0].shape[:2]
    out = []
    for a in arrays:
        if a.shape[:2] != (h, w):
            t = torch.from_numpy(a).permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
            a = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", antialias=True)
            a = a[0].permute(1, 2, 0).contiguous().numpy()
        out.append(a)
    return out


def _decode_by_pts(decoder: _Decoder, info: VideoInfo, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode the frames ``wanted`` (sorted indices). Each run of decoding starts with a seek to the keyframe
    at or before the next wanted frame and goes forward; it goes on to later wanted frames as long as no
    keyframe lies between the last decoded frame and the next wanted one (then seeking skips work).

    The frame taken for a wanted index is the first decoded frame whose timestamp reaches that index's
    timestamp, so a frame that fails to decode is replaced by its successor rather than by garbage. Seeks
    that land anywhere but on or before the keyframe asked for, or frames whose timestamps go backwards,
    raise :class:`_UnreliableTimestamps`.
    """
    assert info.frame_pts is not None
    targets = [info.frame_pts[i] for i in wanted]
    keys, key_dts = info.keyframe_pts, info.keyframe_dts
    out: dict[int, np.ndarray] = {}
    last_frame = None
    # Demuxers disagree on the time a seek means: MP4 and Matroska land on a keyframe given its
    # presentation time, MPEG-TS needs its decode time. Try presentation time first, keep what works.
    seek_times = [keys, key_dts]
    t = 0
    while t < len(targets):
        k = bisect.bisect_right(keys, targets[t]) - 1
        start_pts = keys[k] if k >= 0 else info.frame_pts[0]
        for attempt in range(len(seek_times)):
            times = seek_times[0]
            # No keyframe before the target (damaged or keyframe-less stream): from the first frame.
            frames = decoder.frames(times[k] if k >= 0 else min((start_pts, *times[:1])))
            first = next(frames, None)
            landed = None if first is None else first.pts
            if landed is not None and (
                landed <= start_pts or (landed <= targets[t] and landed in decoder.keyframe_set)
            ):
                break
            frames.close()
            if attempt + 1 == len(seek_times):
                raise _UnreliableTimestamps(f"seek to the keyframe at {start_pts} landed at {landed}")
            seek_times.reverse()
        position = None  # pts of the newest frame decoded in this run
        ended = True
        for frame in itertools.chain([first], frames):
            pts = frame.pts
            if pts is None:
                raise _UnreliableTimestamps("a decoded frame has no timestamp")
            if position is not None and pts <= position:
                raise _UnreliableTimestamps(f"frame timestamps go backwards ({position} then {pts})")
            position = pts
            last_frame = frame
            if pts < targets[t]:
                continue
            rgb = decoder.rgb(frame)
            while t < len(targets) and pts >= targets[t]:
                out[wanted[t]] = rgb
                t += 1
            if t == len(targets):
                ended = False
                break
            k = bisect.bisect_right(keys, targets[t]) - 1
            if k >= 0 and keys[k] > position:  # a keyframe nearer the next target: seek there
                ended = False
                break
        frames.close()
        if ended:
            # The stream ended before the remaining targets (frames listed but not decodable): repeat the
            # last frame that decoded.
            rgb = decoder.rgb(last_frame)
            while t < len(targets):
                out[wanted[t]] = rgb
                t += 1
    return out


def _decode_by_count(decoder: _Decoder, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode from where the (fresh) demuxer stands, numbering frames in the order they come out."""
    out: dict[int, np.ndarray] = {}
    last = None
    t = 0
    frames = decoder.frames()
    for index, frame in enumerate(frames):
        last = frame
        if index == wanted[t]:
            rgb = decoder.rgb(frame)
            while t < len(wanted) and wanted[t] == index:
                out[wanted[t]] = rgb
                t += 1
            if t == len(wanted):
                break
    frames.close()
    if last is not None and t < len(wanted):
        rgb = decoder.rgb(last)
        for i in wanted[t:]:
            out[i] = rgb
    return out


def iter_frames(
    path: MediaSource,
    *,
    pixel_format: str = "rgb24",
    size: tuple[int, int] | None = None,
    threads: int | None = None,
    auto_rotate: bool = True,
) -> Iterator[tuple[float | None, np.ndarray]]:
    """Every frame of the first video stream, in order, as ``(seconds, array (H, W, 3))``.

    For tools that need the whole video (scene detection, shot-boundary models). ``pixel_format`` is any
    FFmpeg packed format (``"rgb24"``, ``"bgr24"`` for OpenCV-based code); ``size`` ``(width, height)``
    resizes in FFmpeg's converter (the coded picture, before a display rotation is applied). Packets that
    fail to decode are skipped, as :func:`read_frames` does; a file of which no frame decodes raises
    :class:`VideoReadError`. ``seconds`` is ``None`` for a frame without a timestamp.
    """
    with open_media(path, "video") as media:
        stream = media.video_stream()
        _prepare(stream, threads)
        decoder = _Decoder(media.container, stream, media.name, auto_rotate=auto_rotate)
        count = 0
        for frame in decoder.frames():
            count += 1
            yield frame.time, _to_rgb(frame, auto_rotate, pixel_format, size)
        if count == 0:
            detail = f" (last error: {decoder.last_error})" if decoder.last_error else ""
            raise VideoReadError(media.name, f"no frame of its video stream could be decoded{detail}")


# ---------------------------------------------------------------------------------------------------------
# The one-call API


def read_clip(
    path: MediaSource,
    num_frames: int = 8,
    size: int = 224,
    sampling: str = "middle",
    *,
    train: bool = False,
    transform: Callable[..., torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    threads: int | None = None,
    auto_rotate: bool = True,
    indices: Sequence[int] | None = None,
) -> torch.Tensor:
    """Read ``num_frames`` frames of a video (a path, or its bytes / a seekable binary file object) as a
    normalised ``float32`` tensor ``(3, T, size, size)``.

    ``indices`` reads exactly those frames instead (``num_frames`` and ``sampling`` are then unused), e.g. the
    MVBench rule over a question's time bound.

    ``sampling`` picks the frames (see :func:`sample_frame_indices`): ``"middle"`` (evaluation, default),
    ``"random"`` (training) or ``"get_index"`` (the chat models' rule). The frames, RGB ``uint8``
    ``(T, H, W, 3)``, then go through ``transform(frames, generator=...)`` when given (``size`` is then the
    transform's business), else :class:`~iv2_data.transforms.RandomResizedCropTransform` (``train=True``) or
    :class:`~iv2_data.transforms.CenterCropTransform` (short side to ``size``, centre crop), both ending in
    ImageNet mean/std normalisation. Randomness (random sampling, crop, flip) comes from ``generator``, or a
    fresh generator seeded with ``seed``, else torch's global generator.

    Raises :class:`VideoReadError` when the file cannot be read.
    """
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    frames = read_frames(
        path, num_frames, sampling, indices=indices, generator=generator, threads=threads, auto_rotate=auto_rotate
    )
    if transform is None:
        transform = RandomResizedCropTransform(size) if train else CenterCropTransform(size)
    return transform(frames, generator=generator)
