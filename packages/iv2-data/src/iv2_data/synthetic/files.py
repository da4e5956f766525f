"""The synthetic corpus on disk: :func:`write_corpus` writes mp4 (H.264 with an AAC track), wav, png and one
annotation file per sample kind, in the official layouts the datasets of :mod:`iv2_data.datasets` read."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from iv2_data.files import atomic_write, remove_leftovers
from iv2_data.synthetic.dataset import SyntheticCorpus
from iv2_data.synthetic.records import ANNOTATION_FILES, CORPUS_VERSION, SYNTHETIC_CLASSES, clip_records, media_paths
from iv2_data.synthetic.render import render_audio, render_frames

__all__ = ["write_corpus", "write_video"]


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
) -> None:
    """Write RGB ``frames`` ``(T, H, W, 3)`` uint8 as H.264 mp4, with mono float ``audio`` as AAC if given
    (atomically: the file is complete or absent)."""
    with atomic_write(path) as partial:
        _write_mp4(partial, frames, fps, audio, sample_rate)


def _write_mp4(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None, sample_rate: int) -> None:
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height = frames.shape[2], frames.shape[1]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "12", "preset": "ultrafast"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)


def _encode_audio(container: Any, stream: Any, audio: np.ndarray, sample_rate: int) -> None:
    import av

    chunk = 1024
    pts = 0
    for start in range(0, len(audio), chunk):
        piece = np.ascontiguousarray(audio[None, start : start + chunk], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = pts
        pts += piece.shape[1]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import av

    pcm = np.clip(audio * 32767.0, -32768, 32767).astype(np.int16)[None, :]
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_png(path: Path, image: np.ndarray) -> None:
    import av

    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height = image.shape[1], image.shape[0]
        stream.pix_fmt = "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def corpus_is_current(output_dir: str | os.PathLike[str]) -> bool:
    """Whether ``output_dir`` holds a whole corpus (``corpus.json`` is written last) of the current records
    (:data:`CORPUS_VERSION`). A folder that is not is brought up to date by :func:`write_corpus` (media kept)."""
    try:
        meta = json.loads((Path(output_dir) / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("version") == CORPUS_VERSION


def write_corpus(
    output_dir: str | os.PathLike[str],
    num_samples: int = 64,
    *,
    num_frames: int = 8,
    size: int = 64,
    fps: int = 8,
    seed: int = 0,
    with_audio_track: bool = True,
    progress: bool = False,
) -> dict[str, Path]:
    """Write the corpus as media files plus one annotation file per sample kind; return those paths.

    Layout under ``output_dir``: ``videos/000000.mp4`` (H.264, with an AAC track unless
    ``with_audio_track=False``), ``audio/000000.wav`` (16 kHz mono), ``images/000000.png`` (the middle frame)
    and the annotation files of :data:`ANNOTATION_FILES` in the official layouts, media paths relative to
    ``output_dir`` (``video_label.json``: class ``label`` of :data:`SYNTHETIC_CLASSES`, object × direction,
    with the attributes beside it), plus ``corpus.json`` with the records' version (:data:`CORPUS_VERSION`),
    the parameters, the classes and every clip's attributes. Every file is written atomically and media files
    that exist are kept (annotation files are always written anew), so an interrupted run resumes and a folder
    of an older version is brought up to date by writing it again.
    """
    from iv2_data.progress import progress as progress_bar

    corpus = SyntheticCorpus(num_samples, num_frames, size, fps, seed)
    root = Path(output_dir)
    for sub in ("videos", "audio", "images"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        remove_leftovers(root / sub)
    remove_leftovers(root)
    annotations: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ANNOTATION_FILES}
    for i in progress_bar(range(num_samples), enabled=progress, desc="synthetic clips", unit="clip"):
        spec = corpus.specs[i]
        files = {key: root / rel for key, rel in media_paths(i).items()}
        missing = {key for key, path in files.items() if not path.exists()}
        frames = render_frames(spec, num_frames, size) if missing & {"video", "image"} else None
        waveform = render_audio(spec, corpus.seconds, corpus.sample_rate) if missing & {"video", "audio"} else None
        if "video" in missing:
            write_video(files["video"], frames, fps, waveform if with_audio_track else None, corpus.sample_rate)
        if "audio" in missing:
            with atomic_write(files["audio"]) as partial:
                _write_wav(partial, waveform, corpus.sample_rate)
        if "image" in missing:
            with atomic_write(files["image"]) as partial:
                _write_png(partial, frames[len(frames) // 2])
        for kind, records in clip_records(spec, seed).items():
            annotations[kind] += records
    paths = {}
    for kind, filename in ANNOTATION_FILES.items():
        paths[kind] = root / filename
        with atomic_write(paths[kind], "w", encoding="utf-8") as sink:
            json.dump(annotations[kind], sink, indent=1)
    meta = {
        "version": CORPUS_VERSION,
        "num_samples": num_samples,
        "num_frames": num_frames,
        "size": size,
        "fps": fps,
        "seed": seed,
        "classes": list(SYNTHETIC_CLASSES),
        "clips": [asdict(s) for s in corpus.specs],
    }
    with atomic_write(root / "corpus.json", "w", encoding="utf-8") as sink:
        json.dump(meta, sink, indent=1)
    paths["root"] = root
    return paths
