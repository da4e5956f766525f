"""Data whose position can be saved and restored, so a resumed run sees exactly the batches it would have."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset


@runtime_checkable
class ResumableData(Protocol):
    """What the Trainer needs from data: iteration plus a position that survives a restart.

    ``state_dict()`` is called between batches and must describe the position *after* the last batch
    that was handed out; ``load_state_dict()`` is called before ``iter()`` on resume.
    """

    def __iter__(self) -> Iterator[Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class _EpochBatchSampler:
    """Batches of indices for one epoch of one rank, starting at a given batch.

    With ``batch_seed`` each index is paired with the batch's own seed (``_SeededBatches`` unpacks them)."""

    def __init__(
        self, order: list[int], batch_size: int, start_batch: int, batch_seed: Callable[[int], int] | None = None
    ) -> None:
        self.batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
        self.start_batch = start_batch
        self.batch_seed = batch_seed

    def __iter__(self) -> Iterator[list[Any]]:
        for number in range(self.start_batch, len(self.batches)):
            batch = self.batches[number]
            if self.batch_seed is None:
                yield batch
            else:
                seed = self.batch_seed(number)
                yield [(seed, index) for index in batch]

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.start_batch)


class _SeededBatches:
    """Fetches a batch in a DataLoader worker after seeding the worker's RNGs (torch, Python, NumPy) from the
    batch's own seed, so random augmentations depend on the batch, not on which worker fetched it or how
    many batches that worker fetched before: a run resumed mid-epoch draws exactly what the first run drew."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, items: list[tuple[int, int]]) -> list[Any]:
        import random

        seed = items[0][0]
        random.seed(seed)
        torch.manual_seed(seed)
        try:
            import numpy as np

            np.random.seed(seed % 2**32)
        except ImportError:
            pass
        indices = [index for _, index in items]
        getitems = getattr(self.dataset, "__getitems__", None)
        return list(getitems(indices)) if getitems is not None else [self.dataset[i] for i in indices]


class ResumableBatches:
    """Endless batches over a map-style dataset: shuffled per epoch from ``seed``, split between ranks.

    Each rank takes every ``world_size``-th sample of the epoch's permutation; incomplete batches are
    dropped so every rank makes the same number of steps. The position (epoch, batch) counts batches
    handed to the caller, not batches prefetched by workers, so it is exact with ``num_workers > 0``. With
    workers, each batch is fetched with the worker's RNGs seeded from (seed, rank, epoch, batch), so random
    augmentations in the dataset are reproduced exactly on resume too (without workers they draw from the
    process's RNGs, which the checkpoint restores).
    """

    def __init__(
        self,
        dataset: Dataset[Any] | Sequence[Any],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        num_workers: int = 0,
    ) -> None:
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        # None: taken from the process group when iteration starts (the Trainer may create it after us).
        self._rank = rank
        self._world_size = world_size
        self.collate_fn = collate_fn
        self.num_workers = num_workers
        self.epoch = 0
        self.batch_in_epoch = 0

    @property
    def rank(self) -> int:
        from .distributed import get_rank

        return get_rank() if self._rank is None else self._rank

    @property
    def world_size(self) -> int:
        from .distributed import get_world_size

        return get_world_size() if self._world_size is None else self._world_size

    def batches_per_epoch(self) -> int:
        return (len(self.dataset) // self.world_size) // self.batch_size  # type: ignore[arg-type]

    def __len__(self) -> int:
        """Batches per epoch on this rank (iteration itself is endless), as ``len(DataLoader)``."""
        return self.batches_per_epoch()

    def _order(self, epoch: int) -> list[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        usable = (n // self.world_size) * self.world_size
        return order[:usable][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if n // self.world_size < self.batch_size:
            raise ValueError(
                f"dataset of {n} samples is too small for batch_size {self.batch_size} on {self.world_size} ranks"
            )
        while True:
            epoch = self.epoch
            batch_seed = None
            if self.num_workers > 0:
                rank_seed = (self.seed * 1_000_003 + epoch) * 65_537 + self.rank

                def batch_seed(number: int, rank_seed: int = rank_seed) -> int:
                    return (rank_seed * 1_000_033 + number) % 2**63

            sampler = _EpochBatchSampler(self._order(epoch), self.batch_size, self.batch_in_epoch, batch_seed)
            loader = DataLoader(
                self.dataset if batch_seed is None else _SeededBatches(self.dataset),  # type: ignore[arg-type]
                batch_sampler=sampler,
                collate_fn=self.collate_fn,
                num_workers=self.num_workers,
                # Its own generator: creating a DataLoader iterator otherwise draws from the global torch
                # RNG, so a resumed run (which creates one more) would diverge in dropout etc.
                generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7),
            )
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.seed = int(state.get("seed", self.seed))


class MetaLoader:
    """One batch per step from one of several sources: the official MetaLoader (REFERENCE e).

    An epoch of the MetaLoader lists every source as many times as it has batches (``len(source)``, or
    ``lengths[name]`` for a streaming source without a length), shuffles that list and takes one batch per
    step in that order, so exactly one source feeds each step and each source is drawn in proportion to its
    length. Rank 0 shuffles (seeded from ``seed`` and the epoch) and broadcasts the order, so every rank uses
    the same source at the same step even where their lengths differ. Yields ``(source_name, batch)``.

    Sources are :class:`ResumableData` iterables that split their data between ranks themselves (e.g.
    :class:`ResumableBatches`, or a shard loader). One that stops (a finite epoch) is iterated again for its
    next pass, so sources may be endless or end after each epoch. The position (the epoch's order, the
    index in it, every source's state) resumes exactly. Iterate it in the training process, in step with
    the other ranks (the epoch's order is a collective): do not wrap it in a DataLoader.
    """

    def __init__(
        self, sources: Mapping[str, ResumableData], *, seed: int = 0, lengths: Mapping[str, int] | None = None
    ) -> None:
        if not sources:
            raise ValueError("MetaLoader needs at least one source")
        self.sources = dict(sources)
        self.seed = int(seed)
        self._lengths = dict(lengths or {})
        unknown = sorted(set(self._lengths) - set(self.sources))
        if unknown:
            raise ValueError(f"lengths name unknown source(s) {unknown}; sources: {sorted(self.sources)}")
        for name, value in self._lengths.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"lengths[{name!r}] must be a whole number of batches >= 0, got {value!r}")
        for name, source in self.sources.items():
            missing = [m for m in ("state_dict", "load_state_dict", "__iter__") if not hasattr(source, m)]
            if missing:
                raise TypeError(f"source {name!r} ({type(source).__name__}) lacks {', '.join(missing)}")
        self.epoch = 0
        self.index_in_epoch = 0
        self._order: list[str] | None = None  # this epoch's sources, step by step (the same on every rank)

    def lengths(self) -> dict[str, int]:
        """Batches each source contributes to one epoch of the MetaLoader (this rank's view)."""
        out = {}
        for name, source in self.sources.items():
            if name in self._lengths:
                out[name] = self._lengths[name]
                continue
            try:
                out[name] = len(source)  # type: ignore[arg-type]
            except TypeError:
                raise ValueError(
                    f"source {name!r} ({type(source).__name__}) has no len(): pass lengths={{{name!r}: N}}, its "
                    "batches per epoch (or any weight in batches)"
                ) from None
        return out

    def __len__(self) -> int:
        """Steps in one epoch."""
        return sum(self.lengths().values())

    def _epoch_order(self, epoch: int) -> list[str]:
        from .distributed import broadcast_object, get_rank

        order = None
        if get_rank() == 0:
            names = [name for name, n in sorted(self.lengths().items()) for _ in range(n)]
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]
        order = broadcast_object(order)
        if not order:
            raise ValueError(f"every MetaLoader source has a length of 0 batches: {self.lengths()}")
        return order

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        iterators: dict[str, Iterator[Any]] = {}
        while True:
            if self._order is None:
                self._order = self._epoch_order(self.epoch)
            while self.index_in_epoch < len(self._order):
                name = self._order[self.index_in_epoch]
                batch = self._next_batch(name, iterators)
                self.index_in_epoch += 1
                yield name, batch
            self.epoch += 1
            self.index_in_epoch = 0
            self._order = None

    def _next_batch(self, name: str, iterators: dict[str, Iterator[Any]]) -> Any:
        if name not in iterators:
            iterators[name] = iter(self.sources[name])
        try:
            return next(iterators[name])
        except StopIteration:
            pass
        iterators[name] = iter(self.sources[name])  # a finite source: its next pass
        try:
            return next(iterators[name])
        except StopIteration:
            raise RuntimeError(f"MetaLoader source {name!r} yielded no batch for a whole pass") from None

    def state_dict(self) -> dict[str, Any]:
        names = sorted(self.sources)
        return {
            "epoch": self.epoch,
            "index_in_epoch": self.index_in_epoch,
            # The current epoch's order itself: a resume continues it even if a source's length changed.
            "names": names,
            "order": None if self._order is None else [names.index(n) for n in self._order],
            "seed": self.seed,
            "sources": {name: source.state_dict() for name, source in self.sources.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = set(state["sources"])
        if saved != set(self.sources):
            raise ValueError(
                f"MetaLoader state holds sources {sorted(saved)}, this MetaLoader has {sorted(self.sources)}"
            )
        if int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(f"MetaLoader state was saved with seed {state['seed']}, this one has seed {self.seed}")
        self.epoch = int(state["epoch"])
        self.index_in_epoch = int(state["index_in_epoch"])
        names = list(state["names"])
        self._order = None if state["order"] is None else [names[i] for i in state["order"]]
        for name, source_state in state["sources"].items():
            self.sources[name].load_state_dict(source_state)
