"""A weighted mixture of datasets, one source per training step, as the paper mixes image, video, audio and
audio-video data (the official MetaLoader: each step draws one whole batch from one loader).

Everything is a pure function of ``(seed, step)``: which source a step uses, and which records each rank
gets. So every rank agrees on the source without communication, DataLoader workers split steps among
themselves (worker ``w`` of ``W`` builds steps ``w, w + W, …``, which is also the order the DataLoader returns
them in), and resuming at step ``k`` reproduces exactly the batches an uninterrupted run would have seen.

Within a source, records are read in a fresh seeded permutation per pass over it; each step takes the next
``batch_size × world_size`` positions and rank ``r`` keeps its slice of ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from iv2_data.datasets import collate as default_collate

__all__ = ["DatasetMixture", "MixtureLoader"]

_BLOCK = 4096  # steps whose sources are drawn together; any block can be recomputed on its own


class DatasetMixture(IterableDataset):
    """Yields ``{"source": name, "step": int, **batch}``: one collated batch per step from one source.

    ``batch_size`` is one number or one per source (the official configs set one per media type).
    ``weights`` (relative, per source name) default to each source's number of batches,
    ``len(dataset) / batch_size``: the official MetaLoader draws a loader in proportion to ``len(loader)``,
    so one pass covers every source once even when batch sizes differ. ``num_steps``
    ``None`` means endless. ``rank``/``world_size`` shard across processes; use ``batch_size=None`` in the
    :class:`~torch.utils.data.DataLoader` (batches are built here) or :class:`MixtureLoader`.
    """

    def __init__(
        self,
        datasets: Mapping[str, Dataset],
        batch_size: int | Mapping[str, int],
        *,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        num_steps: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        collate_fn: Callable[[list[Any]], Any] = default_collate,
    ) -> None:
        if not datasets:
            raise ValueError("a mixture needs at least one dataset")
        sizes = dict(batch_size) if isinstance(batch_size, Mapping) else dict.fromkeys(datasets, batch_size)
        if set(sizes) != set(datasets) or any(int(b) < 1 for b in sizes.values()):
            raise ValueError(f"batch_size must be >= 1 for every dataset {list(datasets)}, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.names = list(datasets)
        self.datasets = dict(datasets)
        for name, dataset in self.datasets.items():
            if len(dataset) == 0:  # type: ignore[arg-type]
                raise ValueError(f"dataset {name!r} of the mixture is empty")
        self.batch_sizes = {name: int(b) for name, b in sizes.items()}
        if weights is None:  # the official MetaLoader: in proportion to each loader's number of batches
            weights = {
                name: len(d) / self.batch_sizes[name]  # type: ignore[arg-type]
                for name, d in self.datasets.items()
            }
        unknown = set(weights) - set(self.names)
        if unknown:
            raise ValueError(f"weights name unknown datasets {sorted(unknown)}; datasets: {self.names}")
        raw = np.array([float(weights.get(name, 0.0)) for name in self.names])
        if (raw < 0).any() or raw.sum() <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {dict(weights)}")
        self.probabilities = raw / raw.sum()
        self._cdf = np.cumsum(self.probabilities)
        self._cdf[-1] = 1.0
        self.seed = seed
        self.num_steps = num_steps
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        self.collate_fn = collate_fn
        self._block_cache: dict[int, np.ndarray] = {}

    # -- the schedule -----------------------------------------------------------------------------------
    def _block(self, block: int) -> np.ndarray:
        if block not in self._block_cache:
            uniforms = np.random.default_rng([self.seed, block, 0x313]).random(_BLOCK)
            choices = np.searchsorted(self._cdf, uniforms, side="right").clip(max=len(self.names) - 1)
            self._block_cache = {block: choices}  # one block at a time: a step stream walks forward
        return self._block_cache[block]

    def source_of(self, step: int) -> str:
        """The dataset name step ``step`` draws from."""
        return self.names[int(self._block(step // _BLOCK)[step % _BLOCK])]

    def _uses_before(self, step: int) -> np.ndarray:
        """How many of steps ``0 … step - 1`` used each source."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        full_blocks, rest = divmod(step, _BLOCK)
        for block in range(full_blocks):
            counts += np.bincount(self._block(block), minlength=len(self.names))
        if rest:
            counts += np.bincount(self._block(full_blocks)[:rest], minlength=len(self.names))
        return counts

    def _permutation(self, source: int, epoch: int) -> np.ndarray:
        n = len(self.datasets[self.names[source]])  # type: ignore[arg-type]
        return np.random.default_rng([self.seed, source, epoch, 0x9E3]).permutation(n)

    def indices_for(self, step: int, uses_before: int | None = None) -> tuple[str, list[int]]:
        """Source name and this rank's record indices for ``step``."""
        name = self.source_of(step)
        source = self.names.index(name)
        if uses_before is None:
            uses_before = int(self._uses_before(step)[source])
        n = len(self.datasets[name])  # type: ignore[arg-type]
        batch = self.batch_sizes[name]
        start = (uses_before * self.world_size + self.rank) * batch
        indices = []
        cached_epoch, perm = -1, None
        for position in range(start, start + batch):
            epoch, offset = divmod(position, n)
            if epoch != cached_epoch:
                cached_epoch, perm = epoch, self._permutation(source, epoch)
            indices.append(int(perm[offset]))  # type: ignore[index]
        return name, indices

    # -- iteration --------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless mixture (num_steps=None) has no length")
        return max(0, self.num_steps - self.start_step)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        step = self.start_step + worker
        uses = self._uses_before(step)
        previous = step
        while self.num_steps is None or step < self.num_steps:
            # Advance the per-source use counts over the steps other workers handle.
            for skipped in range(previous, step):
                uses[self.names.index(self.source_of(skipped))] += 1
            name, indices = self.indices_for(step, int(uses[self.names.index(self.source_of(step))]))
            dataset = self.datasets[name]
            batch = self.collate_fn([dataset[i] for i in indices])
            if isinstance(batch, dict):
                yield {"source": name, "step": step, **batch}
            else:
                yield {"source": name, "step": step, "batch": batch}
            previous = step
            step += num_workers

    def set_start_step(self, step: int) -> None:
        if step < 0:
            raise ValueError(f"start step must be >= 0, got {step}")
        self.start_step = step


class MixtureLoader:
    """A :class:`DataLoader` over a :class:`DatasetMixture` that knows its position.

    ``state_dict()`` is ``{"step": next step, "seed", "world_size", "batch_sizes", "probabilities"}``;
    ``load_state_dict`` resumes there (call it before iterating) and refuses a state saved under another
    seed, world size, batch sizes or weights.
    """

    def __init__(self, mixture: DatasetMixture, num_workers: int = 0, **loader_kwargs: Any) -> None:
        self.mixture = mixture
        self.num_workers = num_workers
        self.loader_kwargs = loader_kwargs
        self.next_step = mixture.start_step

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.mixture.set_start_step(self.next_step)
        loader = DataLoader(
            self.mixture,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=False,
            **self.loader_kwargs,
        )
        for batch in loader:
            self.next_step = int(batch["step"]) + 1
            yield batch

    def __len__(self) -> int:
        self.mixture.set_start_step(self.next_step)
        return len(self.mixture)

    def _layout(self) -> dict[str, Any]:
        """What the positions of a step depend on besides the seed: ranks, batch sizes and source weights."""
        m = self.mixture
        return {
            "world_size": m.world_size,
            "batch_sizes": dict(m.batch_sizes),
            "probabilities": {name: round(float(p), 12) for name, p in zip(m.names, m.probabilities)},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.next_step, "seed": self.mixture.seed, **self._layout()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "step" not in state:
            raise KeyError(f"mixture loader state needs a 'step' key, got {sorted(state)}")
        if "seed" in state and int(state["seed"]) != self.mixture.seed:
            raise ValueError(
                f"resuming a mixture with seed {self.mixture.seed} from a state saved with seed {state['seed']}"
            )
        # Which source a step uses and which records a rank reads there are counted from step 0 under the
        # saved layout; under another one the same step number points elsewhere (records skipped/repeated).
        for key, value in self._layout().items():
            if key in state and state[key] != value:
                raise ValueError(
                    f"resuming a mixture with {key}={value} from a state saved with {key}={state[key]}; "
                    "resume with the same world size, batch sizes and weights"
                )
        self.next_step = int(state["step"])
