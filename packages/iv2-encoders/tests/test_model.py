import math

import pytest
import torch
from _enc_helpers import randomize_
from _enc_official_layout import OFFICIAL_SIZES, official_encoder_layout
from _enc_reference import reference_forward

from iv2_encoders import VideoEncoder, VideoEncoderConfig, create_model, list_models

TINY = dict(img_size=42, patch_size=14, num_frames=4, embed_dim=48, depth=2, num_heads=4, mlp_ratio=4.0,
            attn_pool_num_heads=3, clip_embed_dim=40)


def tiny(**kw) -> VideoEncoder:
    torch.manual_seed(0)
    return randomize_(VideoEncoder(VideoEncoderConfig(**{**TINY, **kw})).eval())


def test_list_models_has_every_official_size():
    assert set(OFFICIAL_SIZES) | {"internvideo2-tiny"} == set(list_models())
    assert list_models("*6b") == ["internvideo2-6b"]


@pytest.mark.parametrize("name", sorted(OFFICIAL_SIZES))
def test_key_layout_matches_official(name):
    width, depth, hidden = OFFICIAL_SIZES[name]
    with torch.device("meta"):
        model = create_model(name)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_encoder_layout(width, depth, hidden)


@pytest.mark.parametrize("name,expected", [("internvideo2-1b", 1.0207e9), ("internvideo2-6b", 5.9417e9)])
def test_meta_build_allocates_nothing_and_has_official_count(name, expected):
    width, depth, hidden = OFFICIAL_SIZES[name]
    with torch.device("meta"):
        model = create_model(name)
    assert all(p.is_meta for p in model.parameters())
    count = sum(p.numel() for p in model.parameters())
    # independently: sum of the official layout's shapes
    official = sum(math.prod(s) for s in official_encoder_layout(width, depth, hidden).values())
    assert count == official
    assert abs(count - expected) / expected < 1e-3


def test_forward_matches_float64_reference():
    model = tiny()
    video = torch.randn(2, 3, 4, 42, 42)
    out = model(video)
    ref_tokens, ref_pooled = reference_forward(model.state_dict(), video, heads=4, pool_heads=3, depth=2, patch=14)
    assert out.tokens.shape == (2, 1 + 4 * 9, 48) and out.pooled.shape == (2, 40)
    torch.testing.assert_close(out.tokens.double(), ref_tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.pooled.double(), ref_pooled, rtol=1e-4, atol=1e-4)


def test_masked_forward_equals_forward_over_kept_tokens():
    model = tiny()
    video = torch.randn(2, 3, 4, 42, 42)
    n = 36
    g = torch.Generator().manual_seed(1)
    mask = torch.zeros(2, n, dtype=torch.bool)
    for b in range(2):
        mask[b, torch.randperm(n, generator=g)[:27]] = True  # 9 kept per sample
    out = model(video, mask)
    keep_index = torch.stack([torch.nonzero(~mask[b]).squeeze(1) for b in range(2)])
    ref_tokens, ref_pooled = reference_forward(model.state_dict(), video, heads=4, pool_heads=3, depth=2,
                                               patch=14, keep_index=keep_index)
    assert out.tokens.shape == (2, 10, 48)
    torch.testing.assert_close(out.tokens.double(), ref_tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.pooled.double(), ref_pooled, rtol=1e-4, atol=1e-4)


def test_mask_with_unequal_counts_or_wrong_shape_is_rejected():
    model = tiny()
    video = torch.randn(2, 3, 4, 42, 42)
    bad = torch.zeros(2, 36, dtype=torch.bool)
    bad[0, :3] = True
    with pytest.raises(ValueError, match=r"same number of tokens in every sample, got \[3, 0\]"):
        model(video, bad)
    with pytest.raises(ValueError, match="mask must be bool"):
        model(video, torch.zeros(2, 35, dtype=torch.bool))


def test_image_uses_time_averaged_position_embedding():
    model = tiny()
    image = torch.randn(2, 3, 1, 42, 42)
    out = model(image)
    _, ref_pooled = reference_forward(model.state_dict(), image, heads=4, pool_heads=3, depth=2, patch=14)
    assert out.tokens.shape == (2, 10, 48)
    torch.testing.assert_close(out.pooled.double(), ref_pooled, rtol=1e-4, atol=1e-4)


def test_image_uses_separate_image_position_embedding_when_present():
    model = tiny(sep_image_video_pos_embed=True)
    image = torch.randn(1, 3, 1, 42, 42)
    _, ref_pooled = reference_forward(model.state_dict(), image, heads=4, pool_heads=3, depth=2,
                                               patch=14, image_pos="img_pos_embed")
    torch.testing.assert_close(model(image).pooled.double(), ref_pooled, rtol=1e-4, atol=1e-4)


def test_wrong_input_shapes_name_the_problem():
    model = tiny()
    with pytest.raises(ValueError, match="built for 4 frames"):
        model(torch.randn(1, 3, 3, 42, 42))
    with pytest.raises(ValueError, match="42x42"):
        model(torch.randn(1, 3, 4, 56, 56))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.randn(3, 4, 42, 42))


def test_hidden_states_are_the_residual_stream_of_requested_blocks():
    model = tiny(depth=3)
    video = torch.randn(1, 3, 4, 42, 42)
    out = model(video, return_hidden_states=[0, -1])
    assert len(out.hidden_states) == 2
    torch.testing.assert_close(out.hidden_states[1], out.tokens)
    # block 0's output equals a depth-1 model with the same weights
    one = tiny(depth=1)
    one.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("blocks.1", "blocks.2"))})
    torch.testing.assert_close(out.hidden_states[0], one(video).tokens)
    assert len(model(video, return_hidden_states=True).hidden_states) == 3
    with pytest.raises(ValueError, match="out of range"):
        model(video, return_hidden_states=[3])


def test_backward_reaches_every_parameter():
    model = tiny().train()
    out = model(torch.randn(2, 3, 4, 42, 42))
    (out.pooled.square().mean() + out.tokens.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_gradient_checkpointing_gives_the_same_gradients():
    video = torch.randn(2, 3, 4, 42, 42)
    grads = []
    for ckpt in (False, True):
        model = tiny(grad_checkpointing=ckpt).train()
        model(video).pooled.sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], msg=k)


def test_drop_path_is_stochastic_in_training_and_off_in_eval():
    model = tiny(drop_path_rate=0.5, depth=3)
    video = torch.randn(4, 3, 4, 42, 42)
    a, b = model(video).tokens, model(video).tokens
    torch.testing.assert_close(a, b)
    model.train()
    torch.manual_seed(0)
    c = model(video).tokens
    assert not torch.allclose(a, c)


def test_bf16_autocast_runs_and_stays_close():
    model = tiny()
    video = torch.randn(1, 3, 4, 42, 42)
    ref = model(video).pooled
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video).pooled
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, rtol=0.1, atol=0.1)


def test_torch_compile_has_no_graph_breaks():
    model = tiny()
    video = torch.randn(1, 3, 4, 42, 42)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(video).pooled, model(video).pooled)


def test_flash_attention_without_the_extra_names_it():
    pytest.importorskip("torch")
    try:
        import flash_attn  # noqa: F401
        pytest.skip("flash-attn is installed")
    except ImportError:
        pass
    model = tiny(attn_impl="flash")
    with pytest.raises(ImportError, match=r"iv2-encoders\[flash\]"):
        model(torch.randn(1, 3, 4, 42, 42))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        VideoEncoderConfig(embed_dim=50, num_heads=4)
    with pytest.raises(TypeError, match="unknown VideoEncoderConfig field"):
        create_model("internvideo2-tiny", not_a_field=1)
    with pytest.raises(KeyError, match="unknown model"):
        create_model("internvideo2-7b")


def test_official_init_rescales_output_projections():
    torch.manual_seed(0)
    model = VideoEncoder(VideoEncoderConfig(**{**TINY, "depth": 8, "embed_dim": 256, "num_heads": 4, "attn_pool_num_heads": 4}))
    stds = [blk.attn.proj.weight.std().item() for blk in model.blocks]
    for i, s in enumerate(stds):
        assert s == pytest.approx(0.02 / math.sqrt(2 * (i + 1)), rel=0.1)
    assert (model.blocks[0].ls1.gamma == 1e-5).all()
    assert model.pos_embed[0, 0].abs().sum() == 0  # class row of the sin-cos table is zero


def test_attention_map_matches_float64_reference():
    """Stage 1's saliency: the pooling head's softmax over keys, averaged over heads, class key dropped."""
    model = tiny()
    video = torch.randn(2, 3, 4, 42, 42)
    out = model(video, return_attention=True)
    _, ref_pooled, ref_attention = reference_forward(model.state_dict(), video, heads=4, pool_heads=3, depth=2,
                                                     patch=14, return_attention=True)
    assert out.attention.shape == (2, 4 * 9)
    torch.testing.assert_close(out.attention.double(), ref_attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.pooled.double(), ref_pooled, rtol=1e-5, atol=1e-5)
    assert model(video).attention is None  # only on request
    # per sample: 1 minus the class token's share
    assert bool((out.attention.sum(1) < 1).all()) and bool((out.attention > 0).all())


def test_attention_map_of_a_masked_clip_covers_the_visible_tokens():
    model = tiny()
    video = torch.randn(2, 3, 4, 42, 42)
    keep_index = torch.stack([torch.randperm(36, generator=torch.Generator().manual_seed(b))[:10].sort().values
                              for b in range(2)])
    mask = torch.ones(2, 36, dtype=torch.bool).scatter_(1, keep_index, False)
    out = model(video, mask, return_attention=True)
    _, _, ref_attention = reference_forward(model.state_dict(), video, heads=4, pool_heads=3, depth=2, patch=14,
                                            keep_index=keep_index, return_attention=True)
    assert out.attention.shape == (2, 10)
    torch.testing.assert_close(out.attention.double(), ref_attention, rtol=1e-5, atol=1e-6)


def test_pooling_head_returns_weights_over_all_keys():
    model = tiny()
    tokens = torch.randn(2, 7, 48)
    pooled, weights = model.clip_projector(tokens, return_weights=True)
    torch.testing.assert_close(pooled, model.clip_projector(tokens))
    assert weights.shape == (2, 7)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))


def test_attention_needs_a_pooling_head():
    model = tiny(pool_head=False)
    with pytest.raises(ValueError, match="return_attention needs the attention-pooling head"):
        model(torch.randn(1, 3, 4, 42, 42), return_attention=True)
