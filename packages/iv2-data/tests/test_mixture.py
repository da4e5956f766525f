"""Weighted dataset mixture: reproducible by seed, sharded over ranks and workers, resumable."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import Dataset

from iv2_data.mixture import DatasetMixture, MixtureLoader


class Numbers(Dataset):
    """Records are numbers offset by ``base`` so that every sample says where it came from."""

    def __init__(self, n: int, base: int) -> None:
        self.n, self.base = n, base

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return {"value": torch.tensor(self.base + index)}


def sources() -> dict[str, Dataset]:
    return {"image": Numbers(10, 1000), "video": Numbers(7, 2000), "audio": Numbers(5, 3000)}


def run(mixture: DatasetMixture) -> list[tuple[str, list[int]]]:
    return [(b["source"], b["value"].tolist()) for b in mixture]


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a = run(DatasetMixture(sources(), 2, seed=5, num_steps=30))
    b = run(DatasetMixture(sources(), 2, seed=5, num_steps=30))
    c = run(DatasetMixture(sources(), 2, seed=6, num_steps=30))
    assert a == b and a != c
    for name, values in a:
        base = {"image": 1000, "video": 2000, "audio": 3000}[name]
        assert all(base <= v < base + 100 for v in values)


def test_weights_set_the_source_frequencies() -> None:
    mixture = DatasetMixture(sources(), 1, weights={"image": 1, "video": 3, "audio": 0}, seed=1, num_steps=4000)
    counts = Counter(mixture.source_of(step) for step in range(4000))
    assert counts["audio"] == 0
    assert abs(counts["video"] / 4000 - 0.75) < 0.03
    default = DatasetMixture(sources(), 1, seed=1)  # official rule: proportional to the number of batches
    assert default.probabilities.tolist() == pytest.approx([10 / 22, 7 / 22, 5 / 22])


def test_default_weights_count_batches_like_the_official_metaloader() -> None:
    # MetaLoader lists each loader len(loader) = len(dataset) / batch_size times before shuffling, so with
    # per-source batch sizes a source's share is its number of batches, not its number of records.
    mixture = DatasetMixture(sources(), {"image": 5, "video": 1, "audio": 5}, seed=1)
    batches = [10 / 5, 7 / 1, 5 / 5]
    assert mixture.probabilities.tolist() == pytest.approx([b / sum(batches) for b in batches])


def test_each_pass_over_a_source_is_a_permutation() -> None:
    mixture = DatasetMixture({"video": Numbers(7, 0)}, 1, seed=3, num_steps=21)
    values = [v for _, vs in run(mixture) for v in vs]
    assert sorted(values[:7]) == sorted(values[7:14]) == list(range(7))
    assert values[:7] != values[7:14]  # a fresh order per pass


def test_ranks_agree_on_the_source_and_split_the_records() -> None:
    ranks = [run(DatasetMixture(sources(), 2, seed=9, num_steps=40, rank=r, world_size=3)) for r in range(3)]
    for step in range(40):
        names = {ranks[r][step][0] for r in range(3)}
        assert len(names) == 1
    # Over one pass of the video source, the three ranks together read each record before any repeats.
    video_values = [
        v for step in range(40) for r in range(3) if ranks[r][step][0] == "video" for v in ranks[r][step][1]
    ]
    assert sorted(video_values[:7]) == list(range(2000, 2007))


def test_workers_and_resume_reproduce_the_single_process_stream() -> None:
    reference = run(DatasetMixture(sources(), 2, seed=4, num_steps=12))
    loader = MixtureLoader(DatasetMixture(sources(), 2, seed=4, num_steps=12), num_workers=2)
    stream = []
    for batch in loader:
        stream.append((batch["source"], batch["value"].tolist()))
        if len(stream) == 5:
            break
    state = loader.state_dict()
    assert state["step"] == 5
    resumed = MixtureLoader(DatasetMixture(sources(), 2, seed=4, num_steps=12), num_workers=0)
    resumed.load_state_dict(state)
    assert len(resumed) == 7
    stream += [(b["source"], b["value"].tolist()) for b in resumed]
    assert stream == reference
    with pytest.raises(ValueError, match="seed"):
        MixtureLoader(DatasetMixture(sources(), 2, seed=5)).load_state_dict(state)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="unknown datasets"):
        DatasetMixture(sources(), 1, weights={"speech": 1.0})
    with pytest.raises(ValueError, match="empty"):
        DatasetMixture({"video": Numbers(0, 0)}, 1)
    with pytest.raises(ValueError, match="rank 2"):
        DatasetMixture(sources(), 1, rank=2, world_size=2)


def test_batch_size_per_source() -> None:
    mixture = DatasetMixture(sources(), {"image": 4, "video": 2, "audio": 1}, seed=2, num_steps=30)
    sizes = {name: {len(values)} for name, values in run(mixture)}
    assert sizes == {"image": {4}, "video": {2}, "audio": {1}}
    with pytest.raises(ValueError, match="batch_size"):
        DatasetMixture(sources(), {"image": 4})


def test_resume_under_another_layout_is_refused() -> None:
    """Positions are counted from step 0 under the saved world size, batch sizes and weights: restoring a step
    under other ones would silently skip and repeat records."""
    import json

    saved = MixtureLoader(DatasetMixture(sources(), 2, seed=4, num_steps=12, world_size=2))
    for _ in zip(range(3), saved):
        pass
    state = json.loads(json.dumps(saved.state_dict()))  # as a checkpoint stores it
    with pytest.raises(ValueError, match="world_size"):
        MixtureLoader(DatasetMixture(sources(), 2, seed=4, world_size=4)).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_sizes"):
        MixtureLoader(DatasetMixture(sources(), 3, seed=4, world_size=2)).load_state_dict(state)
    with pytest.raises(ValueError, match="probabilities"):
        other_weights = DatasetMixture(sources(), 2, seed=4, world_size=2, weights={"image": 1, "video": 1})
        MixtureLoader(other_weights).load_state_dict(state)
    same = MixtureLoader(DatasetMixture(sources(), 2, seed=4, world_size=2))
    same.load_state_dict(state)
    assert same.next_step == 3
