"""GroupMultiScaleCrop (the official stage-1 augmentation) against hand-worked candidates and PIL, and its
per-record flip switch through VideoReadConfig."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from iv2_data import GroupMultiScaleCrop, VideoReadConfig
from iv2_data.transforms import IMAGENET_MEAN, IMAGENET_STD, fixed_crop_offsets, multi_scale_crop_sizes


def test_crop_candidates_worked_by_hand() -> None:
    """441 × 331 frame, output 224 (the official code's own example): sides int(331 · s) for s in
    (1, .875, .75, .66) = 331, 289, 248, 218 (none within 2 px of 224); pairs (w, h) with the height scale i
    and the width scale j at most one step apart, i outer, j inner."""
    assert multi_scale_crop_sizes(331, 441) == [
        (331, 331), (289, 331),
        (331, 289), (289, 289), (248, 289),
        (289, 248), (248, 248), (218, 248),
        (248, 218), (218, 218),
    ]  # fmt: skip
    # 258 px: int(258 · .875) = 225 is within 2 px of 224 and snaps to it; int(258 · .66) = 170.
    assert sorted({w for w, _ in multi_scale_crop_sizes(258, 300)}) == [170, 193, 224, 258]
    # 260 px: int(227.5) = 227 is 3 px away: no snap.
    assert 227 in {w for w, _ in multi_scale_crop_sizes(260, 300)}
    assert len(multi_scale_crop_sizes(331, 441, max_distort=0)) == 4


def test_fixed_offsets_worked_by_hand() -> None:
    # 441 × 331, crop 289 × 289: steps (441 − 289) // 4 = 38, (331 − 289) // 4 = 10
    assert fixed_crop_offsets(331, 441, 289, 289) == [
        (0, 0), (152, 0), (0, 40), (152, 40), (76, 20),
        (0, 20), (152, 20), (76, 40), (76, 0),
        (38, 10), (114, 10), (38, 30), (114, 30),
    ]  # fmt: skip
    assert len(fixed_crop_offsets(331, 441, 289, 289, more_fix_crop=False)) == 5


def test_draws_are_uniform_over_the_official_candidates() -> None:
    transform = GroupMultiScaleCrop(224)
    g = torch.Generator().manual_seed(0)
    boxes = [transform.crop_box(331, 441, g) for _ in range(3000)]
    sizes = Counter((w, h) for _, _, h, w in boxes)
    assert set(sizes) == set(multi_scale_crop_sizes(331, 441))
    assert max(sizes.values()) < 1.3 * min(sizes.values())
    for top, left, h, w in boxes[:200]:
        assert (left, top) in fixed_crop_offsets(331, 441, h, w)


def test_pixels_equal_pil_bilinear_of_the_same_crop(video_tools) -> None:
    pil = pytest.importorskip("PIL.Image")
    frames = torch.from_numpy(np.stack([video_tools.index_frame(i, 98, 62) for i in (3, 9)]))
    frames[:, :, :20] //= 2  # left and right differ
    transform = GroupMultiScaleCrop(40, flip_prob=0.0)
    top, left, h, w = transform.crop_box(62, 98, torch.Generator().manual_seed(4))
    clip = transform(frames, generator=torch.Generator().manual_seed(4))
    assert clip.shape == (3, 2, 40, 40)
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    for t, frame in enumerate(frames.numpy()):  # the same crop for every frame of the clip
        ref = pil.fromarray(frame).crop((left, top, left + w, top + h)).resize((40, 40), pil.Resampling.BILINEAR)
        expected = (np.asarray(ref, np.float32) / 255 - mean) / std
        got = clip[:, t].permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() < 0.05  # PIL and torch's uint8 path: at most a grey level apart


def test_flip_and_its_per_record_switch() -> None:
    frames = torch.zeros(2, 32, 48, 3, dtype=torch.uint8)
    frames[:, :, :24] = 255  # bright left half
    always = GroupMultiScaleCrop(32, flip_prob=1.0, scales=(1.0,), fix_crop=False)
    assert always(frames)[:, :, :, :4].mean() < always(frames)[:, :, :, -4:].mean()  # flipped: bright right
    config = VideoReadConfig.stage1(num_frames=4, size=32)
    assert config.frame_sampling == "tsn" and config.train
    assert isinstance(config.transform, GroupMultiScaleCrop) and config.transform.flip_prob == 0.5
    assert config.transform_for({"source": "k400"}).flip_prob == 0.5
    assert config.transform_for({"source": "ssv2"}).flip_prob == 0.0  # the official rule
    assert config.transform_for({"video": "x.mp4", "flip": False}).flip_prob == 0.0
    assert VideoReadConfig(train=True).transform_for({"flip": False}).flip_prob == 0.0  # stage 2's RRC too
