"""Feature extraction over many videos: ``iv2-encoders extract``.

Decoding runs in DataLoader worker processes, overlapped with the model; clips of several videos are
batched together. Each video gets one safetensors file (written to a temporary name, then renamed, so an
interrupted run never leaves a half-written output) whose path mirrors the input's path; ``manifest.jsonl``
gets one row per input. A broken video is recorded and the run goes on; a rerun skips finished outputs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import torch
from torch.utils.data import DataLoader, Dataset

from .config import IMAGENET_MEAN, IMAGENET_STD

VIDEO_EXTENSIONS = frozenset(
    [".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv", ".gif"]
)
MANIFEST = "manifest.jsonl"


# ----------------------------------------------------------------------------------------------- inputs
def collect_inputs(inputs: Iterable[str | os.PathLike], extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Files as given; folders searched recursively for files with a video extension. Sorted, unique.
    A path that does not exist is kept: it is reported as an error row, like any unreadable input."""
    exts = {e.lower() for e in extensions}
    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.is_file() and sub.suffix.lower() in exts:
                    found.setdefault(os.fspath(sub), sub)
        else:
            found.setdefault(os.fspath(path), path)
    return list(found.values())


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
    """Start frames of sliding windows; a video shorter than one window gets one window over all of it."""
    if num_video_frames <= window:
        return [0]
    return list(range(0, num_video_frames - window + 1, stride))


def load_video(path: Path, spec: ClipSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(clips (W, 3, T, S, S), window_frames (W, 2) or None)``: one clip, or one per sliding window."""
    from iv2_data.video import probe_video, read_clip, read_frames, sample_frame_indices

    transform = spec.transform()
    if spec.window is None:
        return read_clip(path, spec.num_frames, spec.size, sampling=spec.sampling, transform=transform,
                         threads=1)[None], None
    total = probe_video(path).num_frames
    starts = window_starts(total, spec.window, spec.stride or spec.window)
    clips, spans = [], []
    for c in range(0, len(starts), spec.window_chunk):
        chunk = starts[c:c + spec.window_chunk]
        indices = []
        for s in chunk:
            length = min(spec.window, total - s)
            indices += [s + i for i in sample_frame_indices(length, spec.num_frames, spec.sampling)]
            spans.append((s, s + length))
        frames = read_frames(path, indices=indices, threads=1)
        for j in range(len(chunk)):
            clips.append(transform(frames[j * spec.num_frames:(j + 1) * spec.num_frames]))
    return torch.stack(clips), torch.tensor(spans, dtype=torch.int64)


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
    """Atomic safetensors write: a temporary name in the same folder, then rename."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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


class Manifest:
    """``manifest.jsonl``: rows are appended (flushed) as videos finish, so a killed run keeps its record;
    :meth:`compact` leaves one row per input, the latest."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MANIFEST
        out_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, input: Path, status: str, output: Path | None, error: str | None, **extra) -> None:
        row = {"input": os.fspath(input), "status": status, "output": os.fspath(output) if output else None,
               "error": error, **extra}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def compact(self) -> None:
        rows: dict[str, dict] = {}
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a killed run
                        continue
                    rows[row["input"]] = row
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows.values():
                f.write(json.dumps(row) + "\n")
        os.replace(tmp, self.path)


# ----------------------------------------------------------------------------------------------- run
@dataclass
class ExtractSummary:
    ok: int = 0
    skipped: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)


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
    paths = collect_inputs(inputs)
    manifest = Manifest(out_dir)
    summary = ExtractSummary()
    meta = {"num_frames": str(spec.num_frames), "size": str(spec.size), **(metadata or {})}
    if spec.window:
        meta.update(window=str(spec.window), stride=str(spec.stride or spec.window))
    todo = []
    for p in paths:
        out = output_path(out_dir, p)
        for stale in out.parent.glob(out.name + ".tmp-*") if out.parent.is_dir() else ():
            stale.unlink()  # left by an interrupted run
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
    print(f"extracted {summary.ok}, skipped {summary.skipped} finished, failed {summary.failed} "
          f"-> {Path(args.output) / MANIFEST}", file=sys.stderr)
    for path, error in summary.errors.items():
        print(f"  failed: {path}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0
