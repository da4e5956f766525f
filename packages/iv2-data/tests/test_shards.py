"""webdataset shards: writer manifest and resume, reader format, rank/worker split, shuffling, resume."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")

from iv2_data import shards as shards_module
from iv2_data.cli import main
from iv2_data.datasets import VideoTextDataset
from iv2_data.shards import ShardDataset, ShardLoader, ShardManifest, write_shards
from iv2_data.synthetic import write_corpus

FRAMES, SIZE = 2, 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), 6, num_frames=FRAMES, size=SIZE, fps=4)


def builder() -> VideoTextDataset:
    return VideoTextDataset([], num_frames=FRAMES, size=SIZE, caption_sampling="first")


def test_writer_packs_records_into_shards_with_a_manifest(corpus: dict[str, Path], tmp_path: Path) -> None:
    manifest = write_shards(corpus["video_text"], tmp_path, samples_per_shard=4, progress=False)
    assert manifest.complete and [s["name"] for s in manifest.shards] == ["shard-000000.tar", "shard-000001.tar"]
    assert [s["num_samples"] for s in manifest.shards] == [4, 2] and manifest.num_samples == 6
    with tarfile.open(tmp_path / "shard-000001.tar") as tar:
        names = tar.getnames()
        record = json.loads(tar.extractfile("000000004.json").read())
    assert names == ["000000004.json", "000000004.video.mp4", "000000005.json", "000000005.video.mp4"]
    assert record["video"] == "videos/000004.mp4" and record["__index__"] == 4
    assert ShardManifest.load(tmp_path).data == manifest.data


def test_writer_skips_unreadable_media_and_says_so(corpus: dict[str, Path], tmp_path: Path) -> None:
    records = json.loads(corpus["video_text"].read_text())
    records[1]["video"] = "videos/not_there.mp4"
    ann = corpus["root"] / "with_missing.json"
    ann.write_text(json.dumps(records))
    manifest = write_shards(ann, tmp_path, samples_per_shard=3, progress=False)
    assert manifest.num_samples == 5
    assert [s["index"] for s in manifest.skipped] == [1] and "not_there.mp4" in manifest.skipped[0]["path"]


def test_writer_checks_media_through_the_media_layer(corpus: dict[str, Path], tmp_path: Path) -> None:
    import numpy as np

    from iv2_data.synthetic import write_video

    """A text file named .mp4, random bytes, an audio key on a file without audio and a record naming no media
    are skipped and recorded with a message naming the file; they used to be packed (the text file, the silent
    video as audio) or to end the run (the record without media)."""
    root = corpus["root"]
    (root / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    (root / "noise.mp4").write_bytes(bytes(range(256)) * 40)
    write_video(root / "silent.mp4", np.zeros((2, 16, 16, 3), np.uint8), 4)
    records = json.loads(corpus["video_text"].read_text())[:2]
    records += [
        {"video": "notes.mp4", "caption": "text"},
        {"video": "noise.mp4", "caption": "noise"},
        {"video": "silent.mp4", "audio": "silent.mp4", "caption": "a silent video as audio"},
        {"caption": "no media at all"},
    ]
    ann = root / "mixed.json"
    ann.write_text(json.dumps(records))
    manifest = write_shards(ann, tmp_path, samples_per_shard=10, progress=False, media_keys=("video", "audio"))
    assert manifest.num_samples == 2
    skipped = {s["index"]: s for s in manifest.skipped}
    assert sorted(skipped) == [2, 3, 4, 5]
    assert skipped[2]["path"].endswith("notes.mp4") and "a text file, not a video" in skipped[2]["error"]
    assert skipped[3]["path"].endswith("noise.mp4") and "noise.mp4" in skipped[3]["error"]
    assert "no audio stream" in skipped[4]["error"]
    assert "names no media" in skipped[5]["error"]
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        assert sorted(n for n in tar.getnames() if not n.endswith(".json")) == [
            "000000000.video.mp4", "000000001.video.mp4"]  # fmt: skip


def test_settings_mismatch_names_the_differing_keys(corpus: dict[str, Path], tmp_path: Path) -> None:
    """It printed two whole settings dictionaries; now each differing key with its old and new value."""
    from iv2_data.command_line import OutputConflict

    write_shards(corpus["video_text"], tmp_path, samples_per_shard=4, progress=False)
    with pytest.raises(OutputConflict) as raised:
        write_shards(corpus["video_text"], tmp_path, samples_per_shard=3, progress=False)
    message = str(raised.value)
    assert "samples_per_shard was 4, now 3" in message
    assert "annotation_sha256" not in message and "media_root" not in message  # only what differs
    assert str(tmp_path / "manifest.json") in message


def test_writer_resumes_after_an_interruption(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pack = shards_module._pack

    def crash_on_record_3(record, index, root, keys):
        if index == 3:
            raise KeyboardInterrupt
        return real_pack(record, index, root, keys)

    monkeypatch.setattr(shards_module, "_pack", crash_on_record_3)
    with pytest.raises(KeyboardInterrupt):
        write_shards(corpus["video_text"], tmp_path, samples_per_shard=2, progress=False)
    first = tmp_path / "shard-000000.tar"
    assert first.is_file() and not (tmp_path / "shard-000001.tar").exists()
    stamp = first.stat().st_mtime_ns
    assert not ShardManifest.load(tmp_path).complete
    monkeypatch.setattr(shards_module, "_pack", real_pack)
    manifest = write_shards(corpus["video_text"], tmp_path, samples_per_shard=2, progress=False)
    assert manifest.complete and manifest.num_samples == 6 and len(manifest.shards) == 3
    assert first.stat().st_mtime_ns == stamp  # finished shards are not rewritten
    with pytest.raises(ValueError, match="samples_per_shard"):
        write_shards(corpus["video_text"], tmp_path, samples_per_shard=3, progress=False)


def test_resume_refuses_an_edited_annotation_file(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Same path, same number of records, other content: finished shards hold the old records, so continuing
    would mix two versions of the data set."""
    records = json.loads(corpus["video_text"].read_text())
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(records))
    out = tmp_path / "shards"
    write_shards(ann, out, corpus["root"], samples_per_shard=2, progress=False)
    write_shards(ann, out, corpus["root"], samples_per_shard=2, progress=False)  # unchanged: resumes
    records[0]["captions"] = ["an edited caption"]
    ann.write_text(json.dumps(records))
    with pytest.raises(ValueError, match="annotation_sha256"):
        write_shards(ann, out, corpus["root"], samples_per_shard=2, progress=False)


def test_reader_yields_the_map_style_samples(corpus: dict[str, Path], tmp_path: Path) -> None:
    write_shards(corpus["video_text"], tmp_path, samples_per_shard=4, progress=False)
    streamed = list(ShardDataset(tmp_path, builder()))
    mapped = VideoTextDataset(corpus["video_text"], num_frames=FRAMES, size=SIZE, caption_sampling="first")
    assert [s["index"] for s in streamed] == list(range(6))
    for sample in streamed:
        reference = mapped[sample["index"]]
        assert set(reference) <= set(sample)
        assert sample["caption"] == reference["caption"] and sample["path"] == reference["path"]
        torch.testing.assert_close(sample["video"], reference["video"])


def test_ranks_and_workers_split_the_shards(corpus: dict[str, Path], tmp_path: Path) -> None:
    write_shards(corpus["video_text"], tmp_path, samples_per_shard=1, progress=False)
    per_rank = []
    for rank in range(2):
        dataset = ShardDataset(tmp_path, builder(), shuffle=True, seed=1, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
        per_rank.append([int(s["index"]) for s in loader])
    # 6 shards dealt round-robin to 4 readers (rank 0: readers 0, 1; rank 1: readers 2, 3) -> 2+2 and 1+1.
    assert [len(indices) for indices in per_rank] == [4, 2]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(6))


def test_shuffle_is_seeded(corpus: dict[str, Path], tmp_path: Path) -> None:
    write_shards(corpus["video_text"], tmp_path, samples_per_shard=2, progress=False)
    order = lambda seed, epoch=0: [
        s["index"] for s in ShardDataset(tmp_path, builder(), shuffle=True, shuffle_buffer=4, seed=seed, epoch=epoch)
    ]
    assert order(3) == order(3)
    assert sorted(order(3)) == list(range(6))
    assert len({tuple(order(s, e)) for s in range(3) for e in range(2)}) > 1


def test_loader_position_resumes_exactly(corpus: dict[str, Path], tmp_path: Path) -> None:
    write_shards(corpus["video_text"], tmp_path, samples_per_shard=1, progress=False)
    make = lambda: ShardLoader(
        ShardDataset(tmp_path, builder(), shuffle=True, shuffle_buffer=2, seed=7), batch_size=1, num_workers=2
    )
    reference = [b["index"].tolist() for b in make()]
    interrupted, seen = make(), []
    for batch in interrupted:
        seen.append(batch["index"].tolist())
        if len(seen) == 3:
            break
    state = json.loads(json.dumps(interrupted.state_dict()))  # survives a checkpoint round trip
    resumed = make()
    resumed.load_state_dict(state)
    seen += [b["index"].tolist() for b in resumed]
    assert sorted(i for b in seen for i in b) == list(range(6))
    assert seen == reference


def test_resuming_with_another_reader_count_is_refused(corpus: dict[str, Path], tmp_path: Path) -> None:
    """Saved positions are per reader; with other workers the shards are dealt differently, so applying them
    would silently skip unseen samples and repeat seen ones."""
    write_shards(corpus["video_text"], tmp_path, samples_per_shard=1, progress=False)
    make = lambda workers: ShardLoader(ShardDataset(tmp_path, builder()), batch_size=1, num_workers=workers)
    interrupted = make(2)
    for _ in zip(range(3), interrupted):
        pass
    state = json.loads(json.dumps(interrupted.state_dict()))
    with pytest.raises(ValueError, match="2 readers"):
        make(0).load_state_dict(state)
    make(2).load_state_dict(state)  # the same layout resumes


def test_cli_shard(corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["shard", str(corpus["mcqa"]), "--output", str(out), "--samples-per-shard", "10", "--quiet"]) == 0
    assert "3 shards, 24 samples, 0 skipped" in capsys.readouterr().out
    assert main(["shard", str(tmp_path / "missing.json"), "--output", str(out), "--quiet"]) == 1
    assert "missing.json" in capsys.readouterr().err


def test_undecodable_sample_in_a_shard_is_skipped_by_policy(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from iv2_data.datasets import BrokenSamplePolicy, TooManyBrokenSamples

    garbage = corpus["root"] / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 50)
    records = json.loads(corpus["video_text"].read_text())[:3]
    records[1]["video"] = "garbage.mp4"
    ann = corpus["root"] / "with_garbage.json"
    ann.write_text(json.dumps(records))
    # a shard written without the writer's media check (an older writer, or one edited by hand)
    monkeypatch.setattr(shards_module, "_check_decodable", lambda data, name, key: None)
    write_shards(ann, tmp_path, samples_per_shard=3, progress=False)
    tolerant = VideoTextDataset([], num_frames=FRAMES, size=SIZE, broken=BrokenSamplePolicy(0.5, min_attempts=2))
    assert [s["index"] for s in ShardDataset(tmp_path, tolerant)] == [0, 2]
    assert tolerant.stats.failures == 1 and "garbage.mp4" in tolerant.stats.failed_files[0]
    strict = VideoTextDataset([], num_frames=FRAMES, size=SIZE, broken=BrokenSamplePolicy(0.0))
    with pytest.raises(TooManyBrokenSamples, match="garbage.mp4"):
        list(ShardDataset(tmp_path, strict))


def test_shard_sample_missing_its_media_member_is_a_broken_sample(corpus: dict[str, Path], tmp_path: Path) -> None:
    """A tar that lost a member (an edited or damaged shard) gives a sample with metadata but no video: it is
    skipped and counted by the policy, like an unreadable file, instead of a KeyError ending the run."""
    from iv2_data.datasets import BrokenSamplePolicy

    write_shards(corpus["video_text"], tmp_path / "good", samples_per_shard=6, progress=False)
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(tmp_path / "good" / "shard-000000.tar") as src, tarfile.open(damaged, "w") as dst:
        for member in src.getmembers():
            if member.name != "000000002.video.mp4":
                dst.addfile(member, src.extractfile(member))
    tolerant = VideoTextDataset([], num_frames=FRAMES, size=SIZE, broken=BrokenSamplePolicy(0.5, min_attempts=2))
    assert [s["index"] for s in ShardDataset(damaged, tolerant)] == [0, 1, 3, 4, 5]
    assert tolerant.stats.failures == 1 and "000000002" in tolerant.stats.failed_files[0]


def test_writer_skips_a_fifo_without_blocking(corpus: dict[str, Path], tmp_path: Path) -> None:
    import os
    import threading

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    records = json.loads(corpus["video_text"].read_text())[:2]
    records[1]["video"] = str(fifo)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(records))
    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(write_shards(ann, tmp_path / "out", corpus["root"], progress=False)),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the shard writer blocked reading a FIFO"
    assert [s["index"] for s in result[0].skipped] == [1] and "not a regular file" in result[0].skipped[0]["error"]


def test_looping_stream_reshuffles_every_epoch_and_resumes_exactly(corpus: dict[str, Path], tmp_path: Path) -> None:
    """loop=True: an endless stream (for a training mixture); every epoch holds each sample once, in a new
    seeded order, and a state saved in the middle of the second epoch continues exactly."""
    write_shards(corpus["video_text"], tmp_path, samples_per_shard=1, progress=False)
    make = lambda: ShardLoader(
        ShardDataset(tmp_path, "video_text", num_frames=FRAMES, size=SIZE, shuffle=True, shuffle_buffer=2, seed=3),
        batch_size=1,
        num_workers=2,
        loop=True,
    )
    reference = []
    for batch in make():
        reference.append((int(batch["epoch"][0]), int(batch["index"][0])))
        if len(reference) == 18:  # three epochs of six
            break
    epochs = [[index for epoch, index in reference if epoch == e] for e in range(3)]
    assert all(sorted(indices) == list(range(6)) for indices in epochs), reference
    assert len({tuple(indices) for indices in epochs}) > 1  # reshuffled
    interrupted, seen = make(), []
    for batch in interrupted:
        seen.append((int(batch["epoch"][0]), int(batch["index"][0])))
        if len(seen) == 8:  # two samples into the second epoch
            break
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    for batch in resumed:
        seen.append((int(batch["epoch"][0]), int(batch["index"][0])))
        if len(seen) == 18:
            break
    assert seen == reference
    one_pass = ShardLoader(ShardDataset(tmp_path, "video_text", seed=3), batch_size=1, num_workers=2)
    with pytest.raises(ValueError, match="loop"):
        one_pass.load_state_dict(state)
