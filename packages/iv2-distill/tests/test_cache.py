"""The teacher-target cache: fixed views, resumable shards, refusal of a cache made for something else, failures
recorded and left out, and the stored targets equal to the teachers' own on the stored views."""

from __future__ import annotations

import json
import os

import pytest
import torch
from _distill_runs import tiny_config, write_random_teachers, write_small_corpus

from iv2_distill import (
    CacheIncompleteError,
    CacheMismatchError,
    TargetCache,
    build_target_cache,
    build_teachers,
    draw_view,
    read_view,
    training_records,
)
from iv2_distill.cache import cache_spec, view_seed


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_small_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    write_random_teachers(root)
    return root


def test_cached_items_hold_the_teachers_targets_of_their_stored_view(tmp_path, corpus, teachers):
    cfg = tiny_config(tmp_path, corpus, teachers, "cache.views=2", "cache.dtype=float16")
    report = build_target_cache(cfg, progress=False)
    records = training_records(cfg.data.annotations, None, cfg.data.holdout_last)
    assert report.items == 2 * len(records) and report.shards == 4 and report.built == 4 and not report.failed
    cache = TargetCache(cfg.cache.dir, expected=cache_spec(cfg, records, 2))
    item = 5  # view 1 of record 2
    record, view = divmod(item, 2)
    assert cache.record_of[item] == record
    # the view is the one drawn from (seed, record, view): TSN indices, a GroupMultiScaleCrop box, a flip
    generator = torch.Generator().manual_seed(view_seed(cfg.cache.seed, record, view))
    expected_view = draw_view(records.path(record), 8, 56, generator, record=records.records[record])
    assert cache.views[item] == expected_view
    assert len(expected_view.frame_indices) == 8 and not expected_view.flip  # the corpus forbids flips
    # ... and its targets are the teachers' on that view, stored in float16 (saliency kept in float32)
    clip = read_view(records.path(record), expected_view, 56)[None]
    live = build_teachers(cfg.teachers, clip_frames=8)(clip)
    stored = cache.targets(item)
    assert stored["clip_middle"].dtype == torch.float16 and stored["saliency"].dtype == torch.float32
    torch.testing.assert_close(stored["clip_middle"].float(), live.clip_middle[:, 0], atol=1e-3, rtol=0)
    torch.testing.assert_close(stored["mae"].float(), live.mae[:, 0], atol=1e-3, rtol=0)
    torch.testing.assert_close(stored["clip_final"].float(), live.clip_final[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(stored["saliency"], live.saliency[0], atol=1e-6, rtol=0)


def test_a_rerun_finishes_only_missing_shards_and_never_trusts_a_missing_file(tmp_path, corpus, teachers):
    cfg = tiny_config(tmp_path, corpus, teachers)
    build_target_cache(cfg, progress=False)
    root = tmp_path / "targets-quick"
    shards = sorted(root.glob("shard_*.safetensors"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    again = build_target_cache(cfg, progress=False)
    assert again.built == 0 and again.reused == len(shards)
    assert {p.name: p.stat().st_mtime_ns for p in shards} == stamps
    # a shard listed as done whose file is gone is computed again (and only it)
    shards[1].unlink()
    third = build_target_cache(cfg, progress=False)
    assert third.built == 1 and shards[1].is_file()
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in shards if p != shards[1])
    # an interrupted build (a shard not in the manifest yet) is unfinished until the rerun
    manifest = root / "manifest.jsonl"
    rows = [row for row in manifest.read_text().splitlines() if shards[1].name not in row]
    manifest.write_text("\n".join(rows) + "\n")
    with pytest.raises(CacheIncompleteError, match="1 of 2 shards done"):
        TargetCache(root)
    assert build_target_cache(cfg, progress=False).built == 1
    assert len(TargetCache(root)) == 32


@pytest.mark.parametrize(
    "change, reason",
    [
        ("data.holdout_last=12", "count: the cache holds 32 clips, the dataset has 28"),
        ("cache.views=2", "views per clip: cache 1, run 2"),
        ("cache.seed=3", "view seed"),
        ("train.distributed.precision=bf16", "precision"),
    ],
)
def test_a_cache_made_for_other_data_or_views_is_refused_with_the_reason(tmp_path, corpus, teachers, change, reason):
    cfg = tiny_config(tmp_path, corpus, teachers)
    build_target_cache(cfg, progress=False)
    other = tiny_config(tmp_path, corpus, teachers, change)
    records = training_records(other.data.annotations, None, other.data.holdout_last)
    with pytest.raises(CacheMismatchError, match=reason):
        TargetCache(other.cache.dir, expected=cache_spec(other, records, 2))
    with pytest.raises(CacheMismatchError, match=reason):
        build_target_cache(other, progress=False)  # building over it is refused too (unless overwrite)
    assert build_target_cache(other, overwrite=True, progress=False).built > 0


def test_a_cache_made_by_other_teachers_is_refused(tmp_path, corpus, teachers):
    cfg = tiny_config(tmp_path, corpus, teachers)
    build_target_cache(cfg, progress=False)
    retrained = tmp_path / "other-teachers"
    write_random_teachers(retrained, seed=1)  # same architecture, other weights
    other = tiny_config(tmp_path, corpus, retrained)
    records = training_records(other.data.annotations, None, other.data.holdout_last)
    with pytest.raises(CacheMismatchError, match=r"teacher: the image teacher differs \(weight files differ\)"):
        TargetCache(other.cache.dir, expected=cache_spec(other, records, 2))
    fewer_layers = tiny_config(tmp_path, corpus, teachers, "teachers.video.return_layers=1")
    with pytest.raises(CacheMismatchError, match=r"video teacher differs \(return_layers 2 → 1\)"):
        TargetCache(fewer_layers.cache.dir, expected=cache_spec(fewer_layers, records, 2))


def test_an_unreadable_clip_is_recorded_and_left_out(tmp_path, corpus, teachers):
    broken_corpus = tmp_path / "corpus"
    import shutil

    shutil.copytree(corpus, broken_corpus)
    records = json.loads((broken_corpus / "video_label.json").read_text())
    (broken_corpus / records[3]["video"]).write_bytes(b"not a video at all" * 10)
    cfg = tiny_config(tmp_path, broken_corpus, teachers)
    report = build_target_cache(cfg, progress=False)
    assert [f["item"] for f in report.failed] == [3] and "000003.mp4" in report.failed[0]["path"]
    cache = TargetCache(cfg.cache.dir)
    assert len(cache) == 31 and 3 not in cache.record_of
    assert cache.failed == report.failed


def test_the_command_exits_1_when_clips_failed_and_2_on_a_bad_key(tmp_path, corpus, teachers, capsys):
    from iv2_distill.cli import main

    words = [f"data.annotations={corpus / 'video_label.json'}", f"data.corpus.dir={corpus}", "data.corpus.num_samples=40",
             "data.holdout_last=8", f"cache.dir={tmp_path / 'c'}", "cache.items_per_shard=16",
             f"teachers.image.path={teachers / 'image'}", f"teachers.video.path={teachers / 'video'}",
             "teachers.synthetic.enabled=false", "train.logging.progress=none"]
    assert main(["cache-targets", "tiny-synthetic-quick", *words]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["items"] == 32 and summary["built"] == 2 and summary["failed"] == 0
    assert main(["cache-targets", "tiny-synthetic-quick", "cache.viewz=2"]) == 2
    assert "did you mean 'views'" in capsys.readouterr().err
    # shards without the cache.json that says what they were made for are not trusted: all rebuilt
    os.remove(tmp_path / "c" / "cache.json")
    assert main(["cache-targets", "tiny-synthetic-quick", *words, "cache.views=2"]) == 0
    assert json.loads(capsys.readouterr().out)["built"] == 4
