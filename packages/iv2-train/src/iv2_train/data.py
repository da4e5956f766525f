"""Data whose position can be saved and restored, so a resumed run sees exactly the batches it would have."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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


class InterleavedBatches:
    """One batch per step from one of several sources, in a seeded order proportional to their sizes.

    Each round takes ``counts[name]`` batches from every source (default: its ``batches_per_epoch()``) in an
    order shuffled from ``seed`` and the round number. The order depends on nothing rank-specific, so every
    rank picks the same source at the same step without communication (as the official MetaLoader does by
    broadcasting it). Yields ``(source_name, batch)``. Sources are endless resumable iterables (e.g.
    :class:`ResumableBatches`); the state holds the round, the position in it and every source's state.
    """

    def __init__(
        self, sources: dict[str, ResumableData], *, seed: int = 0, counts: dict[str, int] | None = None
    ) -> None:
        if not sources:
            raise ValueError("InterleavedBatches needs at least one source")
        self.sources = dict(sources)
        self.seed = int(seed)
        self._counts = dict(counts) if counts is not None else None
        if self._counts is not None:
            missing = sorted(set(self.sources) - set(self._counts))
            if missing:
                raise ValueError(f"counts has no entry for source(s) {missing}")
        self.round = 0
        self.index_in_round = 0

    def counts(self) -> dict[str, int]:
        if self._counts is not None:
            return {name: int(self._counts[name]) for name in self.sources}
        out = {}
        for name, source in self.sources.items():
            per_epoch = getattr(source, "batches_per_epoch", None)
            if per_epoch is None:
                raise ValueError(f"source {name!r} has no batches_per_epoch(); pass counts= explicitly")
            out[name] = int(per_epoch())
        return out

    def _round_order(self, round_index: int) -> list[str]:
        names = [name for name, n in sorted(self.counts().items()) for _ in range(n)]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_index)
        return [names[i] for i in torch.randperm(len(names), generator=generator).tolist()]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        iterators = {name: iter(source) for name, source in self.sources.items()}
        while True:
            order = self._round_order(self.round)
            if not order:
                raise ValueError("every source has a count of 0 batches")
            while self.index_in_round < len(order):
                name = order[self.index_in_round]
                batch = next(iterators[name])
                self.index_in_round += 1
                yield name, batch
            self.round += 1
            self.index_in_round = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "index_in_round": self.index_in_round,
            "sources": {name: source.state_dict() for name, source in self.sources.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        self.index_in_round = int(state["index_in_round"])
        for name, source_state in state["sources"].items():
            if name not in self.sources:
                raise KeyError(f"saved data state has source {name!r}, this run has {sorted(self.sources)}")
            self.sources[name].load_state_dict(source_state)
