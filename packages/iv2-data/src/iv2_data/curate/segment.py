"""Stage 1 of curation: temporal segmentation into clips.

A :class:`SceneDetector` turns a video into scenes (``[start, end)`` in seconds); :class:`ClipRules` turns
scenes into clips (drop short ones, split long ones inside their scene, trim the edges next to a cut so that
no clip straddles one); :func:`cut_clip` writes a clip file (video re-encoded, audio kept).

Detectors: :class:`ContentSceneDetector` (PySceneDetect content detection, the default; the ``curate``
extra) and :class:`LearnedSceneDetector`, which runs any :class:`BoundaryModel` (e.g. an AutoShot-style
shot-boundary network, as the paper uses) over decoded frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from iv2_data.files import atomic_write
from iv2_data.media import VideoReadError, open_media
from iv2_data.video import iter_frames, probe_video

__all__ = [
    "BoundaryModel",
    "ClipRules",
    "ContentSceneDetector",
    "LearnedSceneDetector",
    "SceneDetector",
    "WholeVideo",
    "cut_clip",
    "video_duration",
]

Scene = tuple[float, float]


@runtime_checkable
class SceneDetector(Protocol):
    """Anything that splits a video file into scenes ``[(start_s, end_s), ...]`` covering it in order."""

    def detect(self, path: str | os.PathLike[str]) -> list[Scene]: ...


@runtime_checkable
class BoundaryModel(Protocol):
    """A learned shot-boundary model: ``frames`` uint8 ``(T, H, W, 3)`` → ``(T,)`` probability that a new
    shot starts at each frame."""

    def boundary_probabilities(self, frames: np.ndarray) -> np.ndarray: ...


def video_duration(path: str | os.PathLike[str]) -> float:
    """Duration in seconds of the first video stream, from the container; frames ÷ rate when it says none."""
    with open_media(path, "video") as media:
        stream = media.video_stream()
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if media.container.duration is not None:
            return media.container.duration / 1_000_000
    info = probe_video(path)
    return info.num_frames / (info.average_rate or 25.0)


def _scenedetect() -> Any:
    try:
        import scenedetect
    except ImportError as error:
        raise ImportError(
            "scene detection needs PySceneDetect and OpenCV; install the extra: pip install 'iv2-data[curate]'"
        ) from error
    return scenedetect


@dataclass
class ContentSceneDetector:
    """PySceneDetect's content detector (HSV frame differences). ``threshold`` is its cut threshold;
    ``min_scene_frames`` the shortest scene it reports."""

    threshold: float = 27.0
    min_scene_frames: int = 15

    def detect(self, path: str | os.PathLike[str]) -> list[Scene]:
        scenedetect = _scenedetect()
        manager = scenedetect.SceneManager()
        manager.add_detector(scenedetect.ContentDetector(threshold=self.threshold, min_scene_len=self.min_scene_frames))
        # PySceneDetect runs on frames decoded by iv2-data (its own opener would bypass the guards of
        # open_media and report every broken input as "VideoOpenFailure").
        manager.detect_scenes(video=_decoded_stream(path), show_progress=False)
        scenes = manager.get_scene_list()
        if not scenes:  # no cut found: the whole video is one scene
            return [(0.0, video_duration(path))]
        return [(_seconds(start), _seconds(end)) for start, end in scenes]


_STREAM_CLASS: Any = None


def _decoded_stream(path: str | os.PathLike[str]) -> Any:
    """A PySceneDetect ``VideoStream`` over :func:`~iv2_data.iter_frames` (BGR frames, as OpenCV code expects),
    numbering frames as they come (constant-rate timing, as its OpenCV backend)."""
    global _STREAM_CLASS
    if _STREAM_CLASS is None:
        from scenedetect import FrameTimecode
        from scenedetect.video_stream import SeekError, VideoStream

        class DecodedStream(VideoStream):
            BACKEND_NAME = "iv2_data"

            def __init__(self, path: str | os.PathLike[str]) -> None:
                self._path = os.fspath(path)
                info = probe_video(path)
                self._rate = Fraction(info.average_rate or 25.0).limit_denominator(1_000_000)
                self._size = (info.width, info.height)
                self._total = info.num_frames
                self._frames = iter_frames(path, pixel_format="bgr24", auto_rotate=False)
                self._count = 0

            path = property(lambda self: self._path)
            name = property(lambda self: Path(self._path).stem)
            is_seekable = property(lambda self: False)
            frame_rate = property(lambda self: self._rate)
            duration = property(lambda self: FrameTimecode(self._total, self._rate))
            frame_size = property(lambda self: self._size)
            aspect_ratio = property(lambda self: 1.0)
            position = property(lambda self: FrameTimecode(max(0, self._count - 1), self._rate))
            position_ms = property(lambda self: 1000.0 * max(0, self._count - 1) / float(self._rate))
            frame_number = property(lambda self: self._count)

            def read(self, decode: bool = True) -> np.ndarray | bool:
                frame = next(self._frames, None)
                if frame is None:
                    return False
                self._count += 1
                return frame[1] if decode else True

            def reset(self) -> None:
                self._frames = iter_frames(self._path, pixel_format="bgr24", auto_rotate=False)
                self._count = 0

            def seek(self, target: Any) -> None:
                raise SeekError("the iv2-data frame stream reads forward only")

        _STREAM_CLASS = DecodedStream
    return _STREAM_CLASS(path)


def _seconds(timecode: Any) -> float:
    # PySceneDetect 0.7 has a `seconds` property and deprecates get_seconds(); 0.6 has only the method.
    if hasattr(type(timecode), "seconds"):
        return float(timecode.seconds)
    return float(timecode.get_seconds())


@dataclass
class LearnedSceneDetector:
    """Runs a :class:`BoundaryModel` on frames decoded at ``size`` pixels; a frame whose probability is at
    least ``threshold`` starts a new scene (at most one cut per ``min_scene_frames``)."""

    model: BoundaryModel
    threshold: float = 0.5
    size: int = 48
    min_scene_frames: int = 1

    def detect(self, path: str | os.PathLike[str]) -> list[Scene]:
        fps = probe_video(path).average_rate or 25.0
        frames = np.stack([image for _, image in iter_frames(path, size=(self.size, self.size))])
        probabilities = np.asarray(self.model.boundary_probabilities(frames), dtype=np.float64)
        if probabilities.shape != (len(frames),):
            raise ValueError(f"boundary model returned shape {probabilities.shape} for {len(frames)} frames of {path}")
        cuts = [0]
        for t in range(1, len(frames)):
            if probabilities[t] >= self.threshold and t - cuts[-1] >= self.min_scene_frames:
                cuts.append(t)
        bounds = [*cuts, len(frames)]
        return [(bounds[i] / fps, bounds[i + 1] / fps) for i in range(len(cuts))]


@dataclass
class ClipRules:
    """Scenes → clips: trim ``edge_seconds`` at both ends of each scene (transition frames), drop what is
    shorter than ``min_seconds``, split what is longer than ``max_seconds`` into equal parts no longer than it.
    Every clip lies inside one scene, so none straddles a detected cut."""

    min_seconds: float = 1.0
    max_seconds: float = 20.0
    edge_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")

    def apply(self, scenes: list[Scene]) -> list[Scene]:
        return self.split(scenes)[0]

    def split(self, scenes: list[Scene]) -> tuple[list[Scene], int]:
        """``(clips, how many scenes were too short)`` — the count is what a run reports as dropped."""
        clips, short = [], 0
        for start, end in scenes:
            start, end = start + self.edge_seconds, end - self.edge_seconds
            length = end - start
            if length < self.min_seconds - 1e-9:
                short += 1
                continue
            parts = max(1, int(np.ceil(length / self.max_seconds - 1e-9)))
            step = length / parts
            clips += [(start + k * step, start + (k + 1) * step) for k in range(parts)]
        return clips, short


def cut_clip(source: str | os.PathLike[str], target: str | os.PathLike[str], start: float, end: float) -> Path:
    """Write frames (and audio) of ``source`` with timestamps in ``[start, end)`` to ``target`` (H.264/AAC mp4).

    The clip is written with :func:`~iv2_data.atomic_write`, so a file at ``target`` is always complete.
    """
    import av

    target = Path(target)
    # Tags are not copied; open_media ignores undecodable ones (Latin-1 titles).
    with open_media(source, "video") as media, atomic_write(target) as partial, av.open(str(partial), "w") as dst:
        vin = media.video_stream()
        rate = vin.average_rate or 25
        vout = dst.add_stream("libx264", rate=rate)
        vout.width, vout.height = vin.codec_context.width // 2 * 2, vin.codec_context.height // 2 * 2
        vout.pix_fmt = "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        ain = media.audio_stream(required=False)
        aout = None
        if ain is not None:
            aout = dst.add_stream("aac", rate=ain.codec_context.sample_rate, layout=ain.codec_context.layout.name)
        streams = [vin] + ([ain] if ain is not None else [])
        try:
            written = _copy_span(media.container.decode(*streams), dst, vout, aout, start, end)
        except (av.error.FFmpegError, ValueError) as error:  # damaged data past the header
            problem = f"decoding failed while cutting {start:.3f}-{end:.3f} s ({error})"
            raise VideoReadError(media.name, problem) from error
        if written == 0:
            raise ValueError(f"no frames of {source} between {start:.3f} s and {end:.3f} s")
        for packet in vout.encode():
            dst.mux(packet)
        if aout is not None:
            for packet in aout.encode():
                dst.mux(packet)
    return target


def _copy_span(frames: Any, dst: Any, vout: Any, aout: Any, start: float, end: float) -> int:
    """Re-encode the decoded ``frames`` with timestamps in ``[start, end)``; returns the video frames written."""
    import av

    written = 0
    for frame in frames:
        if frame.time is None or not start - 1e-6 <= frame.time < end - 1e-6:
            continue
        if isinstance(frame, av.VideoFrame):
            image = frame.to_ndarray(format="rgb24")[: vout.height, : vout.width]
            out = av.VideoFrame.from_ndarray(image, format="rgb24")
            out.pts = written
            written += 1
            for packet in vout.encode(out):
                dst.mux(packet)
        elif aout is not None:
            frame.pts = None
            for packet in aout.encode(frame):
                dst.mux(packet)
    return written


@dataclass
class WholeVideo:
    """No segmentation: the whole video is one scene (for inputs that are already clips)."""

    def detect(self, path: str | os.PathLike[str]) -> list[Scene]:
        return [(0.0, video_duration(path))]
