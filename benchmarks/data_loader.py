"""Benchmark: training-loader throughput (clips/s) of iv2-data, from files and from webdataset shards.

Each loader yields training batches as stage 2 consumes them: 8 frames ("random" segment sampling), random
resized crop to 224 × 224 (no flip), ImageNet normalisation, plus the caption, through a torch DataLoader
with ``--workers`` worker processes (default 2). Sources:

- ``files``:  :class:`iv2_data.VideoTextDataset` over mp4 files (PyAV decoding, ``read_clip``);
- ``shards``: :class:`iv2_data.shards.ShardDataset` over tar shards of the same files (shuffle buffer 16);
- ``decord``: the same dataset with a decord reader (same frame indices and transform) — only where decord
  imports (it is in the workspace's ``bench`` group; run this script from a venv that has it).

The corpus is the synthetic one at ``--size`` pixels, ``--frames`` frames per video (written once into
``--workdir``). Clips/s per worker is reported too: a GPU step that needs B clips every S seconds needs
B / S / (clips/s per worker) decoding cores.

    python benchmarks/data_loader.py [--videos 48] [--size 320] [--frames 64] [--workers 2] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from iv2_data import VideoTextDataset, collate, write_corpus
from iv2_data.transforms import RandomResizedCropTransform


def decord_reader() -> Any:
    import decord

    from iv2_data import sample_frame_indices

    def read(
        path: Any, num_frames: int, size: int, sampling: str, *, transform: Any = None, train: bool = False, **_: Any
    ) -> torch.Tensor:
        reader = decord.VideoReader(str(path), num_threads=1)
        indices = sample_frame_indices(len(reader), num_frames, sampling)
        frames = torch.from_numpy(reader.get_batch(list(indices)).asnumpy())
        return transform(frames)

    return read


def make_dataset(corpus: dict[str, Path], reader: Any = None) -> VideoTextDataset:
    return VideoTextDataset(
        corpus["video_text"],
        num_frames=8,
        size=224,
        sampling="random",
        train=True,
        transform=RandomResizedCropTransform(224, flip_prob=0.0),
        video_reader=reader,
    )


def measure(batches: Any, epochs: int) -> tuple[float, int]:
    """One untimed warm-up pass (page cache, lazy imports), then ``epochs`` timed passes; each timed pass
    includes starting its DataLoader workers, as a real epoch does."""
    for _ in batches():
        pass
    clips, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in batches():
            clips += batch["video"].shape[0]
    return clips / (time.perf_counter() - start), clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--fps", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sources", default="files,shards,decord")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "iv2-bench-loader"))
    parser.add_argument("--json", help="append the results as one JSON line to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    root = Path(args.workdir) / f"corpus-{args.videos}x{args.frames}x{args.size}"
    corpus = write_corpus(root, args.videos, num_frames=args.frames, size=args.size, fps=args.fps)
    loader_kwargs = {"batch_size": args.batch_size, "num_workers": args.workers, "collate_fn": collate}
    rows = []
    for source in args.sources.split(","):
        try:
            if source == "files":
                dataset = make_dataset(corpus)
                batches = lambda d=dataset: torch.utils.data.DataLoader(d, shuffle=True, **loader_kwargs)
            elif source == "decord":
                dataset = make_dataset(corpus, decord_reader())
                batches = lambda d=dataset: torch.utils.data.DataLoader(d, shuffle=True, **loader_kwargs)
            elif source == "shards":
                from iv2_data.shards import ShardDataset, ShardLoader, write_shards

                shard_dir = root / "shards"
                write_shards(
                    corpus["video_text"], shard_dir, samples_per_shard=max(1, args.videos // 8), progress=False
                )
                stream = ShardDataset(shard_dir, make_dataset(corpus), shuffle=True, shuffle_buffer=16)
                loader = ShardLoader(stream, args.batch_size, num_workers=args.workers)
                batches = lambda loader=loader: iter(loader)
            else:
                raise ValueError(f"unknown source {source!r}")
        except ImportError as error:
            rows.append({"source": source, "clips_per_s": None, "note": f"unavailable: {error}"})
            continue
        rate, clips = measure(batches, args.epochs)
        rows.append(
            {
                "source": source,
                "clips_per_s": round(rate, 2),
                "clips_per_s_per_worker": round(rate / max(1, args.workers), 2),
                "clips": clips,
            }
        )

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "videos": args.videos,
        "video": f"{args.frames} frames {args.size}x{args.size} h264 at {args.fps} fps",
        "workers": args.workers,
        "batch_size": args.batch_size,
    }
    print(
        f"loader throughput: 8 frames at 224, {args.workers} workers, batch {args.batch_size}; "
        f"source videos {env['video']}; {env['cpus']} CPUs"
    )
    print(f"{'source':<8} {'clips/s':>9} {'per worker':>11}")
    for row in rows:
        if row["clips_per_s"] is None:
            print(f"{row['source']:<8} {'-':>9} {'-':>11}  {row['note']}")
        else:
            print(f"{row['source']:<8} {row['clips_per_s']:>9.1f} {row['clips_per_s_per_worker']:>11.1f}")
    if args.json:
        with open(args.json, "a") as sink:
            sink.write(json.dumps({"env": env, "results": rows}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
