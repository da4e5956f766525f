"""The MetaLoader: one source per step, an epoch's order shuffled in proportion to the sources' lengths,
resumable exactly, streaming sources without a length (official semantics: REFERENCE e, MetaLoader in
InternVideo2/multi_modality/dataset/dataloader.py). The broadcast from rank 0 is checked in
collectives_run.py (2 processes)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from iv2_train import MetaLoader, ResumableBatches


def sources() -> dict[str, Any]:
    return {
        "video": ResumableBatches(list(range(12)), batch_size=2, seed=1, rank=0, world_size=1),  # 6 per epoch
        "image": ResumableBatches(list(range(100, 106)), batch_size=3, seed=2, rank=0, world_size=1),  # 2
    }


class Stream:
    """A streaming source without len(): batches "<name><epoch>.<i>", ``per_pass`` per pass. ``endless``: it
    loops over its epochs itself; otherwise each iteration is one pass (as a shard loader run epoch by epoch)."""

    def __init__(self, name: str, per_pass: int, *, endless: bool) -> None:
        self.name, self.per_pass, self.endless = name, per_pass, endless
        self.epoch = self.position = 0

    def __iter__(self):
        while True:
            while self.position < self.per_pass:
                self.position += 1
                yield f"{self.name}{self.epoch}.{self.position - 1}"
            self.epoch, self.position = self.epoch + 1, 0
            if not self.endless:
                return

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def take(loader: MetaLoader, n: int) -> list[tuple[str, Any]]:
    it = iter(loader)
    out = []
    for _ in range(n):
        name, batch = next(it)
        out.append((name, batch.tolist() if hasattr(batch, "tolist") else batch))
    return out


def test_each_epoch_holds_every_source_as_often_as_its_length_in_a_new_order() -> None:
    loader = MetaLoader(sources(), seed=5)
    assert loader.lengths() == {"video": 6, "image": 2} and len(loader) == 8
    steps = take(loader, 24)
    epochs = [[name for name, _ in steps[i : i + 8]] for i in range(0, 24, 8)]
    for names in epochs:
        assert Counter(names) == {"video": 6, "image": 2}  # exact proportions: len(loader) batches each
    assert len({tuple(names) for names in epochs}) > 1  # shuffled afresh per epoch (true for seed 5)
    # each source keeps its own batch size (the official configs set one per media type)
    assert {name: {len(b) for n, b in steps if n == name} for name in ("video", "image")} == {
        "video": {2},
        "image": {3},
    }
    # each source's batches come in its own order, one source per step
    video_alone = iter(sources()["video"])
    assert [batch for name, batch in steps if name == "video"] == [next(video_alone).tolist() for _ in range(18)]


def test_the_order_follows_the_seed() -> None:
    names = lambda seed: [n for n, _ in take(MetaLoader(sources(), seed=seed), 16)]
    assert names(3) == names(3)
    assert names(3) != names(4)


def test_lengths_weigh_sources_and_stand_in_for_streaming_ones() -> None:
    # lengths = batches per epoch: with per-source batch sizes the share is in batches (official len(loader))
    loader = MetaLoader({**sources(), "audio": Stream("a", 3, endless=True)}, seed=1, lengths={"video": 1, "audio": 5})
    names = [n for n, _ in take(loader, 16)]
    assert Counter(names[:8]) == Counter(names[8:]) == {"video": 1, "image": 2, "audio": 5}
    audio = [b for n, b in take(MetaLoader({"audio": Stream("a", 3, endless=True)}, lengths={"audio": 4}), 7)]
    assert audio == ["a0.0", "a0.1", "a0.2", "a1.0", "a1.1", "a1.2", "a2.0"]  # its own epochs, looping
    with pytest.raises(ValueError, match=r"source 'audio' \(Stream\) has no len\(\): pass lengths=\{'audio': N\}"):
        MetaLoader({"audio": Stream("a", 3, endless=True)}).lengths()


def test_a_source_that_ends_after_each_pass_is_iterated_again() -> None:
    finite = MetaLoader({"shards": Stream("s", 2, endless=False)}, lengths={"shards": 3})
    assert [b for _, b in take(finite, 5)] == ["s0.0", "s0.1", "s1.0", "s1.1", "s2.0"]

    class Empty(Stream):
        def __iter__(self):
            return iter(())

    with pytest.raises(RuntimeError, match="source 'dry' yielded no batch for a whole pass"):
        take(MetaLoader({"dry": Empty("d", 1, endless=False)}, lengths={"dry": 1}), 1)


@pytest.mark.parametrize("stop", [3, 8, 11])  # mid-epoch, at an epoch boundary, in the second epoch
def test_resume_continues_exactly(stop: int) -> None:
    def make() -> MetaLoader:
        return MetaLoader({**sources(), "audio": Stream("a", 2, endless=False)}, seed=7, lengths={"audio": 3})

    full = take(make(), 22)
    part = make()
    head = take(part, stop)
    state = json.loads(json.dumps(part.state_dict()))  # plain data, as a checkpoint stores it
    resumed = make()
    resumed.load_state_dict(state)
    assert head + take(resumed, 22 - stop) == full


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="at least one source"):
        MetaLoader({})
    with pytest.raises(ValueError, match=r"lengths name unknown source\(s\) \['speech'\]"):
        MetaLoader(sources(), lengths={"speech": 1})
    with pytest.raises(ValueError, match=r"lengths\['video'\] must be a whole number of batches >= 0, got -1"):
        MetaLoader(sources(), lengths={"video": -1})
    with pytest.raises(TypeError, match=r"source 'video' \(list\) lacks state_dict, load_state_dict"):
        MetaLoader({"video": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="every MetaLoader source has a length of 0"):
        take(MetaLoader(sources(), lengths={"video": 0, "image": 0}), 1)
    state = MetaLoader(sources()).state_dict()
    with pytest.raises(ValueError, match=r"holds sources \['image', 'video'\], this MetaLoader has \['video'\]"):
        MetaLoader({"video": sources()["video"]}).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with seed 0, this one has seed 1"):
        MetaLoader(sources(), seed=1).load_state_dict(state)
