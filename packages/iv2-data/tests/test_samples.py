"""One sample schema: the same builders make the samples of files, shards and the synthetic corpus; the
video-read value object; the video–label kind."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import torch

from iv2_data import (
    SAMPLE_BUILDERS,
    SYNTHETIC_CLASSES,
    AnnotationError,
    SyntheticCorpus,
    VideoLabelBuilder,
    VideoLabelDataset,
    VideoReadConfig,
    VideoTextDataset,
    clip_spec,
    collate,
    samples,
    write_corpus,
)
from iv2_data.synthetic import DIRECTIONS, OBJECTS

FRAMES, SIZE = 4, 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), 3, num_frames=FRAMES, size=SIZE, fps=4)


def test_every_kind_has_a_builder_with_a_typed_schema() -> None:
    kinds = {"video_text", "image_text", "audio_text", "video_audio_text", "mcqa", "instructions", "video_label"}
    assert set(SAMPLE_BUILDERS) == kinds
    assert set(typing.get_type_hints(samples.VideoLabelSample)) == {"video", "label", "label_name", "index", "path"}
    assert typing.get_type_hints(samples.VideoAudioTextSample)["has_audio"] is bool


def test_video_label_from_the_synthetic_attributes(corpus: dict[str, Path]) -> None:
    dataset = VideoLabelDataset(corpus["video_label"], num_frames=FRAMES, size=SIZE)
    for index in range(3):
        spec = clip_spec(index)
        sample = dataset[index]
        # class = object × direction, numbered object-major (worked out here, not read from the module)
        expected = OBJECTS.index(spec.object) * 4 + DIRECTIONS.index(spec.direction)
        assert sample["label"] == expected and sample["label_name"] == f"{spec.object} moving {spec.direction}"
        assert sample["video"].shape == (3, FRAMES, SIZE, SIZE)
    assert len(SYNTHETIC_CLASSES) == 32 and json.loads((corpus["root"] / "corpus.json").read_text())["classes"][5] == (
        "square moving right"
    )
    batch = collate([dataset[0], dataset[1]])
    assert batch["label"].dtype == torch.int64 and batch["video"].shape == (2, 3, FRAMES, SIZE, SIZE)


def test_video_label_by_class_name(corpus: dict[str, Path], tmp_path: Path) -> None:
    by_direction = VideoLabelDataset(corpus["video_label"], label_key="direction", num_frames=1, size=SIZE)
    names = sorted({clip_spec(i).direction for i in range(3)})  # numbered in sorted order over the file
    assert [by_direction[i]["label_name"] for i in range(3)] == [clip_spec(i).direction for i in range(3)]
    assert [by_direction[i]["label"] for i in range(3)] == [names.index(clip_spec(i).direction) for i in range(3)]
    fixed = VideoLabelDataset(corpus["video_label"], label_key="direction", classes=DIRECTIONS, num_frames=1,
                              size=SIZE)
    assert [fixed[i]["label"] for i in range(3)] == [DIRECTIONS.index(clip_spec(i).direction) for i in range(3)]
    with pytest.raises(AnnotationError, match="unknown class 'left'"):
        VideoLabelDataset(
            [{"video": "a.mp4", "direction": "left"}], label_key="direction", classes=["up", "down"]
        )
    with pytest.raises(AnnotationError, match="record 0: missing key"):
        VideoLabelDataset([{"video": "a.mp4"}])


def test_read_options_shorthand_equals_the_value_object(corpus: dict[str, Path]) -> None:
    short = VideoTextDataset(corpus["video_text"], num_frames=FRAMES, size=SIZE, caption_sampling="first")
    explicit = VideoTextDataset(
        corpus["video_text"], video=VideoReadConfig(num_frames=FRAMES, size=SIZE), caption_sampling="first"
    )
    assert short.video == explicit.video
    torch.testing.assert_close(short[1]["video"], explicit[1]["video"])
    with pytest.raises(TypeError, match="not both"):
        VideoTextDataset(corpus["video_text"], video=VideoReadConfig(), size=SIZE)
    with pytest.raises(TypeError, match="no_such_option"):
        VideoTextDataset(corpus["video_text"], no_such_option=1)


def test_stage1_configuration_of_a_dataset(corpus: dict[str, Path]) -> None:
    """Stage 1 reads TSN frames through GroupMultiScaleCrop; synthetic records say "flip": false (their
    captions and labels name directions), so they are never mirrored."""
    seen = {}

    def reader(path, n, size, sampling, *, transform, **kwargs):
        seen.update(n=n, size=size, sampling=sampling, flip=transform.flip_prob)
        return torch.zeros(3, n, size, size)

    config = VideoReadConfig.stage1(num_frames=8, size=SIZE, reader=reader)
    VideoLabelDataset(corpus["video_label"], video=config)[0]
    assert seen == {"n": 8, "size": SIZE, "sampling": "tsn", "flip": 0.0}
    records = [{"video": "videos/000000.mp4", "label": 1, "source": "k400"}]
    VideoLabelDataset(records, corpus["root"], video=config)[0]
    assert seen["flip"] == 0.5
    clip = VideoLabelDataset(corpus["video_label"], video=VideoReadConfig.stage1(num_frames=FRAMES, size=16))[2]
    assert clip["video"].shape == (3, FRAMES, 16, 16) and torch.isfinite(clip["video"]).all()


@pytest.mark.parametrize("kind", ["video_text", "mcqa", "instructions", "video_label"])
def test_files_shards_and_the_synthetic_corpus_build_the_same_samples(corpus: dict[str, Path], tmp_path: Path,
                                                                     kind: str) -> None:
    pytest.importorskip("webdataset", reason="the shards extra (webdataset) is not installed")
    from iv2_data import SAMPLE_BUILDERS, AnnotationDataset, ShardDataset, write_shards

    options = {"caption_sampling": "first"} if kind == "video_text" else {}
    files = AnnotationDataset(corpus[kind], builder=SAMPLE_BUILDERS[kind](**options), num_frames=FRAMES, size=SIZE)
    write_shards(corpus[kind], tmp_path / kind, samples_per_shard=5, progress=False)
    streamed = list(ShardDataset(tmp_path / kind, kind, num_frames=FRAMES, size=SIZE, **options))
    memory = SyntheticCorpus(3, FRAMES, SIZE, fps=4).dataset(kind)
    assert len(streamed) == len(files) == len(memory)
    for shard_sample in streamed:
        index = shard_sample["index"]
        from_file, in_memory = files[index], memory[index]
        assert set(from_file) == set(in_memory) == set(shard_sample) - {"reader", "reader_position", "epoch"}
        for key, value in from_file.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(shard_sample[key], value)  # the same bytes, decoded the same way
                assert (in_memory[key] - value).abs().mean() < 0.15  # rendered vs decoded H.264
            else:
                assert shard_sample[key] == value == in_memory[key], (kind, key)


def test_synthetic_dataset_reads_like_the_configured_reader() -> None:
    corpus = SyntheticCorpus(2, num_frames=8, size=32)
    two = corpus.dataset("video_text", video=VideoReadConfig(num_frames=2, size=16))[0]["video"]
    assert two.shape == (3, 2, 16, 16)
    full = corpus.dataset("video_text")[0]["video"]
    torch.testing.assert_close(full, corpus[0]["video"])  # default: the corpus' own frames and size
    assert isinstance(corpus.dataset("video_label").builder, VideoLabelBuilder)
