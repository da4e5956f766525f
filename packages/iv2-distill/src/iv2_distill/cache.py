"""Teacher-target cache: run the frozen teachers once over the training clips, train many times.

Each *item* is one fixed view (:class:`~iv2_distill.data.View`: frame indices, crop box, flip) of one clip: item
``i`` is view ``i % views`` of record ``i // views``, drawn from a generator seeded with ``(seed, record, view)``
as the stage-1 transform draws. Items are written in shards of ``items_per_shard``::

    DIR/cache.json                  what the cache was made from (dataset, views, frames, crop, teachers, dtype)
    DIR/manifest.jsonl              one row per finished shard (iv2_data.JsonlManifest, key "shard")
    DIR/shard_000000.safetensors    per item: the teacher targets (clip_middle, clip_final, mae in ``dtype``;
                                    saliency in float32, so the masks drawn from it are the live ones), the view
                                    (frame_indices, crop_box, flip), record, view and valid

Shards are written atomically and listed in the manifest when complete, so a killed build resumes at the first
unlisted shard and a listed shard is never recomputed; a clip that cannot be read is recorded in its shard's row
(``failed``) and left out of training. A cache is only read by a run whose dataset (clip count and paths),
views, frames, crop, teachers (their weight files) and precision match ``cache.json``; otherwise
:class:`CacheMismatchError` names each difference. Several processes (``torchrun``) share the shards
round-robin.

Storage: an item holds ``K·(1 + N)·C`` + ``K'·N·C'`` + ``C_final`` values; at the official 1B/6B scale (6 × 2049 ×
3200 + 4 × 2048 × 1408 in fp16) that is about 100 MB per clip, so caching suits small teachers, few layers or few
clips; the tiny CPU flavor's items are about 50 kB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from iv2_data import JsonlManifest, atomic_write

from .data import ClipRecords, View, draw_view, read_view, training_records, view_crop
from .recipe import DistillConfig
from .teachers.base import DistillTeachers, TeacherOutput
from .teachers.build import teacher_fingerprint

log = logging.getLogger("iv2_distill")

CACHE_FORMAT = "iv2-distill-targets"
CACHE_VERSION = 1
META_FILE = "cache.json"
MANIFEST_FILE = "manifest.jsonl"
# stored per item besides the targets
_VIEW_KEYS = ("valid", "record", "view", "frame_indices", "crop_box", "flip")
_TARGET_KEYS = ("clip_middle", "clip_final", "mae", "saliency")
_STORE_DTYPES = {"float16": torch.float16, "float32": torch.float32}


class CacheMismatchError(ValueError):
    """A target cache made from other data, views or teachers than the run's; the message lists each difference."""


class CacheIncompleteError(RuntimeError):
    """A target cache whose build has not finished (or never started)."""


@dataclass
class CacheReport:
    """What :func:`build_target_cache` did."""

    directory: Path
    items: int
    shards: int
    built: int  # shards computed by this call (all ranks)
    reused: int  # shards already finished before this call
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"item", "path", "error"} of unreadable clips
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------ identity
def cache_spec(cfg: DistillConfig, records: ClipRecords, frame_stride: int) -> dict[str, Any]:
    """What a cache built for ``cfg`` over ``records`` depends on (``cache.json``)."""
    paths = [str(r["video"]) for r in records.records]
    crop = view_crop(cfg.data.size)
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "dataset": {
            "annotations": str(Path(records.source).resolve()),
            "records": len(paths),
            "digest": hashlib.sha256(json.dumps(paths).encode()).hexdigest(),
        },
        "views": cfg.cache.views,
        "seed": cfg.cache.seed,
        "frames": cfg.data.num_frames,
        "frame_stride": frame_stride,
        "size": cfg.data.size,
        "crop": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(crop).items()
                 if k != "flip_prob"},
        "teachers": teacher_fingerprint(cfg.teachers),
        "precision": cfg.train.distributed.precision,
        "dtype": cfg.cache.dtype,
        "items_per_shard": cfg.cache.items_per_shard,
    }


def spec_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Why a cache made with ``saved`` cannot serve a run that wants ``wanted`` (empty: it can)."""
    reasons = []
    if saved.get("format") != CACHE_FORMAT or saved.get("version") != CACHE_VERSION:
        return [f"format: {saved.get('format')!r} v{saved.get('version')}, expected {CACHE_FORMAT!r} v{CACHE_VERSION}"]
    s_data, w_data = saved["dataset"], wanted["dataset"]
    if s_data["records"] != w_data["records"]:
        reasons.append(f"count: the cache holds {s_data['records']} clips, the dataset has {w_data['records']} "
                       f"({w_data['annotations']})")
    elif s_data["digest"] != w_data["digest"]:
        reasons.append(f"clips: the cache was made from other clips than {w_data['annotations']} lists (same count, "
                       "other video paths or order)")
    names = {"views": "views per clip", "seed": "view seed", "frames": "frames per clip",
             "frame_stride": "frame stride", "size": "crop size", "crop": "crop", "precision": "precision",
             "dtype": "dtype", "items_per_shard": "items per shard"}
    for key, name in names.items():
        if saved.get(key) != wanted.get(key):
            reasons.append(f"{name}: cache {saved.get(key)!r}, run {wanted.get(key)!r}")
    s_teach, w_teach = saved.get("teachers", {}), wanted.get("teachers", {})
    for role in sorted(set(s_teach) | set(w_teach)):
        a, b = s_teach.get(role), w_teach.get(role)
        if a == b:
            continue
        if a is None or b is None:
            where = "absent from the cache" if a is None else "not in the run"
            reasons.append(f"teacher: the {role} teacher is {where}")
            continue
        fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        detail = ", ".join(f"{k} {a.get(k)!r} → {b.get(k)!r}" if k != "weights" else "weight files differ"
                           for k in fields)
        reasons.append(f"teacher: the {role} teacher differs ({detail})")
    return reasons


def view_seed(seed: int, record: int, view: int) -> int:
    """The generator seed of view ``view`` of record ``record``."""
    return ((seed * 1_000_003 + record) * 1_000_033 + view) % 2**63


def item_major(targets: TeacherOutput) -> dict[str, torch.Tensor]:
    """Teacher targets (layers first: ``(K, B, ...)``) as per-item tensors (``(B, K, ...)``)."""
    out = {}
    for name, value in targets.tensors().items():
        out[name] = value.transpose(0, 1) if name in ("clip_middle", "mae") else value
    return out


def from_item_major(tensors: Mapping[str, torch.Tensor]) -> TeacherOutput:
    """Batched per-item target tensors back to a float32 :class:`TeacherOutput` (layers first)."""
    fields = {name: (value.transpose(0, 1) if name in ("clip_middle", "mae") else value).float()
              for name, value in tensors.items()}
    return TeacherOutput.from_tensors(fields)


# ------------------------------------------------------------------------------------------------ building
def build_target_cache(
    cfg: DistillConfig,
    *,
    teachers: DistillTeachers | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CacheReport:
    """Build (or finish) the target cache ``cfg.cache.dir`` for the training clips of ``cfg.data``.

    Collective under several processes (each computes every ``world_size``-th unfinished shard; rank 0 keeps the
    manifest). ``teachers`` (built from ``cfg.teachers`` when omitted and there is work) run under the run's
    precision, so cached targets equal the live ones. A cache made from other data, views or teachers raises
    :class:`CacheMismatchError` naming the differences, unless ``overwrite`` (its shards are deleted first).
    """
    from iv2_train import barrier, get_rank, get_world_size, init_distributed

    started = time.perf_counter()
    if not cfg.cache.dir:
        raise ValueError("cache.dir is empty: give the folder of the target cache")
    env = init_distributed(cfg.train.distributed)
    rank, world = get_rank(), get_world_size()
    root = Path(cfg.cache.dir)
    records = training_records(cfg.data.annotations, cfg.data.media_root or None, cfg.data.holdout_last)
    stride = _frame_stride(cfg)
    spec = cache_spec(cfg, records, stride)
    if rank == 0:
        _prepare_directory(root, spec, overwrite)
    barrier()
    num_items = len(records) * cfg.cache.views
    per_shard = cfg.cache.items_per_shard
    num_shards = math.ceil(num_items / per_shard)
    manifest = JsonlManifest(root / MANIFEST_FILE, key="shard")
    finished = _finished_shards(root, manifest)
    todo = [s for s in range(num_shards) if _shard_name(s) not in finished]
    failed = [f for row in manifest for f in row.get("failed", []) if row["shard"] in finished]
    if todo and teachers is None:
        from .teachers.build import build_teachers

        teachers = build_teachers(cfg.teachers, clip_frames=cfg.data.num_frames, device=env.device)
    if teachers is not None:
        teachers = teachers.to(env.device)
    from iv2_data.progress import progress as progress_bar

    bar = progress_bar(total=sum(_shard_size(s, num_items, per_shard) for s in todo), enabled=progress and rank == 0,
                       desc="teacher targets", unit="clip")
    try:
        for first in range(0, len(todo), world):
            mine = todo[first:first + world]
            row = None
            if rank < len(mine):
                row = _build_shard(cfg, records, teachers, env, mine[rank], num_items, root)
            rows = _gather(row)
            bar.update(sum(r["items"] for r in rows))
            if rank == 0:
                for r in rows:
                    manifest.append(r)
            failed += [f for r in rows for f in r["failed"]]
    finally:
        bar.close()
        manifest.close()
    barrier()
    return CacheReport(root, num_items, num_shards, len(todo), num_shards - len(todo), failed,
                       time.perf_counter() - started)


def _frame_stride(cfg: DistillConfig) -> int:
    from .config import get_student_configs
    from .training import frame_stride

    return frame_stride(cfg, get_student_configs(cfg.model.name, **cfg.model.overrides)[0].num_frames)


def _prepare_directory(root: Path, spec: Mapping[str, Any], overwrite: bool) -> None:
    meta = root / META_FILE
    if meta.is_file():
        saved = json.loads(meta.read_text(encoding="utf-8"))
        reasons = spec_differences(saved, spec)
        if not reasons:
            return
        if not overwrite:
            raise CacheMismatchError(f"target cache {root} was made for another run: " + "; ".join(reasons)
                                     + " (delete it, choose another cache.dir, or rebuild with --overwrite)")
    # no record of what they were made for (or --overwrite): shards and manifest left here are not trusted
    for path in [*root.glob("shard_*.safetensors"), root / MANIFEST_FILE]:
        path.unlink(missing_ok=True)
    with atomic_write(meta, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=1)


def _shard_name(shard: int) -> str:
    return f"shard_{shard:06d}.safetensors"


def _shard_size(shard: int, num_items: int, per_shard: int) -> int:
    return min(per_shard, num_items - shard * per_shard)


def _finished_shards(root: Path, manifest: JsonlManifest) -> set[str]:
    """Shards the manifest lists as done and whose file is there (a deleted file is computed again)."""
    return {row["shard"] for row in manifest if row.get("status") == "done" and (root / row["shard"]).is_file()}


def _gather(row: dict[str, Any] | None) -> list[dict[str, Any]]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [row] if row is not None else []
    rows: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(rows, row)
    return [r for r in rows if r is not None]


def _build_shard(cfg: DistillConfig, records: ClipRecords, teachers: DistillTeachers | None, env: Any, shard: int,
                 num_items: int, root: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    per_shard = cfg.cache.items_per_shard
    items = range(shard * per_shard, shard * per_shard + _shard_size(shard, num_items, per_shard))
    columns: dict[str, list[torch.Tensor]] = {}
    failed: list[dict[str, Any]] = []
    batch: list[tuple[int, View, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        clips = torch.stack([clip for _, _, clip in batch]).to(env.device)
        with torch.no_grad(), env.autocast():
            targets = item_major(teachers(clips))  # type: ignore[misc]
        store = _STORE_DTYPES[cfg.cache.dtype]
        for name, value in targets.items():
            value = value.float() if name == "saliency" else value.to(store)
            columns.setdefault(name, []).append(value.cpu())
        batch.clear()

    for item in items:
        record, view_index = divmod(item, cfg.cache.views)
        path = records.path(record)
        generator = torch.Generator().manual_seed(view_seed(cfg.cache.seed, record, view_index))
        try:
            view = draw_view(path, cfg.data.num_frames, cfg.data.size, generator, record=records.records[record])
            clip = read_view(path, view, cfg.data.size)
        except (OSError, ValueError) as error:
            log.warning("target cache: skipping item %d (%s): %s", item, path, error)
            failed.append({"item": item, "path": str(path), "error": f"{type(error).__name__}: {error}"})
            view, clip = None, None
        _add_view_columns(columns, item, record, view_index, view, cfg.data.num_frames)
        if clip is not None:
            batch.append((item, view, clip))
        if len(batch) >= cfg.cache.batch_size:
            flush()
    flush()
    tensors = _assemble(columns, items)
    with atomic_write(root / _shard_name(shard)) as partial:
        save_file(tensors, str(partial), metadata={"format": CACHE_FORMAT})
    return {"shard": _shard_name(shard), "start": items.start, "stop": items.stop, "items": len(items),
            "failed": failed, "status": "done"}


def _add_view_columns(columns: dict[str, list[torch.Tensor]], item: int, record: int, view_index: int,
                      view: View | None, num_frames: int) -> None:
    valid = view is not None
    columns.setdefault("valid", []).append(torch.tensor([valid], dtype=torch.uint8))
    columns.setdefault("record", []).append(torch.tensor([record]))
    columns.setdefault("view", []).append(torch.tensor([view_index]))
    columns.setdefault("frame_indices", []).append(
        torch.tensor([view.frame_indices if valid else (0,) * num_frames]))  # type: ignore[union-attr]
    columns.setdefault("crop_box", []).append(torch.tensor([view.crop_box if valid else (0, 0, 0, 0)]))  # type: ignore[union-attr]
    columns.setdefault("flip", []).append(torch.tensor([bool(view.flip) if valid else False], dtype=torch.uint8))  # type: ignore[union-attr]


def _assemble(columns: dict[str, list[torch.Tensor]], items: range) -> dict[str, torch.Tensor]:
    """One tensor per column with a row per item; items whose clip failed get zero targets."""
    out = {k: torch.cat(columns[k]).contiguous() for k in _VIEW_KEYS}
    valid = out["valid"].bool()
    for name in _TARGET_KEYS:
        if name not in columns:
            continue
        rows = torch.cat(columns[name])
        full = rows.new_zeros((len(items), *rows.shape[1:]))
        full[valid] = rows
        out[name] = full.contiguous()
    return out


# ------------------------------------------------------------------------------------------------ reading
class TargetCache:
    """A finished target cache, read lazily (one open safetensors file per shard and process).

    ``expected``: the run's :func:`cache_spec`; a cache that differs raises :class:`CacheMismatchError` naming
    the differences. An unfinished cache raises :class:`CacheIncompleteError`. ``record_of[i]`` / ``views[i]``
    are the clip and view of valid item ``i``; :meth:`targets` its teacher targets.
    """

    def __init__(self, root: str | Path, *, expected: Mapping[str, Any] | None = None) -> None:
        from safetensors import safe_open

        self.root = Path(root)
        meta = self.root / META_FILE
        if not meta.is_file():
            raise CacheIncompleteError(f"no target cache at {self.root} (no {META_FILE}): build it with "
                                       "`iv2-distill cache-targets` (or cache.build=true)")
        self.spec = json.loads(meta.read_text(encoding="utf-8"))
        if expected is not None:
            reasons = spec_differences(self.spec, expected)
            if reasons:
                raise CacheMismatchError(f"target cache {self.root} does not match this run: " + "; ".join(reasons))
        num_items = self.spec["dataset"]["records"] * self.spec["views"]
        num_shards = math.ceil(num_items / self.spec["items_per_shard"])
        manifest = JsonlManifest(self.root / MANIFEST_FILE, key="shard")
        finished = _finished_shards(self.root, manifest)
        if len(finished) < num_shards:
            raise CacheIncompleteError(f"target cache {self.root} is unfinished: {len(finished)} of {num_shards} "
                                       "shards done; run `iv2-distill cache-targets` to finish it")
        self.failed = [f for row in manifest for f in row.get("failed", [])]
        self._paths: list[Path] = []
        self._rows: list[tuple[int, int]] = []  # valid item -> (shard, row)
        self.record_of: list[int] = []
        self.views: list[View] = []
        for shard in range(num_shards):
            path = self.root / _shard_name(shard)
            self._paths.append(path)
            with safe_open(str(path), framework="pt") as f:
                columns = {k: f.get_tensor(k) for k in _VIEW_KEYS}
            for row in torch.nonzero(columns["valid"].bool()).flatten().tolist():
                self._rows.append((shard, row))
                self.record_of.append(int(columns["record"][row]))
                self.views.append(View(tuple(columns["frame_indices"][row].tolist()),
                                       tuple(columns["crop_box"][row].tolist()), bool(columns["flip"][row])))
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def frame_stride(self) -> int:
        return int(self.spec["frame_stride"])

    def targets(self, index: int) -> dict[str, torch.Tensor]:
        """Teacher targets of valid item ``index`` (per item: ``clip_middle`` (K, 1 + N, C), ``clip_final``,
        ``mae`` (K, N, C), ``saliency`` (T, HW)), as stored."""
        from safetensors import safe_open

        shard, row = self._rows[index]
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = safe_open(str(self._paths[shard]), framework="pt")
        names = handle.keys()  # safe_open has keys() but no __contains__
        return {name: handle.get_slice(name)[row:row + 1][0] for name in _TARGET_KEYS if name in names}

    def __getstate__(self) -> dict[str, Any]:
        # open files stay in the process that opened them (DataLoader workers open their own)
        return {**self.__dict__, "_handles": {}}
