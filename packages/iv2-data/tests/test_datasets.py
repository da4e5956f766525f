"""Map-style datasets over the official annotation layouts, broken-sample handling, collation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from iv2_data.annotations import AnnotationError, load_annotations, pre_text
from iv2_data.datasets import (
    BrokenSamplePolicy,
    ImageTextDataset,
    InstructionDataset,
    MultipleChoiceQADataset,
    TooManyBrokenSamples,
    VideoTextDataset,
    collate,
    mcqa_prompt,
)
from iv2_data.synthetic import clip_spec, write_corpus

FRAMES, SIZE = 4, 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), 4, num_frames=FRAMES, size=SIZE, fps=4)


def video_kwargs() -> dict:
    return {"num_frames": FRAMES, "size": SIZE}


def test_pre_text_matches_the_official_cleaning() -> None:
    assert pre_text('A <person> jumps -- over/under the "log"!  Twice, (really).') == (
        "a person jumps over under the log twice really"
    )
    assert pre_text("One two three four", max_words=2) == "one two"


def test_video_text(corpus: dict[str, Path]) -> None:
    dataset = VideoTextDataset(corpus["video_text"], **video_kwargs())
    assert len(dataset) == 4
    sample = dataset[2]
    assert sample["video"].shape == (3, FRAMES, SIZE, SIZE)
    spec = clip_spec(2)
    assert sample["caption"] in dataset.captions(2)
    assert spec.colour in sample["caption"] and sample["caption"] == pre_text(sample["caption"])
    assert sample["path"] == "videos/000002.mp4" and sample["index"] == 2


def test_multiple_captions_are_sampled(corpus: dict[str, Path]) -> None:
    reader = lambda path, n, size, sampling, **kw: torch.zeros(3, n, size, size)  # no decoding needed here
    dataset = VideoTextDataset(corpus["video_text"], video_reader=reader, **video_kwargs())
    torch.manual_seed(0)
    seen = {dataset[0]["caption"] for _ in range(40)}
    assert seen == set(dataset.captions(0)) and len(seen) == 3
    first = VideoTextDataset(corpus["video_text"], video_reader=reader, caption_sampling="first", **video_kwargs())
    assert {first[0]["caption"] for _ in range(5)} == {dataset.captions(0)[0]}


def test_image_text_is_a_one_frame_video(corpus: dict[str, Path]) -> None:
    sample = ImageTextDataset(corpus["image_text"], **video_kwargs())[0]
    assert sample["video"].shape == (3, 1, SIZE, SIZE)
    assert clip_spec(0).object in sample["caption"]


def test_audio_datasets(corpus: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("torchaudio", reason="the audio extra (torchaudio) is not installed")
    from iv2_data.datasets import AudioTextDataset, VideoAudioTextDataset

    audio = AudioTextDataset(corpus["audio_text"])[1]
    assert audio["audio"].shape == (998, 64) and "tone" in audio["caption"]
    av_sample = VideoAudioTextDataset(corpus["video_audio_text"], **video_kwargs())[1]
    assert av_sample["has_audio"] is True
    assert av_sample["video"].shape == (3, FRAMES, SIZE, SIZE) and av_sample["audio"].shape == (998, 64)
    assert av_sample["asr"] == pre_text(clip_spec(1).transcript())
    # A video without an audio track: the official zero filter bank and a flag, not an error.
    silent = write_corpus(tmp_path, 1, num_frames=FRAMES, size=SIZE, with_audio_track=False)
    sample = VideoAudioTextDataset(silent["video_audio_text"], **video_kwargs())[0]
    assert sample["has_audio"] is False
    assert torch.equal(sample["audio"], torch.zeros(998, 64))
    batch = collate([av_sample, sample])
    assert batch["has_audio"].tolist() == [True, False] and batch["audio"].shape == (2, 998, 64)


def test_mcqa(corpus: dict[str, Path]) -> None:
    dataset = MultipleChoiceQADataset(corpus["mcqa"], **video_kwargs())
    assert len(dataset) == 16
    sample = dataset[0]
    letter = "ABCD"[sample["candidates"].index(sample["answer"])]
    assert sample["answer_letter"] == letter and sample["target"] == f"({letter}) {sample['answer']}"
    assert sample["prompt"].startswith(f"Question: {sample['question']}\nOptions:\n(A) ")
    assert mcqa_prompt("Why?", ["x", "y"]) == "Question: Why?\nOptions:\n(A) x\n(B) y"
    batch = collate([dataset[0], dataset[1]])
    assert batch["video"].shape == (2, 3, FRAMES, SIZE, SIZE)
    assert batch["candidates"] == [dataset[0]["candidates"], dataset[1]["candidates"]]


def test_instructions(corpus: dict[str, Path], tmp_path: Path) -> None:
    sample = InstructionDataset(corpus["instructions"], **video_kwargs())[3]
    assert sample["media_type"] == "video" and sample["instruction"]
    assert sample["qa"][0]["a"].startswith(clip_spec(3).captions()[0])
    records = [{"image": str(corpus["root"] / "images" / "000000.png"), "QA": [{"q": "What?", "a": "A shape."}]}]
    image = InstructionDataset(records, **video_kwargs())[0]
    assert image["media_type"] == "image" and image["video"].shape == (3, 1, SIZE, SIZE)


def test_jsonl_and_bad_annotations(tmp_path: Path, corpus: dict[str, Path]) -> None:
    good = tmp_path / "ann.jsonl"
    good.write_text('{"video": "a.mp4", "caption": "a red circle"}\n\n{"video": "b.mp4", "captions": ["x y"]}\n')
    assert len(load_annotations(good)) == 2
    broken_line = tmp_path / "bad.jsonl"
    broken_line.write_text('{"video": "a.mp4", "caption": "ok ok"}\n{"video": \n')
    with pytest.raises(AnnotationError, match=r"bad\.jsonl, line 2"):
        load_annotations(broken_line)
    missing_key = tmp_path / "missing.json"
    missing_key.write_text(json.dumps([{"video": "a.mp4", "caption": "ok ok"}, {"caption": "no video"}]))
    with pytest.raises(AnnotationError, match=r"missing\.json, record 1: missing key\(s\) \['video'\]"):
        VideoTextDataset(missing_key)
    bad_answer = tmp_path / "qa.json"
    bad_answer.write_text(json.dumps([{"video": "a.mp4", "question": "q", "candidates": ["a", "b"], "answer": "c"}]))
    with pytest.raises(AnnotationError, match=r"qa\.json, record 0: answer 'c'"):
        MultipleChoiceQADataset(bad_answer)
    with pytest.raises(AnnotationError, match="not found"):
        VideoTextDataset(tmp_path / "nope.json")


def test_annotation_files_with_a_byte_order_mark_load(tmp_path: Path) -> None:
    records = [{"video": "a.mp4", "caption": "a red circle"}]
    as_json, as_jsonl = tmp_path / "bom.json", tmp_path / "bom.jsonl"
    as_json.write_bytes(b"\xef\xbb\xbf" + json.dumps(records).encode())
    as_jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps(records[0]).encode() + b"\n")
    assert load_annotations(as_json) == records == load_annotations(as_jsonl)


def test_short_captions_are_dropped_like_the_official_loader(tmp_path: Path) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps([{"video": "a.mp4", "caption": "Hi!"}, {"video": "b.mp4", "caption": "two words"}]))
    assert len(VideoTextDataset(path)) == 1
    assert len(VideoTextDataset(path, min_caption_words=0)) == 2


def _with_broken(corpus: dict[str, Path], tmp_path: Path, broken: list[int]) -> Path:
    records = json.loads(corpus["video_text"].read_text())
    (tmp_path / "empty.mp4").write_bytes(b"")
    for i in broken:
        records[i]["video"] = str(tmp_path / ("empty.mp4" if i % 2 else f"missing_{i}.mp4"))
    path = tmp_path / "with_broken.json"
    path.write_text(json.dumps(records))
    # Media paths stay relative to the corpus.
    return path


def test_broken_sample_is_skipped_counted_and_logged(
    corpus: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ann = _with_broken(corpus, tmp_path, [1])
    dataset = VideoTextDataset(
        ann,
        corpus["root"],
        broken=BrokenSamplePolicy(max_fraction=0.5, min_attempts=4),
        caption_sampling="first",
        **video_kwargs(),
    )
    with caplog.at_level(logging.WARNING, logger="iv2_data"):
        sample = dataset[1]
    assert sample["index"] == 2 and sample["path"] == "videos/000002.mp4"  # the next readable record
    assert dataset.stats.failures == 1 and dataset.stats.attempts == 2
    assert dataset.stats.failed_files == [str(tmp_path / "empty.mp4")]
    assert "empty.mp4" in caplog.text
    assert [dataset[i]["index"] for i in (0, 2, 3)] == [0, 2, 3]


def test_too_many_broken_samples_stop_the_run(corpus: dict[str, Path], tmp_path: Path) -> None:
    ann = _with_broken(corpus, tmp_path, [0, 1, 2])
    dataset = VideoTextDataset(
        ann, corpus["root"], broken=BrokenSamplePolicy(max_fraction=0.25, min_attempts=4), **video_kwargs()
    )
    with pytest.raises(TooManyBrokenSamples, match=r"2 of 2 samples failed.*missing_2\.mp4"):
        dataset[1]
    strict = VideoTextDataset(ann, corpus["root"], broken=BrokenSamplePolicy(max_fraction=0.0), **video_kwargs())
    with pytest.raises(TooManyBrokenSamples, match="missing_0.mp4"):
        strict[0]
    every = VideoTextDataset(
        ann, corpus["root"], broken=BrokenSamplePolicy(max_fraction=1.0, max_consecutive=2), **video_kwargs()
    )
    with pytest.raises(TooManyBrokenSamples, match="2 records in a row"):
        every[0]


def test_dataloader_with_workers(corpus: dict[str, Path]) -> None:
    dataset = VideoTextDataset(corpus["video_text"], **video_kwargs())
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2, 3]]
    assert batches[0]["video"].shape == (2, 3, FRAMES, SIZE, SIZE)


def test_broken_audio_file_is_named(corpus: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("torchaudio", reason="the audio extra (torchaudio) is not installed")
    from iv2_data.datasets import VideoAudioTextDataset

    records = json.loads(corpus["video_audio_text"].read_text())
    records[0]["audio"] = "audio/gone.wav"
    ann = tmp_path / "av.json"
    ann.write_text(json.dumps(records))
    dataset = VideoAudioTextDataset(
        ann, corpus["root"], broken=BrokenSamplePolicy(0.5, min_attempts=4), **video_kwargs()
    )
    assert dataset[0]["index"] == 1
    assert dataset.stats.failed_files == [str(corpus["root"] / "audio" / "gone.wav")]


def test_mvbench_frame_indices_official_rule() -> None:
    from iv2_data.datasets import mvbench_frame_indices

    # Worked by hand from the official get_index: s = round(0.4 * 25) = 10, e = min(round(1.2 * 25), 39) = 30,
    # seg = 20 / 4 = 5 -> int(10 + 2.5 + round(5 i)) = 12, 17, 22, 27.
    assert mvbench_frame_indices(40, 25.0, 4, 0.4, 1.2) == [12, 17, 22, 27]
    # No bound: the whole video, s = 0, e = 39, seg = 9.75 -> int(4.875 + round(9.75 i)) = 4, 14, 24, 33.
    assert mvbench_frame_indices(40, 25.0, 4) == [4, 14, 24, 33]
    assert mvbench_frame_indices(40, 25.0, 4, 2.0, 9.0) == [39, 39, 39, 39]  # a bound past the end: clamped


def test_mcqa_time_bound_reads_only_the_bounded_part(tmp_path: Path, video_tools) -> None:
    """MVBench items with "start"/"end" (seconds) ask about that segment: frames come from it only."""
    video_tools.write_video(tmp_path / "bounded.mp4", 40, rate=25)
    item = {"video": "bounded.mp4", "question": "q?", "candidates": ["a", "b"], "answer": "b"}
    records = [{**item, "start": 0.4, "end": 1.2}, item]
    identity = lambda frames, generator=None: frames  # keep the uint8 frames to read their index codes
    dataset = MultipleChoiceQADataset(records, tmp_path, num_frames=4, transform=identity)
    ids = lambda frames: [video_tools.decode_index(video_tools.centre_square(f.numpy())) for f in frames]
    assert ids(dataset[0]["video"]) == [12, 17, 22, 27]
    assert ids(dataset[1]["video"]) == [4, 14, 24, 34]  # unbounded: the dataset's own sampling ("middle")
    with pytest.raises(AnnotationError, match="numeric 'start' and 'end'"):
        MultipleChoiceQADataset([{**item, "start": 0.4}], tmp_path)


def test_training_datasets_sample_a_random_frame_per_segment_by_default(corpus: dict[str, Path]) -> None:
    """The official training sampling is "rand" (evaluation "middle"): train=True alone must not read the
    same middle frames every epoch."""
    seen = []

    def reader(path, n, size, sampling, **kwargs):
        seen.append(sampling)
        return torch.zeros(3, n, size, size)

    VideoTextDataset(corpus["video_text"], video_reader=reader, train=True, **video_kwargs())[0]
    VideoTextDataset(corpus["video_text"], video_reader=reader, **video_kwargs())[0]
    VideoTextDataset(corpus["video_text"], video_reader=reader, train=True, sampling="middle", **video_kwargs())[0]
    InstructionDataset(corpus["instructions"], video_reader=reader, train=True, **video_kwargs())[0]
    assert seen == ["random", "middle", "middle", "random"]


def test_instruction_clip_bound_reads_only_that_clip(tmp_path: Path, video_tools) -> None:
    """VideoChat2 instruction records with "start"/"end" (seconds) are about that clip: the official reader
    samples int((end - start) * fps) frames from int(start * fps) on."""
    video_tools.write_video(tmp_path / "long.mp4", 40, rate=25)
    turns = [{"i": "Watch.", "q": "What happens?", "a": "Things."}]
    records = [{"video": "long.mp4", "QA": turns, "start": 0.4, "end": 1.2}, {"video": "long.mp4", "QA": turns}]
    identity = lambda frames, generator=None: frames
    dataset = InstructionDataset(records, tmp_path, num_frames=4, transform=identity)
    ids = lambda frames: [video_tools.decode_index(video_tools.centre_square(f.numpy())) for f in frames]
    # clip frames 10..29 (20 frames): segment middles of linspace(0, 20, 5) = 2, 7, 12, 17, offset by 10
    assert ids(dataset[0]["video"]) == [12, 17, 22, 27]
    assert ids(dataset[1]["video"]) == [4, 14, 24, 34]
    with pytest.raises(AnnotationError, match="numeric 'start' and 'end'"):
        InstructionDataset([{"video": "long.mp4", "QA": turns, "start": "0:01", "end": 2}], tmp_path)
