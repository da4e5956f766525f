"""HD: the official grid rule (hand-worked cases), resizing without clamping, sub-video order, model path."""

import pytest
import torch
import torch.nn.functional as F

from iv2_chat import hd_candidates, hd_grid, hd_preprocess, hd_sub_videos, hd_transform


def test_candidate_order_is_the_official_one():
    # sorted(set(...), key=cols*rows) as the official code builds it, written out
    assert hd_candidates(6) == [(1, 1), (1, 2), (2, 1), (3, 1), (1, 3), (4, 1), (1, 4), (2, 2), (1, 5), (5, 1),
                                (6, 1), (2, 3), (1, 6), (3, 2)]


@pytest.mark.parametrize(("width", "height", "grid"), [
    (1920, 1080, (2, 1)),   # landscape 16:9: |1.78 - 2| = 0.22 beats 3:2 (0.28)
    (1080, 1920, (1, 2)),   # portrait 9:16: |0.5625 - 0.5| = 0.06
    (2000, 100, (6, 1)),    # very wide: the widest grid
    (224, 224, (1, 1)),     # square, small: the 2x2 tie loses (area 50176 <= 0.5·224²·4)
    (448, 448, (2, 2)),     # square, large: the 2x2 tie wins (area 200704 > 100352)
    (640, 480, (3, 2)),     # 4:3: 1x1 and 2x2 tie (diff 1/3), 2x2 wins, then 3:2 is closer (1/6)
    (480, 640, (2, 3)),     # 3:4: ties 1x1 -> 1x2 -> 2x2 (diff 1/4), then 2:3 is closer (1/12)
    (160, 128, (1, 1)),     # 5:4 small: 1x1, 2x2 and 3x2 all at diff 1/4; area too small for the later ones
    (1280, 1024, (3, 2)),   # 5:4 large: the same ties, each later one wins
])
def test_grid_choice(width, height, grid):
    assert hd_grid(width, height) == grid


def test_grid_respects_max_tiles_and_rejects_bad_sizes():
    assert hd_grid(2000, 100, max_tiles=3) == (3, 1)
    with pytest.raises(ValueError, match="positive"):
        hd_grid(0, 10)


def test_transform_resizes_bicubically_without_clamping():
    frames = torch.zeros(2, 3, 48, 64)
    frames[..., :, 32:] = 255.0  # a hard edge overshoots under bicubic resampling
    resized, (cols, rows) = hd_transform(frames, size=28)
    assert (cols, rows) == hd_grid(64, 48)
    assert resized.shape == (2, 3, rows * 28, cols * 28)
    expected = F.interpolate(frames, size=(rows * 28, cols * 28), mode="bicubic", align_corners=False)
    assert torch.equal(resized, expected)
    assert resized.min() < 0 and resized.max() > 255  # not clamped
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        hd_transform(torch.zeros(3, 48, 64))


def test_preprocess_normalises_after_resizing():
    frames = torch.rand(2, 3, 40, 90) * 255
    clip, grid = hd_preprocess(frames, size=28)
    resized, _ = hd_transform(frames, size=28)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(clip, ((resized / 255 - mean) / std).transpose(0, 1), atol=1e-6)
    assert clip.shape == (3, 2, grid[1] * 28, grid[0] * 28)


def test_sub_videos_are_row_major_tiles_then_the_global_view():
    rows, cols, size = 2, 3, 4
    video = torch.zeros(3, 2, rows * size, cols * size)
    for r in range(rows):
        for c in range(cols):
            video[:, :, r * size:(r + 1) * size, c * size:(c + 1) * size] = 10 * r + c
    subs = hd_sub_videos(video, size)
    assert subs.shape == (rows * cols + 1, 3, 2, size, size)
    assert [subs[k, 0, 0, 0, 0].item() for k in range(rows * cols)] == [0, 1, 2, 10, 11, 12]
    glob = F.interpolate(video.transpose(0, 1), size=(size, size), mode="bicubic", align_corners=False)
    assert torch.equal(subs[-1], glob.transpose(0, 1))
    with pytest.raises(ValueError, match="multiple of 4"):
        hd_sub_videos(torch.zeros(3, 2, 6, 8), 4)


def test_model_hd_path_runs_each_sub_video_with_the_same_instruction(make_model, qformer_tokenizer):
    model = make_model(seed=7)
    clips = [torch.randn(3, 4, 56, 84), torch.randn(3, 4, 28, 28)]  # 2x3 grid and 1x1 grid
    enc = qformer_tokenizer(["watch the video", "watch the red circle"], padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model.encode_hd_video(clips, 28, enc["input_ids"], enc["attention_mask"])
        assert [o.shape for o in out] == [(8 * 7, 48), (8 * 2, 48)]  # Q · (tiles + 1)
        for clip, got, ids, mask in zip(clips, out, enc["input_ids"], enc["attention_mask"]):
            subs = hd_sub_videos(clip, 28)
            n = subs.shape[0]
            one = model.encode_video(subs, ids.expand(n, -1), mask.expand(n, -1)).embeds
            assert (got - one.reshape(-1, 48)).abs().max() < 1e-5
