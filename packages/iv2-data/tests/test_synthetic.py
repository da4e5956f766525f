"""The synthetic corpus: determinism, motion that needs several frames, tied audio, QA and files on disk."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from iv2_data.synthetic import (
    COLOURS,
    CORPUS_VERSION,
    DIRECTIONS,
    NUMBER_WORDS,
    OBJECTS,
    SyntheticCorpus,
    clip_spec,
    corpus_is_current,
    render_audio,
    render_frames,
    reversed_spec,
    write_corpus,
)


def object_centroid(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    mask = np.abs(frame.astype(int) - np.array(colour)).sum(-1) == 0
    ys, xs = np.nonzero(mask)
    assert ys.size > 0, "object not visible"
    return np.array([ys.mean(), xs.mean()])


def test_specs_and_frames_are_deterministic() -> None:
    assert [clip_spec(i, seed=1) for i in range(10)] == [clip_spec(i, seed=1) for i in range(10)]
    assert [clip_spec(i, seed=1) for i in range(10)] != [clip_spec(i, seed=2) for i in range(10)]
    np.testing.assert_array_equal(render_frames(clip_spec(3), 6, 32), render_frames(clip_spec(3), 6, 32))


def test_attributes_cover_the_vocabulary() -> None:
    specs = [clip_spec(i) for i in range(200)]
    assert {s.direction for s in specs} == set(DIRECTIONS)
    assert {s.colour for s in specs} == set(COLOURS)
    assert {s.object for s in specs} == set(OBJECTS)
    assert {s.count for s in specs} == {1, 2, 3}


@pytest.mark.parametrize("index", range(8))
def test_objects_move_in_the_stated_direction(index: int) -> None:
    spec = clip_spec(index)
    frames = render_frames(spec, 8, 48)
    start, end = object_centroid(frames[0], COLOURS[spec.colour]), object_centroid(frames[-1], COLOURS[spec.colour])
    dy, dx = end - start
    expected = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[spec.direction]
    moved = (np.sign(round(dy)), np.sign(round(dx)))
    assert moved == expected, (spec.direction, dy, dx)


def test_motion_needs_frame_order() -> None:
    # The opposite direction is exactly the same frames in reverse order: the set of frames (any single
    # frame included) cannot tell the motion question's answer; only their order can.
    for index in range(6):
        spec = clip_spec(index)
        forward = render_frames(spec, 8, 32)
        backward = render_frames(reversed_spec(spec), 8, 32)
        np.testing.assert_array_equal(forward[::-1], backward)
        assert not np.array_equal(forward, backward)


def test_audio_pitch_follows_colour_and_beeps_count_objects() -> None:
    pytest.importorskip("torchaudio", reason="the audio extra (torchaudio) is not installed")
    from iv2_data.audio import waveform_to_fbank

    peaks = {}
    for index in range(30):
        spec = clip_spec(index)
        wave = render_audio(spec, 1.0)
        # One burst per object (smoothing over 2 ms ignores the zero crossings inside a beep).
        smooth = np.convolve(np.abs(wave), np.ones(32), "same") > 1e-3
        bursts = int(smooth[0]) + int(np.count_nonzero(smooth[1:] & ~smooth[:-1]))
        assert bursts == spec.count, (index, bursts, spec.count)
        fbank = waveform_to_fbank(torch.from_numpy(wave), 16_000)
        peaks.setdefault(spec.colour, set()).add(int(fbank[:95].max(0).values.argmax()))
    # Each colour always peaks in the same bin, and different colours in different bins.
    assert all(len(bins) == 1 for bins in peaks.values()), peaks
    assert len({next(iter(b)) for b in peaks.values()}) == len(peaks)


def test_mcqa_items_are_well_formed() -> None:
    corpus = SyntheticCorpus(num_samples=20, num_frames=4, size=32)
    tasks = set()
    for i in range(len(corpus)):
        items = corpus.mcqa(i)
        assert len(items) == 4
        for item in items:
            assert len(item["candidates"]) == 4 == len(set(item["candidates"]))
            assert item["answer"] in item["candidates"]
            tasks.add(item["task"])
        motion = next(it for it in items if it["task"] == "motion")
        assert motion["answer"] == corpus.specs[i].direction
    assert tasks == {"motion", "colour", "count", "identity"}
    # The answer's position is not constant (no letter bias).
    positions = {it["candidates"].index(it["answer"]) for i in range(20) for it in corpus.mcqa(i)}
    assert positions == {0, 1, 2, 3}


def test_mcqa_options_follow_the_attribute_order() -> None:
    corpus = SyntheticCorpus(num_samples=40, num_frames=4, size=32)
    identities = [f"the digit {o}" if o.isdigit() else f"a {o}" for o in OBJECTS]
    pools = {"motion": list(DIRECTIONS), "colour": list(COLOURS), "count": list(NUMBER_WORDS.values()),
             "identity": identities}
    distractors: dict[str, set[str]] = {task: set() for task in pools}
    for i in range(len(corpus)):
        for item in corpus.mcqa(i):
            pool = pools[item["task"]]
            ranks = [pool.index(c) for c in item["candidates"]]
            assert ranks == sorted(ranks), item
            distractors[item["task"]] |= set(item["candidates"]) - {item["answer"]}
    # The distractors are still drawn from the whole pool.
    assert {task: len(seen) for task, seen in distractors.items()} == {task: len(p) for task, p in pools.items()}


def test_in_memory_sample_format() -> None:
    corpus = SyntheticCorpus(num_samples=3, num_frames=4, size=32, fps=4)
    sample = corpus[1]
    assert sample["video"].shape == (3, 4, 32, 32) and sample["video"].dtype == torch.float32
    assert sample["frames"].shape == (4, 32, 32, 3) and sample["frames"].dtype == torch.uint8
    assert sample["waveform"].shape == (16_000,)
    spec = corpus.specs[1]
    assert spec.colour in sample["caption"] and spec.direction in sample["caption"]
    assert spec.direction in sample["asr"] and spec.colour not in sample["asr"]
    with pytest.raises(IndexError):
        corpus[3]


def test_write_corpus_files_and_resume(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path, 3, num_frames=4, size=32, fps=4)
    for kind in ("video_text", "image_text", "audio_text", "video_audio_text", "mcqa", "instructions"):
        records = json.loads(paths[kind].read_text())
        assert records, kind
        for record in records:
            for key in ("video", "image", "audio"):
                if key in record:
                    assert (tmp_path / record[key]).stat().st_size > 0
    assert len(json.loads(paths["mcqa"].read_text())) == 12
    video = tmp_path / "videos" / "000001.mp4"
    before = video.stat().st_mtime_ns
    write_corpus(tmp_path, 3, num_frames=4, size=32, fps=4)  # a rerun keeps finished files
    assert video.stat().st_mtime_ns == before
    assert not list(tmp_path.rglob("*.partial*"))


def test_written_video_decodes_to_the_rendered_clip(tmp_path: Path) -> None:
    import av

    write_corpus(tmp_path, 1, num_frames=4, size=32, fps=4)
    with av.open(str(tmp_path / "videos" / "000000.mp4")) as container:
        assert len(container.streams.audio) == 1
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    rendered = render_frames(clip_spec(0), 4, 32)
    assert decoded.shape == rendered.shape
    assert np.abs(decoded.astype(int) - rendered).mean() < 12  # lossy H.264 / 4:2:0 chroma, but the same clip


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iv2_data.cli import main

    args = ["synth", "--output", str(tmp_path), "--num-samples", "2", "--num-frames", "2", "--size", "32"]
    code = main([*args, "--samples-per-shard", "4", "--quiet"])
    paths = json.loads(capsys.readouterr().out)
    assert code == 0 and len(json.loads(Path(paths["mcqa"]).read_text())) == 8
    manifest = json.loads((Path(paths["mcqa_shards"]) / "manifest.json").read_text())
    assert [s["num_samples"] for s in manifest["shards"]] == [4, 4]
    meta = json.loads((tmp_path / "corpus.json").read_text())
    assert meta["clips"][1] == json.loads(json.dumps(asdict(clip_spec(1))))
    assert meta["version"] == CORPUS_VERSION


def test_rewriting_an_older_corpus_updates_its_records(tmp_path: Path) -> None:
    # A folder of an older version (different records, say shuffled options) is brought up to date by writing
    # it again: annotation files are rewritten, media kept.
    assert not corpus_is_current(tmp_path)  # nothing there
    paths = write_corpus(tmp_path, 2, num_frames=2, size=32)
    assert corpus_is_current(tmp_path)
    fresh = paths["mcqa"].read_text()
    stale = json.loads(fresh)
    for item in stale:
        item["candidates"].reverse()
    paths["mcqa"].write_text(json.dumps(stale))
    (tmp_path / "corpus.json").write_text(json.dumps({"version": CORPUS_VERSION - 1}))
    video_mtime = (tmp_path / "videos" / "000000.mp4").stat().st_mtime_ns
    assert not corpus_is_current(tmp_path)
    write_corpus(tmp_path, 2, num_frames=2, size=32)
    assert corpus_is_current(tmp_path)
    assert paths["mcqa"].read_text() == fresh
    assert json.loads((tmp_path / "corpus.json").read_text())["version"] == CORPUS_VERSION
    assert (tmp_path / "videos" / "000000.mp4").stat().st_mtime_ns == video_mtime


def test_in_memory_datasets_match_the_file_datasets(tmp_path: Path) -> None:
    pytest.importorskip("torchaudio", reason="the audio extra (torchaudio) is not installed")
    from iv2_data import datasets as file_datasets

    corpus = SyntheticCorpus(num_samples=2, num_frames=4, size=32, fps=4)
    paths = write_corpus(tmp_path, 2, num_frames=4, size=32, fps=4)
    kw = {"num_frames": 4, "size": 32}
    on_disk = {
        "video_text": file_datasets.VideoTextDataset(paths["video_text"], caption_sampling="first", **kw),
        "image_text": file_datasets.ImageTextDataset(paths["image_text"], **kw),
        "audio_text": file_datasets.AudioTextDataset(paths["audio_text"]),
        "video_audio_text": file_datasets.VideoAudioTextDataset(paths["video_audio_text"], **kw),
        "mcqa": file_datasets.MultipleChoiceQADataset(paths["mcqa"], **kw),
        "instructions": file_datasets.InstructionDataset(paths["instructions"], **kw),
    }
    for kind, reference in on_disk.items():
        memory = corpus.dataset(kind)
        assert len(memory) == len(reference), kind
        for index in (0, len(memory) - 1):
            a, b = memory[index], reference[index]
            assert set(a) == set(b), kind
            for key in a:
                if isinstance(a[key], torch.Tensor):
                    assert a[key].shape == b[key].shape, (kind, key)
                elif key != "audio":
                    assert a[key] == b[key], (kind, key)
    with pytest.raises(ValueError, match="unknown synthetic dataset kind"):
        corpus.dataset("speech")


def test_corpus_words_cover_every_text_of_a_larger_corpus():
    """A vocabulary built from corpus_words() has no unknown word on the corpus, whatever its size or seed."""
    import re

    from iv2_data.synthetic import BACKGROUNDS, COLOURS, DIRECTIONS, OBJECTS, clip_records, clip_spec, corpus_words

    words = set(corpus_words())
    assert {*COLOURS, *DIRECTIONS, *BACKGROUNDS, *OBJECTS} <= words
    for seed in (0, 7):
        for index in range(600, 1400, 7):
            text = repr(clip_records(clip_spec(index, seed), seed)).lower()
            for record in re.findall(r"'(?:caption|question|answer|a|q|i|asr|label_name)': '([^']*)'", text):
                assert set(re.findall(r"\w+|[^\w\s]", record)) <= words, record
