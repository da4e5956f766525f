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
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

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
    """Duration in seconds of the first video stream, from the container (PyAV)."""
    import av

    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000
        frames = sum(1 for _ in container.demux(stream) if _.size)
        return frames / float(stream.average_rate or 25)


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
        detector = scenedetect.ContentDetector(threshold=self.threshold, min_scene_len=self.min_scene_frames)
        scenes = scenedetect.detect(str(path), detector, show_progress=False)
        if not scenes:  # no cut found: the whole video is one scene
            return [(0.0, video_duration(path))]
        return [(_seconds(start), _seconds(end)) for start, end in scenes]


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
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 25)
            frames = np.stack(
                [f.to_ndarray(format="rgb24", width=self.size, height=self.size) for f in container.decode(stream)]
            )
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
        clips = []
        for start, end in scenes:
            start, end = start + self.edge_seconds, end - self.edge_seconds
            length = end - start
            if length < self.min_seconds - 1e-9:
                continue
            parts = max(1, int(np.ceil(length / self.max_seconds - 1e-9)))
            step = length / parts
            clips += [(start + k * step, start + (k + 1) * step) for k in range(parts)]
        return clips


def cut_clip(source: str | os.PathLike[str], target: str | os.PathLike[str], start: float, end: float) -> Path:
    """Write frames (and audio) of ``source`` with timestamps in ``[start, end)`` to ``target`` (H.264/AAC mp4).

    The clip is written under a temporary name and renamed, so a file at ``target`` is always complete.
    """
    import av

    target = Path(target)
    partial = target.with_name(target.stem + ".partial" + target.suffix)
    # Tags are not copied, so undecodable ones (Latin-1 titles) must not stop the cut.
    with av.open(str(source), metadata_errors="ignore") as src, av.open(str(partial), "w") as dst:
        vin = src.streams.video[0]
        rate = vin.average_rate or 25
        vout = dst.add_stream("libx264", rate=rate)
        vout.width, vout.height = vin.codec_context.width // 2 * 2, vin.codec_context.height // 2 * 2
        vout.pix_fmt = "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        ain = src.streams.audio[0] if src.streams.audio else None
        aout = None
        if ain is not None:
            aout = dst.add_stream("aac", rate=ain.codec_context.sample_rate, layout=ain.codec_context.layout.name)
        written = 0
        streams = [vin] + ([ain] if ain is not None else [])
        for frame in src.decode(*streams):
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
        if written == 0:
            raise ValueError(f"no frames of {source} between {start:.3f} s and {end:.3f} s")
        for packet in vout.encode():
            dst.mux(packet)
        if aout is not None:
            for packet in aout.encode():
                dst.mux(packet)
    os.replace(partial, target)
    return target


@dataclass
class WholeVideo:
    """No segmentation: the whole video is one scene (for inputs that are already clips)."""

    def detect(self, path: str | os.PathLike[str]) -> list[Scene]:
        return [(0.0, video_duration(path))]
