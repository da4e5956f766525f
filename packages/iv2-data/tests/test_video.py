"""Tests of iv2_data.video / iv2_data.transforms on videos the fixtures in conftest.py write.

Each generated frame shows its index as a bit grid (conftest.index_frame), so the tests check which frames
were read, not only shapes.
"""

from __future__ import annotations

import io
import itertools
import os
import pathlib
import pickle
import types
import warnings

import av
import numpy as np
import pytest
import torch

from iv2_data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCropTransform,
    RandomResizedCropTransform,
    ResizeTransform,
    VideoReadError,
    probe_video,
    read_clip,
    read_frames,
    sample_frame_indices,
)
from iv2_data import video as video_module
from iv2_data.transforms import center_crop_box, normalize, random_resized_crop_box, resize_crop

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
SHARED_EXAMPLE = REPO_ROOT.parent / "shared" / "data" / "example1_mpeg4_640x480.mp4"  # beside the checkout

# fixture name -> (frame count, width, height)
GENERATED = {
    "h264_mp4": (40, 64, 48),
    "h264_mkv": (30, 64, 48),
    "h264_ts": (30, 64, 48),
    "h264_avi": (30, 64, 48),
    "h264_raw": (30, 64, 48),
    "vp9_webm": (24, 64, 48),
    "mpeg4_mp4": (30, 64, 48),
    "portrait_mp4": (20, 48, 64),
    "odd_size_mp4": (20, 98, 62),
    "three_frame_mp4": (3, 64, 48),
    "vfr_mp4": (30, 64, 48),
    "long_mp4": (300, 64, 48),
}


@pytest.fixture
def frame_ids(video_tools):
    """Indices shown by uint8 (T, H, W, 3) frames."""
    return lambda frames: [video_tools.decode_index(video_tools.centre_square(f.numpy())) for f in frames]


@pytest.fixture
def clip_ids(video_tools):
    """Indices shown by a normalised (3, T, S, S) clip of a centre crop."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)

    def ids(clip: torch.Tensor) -> list[int]:
        pixels = ((clip * std + mean) * 255).permute(1, 2, 3, 0).numpy()
        return [video_tools.decode_index(p) for p in pixels]

    return ids


# --- sampling ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "n"), [(300, 8), (40, 8), (8, 8), (9, 4), (1000, 16), (17, 5), (30, 22), (30, 26), (46, 26)]
)
def test_middle_sampling_matches_official_rule(total, n):
    edges = np.linspace(0, total, n + 1).astype(int)
    expected = [(a + b - 1) // 2 for a, b in itertools.pairwise(edges)]
    assert sample_frame_indices(total, n, "middle") == expected


@pytest.mark.parametrize(("total", "n"), [(300, 8), (40, 8), (8, 8), (3, 8), (1, 4)])
def test_get_index_sampling_matches_chat_rule(total, n):
    seg = (total - 1) / n
    expected = [int(seg / 2) + round(seg * i) for i in range(n)]
    assert sample_frame_indices(total, n, "get_index") == expected


@pytest.mark.parametrize("sampling", ["middle", "random", "get_index"])
@pytest.mark.parametrize("total", [1, 2, 3, 7])
def test_short_videos_repeat_frames_in_order(total, sampling):
    idx = sample_frame_indices(total, 8, sampling, generator=torch.Generator().manual_seed(0))
    assert len(idx) == 8
    assert idx == sorted(idx)
    assert set(idx) <= set(range(total))
    if sampling != "get_index":  # official segment rules: each frame once, then the last one repeated
        assert idx == list(range(total)) + [total - 1] * (8 - total)


def test_random_sampling_one_frame_per_segment_and_seeded():
    total, n = 100, 8
    edges = np.linspace(0, total, n + 1).astype(int)
    seen = set()
    for seed in range(20):
        idx = sample_frame_indices(total, n, "random", generator=torch.Generator().manual_seed(seed))
        assert all(a <= i < b for i, a, b in zip(idx, edges[:-1], edges[1:]))
        seen.add(tuple(idx))
    assert len(seen) > 15  # it is random
    a = sample_frame_indices(total, n, "random", generator=torch.Generator().manual_seed(3))
    b = sample_frame_indices(total, n, "random", generator=torch.Generator().manual_seed(3))
    assert a == b


def test_unknown_sampling_is_an_error():
    with pytest.raises(ValueError, match="sampling"):
        sample_frame_indices(10, 4, "uniform")


# --- decoding: which frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(GENERATED))
def test_read_frames_returns_the_middle_frames(name, request, frame_ids):
    path = request.getfixturevalue(name)
    total, width, height = GENERATED[name]
    frames = read_frames(path, 8)
    assert frames.dtype == torch.uint8
    assert frames.shape == (8, height, width, 3)
    assert frame_ids(frames) == sample_frame_indices(total, 8, "middle")


@pytest.mark.parametrize("name", list(GENERATED))
def test_probe_counts_frames(name, request):
    info = probe_video(request.getfixturevalue(name))
    total, width, height = GENERATED[name]
    assert (info.num_frames, info.width, info.height) == (total, width, height)


@pytest.mark.parametrize("name", ["vp9_webm", "h264_mkv", "h264_ts", "h264_raw"])
def test_containers_without_a_frame_count_are_counted(name, request):
    path = request.getfixturevalue(name)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the header does not say
    assert probe_video(path).num_frames == GENERATED[name][0]


def test_three_frame_video_repeats_frames(three_frame_mp4, frame_ids):
    assert frame_ids(read_frames(three_frame_mp4, 8)) == [0, 1, 2, 2, 2, 2, 2, 2]
    assert frame_ids(read_frames(three_frame_mp4, 8, "get_index")) == [0, 0, 0, 1, 1, 1, 2, 2]


def test_explicit_indices_any_order(long_mp4, frame_ids):
    wanted = [299, 0, 150, 150, 31, 29, 30, 298]
    assert frame_ids(read_frames(long_mp4, indices=wanted)) == wanted


def test_open_gop_frames_around_keyframes(open_gop_mp4, frame_ids):
    wanted = [89, 28, 29, 30, 31, 58, 59, 60, 0, 88]
    assert frame_ids(read_frames(open_gop_mp4, indices=wanted)) == wanted
    assert frame_ids(read_frames(open_gop_mp4, 8)) == sample_frame_indices(90, 8)


def test_random_sampling_reads_the_sampled_frames(long_mp4, frame_ids):
    for seed in range(3):
        expected = sample_frame_indices(300, 8, "random", generator=torch.Generator().manual_seed(seed))
        got = read_frames(long_mp4, 8, "random", generator=torch.Generator().manual_seed(seed))
        assert frame_ids(got) == expected


@pytest.mark.parametrize(
    "name", ["long_mp4", "open_gop_mp4", "h264_ts", "h264_mkv", "h264_avi", "vp9_webm", "mpeg4_mp4", "vfr_mp4"]
)
def test_seeking_decode_equals_a_plain_full_decode(name, request):
    """Pixel for pixel, against PyAV decoding every frame in order (no seeking, no skipping)."""
    path = request.getfixturevalue(name)
    with av.open(str(path)) as container:
        everything = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    rng = np.random.default_rng(7)
    wanted = sorted(rng.choice(len(everything), size=min(10, len(everything)), replace=False).tolist())
    wanted += [wanted[0], len(everything) - 1]
    got = read_frames(path, indices=wanted).numpy()
    for frame, i in zip(got, wanted):
        np.testing.assert_array_equal(frame, everything[i])


def test_long_video_seeks_instead_of_decoding_everything(long_mp4, monkeypatch, frame_ids):
    decoded = []
    original = video_module._Decoder.frames

    def counting(self, seek_dts=None):
        for frame in original(self, seek_dts):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video_module._Decoder, "frames", counting)
    frames = read_frames(long_mp4, 8)
    assert frame_ids(frames) == sample_frame_indices(300, 8)
    assert len(decoded) < 150  # the 8 targets lie 18, 25, 3, 10, 18, 25, 3, 10 frames into their GOPs


def test_bytes_and_file_objects_read_like_the_path(long_mp4, h264_avi, frame_ids):
    expected = sample_frame_indices(300, 8)
    assert frame_ids(read_frames(long_mp4.read_bytes(), 8)) == expected
    with open(long_mp4, "rb") as f:
        assert frame_ids(read_frames(f, 8)) == expected
    # AVI decodes by counting from a fresh start: the file object is rewound for it
    assert frame_ids(read_frames(io.BytesIO(h264_avi.read_bytes()), 4)) == sample_frame_indices(30, 4)
    assert probe_video(long_mp4.read_bytes()).num_frames == 300


def test_broken_bytes_and_file_objects_raise(broken_videos):
    with pytest.raises(VideoReadError, match="empty"):
        read_clip(b"")
    with pytest.raises(VideoReadError, match="text file") as info:
        read_clip(b"just some words, no video at all\n" * 10)
    assert "<bytes>" in str(info.value)
    with open(broken_videos["random"], "rb") as f, pytest.raises(VideoReadError) as info:
        read_clip(f)
    assert str(broken_videos["random"]) in str(info.value)  # a file object is named by its .name


def test_vfr_sampling_is_by_frame_not_by_time(vfr_mp4, frame_ids):
    info = probe_video(vfr_mp4)
    gaps = np.diff(info.frame_pts)
    assert gaps.min() != gaps.max()  # the fixture really is variable frame rate
    assert frame_ids(read_frames(vfr_mp4, 6)) == sample_frame_indices(30, 6)


def test_unusable_seeking_falls_back_to_counting(long_mp4, frame_ids, monkeypatch):
    def broken_seek(self, *args, **kwargs):
        raise av.error.PermissionError(1, "seeking disabled by the test")

    monkeypatch.setattr(av.container.InputContainer, "seek", broken_seek)
    assert frame_ids(read_frames(long_mp4, 8)) == sample_frame_indices(300, 8)


def test_single_thread_decoding_gives_the_same_frames(long_mp4):
    torch.testing.assert_close(read_frames(long_mp4, 5, threads=1), read_frames(long_mp4, 5))


class _ThreadChoice(torch.utils.data.Dataset):
    """Reports the FFmpeg thread count read_frames would pick by default, wherever it runs."""

    def __len__(self):
        return 1

    def __getitem__(self, i):
        stream = types.SimpleNamespace()
        video_module._prepare(stream, None)
        return stream.thread_count


def test_default_threads_one_per_dataloader_worker():
    assert _ThreadChoice()[0] == 0  # main process: FFmpeg chooses
    loader = torch.utils.data.DataLoader(_ThreadChoice(), batch_size=None, num_workers=1)
    assert list(loader) == [1]


def test_display_rotation_is_applied(video_dir, video_tools):
    path = video_tools.write_video(video_dir / "rotated.mp4", 6, rotation=90)
    coded = read_frames(path, 2, auto_rotate=False)
    upright = read_frames(path, 2)
    assert coded.shape == (2, 48, 64, 3)
    assert upright.shape == (2, 64, 48, 3)
    # 90° counter-clockwise: the coded picture's top row becomes the left column, read bottom-up
    torch.testing.assert_close(upright[:, :, 0], coded[:, 0].flip(1))
    assert read_clip(path, 2, 32).shape == (3, 2, 32, 32)


# --- read_clip: shape, transform, normalisation ------------------------------------------------------------


@pytest.mark.parametrize("name", list(GENERATED))
def test_read_clip_shape_and_frames(name, request, clip_ids):
    clip = read_clip(request.getfixturevalue(name), num_frames=4, size=32)
    assert clip.dtype == torch.float32
    assert clip.shape == (3, 4, 32, 32)
    assert torch.isfinite(clip).all()
    assert clip_ids(clip) == sample_frame_indices(GENERATED[name][0], 4)


@pytest.mark.parametrize("name", ["h264_mp4", "portrait_mp4", "odd_size_mp4"])
def test_eval_transform_matches_pil_centre_square_resize(name, request):
    """Independent reference: PIL bicubic resize of the centred square (PIL's ``box``) to size × size."""
    pil = pytest.importorskip("PIL.Image")
    path = request.getfixturevalue(name)
    size = 40
    frames = read_frames(path, 2)
    clip = read_clip(path, 2, size)
    for t, frame in enumerate(frames.numpy()):
        h, w = frame.shape[:2]
        side = min(h, w)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        ref = pil.fromarray(frame).resize((size, size), pil.Resampling.BICUBIC, box=box)
        expected = (np.asarray(ref, np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        got = clip[:, t].permute(1, 2, 0).numpy()
        # PIL also filters over pixels outside the box; we see only the crop: compare away from its border.
        inner = (slice(2, -2), slice(2, -2))
        # bicubic ringing next to the black/white edges differs by a few levels (float vs PIL's uint8 maths)
        np.testing.assert_allclose(got[inner], expected[inner], atol=0.15)
        assert np.abs(got - expected).mean() < 0.02


def test_normalisation_of_black_and_white_cells(h264_mp4, clip_ids):
    clip = read_clip(h264_mp4, 1, 100)  # frame 19 = 0b00000_10011: bit 5 (row 2, column 1) is set
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    white_cell = clip[:, 0, 50, 75].numpy()  # row 2 of 5, column 1 of 2
    black_cell = clip[:, 0, 10, 10].numpy()  # row 0, column 0: bit 0
    assert clip_ids(clip) == [19]
    np.testing.assert_allclose(white_cell, (1 - mean) / std, atol=0.1)
    np.testing.assert_allclose(black_cell, (0 - mean) / std, atol=0.1)


def test_normalisation_uses_the_official_imagenet_statistics(h264_mp4):
    """Literal numbers (REFERENCE.md n.), not the module's constants, which the tests above reuse: a white
    and a black cell of a decoded frame must come out as (1 − mean) / std and (0 − mean) / std."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    clip = read_clip(h264_mp4, 1, 100)  # frame 19: row 2, column 1 white; row 0, column 0 black
    np.testing.assert_allclose(clip[:, 0, 50, 75].numpy(), (1 - mean) / std, atol=0.05)
    np.testing.assert_allclose(clip[:, 0, 10, 10].numpy(), (0 - mean) / std, atol=0.05)
    frames = torch.full((1, 8, 8, 3), 128, dtype=torch.uint8)  # exact mid grey, no codec in between
    np.testing.assert_allclose(CenterCropTransform(8)(frames)[:, 0, 4, 4].numpy(), (128 / 255 - mean) / std, atol=1e-5)


def test_transforms_take_the_clip_statistics_of_the_mvbench_evaluation():
    """REFERENCE.md m.: MVBench evaluation normalises with CLIP's mean/std, not ImageNet's."""
    from iv2_data.transforms import CLIP_MEAN, CLIP_STD

    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    frames = torch.full((1, 8, 8, 3), 128, dtype=torch.uint8)
    expected = (128 / 255 - mean) / std
    for transform in (
        CenterCropTransform(8, mean=CLIP_MEAN, std=CLIP_STD),
        ResizeTransform(8, mean=CLIP_MEAN, std=CLIP_STD),
        RandomResizedCropTransform(8, mean=CLIP_MEAN, std=CLIP_STD),
    ):
        np.testing.assert_allclose(transform(frames)[:, 0, 4, 4].numpy(), expected, atol=1e-5)


def test_read_clip_is_transform_of_read_frames(odd_size_mp4):
    frames = read_frames(odd_size_mp4, 4)
    expected = CenterCropTransform(56)(frames)
    torch.testing.assert_close(read_clip(odd_size_mp4, 4, 56), expected)


def test_custom_transform_gets_uint8_frames_and_the_generator(h264_mp4):
    seen = {}

    def transform(frames, generator=None):
        seen["frames"], seen["generator"] = frames, generator
        return frames.float().mean()

    g = torch.Generator().manual_seed(0)
    out = read_clip(h264_mp4, 3, transform=transform, generator=g)
    assert seen["frames"].dtype == torch.uint8 and seen["frames"].shape == (3, 48, 64, 3)
    assert seen["generator"] is g
    assert out == seen["frames"].float().mean()


def test_resize_transform_squashes_the_whole_frame_like_pil(odd_size_mp4):
    pil = pytest.importorskip("PIL.Image")
    frames = read_frames(odd_size_mp4, 2)
    clip = read_clip(odd_size_mp4, 2, transform=ResizeTransform(40))
    assert clip.shape == (3, 2, 40, 40)
    for t, frame in enumerate(frames.numpy()):
        ref = np.asarray(pil.fromarray(frame).resize((40, 40), pil.Resampling.BICUBIC), np.float32)
        expected = (ref / 255 - IMAGENET_MEAN) / IMAGENET_STD
        got = clip[:, t].permute(1, 2, 0).numpy()
        assert np.abs(got - expected).mean() < 0.02
        assert np.abs(got - expected).max() < 0.2


def test_public_helpers_compose_to_the_eval_transform(odd_size_mp4):
    frames = read_frames(odd_size_mp4, 3)
    box = center_crop_box(62, 98)
    assert box == (0, 18, 62, 62)
    composed = normalize(resize_crop(frames, box, 48))
    torch.testing.assert_close(composed, CenterCropTransform(48)(frames), atol=1e-5, rtol=0)


def test_train_clip_seeded_and_random(long_mp4):
    a = read_clip(long_mp4, 4, 32, "random", train=True, seed=5)
    b = read_clip(long_mp4, 4, 32, "random", train=True, seed=5)
    c = read_clip(long_mp4, 4, 32, "random", train=True, seed=6)
    assert a.shape == (3, 4, 32, 32)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_random_resized_crop_box_within_frame_and_scale():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(48, 98, (0.5, 1.0), generator=g)
        assert top >= 0 and top + h <= 48 and left >= 0 and left + w <= 98
        assert 0.5 * 48 * 98 * 0.9 <= h * w <= 48 * 98
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1 or (h == 48 or w == 98)


def test_train_flip_mirrors_the_crop(video_tools):
    frames = torch.from_numpy(np.stack([video_tools.index_frame(i, 64, 48) for i in (5, 9)]))
    frames[:, :, :8] = 0  # make left and right differ outside the grid too
    kept = RandomResizedCropTransform(32, flip_prob=0.0)
    flipped = RandomResizedCropTransform(32, flip_prob=1.0)
    a = kept(frames, generator=torch.Generator().manual_seed(1))
    b = flipped(frames, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(b, a.flip(-1))
    assert not torch.equal(a, b)


# --- broken input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing", "no such file"),
        ("empty", "empty"),
        ("text", "text file"),
        ("truncated", "truncated"),
        ("random", "not a video"),
    ],
)
def test_broken_inputs_raise_naming_the_file(broken_videos, kind, words):
    path = broken_videos[kind]
    with pytest.raises(VideoReadError) as info:
        read_clip(path, 4, 32)
    assert isinstance(info.value, OSError)
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_audio_only_file_has_no_video_stream(video_dir):
    path = video_dir / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(VideoReadError, match="no video stream"):
        read_clip(path)


def test_fifo_is_refused_without_blocking(video_dir):
    fifo = video_dir / "pipe.mp4"
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    if not fifo.exists():
        os.mkfifo(fifo)
    with pytest.raises(VideoReadError, match="not a regular file"):
        read_clip(fifo)


def test_unknown_codec_is_an_error(h264_mp4, video_dir):
    path = video_dir / "unknown_codec.mp4"
    path.write_bytes(h264_mp4.read_bytes().replace(b"avc1", b"zzzz"))  # the sample entry's codec tag
    with pytest.raises(VideoReadError, match="codec is unknown") as info:
        read_clip(path)
    assert str(path) in str(info.value)


def test_playlist_pointing_at_urls_is_refused(video_dir):
    path = video_dir / "playlist.m3u8"
    path.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://192.0.2.1/seg0.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(VideoReadError) as info:  # FFmpeg may open local files only, never the URL
        read_clip(path)
    assert str(path) in str(info.value)


def test_directory_is_an_error(video_dir):
    with pytest.raises(VideoReadError, match="directory"):
        read_clip(video_dir)


def test_truncated_faststart_mp4_uses_the_frames_that_remain(video_dir, frame_ids, video_tools):
    good = video_tools.write_video(
        video_dir / "faststart.mp4", 40, options={"g": "10"}, container_options={"movflags": "faststart"}
    )
    data = good.read_bytes()
    cut = video_dir / "faststart_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(UserWarning, match="only"):
        frames = read_frames(cut, 4)
    ids = frame_ids(frames)
    assert ids == sorted(ids) and max(ids) < 40
    assert max(ids) < 35  # frames from the part that is gone are not invented


def test_garbled_middle_never_hangs_nor_returns_wrong_frames(video_dir, video_tools):
    good = video_tools.write_video(video_dir / "to_garble.mp4", 40, container_options={"movflags": "faststart"})
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(2)
    start = len(data) // 3
    data[start : start + len(data) // 3] = rng.integers(0, 256, size=len(data) // 3, dtype=np.uint8).tobytes()
    bad = video_dir / "garbled.mp4"
    bad.write_bytes(bytes(data))
    try:
        frames = read_frames(bad, 8)
    except VideoReadError as e:
        assert str(bad) in str(e)
    else:
        assert frames.shape == (8, 48, 64, 3)


@pytest.mark.parametrize("source", ["h264_mp4", "vp9_webm", "h264_ts"])
def test_damaged_copies_raise_or_give_a_clean_clip(source, request, video_dir, video_tools):
    """Seeded damage (truncation, flipped bytes, overwritten or dropped blocks): every result is either a
    VideoReadError naming the file or a finite clip of the asked shape. (test_media runs every other reader
    on damaged files too.)"""
    data = request.getfixturevalue(source).read_bytes()
    rng = np.random.default_rng(len(data))
    outcomes = set()
    for i in range(12):
        path = video_dir / f"damaged_{source}_{i}{request.getfixturevalue(source).suffix}"
        path.write_bytes(video_tools.damage(data, i % 4, rng))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "only k of N frames" is expected for some
                clip = read_clip(path, 4, 32)
        except VideoReadError as e:
            assert str(path) in str(e)
            outcomes.add("error")
        else:
            assert clip.shape == (3, 4, 32, 32) and torch.isfinite(clip).all()
            outcomes.add("clip")
    assert outcomes  # every copy ended one of the two ways (any other exception fails the test)


def test_video_read_error_pickles():
    err = pickle.loads(pickle.dumps(VideoReadError("/x/y.mp4", "the file is empty")))
    assert isinstance(err, VideoReadError)
    assert "/x/y.mp4" in str(err) and "empty" in str(err)


# --- the shared example ------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_EXAMPLE.exists(), reason=f"shared example video not present at {SHARED_EXAMPLE}")
def test_shared_example_mpeg4():
    info = probe_video(SHARED_EXAMPLE)
    assert (info.width, info.height, info.codec) == (640, 480, "mpeg4")
    clip = read_clip(SHARED_EXAMPLE)
    assert clip.shape == (3, 8, 224, 224)
    assert torch.isfinite(clip).all()
    assert clip.std() > 0.1  # real picture content, not a constant frame
    frames = read_frames(SHARED_EXAMPLE, 8)
    decoded_all = [f.to_ndarray(format="rgb24") for f in av.open(str(SHARED_EXAMPLE)).decode(video=0)]
    for got, i in zip(frames.numpy(), sample_frame_indices(len(decoded_all), 8)):
        np.testing.assert_array_equal(got, decoded_all[i])
