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
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import av
import numpy as np
import torch

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
    - ``"random"``: a uniformly random frame of each segment (TSN-style training sampling).
    - ``"get_index"``: ``int(s / 2) + round(s * i)`` with ``s = (N - 1) / n`` — the ``get_index`` rule of
      the official VideoChat2 / InternVideo2-chat code.

    A video with fewer frames than asked repeats frames (segments shorter than one frame take the frame they
    start in), so the result always has ``num_frames`` non-decreasing indices in ``[0, N)``.
    """
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    n, total = num_frames, num_video_frames
    if sampling == "get_index":
        seg = (total - 1) / n
        return [min(int(seg / 2) + round(seg * i), total - 1) for i in range(n)]
    # Integer edges exactly as numpy's linspace(0, N, n + 1).astype(int) gives them.
    edges = [math.floor(i * total / n) for i in range(n + 1)]
    if sampling == "middle":
        return [max(a, (a + b - 1) // 2) for a, b in itertools.pairwise(edges)]
    if sampling == "random":
        draws = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        out = []
        for (a, b), u in zip(itertools.pairwise(edges), draws):
            out.append(a + min(int(u * (b - a)), b - a - 1) if b > a else a)
        return out
    raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLING_MODES}")


# ---------------------------------------------------------------------------------------------------------
# Probing


@dataclass(frozen=True)
class VideoInfo:
    """What demuxing a video stream found: one entry per frame, in presentation order."""

    num_frames: int
    width: int
    height: int
    codec: str
    frame_pts: tuple[int, ...] | None  # presentation timestamps (stream time base); None: the file has none
    keyframe_pts: tuple[int, ...]  # sorted; empty if unknown
    average_rate: float | None


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise VideoReadError(path, "no such file")
    if os.path.isdir(path):
        raise VideoReadError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(path, "the file is empty (0 bytes)")
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as e:
        raise VideoReadError(path, _diagnose_unopenable(path)) from e
    except (av.error.FFmpegError, OSError) as e:
        raise VideoReadError(path, f"FFmpeg cannot open it ({getattr(e, 'strerror', None) or e})") from e


def _diagnose_unopenable(path: str) -> str:
    """Say what a file FFmpeg rejects looks like, from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
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
    return streams[0]


def _scan(container: av.container.InputContainer, stream, path: str) -> VideoInfo:
    """Demux every packet of ``stream`` (no decoding) to count frames and find keyframes."""
    pts: list[int] = []
    keyframes: list[int] = []
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
                keyframes.append(ts)
    except av.error.FFmpegError:
        # A truncated or damaged file: keep what demuxed cleanly; decoding below decides whether it is enough.
        pass
    if count == 0:
        raise VideoReadError(path, "the video stream holds no frames (truncated or empty stream)")
    if stream.frames and count + discarded < stream.frames:
        warnings.warn(
            f"{path!r}: the container lists {stream.frames} frames but only {count} could be demuxed "
            "(truncated file?); sampling from those",
            stacklevel=4,
        )
    frame_pts = None if missing_pts or len(set(pts)) != len(pts) else tuple(sorted(pts))
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        num_frames=count,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        codec=stream.codec_context.name,
        frame_pts=frame_pts,
        keyframe_pts=tuple(sorted(keyframes)) if frame_pts is not None else (),
        average_rate=float(rate) if rate else None,
    )


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, size, codec and timestamps of a video's first video stream (demuxes, never decodes)."""
    path = os.fspath(path)
    with _open(path) as container:
        return _scan(container, _video_stream(container, path), path)


# ---------------------------------------------------------------------------------------------------------
# Decoding


_START = object()  # seek target meaning "the start of the file"


class _Decoder:
    """Decodes frames of one stream in presentation order, packet by packet, tolerating damaged packets."""

    def __init__(self, container, stream, path: str) -> None:
        self.container, self.stream, self.path = container, stream, path
        self.decode_errors = 0
        self.last_error: Exception | None = None

    def frames_from(self, seek_pts: int | object):
        """Frames from the keyframe at or before ``seek_pts`` (stream time base), or from the file's start."""
        try:
            if seek_pts is _START:
                self.container.seek(0)
            else:
                self.container.seek(seek_pts, stream=self.stream, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise VideoReadError(self.path, f"cannot seek in the file ({e})") from e
        consecutive = 0
        demux = self.container.demux(self.stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                return
            except av.error.FFmpegError as e:  # damaged container: stop here, keep what decoded
                self.last_error = e
                return
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


def _to_rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def read_frames(
    path: str | os.PathLike[str],
    num_frames: int = 8,
    sampling: str = "middle",
    *,
    indices: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    threads: int = 0,
) -> torch.Tensor:
    """Decode ``num_frames`` frames picked by ``sampling`` (or the given frame ``indices``) as RGB ``uint8``
    ``(T, H, W, 3)``.

    Raises :class:`VideoReadError` for a missing, empty, non-video, truncated or undecodable file. Frames the
    container lists but that do not decode are replaced by the next frame that does (or the last one, at the
    end); a file of which no wanted frame decodes is an error. ``threads`` is FFmpeg's decoding thread count
    (0: as many as it sees fit).
    """
    path = os.fspath(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        info = _scan(container, stream, path)
        if indices is None:
            indices = sample_frame_indices(info.num_frames, num_frames, sampling, generator=generator)
        else:
            indices = [int(i) for i in indices]
            if not indices or min(indices) < 0 or max(indices) >= info.num_frames:
                raise ValueError(f"frame indices must lie in [0, {info.num_frames}) for {path!r}: {indices}")
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        decoder = _Decoder(container, stream, path)
        if info.frame_pts is not None:
            by_index = _decode_by_pts(decoder, info, sorted(set(indices)))
        else:
            by_index = _decode_by_count(decoder, sorted(set(indices)))
        if not by_index:
            detail = f" (last error: {decoder.last_error})" if decoder.last_error else ""
            raise VideoReadError(
                path, f"none of the {info.num_frames} frames the container lists could be decoded{detail}"
            )
    arrays = [by_index[i] for i in indices]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:  # resolution changes mid-stream: bring every frame to the first one's size
        arrays = _same_size(arrays)
    return torch.from_numpy(np.stack(arrays))


def _same_size(arrays: list[np.ndarray]) -> list[np.ndarray]:
    h, w = arrays[0].shape[:2]
    out = []
    for a in arrays:
        if a.shape[:2] != (h, w):
            t = torch.from_numpy(a).permute(2, 0, 1)[None].float()
            t = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", antialias=True)
            a = t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        out.append(a)
    return out


def _decode_by_pts(decoder: _Decoder, info: VideoInfo, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode the frames ``wanted`` (sorted indices). Each run of decoding starts with a seek to the keyframe
    at or before the next wanted frame and goes forward; it goes on to later wanted frames as long as no
    keyframe lies between the last decoded frame and the next wanted one (then seeking skips work).

    The frame taken for a wanted index is the first decoded frame whose timestamp reaches that index's
    timestamp, so a frame that fails to decode is replaced by its successor rather than by garbage.
    """
    assert info.frame_pts is not None
    targets = [info.frame_pts[i] for i in wanted]
    keys = info.keyframe_pts
    out: dict[int, np.ndarray] = {}
    last_frame = None
    t = 0
    while t < len(targets):
        k = bisect.bisect_right(keys, targets[t]) - 1
        frames = decoder.frames_from(keys[k] if k >= 0 else info.frame_pts[0])
        position = None  # pts of the newest frame decoded in this run
        ended = True
        for frame in frames:
            pts = frame.pts
            if pts is None:
                continue
            last_frame = frame
            position = pts if position is None else max(position, pts)
            if pts < targets[t]:
                continue
            rgb = _to_rgb(frame)
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
            if last_frame is not None:
                rgb = _to_rgb(last_frame)
                while t < len(targets):
                    out[wanted[t]] = rgb
                    t += 1
            break
    return out


def _decode_by_count(decoder: _Decoder, wanted: list[int]) -> dict[int, np.ndarray]:
    """Without usable timestamps: decode from the start, counting frames."""
    out: dict[int, np.ndarray] = {}
    last = None
    t = 0
    frames = decoder.frames_from(_START)
    for index, frame in enumerate(frames):
        last = frame
        if index == wanted[t]:
            rgb = _to_rgb(frame)
            while t < len(wanted) and wanted[t] == index:
                out[wanted[t]] = rgb
                t += 1
            if t == len(wanted):
                break
    frames.close()
    if last is not None and t < len(wanted):
        rgb = _to_rgb(last)
        for i in wanted[t:]:
            out[i] = rgb
    return out


# ---------------------------------------------------------------------------------------------------------
# The one-call API


def read_clip(
    path: str | os.PathLike[str],
    num_frames: int = 8,
    size: int = 224,
    sampling: str = "middle",
    *,
    train: bool = False,
    transform: Callable[..., torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    threads: int = 0,
) -> torch.Tensor:
    """Read ``num_frames`` frames of a video as a normalised ``float32`` tensor ``(3, T, size, size)``.

    ``sampling`` picks the frames (see :func:`sample_frame_indices`): ``"middle"`` (evaluation, default),
    ``"random"`` (training) or ``"get_index"`` (the chat models' rule). The frames are transformed by
    ``transform`` when given, else by :class:`~iv2_data.transforms.RandomResizedCropTransform`
    (``train=True``) or :class:`~iv2_data.transforms.CenterCropTransform` (short side to ``size``, centre
    crop), both with
    ImageNet mean/std normalisation. Randomness (random sampling, crop, flip) comes from ``generator``, or a
    fresh generator seeded with ``seed``, else torch's global generator.

    Raises :class:`VideoReadError` when the file cannot be read.
    """
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    frames = read_frames(path, num_frames, sampling, generator=generator, threads=threads)
    if transform is None:
        transform = RandomResizedCropTransform(size) if train else CenterCropTransform(size)
    return transform(frames, generator=generator)
