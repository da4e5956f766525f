"""Random and tube masks: counts per sample (the official int(ratio · N)), independence, tube structure, and
that the encoder takes them."""

import pytest
import torch

from iv2_encoders import VideoEncoder, VideoEncoderConfig, random_mask, tube_mask


@pytest.mark.parametrize("grid, ratio", [((4, 16, 16), 0.8), ((1, 16, 16), 0.5), ((3, 5, 7), 0.3), ((2, 2, 2), 0.0)])
def test_random_mask_drops_the_official_count_per_sample(grid, ratio):
    n = grid[0] * grid[1] * grid[2]
    mask = random_mask(6, grid, ratio, torch.Generator().manual_seed(0))
    assert mask.shape == (6, n) and mask.dtype == torch.bool
    # the official RandomMaskingGenerator: num_mask = int(mask_ratio * num_patches), e.g. 819 of 1024 at 4 frames
    assert mask.sum(1).tolist() == [int(ratio * n)] * 6
    if ratio == 0.8 and grid == (4, 16, 16):
        assert int(mask[0].sum()) == 819 and int((~mask[0]).sum()) + 1 == 206  # REFERENCE o: 206 tokens kept


def test_random_mask_is_uniform_and_independent_per_sample():
    mask = random_mask(4000, (1, 2, 5), 0.4, torch.Generator().manual_seed(1)).float()
    # each of the 10 positions is dropped with probability 0.4; rows differ
    assert torch.allclose(mask.mean(0), torch.full((10,), 0.4), atol=0.03)
    assert len({tuple(row.tolist()) for row in mask[:50]}) > 40


def test_same_generator_same_mask_and_device_argument():
    a = random_mask(3, (2, 4, 4), 0.5, torch.Generator().manual_seed(7))
    b = random_mask(3, (2, 4, 4), 0.5, torch.Generator().manual_seed(7), device="cpu")
    assert torch.equal(a, b)


def test_tube_mask_repeats_one_frame_pattern():
    mask = tube_mask(5, (4, 3, 3), 0.5, torch.Generator().manual_seed(2)).view(5, 4, 9)
    assert torch.equal(mask, mask[:, :1].expand(5, 4, 9))
    assert mask[:, 0].sum(1).tolist() == [int(0.5 * 9)] * 5


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_bad_ratio_or_grid_is_an_error(bad):
    with pytest.raises(ValueError, match="mask_ratio"):
        random_mask(2, (1, 2, 2), bad)
    with pytest.raises(ValueError, match="grid"):
        tube_mask(2, (0, 2, 2), 0.5)


def test_encoder_keeps_the_unmasked_tokens():
    cfg = VideoEncoderConfig(img_size=28, patch_size=14, num_frames=2, embed_dim=16, depth=1, num_heads=2,
                             mlp_ratio=2.0, attn_pool_num_heads=2, clip_embed_dim=8)
    model = VideoEncoder(cfg).eval()
    mask = random_mask(3, cfg.grid_size, 0.5, torch.Generator().manual_seed(3))
    out = model(torch.randn(3, 3, 2, 28, 28), mask)
    assert out.tokens.shape == (3, 1 + cfg.num_patches - int(0.5 * cfg.num_patches), 16)
