"""Benchmark: clips/s for reading 8 frames ("middle" sampling, 224 × 224, normalised) of a 300-frame h264 clip.

Compares ``iv2_data.read_clip`` (PyAV) with decord and torchcodec on the same file. Every reader opens the
file afresh for each clip (as a dataset does), picks the same frame indices and applies the same
crop/resize/normalisation (``iv2_data.CenterCropTransform``), so the columns differ only in opening and
decoding. A baseline that is not installed, or fails to import, is reported as unavailable.

    python benchmarks/data_decode.py [--seconds 10] [--width 640 --height 360] [--gop 250] [--video PATH]
                                     [--json results.jsonl] [--torchcodec-ffmpeg-from-pyav]

decord and torchcodec are in the workspace's ``bench`` dependency group; run this from a venv that has them.
torchcodec needs FFmpeg's shared libraries; without a system FFmpeg, ``--torchcodec-ffmpeg-from-pyav`` lets it
load the ones inside the PyAV wheel.
"""

from __future__ import annotations

import argparse
import fractions
import json
import os
import pathlib
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import av
import numpy as np
import torch

from iv2_data import CenterCropTransform, probe_video, read_clip, sample_frame_indices


def write_clip(path: str, num_frames: int, width: int, height: int, gop: int) -> None:
    """A moving, textured h264 clip (x264 defaults: preset medium, crf 23, B-frames)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, size=(height + num_frames, width + 2 * num_frames, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop)}
        stream.codec_context.time_base = fractions.Fraction(1, 30)
        for i in range(num_frames):
            frame = texture[i : i + height, 2 * i : 2 * i + width].copy()
            blob = (xx - (i * 3) % width) ** 2 + (yy - height // 2) ** 2 < (height // 5) ** 2
            frame[blob] = (255, 64, 32)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def iv2_reader(path: str, num_frames: int, size: int) -> Callable[[], torch.Tensor]:
    return lambda: read_clip(path, num_frames, size, "middle")


def decord_reader(path: str, num_frames: int, size: int) -> Callable[[], torch.Tensor]:
    import decord

    transform = CenterCropTransform(size)

    def read() -> torch.Tensor:
        vr = decord.VideoReader(path, num_threads=0)
        indices = sample_frame_indices(len(vr), num_frames, "middle")
        frames = torch.from_numpy(vr.get_batch(indices).asnumpy())
        return transform(frames)

    return read


def torchcodec_reader(path: str, num_frames: int, size: int) -> Callable[[], torch.Tensor]:
    from torchcodec.decoders import VideoDecoder

    transform = CenterCropTransform(size)

    def read() -> torch.Tensor:
        decoder = VideoDecoder(path, seek_mode="exact", dimension_order="NHWC", num_ffmpeg_threads=0)
        indices = sample_frame_indices(decoder.metadata.num_frames, num_frames, "middle")
        frames = decoder.get_frames_at(indices).data
        return transform(frames)

    return read


READERS = {"iv2_data (PyAV)": iv2_reader, "decord": decord_reader, "torchcodec": torchcodec_reader}


def measure(readers: dict[str, Callable[[], torch.Tensor]], seconds: float, rounds: int = 5) -> dict:
    """Median and half-range of clips/s per reader over ``rounds`` rounds.

    The readers take turns round by round, so a load change on a shared machine hits them all alike.
    """
    rates: dict[str, list[float]] = {name: [] for name in readers}
    cpu_ms: dict[str, list[float]] = {name: [] for name in readers}
    budget = seconds / rounds
    for _ in range(rounds):
        for name, read in readers.items():
            count, start, cpu_start = 0, time.perf_counter(), _cpu_seconds()
            while True:
                read()
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= budget:
                    break
            rates[name].append(count / elapsed)
            cpu_ms[name].append((_cpu_seconds() - cpu_start) / count * 1000)
    return {
        name: (statistics.median(r), (max(r) - min(r)) / 2, statistics.median(cpu_ms[name]))
        for name, r in rates.items()
    }


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (decoder threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reexec_with_pyav_ffmpeg() -> None:
    """Run this script again with PyAV's bundled FFmpeg shared libraries on the loader path.

    torchcodec links against the system's FFmpeg (libavutil.so.N, ...). Where none is installed, PyAV's wheel
    still carries a complete FFmpeg (under hashed file names in ``av.libs``); symbolic links with the plain
    names in a temporary folder let torchcodec load it, so both readers then run the very same FFmpeg.
    """
    libs = pathlib.Path(av.__file__).resolve().parent.parent / "av.libs"
    if not libs.is_dir() or os.environ.get("IV2_BENCH_PYAV_FFMPEG"):
        return
    links = pathlib.Path(tempfile.mkdtemp(prefix="pyav-ffmpeg-"))
    for lib in libs.iterdir():
        match = re.fullmatch(r"(lib(?:av\w+|sw\w+|postproc))-[0-9a-f]+\.so\.(\d+)(?:\.\d+)*", lib.name)
        if match:
            (links / f"{match[1]}.so.{match[2]}").symlink_to(lib)
    env = dict(os.environ, IV2_BENCH_PYAV_FFMPEG="1")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(links), str(libs), env.get("LD_LIBRARY_PATH")) if p)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", help="an existing video to read instead of the generated clip")
    parser.add_argument("--frames-in-video", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--gop", type=int, default=250, help="keyframe interval of the generated clip")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per reader")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for the shared resize/normalise step (DataLoader workers use 1)",
    )
    parser.add_argument("--json", help="append the results as one JSON line to this file")
    parser.add_argument(
        "--torchcodec-ffmpeg-from-pyav",
        action="store_true",
        help="let torchcodec use the FFmpeg libraries bundled with PyAV (when no system FFmpeg is installed)",
    )
    args = parser.parse_args()
    if args.torchcodec_ffmpeg_from_pyav:
        _reexec_with_pyav_ffmpeg()
    torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.video
        if path is None:
            path = os.path.join(tmp, "bench.mp4")
            write_clip(path, args.frames_in_video, args.width, args.height, args.gop)
        info = probe_video(path)
        video_description = (
            f"{info.num_frames} frames {info.width}x{info.height} {info.codec}, {len(info.keyframe_pts)} keyframes, "
            f"{os.path.getsize(path) / 1e6:.1f} MB"
        )
        print(
            f"video: {video_description}; reading {args.num_frames} frames at {args.size} px ('middle'); "
            f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"torch threads {torch.get_num_threads()}"
        )
        reference = None
        readers, notes = {}, {}
        for name, make in READERS.items():
            try:
                read = make(path, args.num_frames, args.size)
                clip = read()  # also the warm-up: imports, codec initialisation, file cache
            except Exception as e:  # a baseline missing or broken here is reported, not fatal
                lines = [line.strip() for line in str(e).splitlines() if line.strip()]
                hint = next((line for line in lines if "FFmpeg" in line or "ffmpeg" in line), "")
                notes[name] = f"unavailable: {type(e).__name__}: {' '.join(lines[:1])} {hint[:100]}".strip()
                continue
            if reference is None:
                reference = clip
            readers[name] = read
            notes[name] = f"max abs diff vs iv2_data {(clip - reference).abs().max().item():.3f}"
        results = measure(readers, args.seconds * len(readers))
        rows = [(name, *results.get(name, (None, None, None)), notes[name]) for name in READERS]

    print()
    print("| reader | clips/s (wall) | CPU ms per clip | note |")
    print("|---|---|---|---|")
    for name, rate, spread, cpu, note in rows:
        cells = ("–", "–") if rate is None else (f"{rate:.1f} ± {spread:.1f}", f"{cpu:.0f}")
        print(f"| {name} | {cells[0]} | {cells[1]} | {note} |")
    if args.json:
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": f"{os.cpu_count()} CPUs {platform.processor() or platform.machine()}",
            "load_average": os.getloadavg(),
            "video": video_description,
            "results": [
                {"reader": name, "clips_per_s": rate, "half_range": spread, "cpu_ms_per_clip": cpu, "note": note}
                for name, rate, spread, cpu, note in rows
            ],
        }
        with open(args.json, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
