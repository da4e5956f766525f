"""Fixtures that write small test videos with PyAV.

Every generated frame shows its own index as a 10-bit binary code: a 5 × 2 grid of black/white cells filling
the centred square of the frame (the rest is mid grey), row-major, most significant bit first. A centre crop
keeps the whole grid, so tests can read back WHICH frames a reader returned with :func:`decode_index`.

Fixtures (session-scoped, each a ``pathlib.Path`` unless said):
- ``h264_mp4`` (64×48, 40 frames, B-frames); ``h264_mkv``, ``h264_ts``, ``h264_avi``, ``h264_raw`` (30 frames in
  Matroska, MPEG-TS, AVI and a raw elementary stream); ``vp9_webm`` (24 frames, no frame count in the header);
  ``mpeg4_mp4`` (MPEG-4 part 2, 30 frames);
- ``portrait_mp4`` (48×64, 20 frames), ``odd_size_mp4`` (98×62, 20 frames), ``three_frame_mp4`` (3 frames),
  ``vfr_mp4`` (30 frames at irregular timestamps), ``long_mp4`` (300 frames, a keyframe every 30),
  ``open_gop_mp4`` (90 frames, open GOPs of 30);
- ``broken_videos``: a dict of damaged files (missing, empty, text, truncated, random);
- ``video_dir`` (the session's folder), ``video_factory(name, num_frames, ...)`` (writes a new one there), and
  ``video_tools``: the helpers ``index_frame``, ``decode_index``, ``centre_square``, ``write_video``, ``damage`` below,
  since test modules cannot import conftest under ``--import-mode=importlib``.
"""

from __future__ import annotations

import fractions
import pathlib
import types

import av
import numpy as np
import pytest

GRID_ROWS, GRID_COLS = 5, 2
NUM_BITS = GRID_ROWS * GRID_COLS


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """An RGB ``uint8 (height, width, 3)`` frame that shows ``index`` as the 5 × 2 bit grid."""
    frame = np.full((height, width, 3), 128, np.uint8)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    for bit in range(NUM_BITS):
        r, c = divmod(bit, GRID_COLS)
        y0, y1 = top + r * side // GRID_ROWS, top + (r + 1) * side // GRID_ROWS
        x0, x1 = left + c * side // GRID_COLS, left + (c + 1) * side // GRID_COLS
        on = (index >> (NUM_BITS - 1 - bit)) & 1
        frame[y0:y1, x0:x1] = 255 if on else 0
    return frame


def decode_index(image: np.ndarray) -> int:
    """Read the index back from a square image (H, W[, 3]) holding exactly the bit grid (values 0..255)."""
    gray = image.mean(axis=-1) if image.ndim == 3 else image
    side_h, side_w = gray.shape
    value = 0
    for bit in range(NUM_BITS):
        r, c = divmod(bit, GRID_COLS)
        y = int((r + 0.5) * side_h / GRID_ROWS)
        x = int((c + 0.5) * side_w / GRID_COLS)
        value = (value << 1) | int(gray[y, x] > 128)
    return value


def centre_square(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    side = min(h, w)
    return frame[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]


def write_video(
    path: pathlib.Path,
    num_frames: int,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    rate: int = 25,
    options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    container_options: dict[str, str] | None = None,
    rotation: int = 0,
) -> pathlib.Path:
    """Write ``num_frames`` index frames; ``pts`` (in 1/1000 s) gives irregular timestamps; ``rotation``
    stores a display rotation (counter-clockwise degrees) in the container."""
    defaults = {
        "libx264": {"crf": "12", "preset": "ultrafast", "bf": "2"},
        "libvpx-vp9": {"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"},
        "mpeg4": {"qscale": "2"},
    }.get(codec, {})
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {**defaults, **(options or {})}
        if codec == "mpeg4":
            stream.bit_rate = 2_000_000
        if rotation:
            stream.set_display_rotation(rotation)  # degrees counter-clockwise, as phones record portrait
        if pts is not None:
            stream.time_base = fractions.Fraction(1, 1000)
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, width, height), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def damage(data: bytes, kind: int, rng: np.random.Generator) -> bytes:
    """A damaged copy of a file's bytes: ``kind`` 0 truncates, 1 flips 20 bytes, 2 overwrites a block with random
    bytes, 3 drops a block (blocks of up to 2000 bytes at a random place)."""
    damaged = bytearray(data)
    a = int(rng.integers(len(damaged)))
    b = min(len(damaged), a + int(rng.integers(1, 2000)))
    if kind == 0:
        return bytes(damaged[: max(a, 1)])
    if kind == 1:
        for j in rng.integers(len(damaged), size=20):
            damaged[j] = int(rng.integers(256))
    elif kind == 2:
        damaged[a:b] = rng.integers(0, 256, b - a, dtype=np.uint8).tobytes()
    else:
        del damaged[a:b]
    return bytes(damaged)


@pytest.fixture(scope="session")
def video_tools() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        index_frame=index_frame,
        decode_index=decode_index,
        centre_square=centre_square,
        write_video=write_video,
        damage=damage,
    )


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def video_factory(video_dir):
    return lambda name, *args, **kwargs: write_video(video_dir / name, *args, **kwargs)


@pytest.fixture(scope="session")
def h264_mp4(video_factory) -> pathlib.Path:
    return video_factory("h264.mp4", 40)


@pytest.fixture(scope="session")
def h264_mkv(video_factory) -> pathlib.Path:
    return video_factory("h264.mkv", 30)


@pytest.fixture(scope="session")
def h264_ts(video_factory) -> pathlib.Path:
    return video_factory("h264.ts", 30)


@pytest.fixture(scope="session")
def h264_avi(video_factory) -> pathlib.Path:
    """AVI has no presentation timestamps: with B-frames its packet times are in decode order."""
    return video_factory("h264.avi", 30)


@pytest.fixture(scope="session")
def h264_raw(video_factory) -> pathlib.Path:
    """A raw H.264 elementary stream: no container, no timestamps, no seeking."""
    return video_factory("h264.h264", 30)


@pytest.fixture(scope="session")
def vp9_webm(video_factory) -> pathlib.Path:
    return video_factory("vp9.webm", 24, codec="libvpx-vp9")


@pytest.fixture(scope="session")
def mpeg4_mp4(video_factory) -> pathlib.Path:
    return video_factory("mpeg4.mp4", 30, codec="mpeg4")


@pytest.fixture(scope="session")
def portrait_mp4(video_factory) -> pathlib.Path:
    return video_factory("portrait.mp4", 20, width=48, height=64)


@pytest.fixture(scope="session")
def odd_size_mp4(video_factory) -> pathlib.Path:
    return video_factory("odd_98x62.mp4", 20, width=98, height=62)


@pytest.fixture(scope="session")
def three_frame_mp4(video_factory) -> pathlib.Path:
    return video_factory("three.mp4", 3)


@pytest.fixture(scope="session")
def vfr_mp4(video_factory) -> pathlib.Path:
    gaps = np.random.default_rng(0).integers(10, 120, size=30)
    pts = np.concatenate([[0], np.cumsum(gaps)[:-1]]).tolist()
    return video_factory("vfr.mp4", 30, pts=pts, options={"bf": "0"})


@pytest.fixture(scope="session")
def long_mp4(video_factory) -> pathlib.Path:
    return video_factory("long.mp4", 300, options={"g": "30", "keyint_min": "30", "sc_threshold": "0"})


@pytest.fixture(scope="session")
def open_gop_mp4(video_factory) -> pathlib.Path:
    """Open GOPs: B-frames just before each keyframe in time are decoded after it and refer to it."""
    params = "open-gop=1:keyint=30:min-keyint=30:scenecut=0"
    return video_factory("open_gop.mp4", 90, options={"bf": "3", "x264-params": params})


@pytest.fixture(scope="session")
def broken_videos(video_dir, h264_mp4) -> dict[str, pathlib.Path]:
    d = video_dir / "broken"
    d.mkdir(exist_ok=True)
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    text = d / "text.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    data = h264_mp4.read_bytes()
    truncated = d / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    random = d / "random.mp4"
    random.write_bytes(np.random.default_rng(1).integers(0, 256, size=50_000, dtype=np.uint8).tobytes())
    return {
        "missing": d / "does_not_exist.mp4",
        "empty": empty,
        "text": text,
        "truncated": truncated,
        "random": random,
    }
