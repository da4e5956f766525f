"""Feature extraction over many videos: ``iv2-encoders extract`` (also ``iv2 extract``).

Decoding runs in DataLoader worker processes, overlapped with the model; clips of several videos are
batched together. Each video gets one safetensors file (written with :func:`iv2_data.atomic_write`, so an
interrupted run never leaves a half-written output, and the next run removes what a killed one left) whose
path mirrors the input's path relative to the folder it was found in (a file given alone goes at the top);
``manifest.jsonl`` (an :class:`iv2_data.JsonlManifest`) gets one row per input. A broken video is recorded and
the run goes on.

Reruns are decided by what determines an output, recorded in each file's metadata (``iv2_settings``): the
weights' content (the checkpoint files' SHA-256, cached by path, size and time; or the state dict's), the
architecture config, frames, size, preprocessing, windows and dtype. A finished output with the same
settings is skipped (never rewritten); one that lacks what is asked for now (``tokens``) is recomputed; one
made with other settings stops the run before any work, naming the differences, unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

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
from iv2_data.command_line import Interrupted, OutputConflict

from .config import IMAGENET_MEAN, IMAGENET_STD

MANIFEST = "manifest.jsonl"
SETTINGS_KEY = "iv2_settings"  # safetensors metadata: what determined the output (JSON)


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class PlannedInput:
    """One video to extract: the path as given or found, and where its features go."""

    path: Path
    output: Path


@dataclass
class InputPlan:
    """What :func:`plan_inputs` found: the videos and their outputs, and what the folder search passed over."""

    inputs: list[PlannedInput] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    other_files: int = 0
    duplicates: int = 0  # the same video reached twice (another spelling, a link): extracted once

    def report(self) -> list[str]:
        return MediaSearch(files=[i.path for i in self.inputs], skipped=self.skipped,
                           other_files=self.other_files).report(("video",))


def relative_output(path: Path, root: Path | None) -> PurePath:
    """Where an input is mirrored under the output folder: its path relative to the folder it was found in
    (``root``), or, for a file given alone, its name. Never ``..`` nor an absolute path."""
    if root is None:
        return PurePath(path.name)
    return PurePath(os.path.relpath(path, root))


def output_path(out_dir: Path, relative: PurePath) -> Path:
    # keep the extension in the name: a.mp4 and a.webm in one folder must not collide
    return out_dir / relative.parent / (relative.name + ".safetensors")


def plan_inputs(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> InputPlan:
    """Files as given; folders searched recursively for video files (:func:`iv2_data.find_media`: one suffix
    list for every tool, symlinked folders and dangling links reported as skipped). A path that does not exist
    is kept: it fails later with an error row, like any unreadable input. The same video reached twice is
    planned once; two different videos that would share an output path raise
    :class:`~iv2_data.command_line.OutputConflict` naming both."""
    out_dir = Path(out_dir)
    plan = InputPlan()
    seen: set[str] = set()
    by_output: dict[Path, Path] = {}
    for item in inputs:
        item = Path(item)
        root = item if item.is_dir() else None
        search = find_media([item], ("video",))
        plan.skipped += search.skipped
        plan.other_files += search.other_files
        for path in search.files:
            identity = os.path.realpath(path)
            if identity in seen:
                plan.duplicates += 1
                continue
            seen.add(identity)
            out = output_path(out_dir, relative_output(path, root))
            if out in by_output:
                raise OutputConflict(
                    f"{by_output[out]} and {path} would both be written to {out} (outputs mirror paths relative "
                    "to the folder given, and a file given alone goes at the top); extract them in separate runs "
                    "or into separate --output folders"
                )
            by_output[out] = path
            plan.inputs.append(PlannedInput(path, out))
    return plan


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

    def settings(self) -> dict[str, Any]:
        """What of the spec determines an output (``window_chunk`` does not)."""
        return {"num_frames": self.num_frames, "size": self.size, "window": self.window,
                "stride": (self.stride or self.window) if self.window else None, "mean": list(self.mean),
                "std": list(self.std), "resize": self.resize, "sampling": self.sampling}


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


# ----------------------------------------------------------------------------------------------- identity
def weights_sha256(files: Sequence[str | os.PathLike]) -> str:
    """``file-sha256:<hex>`` over the content of a checkpoint's files (:func:`iv2_data.file_sha256`, cached by
    path, size and time): the same weights under any path spelling give the same identity."""
    from iv2_data import file_sha256

    if len(files) == 1:
        return f"file-sha256:{file_sha256(files[0])}"
    combined = hashlib.sha256()
    for path in files:  # a folder or sharded checkpoint: names and contents, in order
        combined.update(f"{Path(path).name}\0{file_sha256(path)}\n".encode())
    return f"file-sha256:{combined.hexdigest()}"


def state_sha256(model: torch.nn.Module) -> str:
    """``state-sha256:<hex>`` over a model's state dict (names, dtypes, shapes, values): the identity of
    weights that are not a file (random initialisation, a model built in Python)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"state-sha256:{digest.hexdigest()}"


def extraction_settings(model: torch.nn.Module, spec: ClipSpec, *, weights: str, dtype: torch.dtype) -> dict[str, Any]:
    """Everything that determines an output's values: compared on every rerun."""
    return {"weights": weights, "config": model.cfg.to_dict(), **spec.settings(), "dtype": str(dtype)}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each differing setting (config fields one by one)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in _differences(a, b)]
        else:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def _existing_output(path: Path, settings: Mapping[str, Any], want_tokens: bool) -> tuple[str, str | None]:
    """``("missing" | "done" | "incomplete" | "unreadable" | "conflict", why)`` for an output file."""
    from safetensors import safe_open

    if not path.is_file():
        return "missing", None
    try:
        with safe_open(str(path), "pt") as f:
            meta, names = f.metadata() or {}, set(f.keys())
    except Exception as err:  # damaged outside this tool (writes are atomic): it holds nothing to keep
        return "unreadable", f"{type(err).__name__}: {err}"
    try:
        old = json.loads(meta[SETTINGS_KEY])
    except (KeyError, ValueError):
        return "conflict", "it records no settings (written by an older iv2-encoders)"
    diff = _differences(old, settings)
    if diff:
        return "conflict", "; ".join(diff)
    if want_tokens and "tokens" not in names:
        return "incomplete", "it holds no tokens"
    return "done", None


def _conflict_message(conflicts: Sequence[tuple[PlannedInput, str]], out_dir: Path) -> str:
    shown = "; ".join(f"{item.output} ({why})" for item, why in conflicts[:3])
    more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
    return (f"{len(conflicts)} output(s) in {out_dir} were made with other settings: {shown}{more}. Nothing was "
            "done: use another --output, or --overwrite to recompute them")


# ----------------------------------------------------------------------------------------------- outputs
def write_features(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomic safetensors write (:func:`iv2_data.atomic_write`): complete or absent, with the umask's
    permissions; what a killed write leaves is removed by the next run."""
    from safetensors.torch import save_file

    with atomic_write(path) as partial:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial), metadata=metadata)


class Manifest(JsonlManifest):
    """``manifest.jsonl``: rows are appended (flushed) as videos finish, so a killed run keeps its record;
    :meth:`compact` leaves one row per input, the latest."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir / MANIFEST, key="input")

    def add(self, input: Path, status: str, output: Path | None, error: str | None, **extra) -> None:
        self.append({"input": os.fspath(input), "status": status, "output": os.fspath(output) if output else None,
                     "error": error, **extra})


def _check_writable(out_dir: Path) -> None:
    """Fail before any work when the output folder cannot be written (read-only, not a folder, no space)."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise OSError(f"cannot write to the output folder {out_dir}: {err.strerror or err}") from None


# ----------------------------------------------------------------------------------------------- run
@dataclass
class ExtractSummary:
    found: int = 0  # videos planned (after removing the same video given twice)
    ok: int = 0
    skipped: int = 0  # finished by an earlier run with the same settings
    recomputed: int = 0  # finished outputs that lacked what was asked for, or (overwrite) had other settings
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    passed_over: list[tuple[Path, str]] = field(default_factory=list)  # found in folders but not read, and why
    report: list[str] = field(default_factory=list)  # what the input search has to say (nothing found, links)


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
    weights: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractSummary:
    """Extract features of every input video into ``out_dir`` (see the module docstring).

    ``weights`` identifies the model's weights in the outputs' settings (:func:`weights_sha256` of the
    checkpoint files); by default the state dict is hashed (:func:`state_sha256`). Raises
    :class:`~iv2_data.command_line.OutputConflict` before any work when outputs exist with other settings
    (unless ``overwrite``) or two inputs would share an output, ``OSError`` when ``out_dir`` cannot be written,
    and :class:`~iv2_data.command_line.Interrupted` on Ctrl-C (what finished is kept and recorded).
    """
    from tqdm.auto import tqdm

    spec = spec or ClipSpec()
    out_dir = Path(out_dir)
    plan = plan_inputs(inputs, out_dir)
    summary = ExtractSummary(found=len(plan.inputs), passed_over=list(plan.skipped), report=plan.report())
    settings = extraction_settings(model, spec, weights=weights or state_sha256(model), dtype=dtype)
    meta = {SETTINGS_KEY: json.dumps(settings, sort_keys=True), "num_frames": str(spec.num_frames),
            "size": str(spec.size), **(metadata or {})}
    if spec.window:
        meta.update(window=str(spec.window), stride=str(spec.stride or spec.window))

    # Decide every output before touching anything: a conflicting rerun changes nothing, not even the manifest.
    todo: list[PlannedInput] = []
    done: list[PlannedInput] = []
    conflicts: list[tuple[PlannedInput, str]] = []
    for item in plan.inputs:
        remove_leftovers(item.output.parent, item.output.name)  # what a killed run's write left behind
        state, why = _existing_output(item.output, settings, save_tokens)
        if state == "done":
            done.append(item)
        elif state == "conflict" and not overwrite:
            conflicts.append((item, why or ""))
        else:
            summary.recomputed += state != "missing"
            todo.append(item)
    if conflicts:
        raise OutputConflict(_conflict_message(conflicts, out_dir))
    if not plan.inputs:
        return summary
    _check_writable(out_dir)
    remove_leftovers(out_dir, MANIFEST)  # a compaction cut short

    manifest = Manifest(out_dir)
    for item in done:
        summary.skipped += 1
        manifest.add(item.path, "ok", item.output, None, skipped=True)

    device = torch.device(device)
    model = model.to(device).eval()
    # The bar counts clips: a video counts one until its windows are known, so one long windowed video moves.
    bar = tqdm(total=len(todo), unit="clip", disable=not progress or not todo, dynamic_ncols=True)
    loader = DataLoader(
        _VideoDataset([item.path for item in todo], spec), batch_size=None, shuffle=False, num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None, prefetch_factor=4 if num_workers else None,
        pin_memory=device.type == "cuda",
    )

    def finished(item: _Pending) -> None:
        planned = todo[item.index]
        pooled = torch.cat(item.pooled)
        tensors = {"pooled": pooled if spec.window else pooled[0]}
        if save_tokens:
            tokens = torch.cat(item.tokens)
            tensors["tokens"] = tokens if spec.window else tokens[0]
        if item.spans is not None:
            tensors["window_frames"] = item.spans
        write_features(planned.output, tensors, {**meta, "input": os.fspath(planned.path)})
        manifest.add(planned.path, "ok", planned.output, None)
        summary.ok += 1

    def loaded() -> Iterator[_Pending]:
        for index, clips, spans, error in loader:
            if error is not None:
                manifest.add(todo[index].path, "error", None, error)
                summary.failed += 1
                summary.errors[os.fspath(todo[index].path)] = error
                bar.update(1)
                continue
            if clips.shape[0] > 1:
                bar.total += clips.shape[0] - 1
                bar.refresh()
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
                bar.update(clips.shape[0])
    except KeyboardInterrupt:
        raise Interrupted(f"{summary.ok} of {len(todo)} videos done this run ({summary.skipped} done before), "
                          f"recorded in {manifest.path}") from None
    finally:
        bar.close()
        manifest.close()
        manifest.compact()
    return summary


# ----------------------------------------------------------------------------------------------- command
def _usage_error(parser, message: str):
    parser.error(message)  # prints usage and "PROG: error: MESSAGE", exits 2


def _check_device(parser, spec: str | None) -> torch.device:
    if spec is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        _usage_error(parser, f"--device {spec!r} is not a device name (cpu, cuda, cuda:1, mps)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            _usage_error(parser, f"--device {spec}: no CUDA GPU is available here (torch.cuda.is_available() is "
                                 "False); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            _usage_error(parser, f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        _usage_error(parser, f"--device {spec}: Apple's MPS backend is not available here; use --device cpu")
    return device


def _checked_config(parser, args, overrides: dict[str, Any]):
    from .registry import get_config

    try:
        base = get_config(args.model)
    except KeyError as err:
        _usage_error(parser, f"--model: {err.args[0]}")
    if args.size is not None and args.size % base.patch_size:
        lower = max(base.patch_size, args.size // base.patch_size * base.patch_size)
        _usage_error(parser, f"--size {args.size} is not a multiple of the patch size {base.patch_size} of "
                             f"{args.model} (try {lower} or {lower + base.patch_size})")
    if args.num_frames % base.tubelet_size:
        _usage_error(parser, f"--num-frames {args.num_frames} is not a multiple of the tubelet size "
                             f"{base.tubelet_size} of {args.model}")
    try:
        return get_config(args.model, **overrides)
    except ValueError as err:
        _usage_error(parser, f"--model {args.model} with these options: {err}")


def _weights_identity(args, model: torch.nn.Module) -> str:
    """What identifies the weights in the outputs' settings: the checkpoint files' content, or for a model
    without a checkpoint file (random initialisation) its state dict."""
    from .checkpoint import checkpoint_files
    from .pretrained import download_file
    from .registry import resolve_pretrained

    if args.checkpoint:
        return weights_sha256(checkpoint_files(resolve_pretrained(args.checkpoint)))
    hub_files = model.pretrained_cfg.hub_files
    if hub_files:  # a tag's released files, already fetched into the Hub cache by create_model
        return weights_sha256([f for hub in hub_files for f in checkpoint_files(download_file(hub))])
    return state_sha256(model)


def main_extract(args, parser) -> int:
    """The ``extract`` sub-command (arguments parsed in :mod:`iv2_encoders.cli`); ``parser`` reports usage
    errors. Returns the exit code; failures the user can fix raise (``run_command`` prints them)."""
    from .registry import create_model, split_model_name

    device = _check_device(parser, args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    overrides: dict[str, Any] = {"num_frames": args.num_frames}
    if args.size:
        overrides["img_size"] = args.size
    if args.attn_impl:
        overrides["attn_impl"] = args.attn_impl
    _checked_config(parser, args, overrides)
    tagged = split_model_name(args.model)[1] is not None
    pretrained: Any = args.checkpoint or (True if tagged else None)
    if pretrained is None:
        torch.manual_seed(0)  # random weights, the same on every run (for trying the tool, not for features)
        print(f"{parser.prog}: note: no --checkpoint: {args.model} has random weights (seed 0); the features "
              "only show that the tool works", file=sys.stderr)
    model = create_model(args.model, pretrained=pretrained, checkpoint_num_frames=args.checkpoint_frames,
                         **overrides)
    spec = ClipSpec.for_model(model, num_frames=args.num_frames, size=model.cfg.img_size, window=args.window,
                              stride=args.stride or args.window)
    summary = extract(
        model, args.inputs, args.output, spec=spec, batch_size=args.batch_size, num_workers=args.workers,
        device=device, dtype=dtype, save_tokens=args.tokens, weights=_weights_identity(args, model),
        metadata={"model": args.model, "checkpoint": os.fspath(args.checkpoint or "")},
        overwrite=args.overwrite, progress=not args.quiet,
    )
    return print_summary(summary, Path(args.output), parser.prog)


def print_summary(summary: ExtractSummary, out_dir: Path, prog: str) -> int:
    """Print what a run found, did and skipped; return its exit code (0 all done, 1 failures or nothing)."""
    for line in summary.report:
        print(f"{prog}: {line}", file=sys.stderr)
    if not summary.found:
        print(f"{prog}: nothing to do: no input video", file=sys.stderr)
        return 1
    recomputed = f" ({summary.recomputed} recomputed)" if summary.recomputed else ""
    videos = f"{summary.found} video{'s' if summary.found != 1 else ''}"
    print(f"{prog}: {videos}: extracted {summary.ok}{recomputed}, skipped {summary.skipped} done "
          f"before, failed {summary.failed} -> {out_dir / MANIFEST}", file=sys.stderr)
    for path, error in list(summary.errors.items())[:20]:
        print(f"  failed: {path}: {error}", file=sys.stderr)
    if len(summary.errors) > 20:
        print(f"  ... {len(summary.errors) - 20} more failures in {out_dir / MANIFEST}", file=sys.stderr)
    return 1 if summary.failed else 0
