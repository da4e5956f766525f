"""The media layer: open_media's guards for every kind, find_media, exactly one place that opens media, and a
fuzz run of damaged files through every reader."""

from __future__ import annotations

import ast
import os
import pathlib
import warnings

import av
import numpy as np
import pytest
import torch

import iv2_data
from iv2_data.media import (
    AudioReadError,
    MediaReadError,
    VideoReadError,
    find_media,
    media_bytes,
    open_media,
    read_media_bytes,
)

SOURCE_ROOT = pathlib.Path(iv2_data.__file__).parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    from iv2_data.synthetic import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus"), 2, num_frames=8, size=32, fps=8)


@pytest.fixture(scope="module")
def odd_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("odd")
    (root / "folder.mp4").mkdir()
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("a text file renamed .mp4\n" * 10)
    os.symlink(root / "gone.mp4", root / "dangling.mp4")
    paths = {"missing": root / "missing.mp4", "folder": root / "folder.mp4", "empty": root / "empty.mp4",
             "text": root / "notes.mp4", "dangling": root / "dangling.mp4", "device": pathlib.Path("/dev/null")}
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.mp4")
        paths["fifo"] = root / "pipe.mp4"
    return paths


EXPECTED = {
    "missing": "no such file",
    "folder": "is a directory",
    "empty": "the file is empty",
    "text": "a text file",
    "dangling": "a symbolic link to a missing target",
    "device": "not a regular file",
    "fifo": "not a regular file",
}


@pytest.mark.parametrize("kind", ["video", "audio", "media"])
@pytest.mark.parametrize("case", list(EXPECTED))
def test_open_media_refuses_bad_inputs_by_kind(odd_inputs, case: str, kind: str) -> None:
    if case not in odd_inputs:
        pytest.skip("no FIFOs on this platform")
    error_type = {"video": VideoReadError, "audio": AudioReadError, "media": MediaReadError}[kind]
    with pytest.raises(error_type, match=EXPECTED[case]) as info:
        open_media(odd_inputs[case], kind)
    assert isinstance(info.value, OSError) and isinstance(info.value, MediaReadError)
    assert str(odd_inputs[case]) in str(info.value)
    if case != "text":  # refused before FFmpeg: nothing could block on a FIFO
        with pytest.raises(MediaReadError, match=EXPECTED[case]):
            read_media_bytes(odd_inputs[case])


def test_missing_streams_are_named(corpus) -> None:
    with open_media(corpus["root"] / "audio" / "000000.wav", "video") as media, pytest.raises(
        VideoReadError, match=r"no video stream \(streams: audio\)"
    ):
        media.video_stream()
    with open_media(corpus["root"] / "images" / "000000.png", "audio") as media:
        assert media.audio_stream(required=False) is None
        with pytest.raises(AudioReadError, match=r"no audio stream \(streams: video\)"):
            media.audio_stream()


def test_in_memory_media_is_named_in_messages(corpus) -> None:
    from iv2_data.video import probe_video

    data = (corpus["root"] / "videos" / "000000.mp4").read_bytes()
    assert probe_video(media_bytes(data, "shard-000000.tar:000000000.video.mp4")).num_frames == 8
    with pytest.raises(VideoReadError, match=r"shard-000000\.tar:000000001\.video\.mp4.*truncated"):
        probe_video(media_bytes(data[:200], "shard-000000.tar:000000001.video.mp4"))


def test_find_media_one_suffix_list_and_what_it_skipped(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.MKV", "sub/c.webm", "sub/d.ts", "e.m4a", "f.wav", "g.txt", "h.png"):
        (root / name).write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "z.mp4").write_bytes(b"x")
    os.symlink(elsewhere, root / "linked")
    os.symlink(root / "gone.mp4", root / "dangling.mp4")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.mp4")
    videos = find_media([root])
    assert [p.relative_to(root).as_posix() for p in videos] == ["a.mp4", "b.MKV", "sub/c.webm", "sub/d.ts"]
    skipped = {p.name: why for p, why in videos.skipped}
    assert "symbolic link to a folder" in skipped["linked"] and "dangling" in skipped["dangling.mp4"]
    if hasattr(os, "mkfifo"):
        assert "not a regular file" in skipped["pipe.mp4"]
    assert videos.other_files == 4  # e.m4a, f.wav, g.txt, h.png
    audio_too = find_media([root], ("video", "audio"))
    assert {p.name for p in audio_too} == {"a.mp4", "b.MKV", "c.webm", "d.ts", "e.m4a", "f.wav"}
    # files as given (any suffix), a folder given explicitly even through a link, each file once
    given = find_media([root / "g.txt", root / "linked", elsewhere / "z.mp4", tmp_path / "missing.mp4"])
    assert [p.name for p in given] == ["g.txt", "z.mp4", "missing.mp4"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    looked_for = ", ".join(iv2_data.MEDIA_SUFFIXES["video"])
    assert find_media([empty]).report() == [
        f"warning: no video files found (1 files with other suffixes); looked for {looked_for}"
    ]


# --- exactly one place opens media for reading ---------------------------------------------------------------

OTHER_OPENERS = ("open_video", "VideoCapture", "VideoReader", "torchaudio.load", "read_video", "scenedetect.detect")


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _is_write_mode(call: ast.Call) -> bool:
    modes = [a.value for a in call.args[1:2] if isinstance(a, ast.Constant)]
    modes += [k.value.value for k in call.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
    return any(isinstance(m, str) and "w" in m for m in modes)


def test_only_the_media_module_opens_media_for_reading() -> None:
    """Grep the source: every ``av.open`` outside media.py writes, and no other decoder opens files."""
    readers = []
    for path in sorted(SOURCE_ROOT.rglob("*.py")):
        text = path.read_text()
        for call in _calls(ast.parse(text)):
            name = ast.unparse(call.func)
            if name == "av.open" and not _is_write_mode(call):
                readers.append(f"{path.relative_to(SOURCE_ROOT)}:{call.lineno}")
            assert not any(name.endswith(o) for o in OTHER_OPENERS), f"{path}:{call.lineno} opens media with {name}"
    assert readers == ["media.py:" + str(_line_of_av_open())]


def _line_of_av_open() -> int:
    (line,) = [c.lineno for c in _calls(ast.parse((SOURCE_ROOT / "media.py").read_text())) if ast.unparse(c.func) == "av.open"]
    return line


@pytest.fixture
def opened_by(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the module of every caller of av.open that reads."""
    import inspect

    real_open = av.open
    callers: list[str] = []

    def spy(file, mode="r", *args, **kwargs):
        if "w" not in mode:
            callers.append(inspect.currentframe().f_back.f_globals["__name__"])
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(av, "open", spy)
    return callers


# --- every reader, on damaged copies ---------------------------------------------------------------------------


def _readers(tmp_path: pathlib.Path) -> dict[str, object]:
    """Every way iv2-data reads a media file, as ``name -> function(path)``."""
    from iv2_data.audio import read_audio_fbank
    from iv2_data.curate import ContentSceneDetector, LearnedSceneDetector, cut_clip, video_duration
    from iv2_data.curate.doubles import FrameDifferenceBoundaryModel
    from iv2_data.video import iter_frames, probe_video, read_clip

    readers = {
        "read_clip": lambda p: read_clip(p, 4, 32),
        "read_clip(in memory)": lambda p: read_clip(media_bytes(p.read_bytes(), str(p)), 4, 32),  # shard members
        "probe_video": probe_video,
        "iter_frames": lambda p: sum(1 for _ in iter_frames(p)),
        "video_duration": video_duration,
        "learned_scenes": LearnedSceneDetector(FrameDifferenceBoundaryModel(), size=16).detect,
        "cut_clip": lambda p: cut_clip(p, tmp_path / "cut" / f"{p.stem}.mp4", 0.0, 0.5),
        "read_media_bytes": read_media_bytes,
    }
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        pass
    else:
        readers["read_audio_fbank"] = read_audio_fbank
    try:
        import scenedetect  # noqa: F401
    except ImportError:
        pass
    else:
        readers["content_scenes"] = ContentSceneDetector(min_scene_frames=2).detect
    return readers


def test_every_reader_opens_through_open_media(corpus, tmp_path: pathlib.Path, opened_by: list[str]) -> None:
    video = corpus["root"] / "videos" / "000000.mp4"
    for name, reader in _readers(tmp_path).items():
        before = len(opened_by)
        reader(video)
        assert set(opened_by[before:]) <= {"iv2_data.media"}, (name, opened_by[before:])
        assert name == "read_media_bytes" or len(opened_by) > before, f"{name} opened nothing?"


def test_damaged_files_give_every_reader_a_clean_result_or_a_media_read_error(
    corpus, tmp_path: pathlib.Path, video_tools
) -> None:
    """Seeded damage (truncation, flipped bytes, overwritten or dropped blocks) of an H.264/AAC mp4 and a WAV:
    each reader returns normally or raises a MediaReadError naming the file — no other exception, no hang."""
    sources = [corpus["root"] / "videos" / "000001.mp4", corpus["root"] / "audio" / "000001.wav"]
    readers = _readers(tmp_path)
    outcomes: dict[str, set[str]] = {name: set() for name in readers}
    for source in sources:
        data = source.read_bytes()
        rng = np.random.default_rng(len(data))
        for i in range(8):
            path = tmp_path / f"damaged_{i}{source.suffix}"
            path.write_bytes(video_tools.damage(data, i % 4, rng))
            for name, reader in readers.items():
                if source.suffix == ".wav" and name not in ("read_audio_fbank", "probe_video", "read_media_bytes"):
                    continue
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # "only k of N frames" is expected for some
                        result = reader(path)
                except MediaReadError as error:
                    assert str(path) in str(error), (name, str(error))
                    outcomes[name].add("error")
                except ValueError as error:  # the one non-media outcome allowed: nothing in the cut's span
                    assert name == "cut_clip" and "no frames" in str(error), (name, error)
                    outcomes[name].add("empty span")
                else:
                    if isinstance(result, torch.Tensor):
                        assert torch.isfinite(result).all(), name
                    outcomes[name].add("ok")
    assert all(outcomes[name] for name in readers), outcomes
