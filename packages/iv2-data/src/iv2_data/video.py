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
import io
import itertools
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np
import torch
from torch.utils.data import get_worker_info

from iv2_data.transforms import CenterCropTransform, RandomResizedCropTransform

__all__ = [
    "SAMPLING_MODES",
    "VideoInfo",
    "VideoReadError",
    "probe_video",
    "read_clip",
    "read_frames",
    "sample_frame_indices",
]

SAMPLING_MODES = ("middle", "random", "get_index")

# A decode error on a packet is tolerated (the frame is skipped) up to this many times in a row; a file that
# fails more often than that is treated as undecodable rather than decoded on and on.
_MAX_CONSECUTIVE_DECODE_ERRORS = 16


class VideoReadError(OSError):
    """A video file could not be read; the message names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"cannot read video {self.path!r}: {problem}")

    def __reduce__(self):  # keep pickling (DataLoader workers send exceptions back) working
        return (type(self), (self.path, self.problem))


# ---------------------------------------------------------------------------------------------------------
# Sampling


def sample_frame_indices(
    num_video_frames: int,
    num_frames: int,
    sampling: str = "middle",
    *,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Which ``num_frames`` frames of a video with ``num_video_frames`` frames to read, in order.

    The video is cut into ``num_frames`` segments with integer edges ``linspace(0, N, n + 1)``:

    - ``"middle"``: the middle frame of each segment, ``(a + b - 1) // 2`` for segment ``[a, b)`` — the
      official InternVideo2 (stage 2) retrieval and zero-shot evaluation rule.
    - ``"random"``: a uniformly random frame of each segment (TSN-style training sampling). The official
      ``rand`` draws from ``range(a, b - 1)``, which never picks a segment's last frame and fails on
      one-frame segments; we draw from the whole segment.
    - ``"get_index"``: ``int(s / 2) + round(s * i)`` with ``s = (N - 1) / n`` — the ``get_index`` rule of
      the official VideoChat2 / InternVideo2-chat code.

    A video with fewer frames than asked (N < n): the segment rules take every frame once and pad with the
    last one, as the official code does (N = 3, n = 8 → 0 1 2 2 2 2 2 2); ``"get_index"`` repeats frames
    along the way (0 0 0 1 1 1 2 2). The result always has ``num_frames`` non-decreasing indices in
    ``[0, N)``. Edges are computed as the official code does, with numpy's floating-point ``linspace``
    (which can put an edge one frame lower than exact arithmetic).
    """
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    n, total = num_frames, num_video_frames
    if sampling == "get_index":
        seg = (total - 1) / n
        return [min(int(seg / 2) + round(seg * i), total - 1) for i in range(n)]
    if sampling not in ("middle", "random"):
        raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLING_MODES}")
    segments = min(n, total)
    # The official code's edges, floating-point rounding included (linspace(0, 30, 23)[11] is 14.999...).
    edges = np.linspace(0, total, segments + 1).astype(int).tolist()
    if sampling == "middle":
        out = [(a + b - 1) // 2 for a, b in itertools.pairwise(edges)]
    else:
        draws = torch.rand(segments, generator=generator, dtype=torch.float64).tolist()
        out = [a + min(int(u * (b - a)), b - a - 1) for (a, b), u in zip(itertools.pairwise(edges), draws)]
    return out + [out[-1]] * (n - segments)


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


VideoSource = str | os.PathLike[str] | bytes | BinaryIO  # a path, or the bytes of a video in memory


def _as_source(video: VideoSource) -> tuple[str, str | BinaryIO]:
    """``(name for messages, what av.open gets)``; bytes and file objects are read in memory."""
    if isinstance(video, (bytes, bytearray, memoryview)):
        return "<bytes>", io.BytesIO(bytes(video))
    if hasattr(video, "read"):
        return str(getattr(video, "name", "<file object>")), video
    path = os.fspath(video)
    return path, path


def _open(name: str, source: str | BinaryIO) -> av.container.InputContainer:
    if isinstance(source, str):
        if not os.path.exists(source):
            raise VideoReadError(name, "no such file")
        if os.path.isdir(source):
            raise VideoReadError(name, "is a directory, not a video file")
        if not os.path.isfile(source):  # a FIFO or device would block or never end
            raise VideoReadError(name, "not a regular file")
        if os.path.getsize(source) == 0:
            raise VideoReadError(name, "the file is empty (0 bytes)")
    else:
        try:
            size = source.seek(0, io.SEEK_END)
            source.seek(0)
        except (OSError, ValueError) as e:
            raise VideoReadError(name, f"the file object cannot seek ({e}); pass a path or bytes") from e
        if size == 0:
            raise VideoReadError(name, "the file is empty (0 bytes)")
    try:
        # A local "video" must never make FFmpeg fetch URLs (a playlist renamed .mp4 would): local files only.
        return av.open(source, mode="r", metadata_errors="ignore", options={"protocol_whitelist": "file"})
    except av.error.InvalidDataError as e:
        raise VideoReadError(name, _diagnose_unopenable(source)) from e
    except (av.error.FFmpegError, OSError) as e:
        raise VideoReadError(name, f"FFmpeg cannot open it ({getattr(e, 'strerror', None) or e})") from e


def _diagnose_unopenable(source: str | BinaryIO) -> str:
    """Say what a file FFmpeg rejects looks like, from its first bytes."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                head = f.read(4096)
        else:
            source.seek(0)
            head = source.read(4096)
    except OSError as e:
        return f"cannot read its bytes ({e.strerror})"
    if head[4:8] == b"ftyp":
        return "an MP4/MOV file that is truncated or damaged (its index, the 'moov' box, is missing)"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "a Matroska/WebM file that is truncated or damaged"
    if head[:4] == b"RIFF":
        return "a RIFF (AVI/WAV) file that is truncated or damaged"
    try:
        text = head.decode("utf-8")
        if sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
            return "a text file, not a video"
    except UnicodeDecodeError:
        pass
    return "not a video: FFmpeg recognises no container format in its bytes (garbled or random data?)"


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    streams = [
        s
        for s in container.streams.video
        if not (s.disposition & av.stream.Disposition.attached_pic)  # cover art in audio files
    ]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoReadError(path, f"no video stream (streams: {', '.join(kinds)})")
    decodable = [s for s in streams if s.codec_context is not None]
    if not decodable:  # a damaged header, or a codec this FFmpeg build has no decoder for
        raise VideoReadError(path, "its video stream's codec is unknown to FFmpeg (damaged header?)")
    return decodable[0]


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


def probe_video(path: VideoSource) -> VideoInfo:
    """Frame count, size, codec and timestamps of a video's first video stream (demuxes, never decodes)."""
    name, source = _as_source(path)
    with _open(name, source) as container:
        return _scan(container, _video_stream(container, name), name)


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


def _to_rgb(frame, auto_rotate: bool = True) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
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
    path: VideoSource,
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
    path, source = _as_source(path)
    by_index = None
    with _open(path, source) as container:
        stream = _video_stream(container, path)
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
        with _open(path, source) as container:
            stream = _video_stream(container, path)
            _prepare(stream, threads)
            decoder = _Decoder(container, stream, path, auto_rotate=auto_rotate)
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


# ---------------------------------------------------------------------------------------------------------
# The one-call API


def read_clip(
    path: VideoSource,
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
