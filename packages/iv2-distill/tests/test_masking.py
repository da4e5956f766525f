"""Masks: configured counts, semantic masking keeps salient tokens far more often without being top-k, the
official draw reproduced, working random/tube masks."""

import pytest
import torch

from iv2_distill import attention_mask, random_mask, tube_mask


def official_attention_mask(attn_bt, ratio, generator):
    """The official engine's draw (engine_for_pretraining.py), written out: a full multinomial permutation per
    row, the first N_vis positions kept."""
    bt, n = attn_bt.shape
    n_vis = n - int(n * ratio)
    importance = torch.multinomial(attn_bt, n, generator=generator)
    mask = torch.ones(bt, n)
    mask[torch.arange(bt).view(-1, 1).repeat(1, n_vis), importance[:, :n_vis]] = 0
    return mask.to(torch.bool)


@pytest.mark.parametrize(("hw", "ratio", "kept"), [(256, 0.8, 52), (16, 0.75, 4), (16, 0.8, 4), (49, 0.5, 25)])
def test_attention_mask_keeps_the_configured_count_in_every_frame(hw, ratio, kept):
    attn = torch.rand(3, 4, hw)
    mask = attention_mask(attn, ratio, torch.Generator().manual_seed(0))
    assert mask.shape == (3, 4 * hw) and mask.dtype == torch.bool
    assert ((~mask).reshape(3, 4, hw).sum(-1) == kept).all()  # HW - int(HW * ratio) per frame


def test_attention_mask_reproduces_the_official_draw():
    attn = torch.rand(2, 8, 256).softmax(-1)
    ours = attention_mask(attn, 0.8, torch.Generator().manual_seed(7))
    official = official_attention_mask(attn.reshape(16, 256), 0.8, torch.Generator().manual_seed(7))
    assert torch.equal(ours, official.reshape(2, -1))
    assert ((~ours).sum(1) + 1 == 417).all()  # REFERENCE c: 8 * 52 visible patches + the class token


def test_semantic_masking_prefers_salient_tokens_but_is_not_top_k():
    frames, hw = 4000, 16
    attn = torch.ones(1, frames, hw)
    salient = torch.tensor([0, 5, 10, 15])
    attn[..., salient] = 8.0  # four tokens with 8x the attention of the other twelve
    mask = attention_mask(attn, 0.75, torch.Generator().manual_seed(0))  # keeps 4 of 16 per frame
    kept = (~mask).reshape(frames, hw).float()
    rate_salient = kept[:, salient].mean().item()
    rate_other = kept[:, [i for i in range(hw) if i not in salient]].mean().item()
    assert rate_salient > 4 * rate_other  # kept far more often ...
    not_top_k = (kept[:, salient].sum(1) < 4).float().mean().item()
    assert not_top_k > 0.2  # ... but a top-k mask would keep exactly these four in every frame
    assert rate_other > 0.02


def test_joint_mask_over_the_clip_keeps_the_count_per_clip_not_per_frame():
    attn = torch.rand(2, 4, 16)
    attn[:, 0] *= 50  # frame 0 is far more salient
    mask = attention_mask(attn, 0.75, torch.Generator().manual_seed(0), per_frame=False)
    kept = (~mask).reshape(2, 4, 16).sum(-1)
    assert (kept.sum(-1) == 64 - int(64 * 0.75)).all()
    assert (kept[:, 0] > kept[:, 1:].max(dim=1).values).all()


def test_attention_mask_is_reproducible_with_a_generator_and_checks_its_input():
    attn = torch.rand(2, 4, 16)
    a = attention_mask(attn, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, attention_mask(attn, 0.5, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, attention_mask(attn, 0.5, torch.Generator().manual_seed(4)))
    zeros = torch.zeros(1, 1, 16)
    zeros[..., 3] = 1.0  # tokens without attention can still fill the kept slots
    assert (~attention_mask(zeros, 0.5)).sum() == 8
    with pytest.raises(ValueError, match="non-negative"):
        attention_mask(-attn, 0.5)
    with pytest.raises(ValueError, match=r"\(B, T, HW\)"):
        attention_mask(attn[0], 0.5)
    with pytest.raises(ValueError, match="mask_ratio"):
        attention_mask(attn, 1.0)


def test_random_mask_drops_the_same_count_per_sample_anywhere_in_the_clip():
    g = torch.Generator().manual_seed(0)
    mask = random_mask(500, (4, 4, 4), 0.8, generator=g)
    assert mask.shape == (500, 64)
    assert (mask.sum(1) == int(0.8 * 64)).all()
    per_frame = mask.reshape(500, 4, 16).sum(-1)
    assert (per_frame != per_frame[:, :1]).any()  # not the same count in every frame: over the clip
    coverage = mask.float().mean(0)
    assert coverage.min() > 0.65 and coverage.max() < 0.95  # uniform: every position about 80 % of the time
    assert not torch.equal(mask[0], mask[1])


def test_tube_mask_repeats_one_per_frame_pattern_through_time():
    mask = tube_mask(6, (4, 4, 4), 0.75, generator=torch.Generator().manual_seed(0)).reshape(6, 4, 16)
    assert (mask == mask[:, :1]).all()
    assert (mask.sum(-1) == int(0.75 * 16)).all()
    assert not torch.equal(mask[0], mask[1])  # drawn per sample
