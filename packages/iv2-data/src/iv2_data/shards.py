"""webdataset tar shards: a resumable writer with a manifest, and a streaming reader that can resume.

Writing (``iv2-data shard`` or :func:`write_shards`): record ``i`` of the annotation file goes to shard
``i // samples_per_shard`` as ``{i:09d}.json`` (the record) plus one member per media file, named after its
record key and suffix (``{i:09d}.video.mp4``, ``{i:09d}.audio.wav``). A shard is written with
:func:`~iv2_data.atomic_write` (complete or absent), and ``manifest.json`` lists the finished shards, so a rerun
continues where an interrupted one stopped. Media is checked through the media layer before it is packed (it
opens, has the stream its key names, and a first frame decodes); records whose media cannot be read, and
records naming none, are listed under ``skipped``.

Reading (:class:`ShardDataset`): shards are split over ranks and DataLoader workers, optionally shuffled per
epoch (the shard order and a shuffle buffer, both seeded), and each sample is decoded in the worker, from the
tar member in memory, by the same sample builder as the map-style datasets (:mod:`iv2_data.samples`), so both
yield the same dicts. With ``loop=True`` every reader goes on to the next epoch (reshuffled) instead of
stopping: an endless stream for a training mixture. Every sample carries its reader, epoch and position;
:class:`ShardLoader` turns those into a ``state_dict`` that resumes the stream exactly (the restored workers
replay their tar streams and drop what was consumed, without decoding it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from iv2_data.annotations import load_annotations
from iv2_data.command_line import Interrupted, OutputConflict
from iv2_data.datasets import AnnotationDataset, collate, split_read_options
from iv2_data.files import atomic_write, remove_leftovers
from iv2_data.media import media_bytes, open_media, read_media_bytes
from iv2_data.progress import progress as progress_bar
from iv2_data.reading import AudioReadConfig, BrokenSamplePolicy, BrokenSamples, FileMedia, VideoReadConfig
from iv2_data.samples import SampleBuilder, sample_builder
from iv2_data.video import iter_frames

__all__ = ["MEDIA_KEYS", "ShardDataset", "ShardLoader", "ShardManifest", "write_shards"]

logger = logging.getLogger("iv2_data")

MEDIA_KEYS = ("video", "image", "audio")
MANIFEST = "manifest.json"
_MEDIA_FIELD = "__media__"  # record key, inside a shard's JSON, mapping media key -> tar member suffix
_INDEX_FIELD = "__index__"


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("shards need webdataset; install the extra: pip install 'iv2-data[shards]'") from error
    return webdataset


@dataclass
class ShardManifest:
    """What :func:`write_shards` produced: ``shards`` rows ``{"name", "first_index", "num_records",
    "num_samples", "bytes"}``, ``skipped`` rows ``{"index", "path", "error"}``."""

    path: Path
    data: dict[str, Any]

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.data["shards"]

    @property
    def skipped(self) -> list[dict[str, Any]]:
        return self.data["skipped"]

    @property
    def complete(self) -> bool:
        return bool(self.data["complete"])

    @property
    def num_samples(self) -> int:
        return sum(s["num_samples"] for s in self.shards)

    def shard_paths(self) -> list[Path]:
        return [self.path.parent / s["name"] for s in self.shards]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ShardManifest:
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST
        try:
            return cls(path, json.loads(path.read_text()))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"no shard manifest at {path}") from error
        except json.JSONDecodeError as error:
            raise ValueError(f"shard manifest {path} is not valid JSON: {error}") from error

    def save(self) -> None:
        with atomic_write(self.path, "w", encoding="utf-8") as sink:
            sink.write(json.dumps(self.data, indent=1))


def write_shards(
    annotations: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    media_root: str | os.PathLike[str] | None = None,
    *,
    samples_per_shard: int = 1000,
    media_keys: Sequence[str] = MEDIA_KEYS,
    prefix: str = "shard",
    progress: bool = True,
) -> ShardManifest:
    """Pack an annotation file and its media into tar shards of ``samples_per_shard`` records each.

    Resumable: shards listed in an existing ``output_dir/manifest.json`` are kept; a manifest written for
    another annotation file or shard size is an error rather than silently mixed.
    """
    wds = _webdataset()
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    annotations = Path(annotations)
    records = load_annotations(annotations)
    root = Path(media_root) if media_root is not None else annotations.parent
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)  # shards and manifests of a killed run
    settings = {
        "annotation": str(annotations.resolve()),
        "num_records": len(records),
        "samples_per_shard": samples_per_shard,
        "prefix": prefix,
        # An edited annotation file (same path and length) or another media root would mix old and new
        # records in one set of shards.
        "annotation_sha256": hashlib.sha256(annotations.read_bytes()).hexdigest(),
        "media_root": str(root.resolve()),
    }
    manifest_path = out / MANIFEST
    if manifest_path.exists():
        manifest = ShardManifest.load(manifest_path)
        # Keys a manifest of an earlier version lacks are not compared.
        differing = [k for k in settings if k in manifest.data and manifest.data[k] != settings[k]]
        if differing:
            detail = "; ".join(f"{k} was {manifest.data[k]!r}, now {settings[k]!r}" for k in differing)
            raise OutputConflict(
                f"{manifest_path} holds shards written with other settings ({detail}); use another output "
                "folder, or delete this one to start again"
            )
    else:
        manifest = ShardManifest(manifest_path, {**settings, "shards": [], "skipped": [], "complete": False})
    done = {s["name"] for s in manifest.shards if (out / s["name"]).is_file()}
    manifest.data["shards"] = [s for s in manifest.shards if s["name"] in done]

    num_shards = (len(records) + samples_per_shard - 1) // samples_per_shard
    already = sum(s["num_records"] for s in manifest.shards)
    bar = progress_bar(total=len(records), initial=already, desc=f"shards -> {out}", unit="sample", enabled=progress)
    try:
        for shard in range(num_shards):
            name = f"{prefix}-{shard:06d}.tar"
            if name in done:
                continue
            first = shard * samples_per_shard
            chunk = records[first : first + samples_per_shard]
            written, skipped = 0, []
            with atomic_write(out / name, "wb") as stream, wds.TarWriter(stream) as sink:
                for offset, record in enumerate(chunk):
                    index = first + offset
                    try:
                        sample = _pack(record, index, root, media_keys)
                    except (OSError, ValueError) as error:  # unreadable media, a record naming none: recorded
                        where = getattr(error, "path", None) or getattr(error, "filename", None) or ""
                        skipped.append({"index": index, "path": str(where), "error": str(error)})
                        logger.warning("shard writer: skipping record %d of %s: %s", index, annotations, error)
                    else:
                        sink.write(sample)
                        written += 1
                    bar.update(1)
            manifest.data["shards"].append(
                {
                    "name": name,
                    "first_index": first,
                    "num_records": len(chunk),
                    "num_samples": written,
                    "bytes": (out / name).stat().st_size,
                }
            )
            manifest.data["skipped"] = [s for s in manifest.skipped if not first <= s["index"] < first + len(chunk)]
            manifest.data["skipped"] += skipped
            manifest.data["shards"].sort(key=lambda s: s["first_index"])
            manifest.save()
    except KeyboardInterrupt:
        bar.close()
        raise Interrupted(f"{len(manifest.shards)} of {num_shards} shards done (listed in {manifest_path})") from None
    bar.close()
    manifest.data["complete"] = True
    manifest.save()
    return manifest


def _pack(record: Mapping[str, Any], index: int, root: Path, media_keys: Sequence[str]) -> dict[str, Any]:
    sample: dict[str, Any] = {"__key__": f"{index:09d}"}
    members = {}
    for key in media_keys:
        value = record.get(key)
        if not value:
            continue
        if not isinstance(value, str):
            raise ValueError(f"record {index}: media key {key!r} must be a path string, got {value!r}")
        path = Path(value) if Path(value).is_absolute() else root / value
        data = read_media_bytes(path)  # a MediaReadError (OSError) naming the file: missing, FIFO, empty...
        _check_decodable(data, str(path), key)
        suffix = f"{key}{path.suffix.lower() or '.bin'}"
        sample[suffix] = data
        members[key] = suffix
    if not members:
        raise ValueError(f"record {index} names no media under keys {list(media_keys)}: {dict(record)}")
    sample["json"] = json.dumps({**record, _MEDIA_FIELD: members, _INDEX_FIELD: index}).encode()
    return sample


def _check_decodable(data: bytes, name: str, key: str) -> None:
    """Open the bytes to pack through the media layer and, for pixels, decode their first frame: a text file
    named ``.mp4``, a truncated video or a file without the stream its key promises is skipped and recorded
    here (a :class:`~iv2_data.MediaReadError` naming the file), not found broken in the middle of training."""
    if key == "audio":
        with open_media(media_bytes(data, name), "audio") as media:
            media.audio_stream()
        return
    frames = iter_frames(media_bytes(data, name), size=(16, 16))
    try:
        next(frames)
    finally:
        frames.close()


# ---------------------------------------------------------------------------------------------------------
# Reading


def _resolve_shards(shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(shards, (str, os.PathLike)):
        path = Path(shards)
        if path.is_dir() or path.name == MANIFEST:
            manifest = ShardManifest.load(path)
            if not manifest.complete:
                logger.warning("reading shards of %s, whose writer has not finished", manifest.path)
            return [str(p) for p in manifest.shard_paths()]
        return [str(path)]
    return [str(p) for p in shards]


def _identity(source: Iterable[Any]) -> Iterable[Any]:
    return source


class ShardDataset(IterableDataset):
    """Stream samples from tar shards.

    ``shards``: a folder with ``manifest.json``, the manifest, one tar, or a list of tars. ``builder`` says
    what a sample is: a kind name (``"video_text"``; the remaining keyword ``options`` configure its builder),
    a :class:`~iv2_data.samples.SampleBuilder`, or a map-style dataset whose builder, read configs and
    broken-sample counts are used. ``video``/``audio`` (or their shorthands ``num_frames``, ``size``, ``train``…)
    say how media is read::

        ShardDataset("shards/", "video_text", num_frames=8, size=224, train=True, shuffle=True)

    Shards are dealt to the ``world_size × num_workers`` readers round-robin after a seeded per-epoch shuffle
    (``shuffle=True``); ``shuffle_buffer`` > 0 also shuffles samples within a reader. ``loop=True`` streams
    endlessly: each reader goes on with its shards of the next epoch (a new shuffle) when it runs out.
    Unreadable samples follow the :class:`~iv2_data.BrokenSamplePolicy` (``broken``).
    """

    def __init__(
        self,
        shards: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        builder: str | SampleBuilder | AnnotationDataset,
        *,
        video: VideoReadConfig | None = None,
        audio: AudioReadConfig | None = None,
        broken: BrokenSamplePolicy | None = None,
        shuffle: bool = False,
        shuffle_buffer: int = 0,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        loop: bool = False,
        **options: Any,
    ) -> None:
        self.urls = _resolve_shards(shards)
        if not self.urls:
            raise ValueError(f"no shards found in {shards}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if isinstance(builder, AnnotationDataset):  # a map-style dataset as the template: share its settings
            if options or video or audio or broken:
                raise TypeError("with a dataset as the builder, configure that dataset instead")
            self.builder, self.video, self.audio = builder.builder, builder.video, builder.audio
            self.guard = builder.guard
        else:
            self.video, self.audio, options = split_read_options(dict(options), video, audio)
            if isinstance(builder, str):
                builder = sample_builder(builder, **options)
            elif options:
                raise TypeError(f"unexpected options {sorted(options)}: configure the builder passed instead")
            self.builder = builder
            self.guard = BrokenSamples(broken, owner=f"ShardDataset of {self.urls[0]}…")
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size
        self.loop = loop
        # reader id -> (epoch, samples of that epoch already consumed): where each reader resumes.
        self.skip: dict[int, tuple[int, int]] = {}
        # DataLoader worker w plays reader (w + rotation) % num_workers: on resume, the worker the DataLoader
        # asks first is the one whose turn it was, so the interleaving of readers continues unchanged.
        self.worker_rotation = 0

    @property
    def stats(self):  # type: ignore[no-untyped-def]
        return self.guard.stats

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shards_for(self, reader: int, num_readers: int, epoch: int | None = None) -> list[str]:
        """The shards reader ``reader`` of ``num_readers`` reads in ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        order = list(range(len(self.urls)))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 0x5A]).permutation(len(self.urls)).tolist()
        return [self.urls[i] for i in order[reader::num_readers]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        num_readers = self.world_size * num_workers
        reader = self.rank * num_workers + (worker + self.worker_rotation) % num_workers
        epoch, to_skip = self.skip.get(reader, (self.epoch, 0))
        while True:
            urls = self.shards_for(reader, num_readers, epoch)
            if not urls:
                logger.warning(
                    "shard reader %d of %d has no shard (%d shards): write more, smaller shards",
                    reader,
                    num_readers,
                    len(self.urls),
                )
                return
            yield from self._read(urls, reader, epoch, to_skip)
            if not self.loop:
                return
            epoch, to_skip = epoch + 1, 0

    def _read(self, urls: list[str], reader: int, epoch: int, to_skip: int) -> Iterator[dict[str, Any]]:
        wds = _webdataset()
        # Splitting is done above, deterministically, so webdataset's own splitters are turned off.
        pipeline = wds.WebDataset(
            urls,
            shardshuffle=False,
            nodesplitter=_identity,
            workersplitter=_identity,
            empty_check=False,
        )
        if self.shuffle_buffer > 0:
            seed = int(np.random.default_rng([self.seed, epoch, reader, 0x5B]).integers(2**62))
            pipeline = pipeline.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=random.Random(seed))
        for position, raw in enumerate(pipeline, start=1):
            if position <= to_skip:
                continue
            sample = self._decode(raw)
            if sample is None:
                continue
            sample["reader"] = reader
            sample["reader_position"] = position
            sample["epoch"] = epoch
            yield sample

    def _decode(self, raw: dict[str, Any]) -> dict[str, Any] | None:
        where = f"{raw.get('__url__', '?')}:{raw.get('__key__', '?')}"
        try:
            record = json.loads(raw["json"])
            members = record.pop(_MEDIA_FIELD)
            index = int(record.pop(_INDEX_FIELD))
            missing = [suffix for suffix in members.values() if suffix not in raw]
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            # A sample without (valid) metadata: a damaged shard or a tar not written by write_shards.
            self.guard.failure(where, OSError(f"no valid iv2 metadata in the shard sample ({error!r})"))
            return None
        name = record.get("video") or record.get("image") or record.get("audio")
        where = f"{where} ({name})"
        if missing:  # the tar lost a member (cut short, or edited): a broken sample like an unreadable file
            self.guard.failure(where, OSError(f"shard sample lacks its member(s) {missing}"))
            return None
        # The decoders read the members from memory; their messages name the shard and the member.
        prefix = f"{raw.get('__url__', '?')}:{raw['__key__']}"
        sources = {key: media_bytes(raw[suffix], f"{prefix}.{suffix}") for key, suffix in members.items()}
        try:
            sample = self.builder.build(record, index, FileMedia(sources, self.video, self.audio, record), where)
        except OSError as error:
            self.guard.failure(where, error)
            return None
        self.guard.success()
        return sample


class ShardLoader:
    """A DataLoader over a :class:`ShardDataset` that tracks what was consumed, for exact resume.

    ``state_dict()`` → ``{"epoch", "seed", "batches", "num_readers", "consumed": {reader: samples},
    "reader_epochs": {reader: epoch}}``; ``load_state_dict`` (same ranks and workers, else a ``ValueError``)
    continues there: the same samples in the same order (exact while every worker still has data; once one
    runs dry near the end of an epoch the DataLoader's interleaving shifts, though no sample is lost or
    repeated). Without looping, iterating runs one epoch (the next iteration starts the following one); with
    ``loop=True`` (or a looping dataset) it never ends and every reader moves on to its next epoch's shards by
    itself, so the interleaving stays exact.
    """

    def __init__(
        self,
        dataset: ShardDataset,
        batch_size: int,
        num_workers: int = 0,
        *,
        loop: bool | None = None,
        **loader_kwargs: Any,
    ) -> None:
        self.dataset = dataset
        if loop is not None:
            dataset.loop = loop
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.loader_kwargs = {"collate_fn": collate, **loader_kwargs}
        self.consumed: dict[int, tuple[int, int]] = {}  # reader -> (epoch, position) of its last sample handed out
        self.batches = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.dataset.skip = dict(self.consumed)
        self.dataset.worker_rotation = self.batches % max(1, self.num_workers)
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, num_workers=self.num_workers, **self.loader_kwargs
        )
        for batch in loader:
            for reader, position, epoch in zip(
                _as_list(batch["reader"]), _as_list(batch["reader_position"]), _as_list(batch["epoch"])
            ):
                mark = (int(epoch), int(position))
                self.consumed[int(reader)] = max(self.consumed.get(int(reader), mark), mark)
            self.batches += 1
            yield batch
        self.consumed, self.batches = {}, 0
        self.dataset.set_epoch(self.dataset.epoch + 1)

    @property
    def num_readers(self) -> int:
        """``world_size × workers``: how the shards are dealt, which the saved positions refer to."""
        return self.dataset.world_size * max(1, self.num_workers)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.dataset.epoch,
            "seed": self.dataset.seed,
            "batches": self.batches,
            "num_readers": self.num_readers,
            "loop": self.dataset.loop,
            "consumed": {str(k): position for k, (_, position) in self.consumed.items()},
            "reader_epochs": {str(k): epoch for k, (epoch, _) in self.consumed.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"epoch", "consumed"} - set(state)
        if missing:
            raise KeyError(f"shard loader state lacks {sorted(missing)}")
        if "seed" in state and int(state["seed"]) != self.dataset.seed:
            raise ValueError(f"resuming shards with seed {self.dataset.seed} from a state saved with {state['seed']}")
        if "num_readers" in state and int(state["num_readers"]) != self.num_readers:
            # Reader r's position counts samples of the shards reader r was dealt; with another number of
            # readers the shards are dealt differently and those counts would skip or repeat other samples.
            raise ValueError(
                f"the shard loader state was saved with {state['num_readers']} readers (world_size × num_workers), "
                f"this loader has {self.num_readers}; resume with the same ranks and workers"
            )
        if "loop" in state and bool(state["loop"]) != self.dataset.loop:
            raise ValueError(f"the shard loader state was saved with loop={state['loop']}, this one has "
                             f"loop={self.dataset.loop}; the epochs would not line up")
        epoch = int(state["epoch"])
        self.dataset.set_epoch(epoch)
        epochs = state.get("reader_epochs", {})
        self.consumed = {int(k): (int(epochs.get(k, epoch)), int(v)) for k, v in state["consumed"].items()}
        self.batches = int(state.get("batches", 0))


def _as_list(value: Any) -> list[Any]:
    return value.tolist() if hasattr(value, "tolist") else list(value)
