"""Curation pipeline end to end on generated videos with real cuts, plus its stages one by one."""

from __future__ import annotations

import colorsys
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from iv2_data.curate import (
    ClipRules,
    ConstantCaptioner,
    ContentSceneDetector,
    CurationConfig,
    FrameDifferenceBoundaryModel,
    FunctionCaptioner,
    HashingEmbedder,
    LearnedSceneDetector,
    TemplateFuser,
    curate,
    deduplicate,
)
from iv2_data.synthetic import COLOURS, clip_spec, render_audio, render_frames, write_video

FPS, SCENE_FRAMES, SIZE = 8, 12, 64
SCENE_SECONDS = SCENE_FRAMES / FPS


def scene_spec(index: int, colour: str, hue: float):
    r, g, b = colorsys.hsv_to_rgb(hue, 0.4, 0.5)
    return replace(clip_spec(index), colour=colour, tint=(round(r * 255), round(g * 255), round(b * 255)))


def write_scenes(path: Path, specs: list) -> None:
    """One video made of several synthetic scenes back to back: hard cuts between them."""
    frames = np.concatenate([render_frames(s, SCENE_FRAMES, SIZE) for s in specs])
    audio = np.concatenate([render_audio(s, SCENE_SECONDS) for s in specs])
    write_video(path, frames, FPS, audio)


@pytest.fixture(scope="module")
def raw_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    red = scene_spec(0, "red", 0.55)
    write_scenes(root / "a.mp4", [red, scene_spec(1, "green", 0.05), scene_spec(2, "blue", 0.3)])
    # b starts with exactly a's first scene (a duplicate clip), then a yellow scene.
    write_scenes(root / "b.mp4", [red, scene_spec(3, "yellow", 0.75)])
    (root / "broken.mp4").write_bytes(b"\x00\x01 this is not a video" * 10)
    return root


def colour_of_clip(path: str) -> str:
    """A stand-in video captioner: names the object colour found in the clip's middle frame."""
    from iv2_data.video import read_frames

    frame = read_frames(path, 1, "middle")[0].numpy().astype(int)
    counts = {name: int((np.abs(frame - np.array(rgb)).sum(-1) < 90).sum()) for name, rgb in COLOURS.items()}
    return f"a {max(counts, key=counts.get)} object moving"


def test_clip_rules() -> None:
    rules = ClipRules(min_seconds=1.0, max_seconds=10.0, edge_seconds=0.1)
    clips = rules.apply([(0.0, 0.5), (0.5, 5.0), (5.0, 26.0)])
    assert clips[0] == pytest.approx((0.6, 4.9))
    assert len(clips) == 4 and all(b - a <= 10.0 for a, b in clips)
    assert clips[1][0] == pytest.approx(5.1) and clips[-1][1] == pytest.approx(25.9)
    with pytest.raises(ValueError):
        ClipRules(min_seconds=5, max_seconds=2)


def test_content_detector_finds_the_real_cuts(raw_videos: Path) -> None:
    pytest.importorskip("scenedetect", reason="the curate extra (scenedetect) is not installed")
    scenes = ContentSceneDetector(threshold=27.0, min_scene_frames=4).detect(raw_videos / "a.mp4")
    expected = [(k * SCENE_SECONDS, (k + 1) * SCENE_SECONDS) for k in range(3)]
    assert len(scenes) == 3
    for (start, end), (want_start, want_end) in zip(scenes, expected):
        assert abs(start - want_start) <= 1 / FPS + 1e-6 and abs(end - want_end) <= 1 / FPS + 1e-6


def test_learned_detector_interface(raw_videos: Path) -> None:
    scenes = LearnedSceneDetector(FrameDifferenceBoundaryModel(), threshold=0.5).detect(raw_videos / "b.mp4")
    assert [t for scene in scenes for t in scene] == pytest.approx(
        [0.0, SCENE_SECONDS, SCENE_SECONDS, 2 * SCENE_SECONDS]
    )


def test_deduplicate_keeps_the_first_of_near_copies() -> None:
    import torch

    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [0.7, 0.7]])
    assert deduplicate(e, 0.95) == [0, 1, 3]
    assert deduplicate(e, 0.95, order=[2, 0, 1, 3]) == [1, 2, 3]


class CountingCaptioner:
    def __init__(self, wrong_for: str) -> None:
        self.calls = 0
        self.wrong_for = wrong_for

    def caption_video(self, path) -> str:
        self.calls += 1
        caption = colour_of_clip(str(path))
        # One clip gets a wrong caption, which the similarity filter must catch.
        return "a magenta object moving" if self.wrong_for in caption else caption


def test_pipeline_end_to_end_and_resume(raw_videos: Path, tmp_path: Path) -> None:
    pytest.importorskip("scenedetect", reason="the curate extra (scenedetect) is not installed")
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    captioner = CountingCaptioner(wrong_for="yellow")
    config = CurationConfig(
        detector=ContentSceneDetector(threshold=27.0, min_scene_frames=4),
        rules=ClipRules(min_seconds=1.0, max_seconds=10.0, edge_seconds=1 / FPS),
        video_captioner=captioner,
        audio_captioner=ConstantCaptioner("a steady tone"),
        speech_recognizer=ConstantCaptioner(""),
        fuser=TemplateFuser(),
        embedder=HashingEmbedder(video_function=colour_of_clip),
        min_similarity=0.55,  # right captions score 0.63 here, the wrong one 0.47
        dedup_threshold=0.95,
        samples_per_shard=2,
        progress=False,
    )
    out = tmp_path / "curated"
    result = curate([raw_videos], out, config)
    assert result.num_inputs == 3 and result.num_clips == 5
    assert [e["stage"] for e in result.errors] == ["segment"] and "broken.mp4" in result.errors[0]["item"]

    rows = [json.loads(line) for line in result.annotations.read_text().splitlines()]
    assert [r["caption"] for r in rows] == [
        f"a {c} object moving, with a steady tone" for c in ("red", "green", "blue")
    ]
    assert {r["source"] for r in rows} == {str((raw_videos / "a.mp4").resolve())}
    for row in rows:  # clips lie inside their scene, a frame away from each cut
        scene = round(row["start"] / SCENE_SECONDS - 0.5)
        assert scene * SCENE_SECONDS < row["start"] < row["end"] < (scene + 1) * SCENE_SECONDS

    decisions = {
        json.loads(line)["clip"]: json.loads(line)
        for line in (out / "manifests" / "filter.jsonl").read_text().splitlines()
    }
    assert decisions["clips/b-000.mp4"]["reason"] == "duplicate of clips/a-000.mp4"
    assert decisions["clips/b-001.mp4"]["reason"].startswith("caption similarity")
    assert sum(d["kept"] for d in decisions.values()) == 3

    from iv2_data.shards import ShardManifest

    assert ShardManifest.load(out / "shards").num_samples == 3
    pytest.importorskip("torchaudio", reason="the audio extra (torchaudio) is not installed")
    from iv2_data.datasets import VideoAudioTextDataset

    sample = VideoAudioTextDataset(result.annotations, out, num_frames=4, size=32)[0]
    assert sample["has_audio"] and sample["video"].shape == (3, 4, 32, 32)

    # A rerun finds every stage done: no clip re-cut, nothing re-captioned, the same output.
    calls, stamp = captioner.calls, (out / "clips" / "a-001.mp4").stat().st_mtime_ns
    lines = (out / "manifests" / "caption.jsonl").read_text()
    again = curate([raw_videos], out, config)
    assert captioner.calls == calls and (out / "clips" / "a-001.mp4").stat().st_mtime_ns == stamp
    assert (out / "manifests" / "caption.jsonl").read_text() == lines
    assert again.annotations.read_text() == result.annotations.read_text()


def test_cli_curate(raw_videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("scenedetect", reason="the curate extra (scenedetect) is not installed")
    from iv2_data.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "curate",
            str(raw_videos / "a.mp4"),
            "--output",
            str(out),
            "--min-scene-frames",
            "4",
            "--min-seconds",
            "1",
            "--quiet",
        ]
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["clips"] == 3 and summary["kept"] == 0  # no captioner: nothing to keep
    code = main(["curate", str(raw_videos / "broken.mp4"), "--output", str(tmp_path / "x"), "--quiet"])
    assert code == 1  # some inputs failed: the same code as extract and shard


def test_function_captioner_roles() -> None:
    double = FunctionCaptioner(lambda p: p.upper())
    assert double.caption_video("a") == double.caption_audio("a") == double.transcribe("a") == "A"


def test_rerun_with_a_new_input_of_the_same_name_never_reuses_its_clips(tmp_path: Path) -> None:
    """Run 1 curates B/x.mp4; run 2 adds A/x.mp4, listed first. A's clips must be cut from A, not be B's
    finished clip files (which carry the name A would get if names followed the input order)."""
    from iv2_data.curate import WholeVideo
    from iv2_data.video import read_frames

    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    write_video(tmp_path / "B" / "x.mp4", render_frames(replace(clip_spec(0), colour="red"), 16, SIZE), FPS)
    write_video(tmp_path / "A" / "x.mp4", render_frames(replace(clip_spec(0), colour="blue"), 16, SIZE), FPS)
    config = CurationConfig(detector=WholeVideo(), rules=ClipRules(0.5, 10.0), progress=False)
    out = tmp_path / "out"
    curate([tmp_path / "B"], out, config)
    curate([tmp_path / "A", tmp_path / "B"], out, config)
    rows = [json.loads(line) for line in (out / "manifests" / "segment.jsonl").read_text().splitlines()]
    clips = {Path(r["input"]).parent.name: r["clips"][0]["clip"] for r in rows}
    assert clips["A"] != clips["B"]
    for folder, colour in (("A", "blue"), ("B", "red")):
        frame = read_frames(out / clips[folder], 1)[0].numpy().astype(int)
        assert (np.abs(frame - np.array(COLOURS[colour])).sum(-1) < 60).sum() > 20, (folder, clips[folder])


def test_rerun_with_more_inputs_rebuilds_the_shards(tmp_path: Path) -> None:
    """annotations.jsonl is rewritten on every run; shards from the previous version must follow it, not
    stop the rerun with a "manifest written with other settings" error."""
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    from iv2_data.curate import WholeVideo
    from iv2_data.shards import ShardManifest

    for folder, index in (("A", 1), ("B", 0)):
        (tmp_path / folder).mkdir()
        write_video(tmp_path / folder / f"{folder}.mp4", render_frames(clip_spec(index), 16, SIZE), FPS)
    config = CurationConfig(
        detector=WholeVideo(),
        rules=ClipRules(0.5, 10.0),
        video_captioner=ConstantCaptioner("a shape moves"),
        dedup_threshold=None,
        samples_per_shard=1,
        progress=False,
    )
    out = tmp_path / "out"
    assert curate([tmp_path / "B"], out, config).num_kept == 1
    assert ShardManifest.load(out / "shards").num_samples == 1
    result = curate([tmp_path / "A", tmp_path / "B"], out, config)
    assert result.num_kept == 2
    assert ShardManifest.load(out / "shards").num_samples == 2


def test_fifo_and_missing_inputs_are_recorded_without_blocking(tmp_path: Path) -> None:
    """A FIFO named as an input would block the decoder's open() forever; it is an error row instead."""
    import os
    import threading

    from iv2_data.curate import WholeVideo

    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    result: list = []
    config = CurationConfig(detector=WholeVideo(), progress=False)
    worker = threading.Thread(
        target=lambda: result.append(curate([fifo, tmp_path / "gone.mp4"], tmp_path / "out", config)), daemon=True
    )
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "curate blocked on a FIFO input"
    errors = {Path(e["item"]).name: e["error"] for e in result[0].errors}
    assert "not a regular file" in errors["pipe.mp4"] and "no such file" in errors["gone.mp4"]


def test_clips_of_a_failed_input_are_not_given_to_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B/x.mp4 fails after its first clip was cut (an error row, files on disk); a later run that adds A/x.mp4
    must not name A's clips like B's and pick up B's leftover file."""
    from iv2_data.curate import WholeVideo, stages
    from iv2_data.video import read_frames

    for folder, colour in (("A", "blue"), ("B", "red")):
        (tmp_path / folder).mkdir()
        frames = render_frames(replace(clip_spec(0), colour=colour), 16, SIZE)  # 2 s: two clips of 1 s
        write_video(tmp_path / folder / "x.mp4", frames, FPS)
    config = CurationConfig(detector=WholeVideo(), rules=ClipRules(0.5, 1.0), progress=False)
    real_cut = stages.cut_clip

    def failing_second_cut(source, target, start, end):
        if str(target).endswith("-001.mp4"):
            raise OSError("disk full")
        return real_cut(source, target, start, end)

    monkeypatch.setattr(stages, "cut_clip", failing_second_cut)
    out = tmp_path / "out"
    curate([tmp_path / "B"], out, config)
    monkeypatch.setattr(stages, "cut_clip", real_cut)
    curate([tmp_path / "A", tmp_path / "B"], out, config)
    rows = {Path(r["input"]).parent.name: r for r in map(json.loads, (out / "manifests" / "segment.jsonl").open())}
    assert rows["B"]["status"] == "error" and rows["A"]["status"] == "ok"
    for clip in rows["A"]["clips"]:
        frame = read_frames(out / clip["clip"], 1)[0].numpy().astype(int)
        assert (np.abs(frame - np.array(COLOURS["blue"])).sum(-1) < 60).sum() > 20, clip["clip"]


def test_video_with_a_non_utf8_tag_is_curated(tmp_path: Path) -> None:
    """Tags do not matter to curation: a Latin-1 title (common in old AVI/MP3 files) must not fail the video."""
    import av

    from iv2_data.curate import WholeVideo

    with av.open(str(tmp_path / "tagged.avi"), "w") as container:
        container.metadata["title"] = "Cafe"
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for frame in render_frames(clip_spec(0), 16, SIZE):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = (tmp_path / "tagged.avi").read_bytes()
    assert data.count(b"Cafe") == 1
    latin1 = tmp_path / "latin1.avi"
    latin1.write_bytes(data.replace(b"Cafe", b"Caf\xe9"))  # the same title in Latin-1: not UTF-8
    config = CurationConfig(detector=WholeVideo(), rules=ClipRules(0.5, 10.0), progress=False)
    result = curate([latin1], tmp_path / "out", config)
    assert result.errors == [] and result.num_clips == 1


def test_default_options_report_why_nothing_was_kept(raw_videos: Path, tmp_path: Path, caplog) -> None:
    """Default options (no captioner) keep nothing: the run must say so and why, per rule."""
    import logging

    from iv2_data.curate import WholeVideo

    config = CurationConfig(detector=WholeVideo(), rules=ClipRules(min_seconds=1.0, max_seconds=10.0), progress=False)
    with caplog.at_level(logging.WARNING, logger="iv2_data"):
        result = curate([raw_videos / "a.mp4", raw_videos / "b.mp4", raw_videos / "broken.mp4"], tmp_path, config)
    assert result.num_kept == 0 and result.num_clips == 2
    assert result.dropped == {"empty caption (no captioner configured)": 2, "input unreadable or segmentation failed": 1}
    (warning,) = result.warnings
    assert warning.startswith("nothing was kept") and "--video-captioner" in warning
    assert "nothing was kept" in caplog.text
    # a rerun does no work but gives the same account
    assert curate([raw_videos], tmp_path, config).dropped == result.dropped
    short = CurationConfig(detector=WholeVideo(), rules=ClipRules(min_seconds=30.0, max_seconds=40.0),
                           video_captioner=ConstantCaptioner("a clip"), progress=False)
    assert curate([raw_videos / "a.mp4"], tmp_path / "short", short).dropped == {"scene shorter than 30 s": 1}


def test_broken_inputs_are_named_precisely(raw_videos: Path, tmp_path: Path) -> None:
    """Segmentation opens inputs through the media layer: the error says what is wrong (PySceneDetect's own
    opener said "VideoOpenFailure" for everything), and an audio-only input no longer raises IndexError."""
    pytest.importorskip("scenedetect", reason="the curate extra (scenedetect) is not installed")
    import av

    tone = tmp_path / "tone.mp4"
    with av.open(str(tone), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    (tmp_path / "empty.mp4").write_bytes(b"")
    inputs = [raw_videos / "broken.mp4", tone, tmp_path / "empty.mp4"]
    config = CurationConfig(detector=ContentSceneDetector(), progress=False)
    errors = {Path(e["item"]).name: e["error"] for e in curate(inputs, tmp_path / "out", config).errors}
    assert errors["broken.mp4"].startswith("VideoReadError") and "not a video" in errors["broken.mp4"]
    assert "no video stream (streams: audio)" in errors["tone.mp4"]
    assert "the file is empty" in errors["empty.mp4"]
    assert not any("VideoOpenFailure" in e or "IndexError" in e for e in errors.values())


def test_stages_are_pluggable(raw_videos: Path, tmp_path: Path) -> None:
    """A stage is any object with a name and run(items, context): here one that drops green clips between the
    captioning and the output, with its reason counted."""
    from iv2_data.curate import CaptionStage, OutputStage, SegmentStage, WholeVideo

    class DropGreen:
        name = "no-green"

        def run(self, items, context):
            context.dropped["green"] += sum("green" in item["caption"] for item in items)
            return [item for item in items if "green" not in item["caption"]]

    captioner = FunctionCaptioner(colour_of_clip)
    stages = [
        SegmentStage(WholeVideo(), ClipRules(0.5, 10.0)),
        CaptionStage(video_captioner=captioner),
        DropGreen(),
        OutputStage(),
    ]
    (tmp_path / "in").mkdir()
    for k, colour in enumerate(("green", "red")):
        write_video(tmp_path / "in" / f"{colour}.mp4", render_frames(replace(clip_spec(k), colour=colour), 8, SIZE),
                    FPS)
    result = curate([tmp_path / "in"], tmp_path / "out", CurationConfig(progress=False), stages=stages)
    assert result.num_kept == 1 and result.dropped == {"green": 1}
    rows = [json.loads(line) for line in result.annotations.read_text().splitlines()]
    assert [r["caption"] for r in rows] == ["a red object moving"]
