"""Feature extraction over many videos: ``iv2-encoders extract``.

Decoding runs in DataLoader worker processes, overlapped with the model; clips of several videos are
batched together. Each video gets one safetensors file (written with :func:`iv2_data.atomic_write`, so an
interrupted run never leaves a half-written output) whose path mirrors the input's path; ``manifest.jsonl``
(an :class:`iv2_data.JsonlManifest`) gets one row per input. A broken video is recorded and the run goes on;
a rerun skips finished outputs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import torch
from torch.utils.data import DataLoader, Dataset

from iv2_data import (
    JsonlManifest,
    MediaSearch,
    atomic_write,
    find_media,
    remove_leftovers,
    sliding_windows,
    window_frame_indices,
)

from .config import IMAGENET_MEAN, IMAGENET_STD

MANIFEST = "manifest.jsonl"


# ----------------------------------------------------------------------------------------------- inputs
def find_inputs(inputs: Iterable[str | os.PathLike]) -> MediaSearch:
    """Files as given; folders searched recursively for video files (:func:`iv2_data.find_media`: one suffix
    list for every tool, symlinked folders and dangling links reported as skipped). A path that does not exist
    is kept: it is reported as an error row, like any unreadable input."""
    return find_media(inputs, ("video",))


def relative_output(path: Path) -> PurePath:
    """The input's path as it is mirrored under the output folder: relative inputs inside the working
    directory keep their relative path; anything else uses its absolute path without the root."""
    if not path.is_absolute() and ".." not in path.parts:
        return PurePath(os.path.normpath(path))
    absolute = Path(os.path.abspath(path))
    return PurePath(*absolute.parts[1:])


def output_path(out_dir: Path, path: Path) -> Path:
    rel = relative_output(path)
    # keep the extension in the name: a.mp4 and a.webm in one folder must not collide
    return out_dir / rel.parent / (rel.name + ".safetensors")


# ----------------------------------------------------------------------------------------------- decoding
@dataclass
class ClipSpec:
    num_frames: int = 8
    size: int = 224
    window: int | None = None  # frames per sliding window (None: one clip per video)
    stride: int | None = None
    window_chunk: int = 32  # windows decoded per read, to bound memory on long videos
    # preprocessing of the model's weights (``model.pretrained_cfg``): normalisation, resize rule, sampling
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "center_crop"  # or "squash" (the whole frame resized to a square)
    sampling: str = "middle"

    @classmethod
    def for_model(cls, model: torch.nn.Module, **fields) -> ClipSpec:
        """The clip spec ``model.pretrained_cfg`` asks for (``fields`` override it)."""
        pcfg = model.pretrained_cfg
        return cls(**{"num_frames": pcfg.num_frames, "size": pcfg.img_size, "mean": pcfg.mean, "std": pcfg.std,
                      "resize": pcfg.resize, "sampling": pcfg.sampling, **fields})

    def transform(self):
        from iv2_data.transforms import CenterCropTransform, ResizeTransform

        kind = ResizeTransform if self.resize == "squash" else CenterCropTransform
        return kind(self.size, mean=tuple(self.mean), std=tuple(self.std))


def window_starts(num_video_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of the sliding windows (:func:`iv2_data.sliding_windows`: the last one ends at the last frame,
    so the tail is covered); a video shorter than one window gets one window over all of it."""
    return [start for start, _ in sliding_windows(num_video_frames, window, stride)]


def load_video(path: Path, spec: ClipSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(clips (W, 3, T, S, S), window_frames (W, 2) or None)``: one clip, or one per sliding window."""
    from iv2_data.video import probe_video, read_clip, read_frames

    transform = spec.transform()
    if spec.window is None:
        return read_clip(path, spec.num_frames, spec.size, sampling=spec.sampling, transform=transform,
                         threads=1)[None], None
    windows = sliding_windows(probe_video(path).num_frames, spec.window, spec.stride or spec.window)
    clips = []
    for c in range(0, len(windows), spec.window_chunk):
        chunk = windows[c:c + spec.window_chunk]
        indices = [i for start, stop in chunk for i in window_frame_indices(start, stop, spec.num_frames,
                                                                             spec.sampling)]
        frames = read_frames(path, indices=indices, threads=1)
        for j in range(len(chunk)):
            clips.append(transform(frames[j * spec.num_frames:(j + 1) * spec.num_frames]))
    return torch.stack(clips), torch.tensor(windows, dtype=torch.int64)


class _VideoDataset(Dataset):
    """One item per video: ``(index, clips, window_frames, error)``; errors are returned, not raised, so
    that one broken file never stops the DataLoader."""

    def __init__(self, paths: Sequence[Path], spec: ClipSpec) -> None:
        self.paths, self.spec = list(paths), spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            clips, spans = load_video(self.paths[i], self.spec)
            return i, clips, spans, None
        except Exception as err:  # recorded in the manifest; the run goes on
            return i, None, None, f"{type(err).__name__}: {err}"


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not fight the model for cores


# ----------------------------------------------------------------------------------------------- outputs
def write_features(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomic safetensors write (:func:`iv2_data.atomic_write`): complete or absent, with the umask's
    permissions; what a killed write leaves is removed by the next run."""
    from safetensors.torch import save_file

    with atomic_write(path) as partial:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial), metadata=metadata)


_SETTINGS = ("model", "checkpoint", "num_frames", "size", "window", "stride")


def _settings_conflict(path: Path, meta: dict[str, str]) -> str | None:
    """Why an existing output may not be reused (made with other settings), or None. Never rewrites it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            old = f.metadata() or {}
    except Exception as err:
        return f"existing output {path} is unreadable ({err}); delete it to extract again"
    diff = [f"{k}: {old.get(k)!r} -> {meta.get(k)!r}" for k in _SETTINGS if old.get(k) != meta.get(k)]
    if diff:
        return f"existing output {path} was made with other settings ({'; '.join(diff)}); use another --output"
    return None


class Manifest(JsonlManifest):
    """``manifest.jsonl``: rows are appended (flushed) as videos finish, so a killed run keeps its record;
    :meth:`compact` leaves one row per input, the latest."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir / MANIFEST, key="input")

    def add(self, input: Path, status: str, output: Path | None, error: str | None, **extra) -> None:
        self.append({"input": os.fspath(input), "status": status, "output": os.fspath(output) if output else None,
                     "error": error, **extra})


# ----------------------------------------------------------------------------------------------- run
@dataclass
class ExtractSummary:
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    passed_over: list[tuple[Path, str]] = field(default_factory=list)  # found in folders but not read, and why


@dataclass
class _Pending:
    index: int
    clips: torch.Tensor
    spans: torch.Tensor | None
    pooled: list[torch.Tensor] = field(default_factory=list)
    tokens: list[torch.Tensor] = field(default_factory=list)
    done: int = 0


def _batches(items: Iterator[_Pending], batch_size: int) -> Iterator[list[tuple[_Pending, int, int]]]:
    """Group clips of consecutive videos into model batches of ``batch_size`` clips: (video, start, stop)."""
    batch, filled = [], 0
    for item in items:
        start = 0
        while start < item.clips.shape[0]:
            take = min(batch_size - filled, item.clips.shape[0] - start)
            batch.append((item, start, start + take))
            filled += take
            start += take
            if filled == batch_size:
                yield batch
                batch, filled = [], 0
    if batch:
        yield batch


def extract(
    model: torch.nn.Module,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    spec: ClipSpec | None = None,
    batch_size: int = 8,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    save_tokens: bool = False,
    metadata: dict[str, str] | None = None,
    progress: bool = True,
) -> ExtractSummary:
    """Extract features of every input video into ``out_dir`` (see the module docstring)."""
    from tqdm.auto import tqdm

    spec = spec or ClipSpec()
    out_dir = Path(out_dir)
    search = find_inputs(inputs)
    paths = list(search)
    manifest = Manifest(out_dir)
    summary = ExtractSummary(passed_over=list(search.skipped))
    meta = {"num_frames": str(spec.num_frames), "size": str(spec.size), **(metadata or {})}
    if spec.window:
        meta.update(window=str(spec.window), stride=str(spec.stride or spec.window))
    todo = []
    for p in paths:
        out = output_path(out_dir, p)
        remove_leftovers(out.parent, out.name)  # what a killed run's write left behind
        if not out.is_file():
            todo.append(p)
            continue
        conflict = _settings_conflict(out, meta)
        if conflict:
            summary.failed += 1
            summary.errors[os.fspath(p)] = conflict
            manifest.add(p, "error", out, conflict)
        else:
            summary.skipped += 1
            manifest.add(p, "ok", out, None, skipped=True)

    device = torch.device(device)
    model = model.to(device).eval()
    bar = tqdm(total=len(paths), initial=summary.skipped, unit="video", disable=not progress, dynamic_ncols=True)
    loader = DataLoader(
        _VideoDataset(todo, spec), batch_size=None, shuffle=False, num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None, prefetch_factor=4 if num_workers else None,
        pin_memory=device.type == "cuda",
    )

    def finished(item: _Pending) -> None:
        path = todo[item.index]
        out = output_path(out_dir, path)
        pooled = torch.cat(item.pooled)
        tensors = {"pooled": pooled if spec.window else pooled[0]}
        if save_tokens:
            tokens = torch.cat(item.tokens)
            tensors["tokens"] = tokens if spec.window else tokens[0]
        if item.spans is not None:
            tensors["window_frames"] = item.spans
        write_features(out, tensors, {**meta, "input": os.fspath(path)})
        manifest.add(path, "ok", out, None)
        summary.ok += 1
        bar.update(1)

    def loaded() -> Iterator[_Pending]:
        for index, clips, spans, error in loader:
            if error is not None:
                manifest.add(todo[index], "error", None, error)
                summary.failed += 1
                summary.errors[os.fspath(todo[index])] = error
                bar.update(1)
                continue
            yield _Pending(index, clips, spans)

    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    try:
        with torch.inference_mode():
            for batch in _batches(loaded(), batch_size):
                clips = torch.cat([item.clips[a:b] for item, a, b in batch]).to(device, non_blocking=True)
                with autocast:
                    out = model(clips)
                pooled, tokens = out.pooled.float().cpu(), out.tokens.float().cpu() if save_tokens else None
                row = 0
                for item, a, b in batch:
                    n = b - a
                    item.pooled.append(pooled[row:row + n])
                    if tokens is not None:
                        item.tokens.append(tokens[row:row + n])
                    row += n
                    item.done += n
                    if item.done == item.clips.shape[0]:
                        finished(item)
    finally:
        bar.close()
        manifest.close()
        manifest.compact()
    return summary


def main_extract(args) -> int:
    """The ``extract`` sub-command (arguments parsed in :mod:`iv2_encoders.cli`)."""
    from .registry import create_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    overrides = {"num_frames": args.num_frames}
    if args.size:
        overrides["img_size"] = args.size
    if args.attn_impl:
        overrides["attn_impl"] = args.attn_impl
    model = create_model(args.model, pretrained=args.checkpoint, checkpoint_num_frames=args.checkpoint_frames,
                         **overrides)
    spec = ClipSpec.for_model(model, num_frames=args.num_frames, size=model.cfg.img_size, window=args.window,
                              stride=args.stride or args.window)
    summary = extract(
        model, args.inputs, args.output, spec=spec, batch_size=args.batch_size, num_workers=args.workers,
        device=device, dtype=dtype, save_tokens=args.tokens,
        metadata={"model": args.model, "checkpoint": os.fspath(args.checkpoint or "")},
        progress=not args.quiet,
    )
    for path, why in summary.passed_over:
        print(f"  passed over: {path}: {why}", file=sys.stderr)
    print(f"extracted {summary.ok}, skipped {summary.skipped} finished, failed {summary.failed} "
          f"-> {Path(args.output) / MANIFEST}", file=sys.stderr)
    for path, error in summary.errors.items():
        print(f"  failed: {path}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0
