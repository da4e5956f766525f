"""The InternVideo2-Chat vision tower: its checkpoint layout (bare LayerScale names under ``vision_encoder.``,
no pooling head, an image table) and its run-time position interpolation, against the independent float64
reference (tests/_enc_reference.py) to 1e-5."""

import pytest
import torch
from _enc_official_layout import CHAT_MODEL_OTHER_KEYS, official_chat_tower_layout
from _enc_reference import reference_forward
from safetensors.torch import save_file

from iv2_encoders import VideoEncoder, VideoEncoderConfig, load_checkpoint

HEADS, DEPTH, PATCH = 4, 3, 14
TOWER = dict(img_size=42, patch_size=PATCH, num_frames=4, embed_dim=48, depth=DEPTH, num_heads=HEADS, mlp_ratio=4.0,
             pool_head=False, sep_image_video_pos_embed=True, layerscale_keys="bare",
             interpolate_pos_embed_at_runtime=True)
TOL = dict(rtol=1e-5, atol=1e-5)


def official_chat_state(seed=0) -> dict[str, torch.Tensor]:
    """Random weights in the official chat-tower layout (official names), at sensible scales."""
    g = torch.Generator().manual_seed(seed)
    layout = official_chat_tower_layout(48, DEPTH, 192, num_patches=4 * 9, img_patches=9, patch=PATCH)
    state = {}
    for name, shape in layout.items():
        if name.endswith(("ls1", "ls2")):
            state[name] = 0.5 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("norm.weight") or ".norm" in name:
            state[name] = 1.0 + 0.2 * torch.randn(shape, generator=g)
        else:
            state[name] = 0.2 * torch.randn(shape, generator=g) / max(1, shape[-1]) ** 0.25
    return state


def chat_checkpoint(state, layout="bare") -> dict[str, torch.Tensor]:
    """A chat-model checkpoint: the tower under ``vision_encoder.`` (LayerScale named as ``layout``)."""
    tower = {(k + ".gamma" if layout == "gamma" and k.endswith(("ls1", "ls2")) else k): v for k, v in state.items()}
    ckpt = {"vision_encoder." + k: v for k, v in tower.items()}
    ckpt.update({k: torch.zeros(2, 3) for k in CHAT_MODEL_OTHER_KEYS})
    return ckpt


def video(frames, size, batch=2, seed=1):
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def reference(state, clip, **kw):
    return reference_forward(state, clip, heads=HEADS, pool_heads=0, depth=DEPTH, patch=PATCH, layerscale="bare",
                             image_pos="img_pos_embed", built_grid=(4, 3, 3), **kw)[0]


@pytest.mark.parametrize("checkpoint_layout", ["bare", "gamma"])
@pytest.mark.parametrize("model_layout", ["bare", "gamma"])
def test_chat_checkpoint_equals_float64_reference(tmp_path, checkpoint_layout, model_layout):
    state = official_chat_state()
    path = tmp_path / "chat.safetensors"
    save_file(chat_checkpoint(state, checkpoint_layout), str(path))
    model = VideoEncoder(VideoEncoderConfig(**{**TOWER, "layerscale_keys": model_layout})).eval()
    result = load_checkpoint(model, path)
    assert result.missing == [] and result.prefix == "vision_encoder."
    assert sorted(result.dropped) == sorted(CHAT_MODEL_OTHER_KEYS)
    clip = video(4, 42)
    out = model(clip)
    assert out.pooled is None and out.tokens.shape == (2, 1 + 4 * 9, 48)
    torch.testing.assert_close(out.tokens.double(), reference(state, clip), **TOL)
    image = video(1, 42)  # T = 1: the tower's own image table
    torch.testing.assert_close(model(image).tokens.double(), reference(state, image), **TOL)
    if model_layout == "bare":  # the tower's own state dict is in the chat layout again
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in
                                                                             state.items()}


@pytest.mark.parametrize(("frames", "size"), [(8, 42), (2, 42), (6, 56), (4, 28), (1, 56), (3, 70)],
                         ids=["more-frames", "fewer-frames", "frames-and-size", "smaller", "image-larger",
                              "odd-frames-larger"])
def test_runtime_interpolation_equals_float64_reference(frames, size):
    """Other frame counts and sizes than built: linear in time, bicubic in space, class row kept (the
    reference resamples with its own interpolation matrices); an image at another size resamples the
    image table in space."""
    state = official_chat_state(seed=2)
    model = VideoEncoder(VideoEncoderConfig(**TOWER)).eval()
    load_checkpoint(model, chat_checkpoint(state))
    clip = video(frames, size, seed=frames + size)
    out = model(clip)
    assert out.tokens.shape == (2, 1 + frames * (size // PATCH) ** 2, 48)
    torch.testing.assert_close(out.tokens.double(), reference(state, clip), **TOL)


def test_runtime_interpolation_keeps_masks_and_gradients():
    state = official_chat_state(seed=3)
    model = VideoEncoder(VideoEncoderConfig(**TOWER)).train()
    load_checkpoint(model, chat_checkpoint(state))
    clip = video(6, 56, batch=1)
    n = 6 * 16
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:30].sort().values
    mask = torch.ones(1, n, dtype=torch.bool)
    mask[0, keep] = False
    out = model(clip, mask)
    torch.testing.assert_close(out.tokens.double(), reference(state, clip, keep_index=keep[None]), **TOL)
    out.tokens.sum().backward()
    assert model.pos_embed.grad is not None and model.pos_embed.grad.abs().sum() > 0  # through the resampling


def test_without_the_switch_other_grids_are_errors():
    model = VideoEncoder(VideoEncoderConfig(**{**TOWER, "interpolate_pos_embed_at_runtime": False}))
    with pytest.raises(ValueError, match="built for 4 frames.*interpolate_pos_embed_at_runtime=True"):
        model(video(6, 42))
    with pytest.raises(ValueError, match="built for 42x42 frames.*interpolate_pos_embed_at_runtime=True"):
        model(video(4, 56))
    with pytest.raises(ValueError, match="not a \\(non-zero\\) multiple of the patch size 14"):
        VideoEncoder(VideoEncoderConfig(**TOWER))(video(4, 50))
