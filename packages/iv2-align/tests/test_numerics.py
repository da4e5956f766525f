"""Every model output against the independent float64 reference (tiny sizes, float32 model, 1e-5)."""

import pytest
import torch
from _align_reference import (
    beats_forward,
    bert_fuse,
    bert_text,
    f64,
    layer_norm,
    linear,
    mlm_head,
    vision_forward,
)

ATOL = 1e-5


def _sub(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _close(ours, ref, atol=ATOL):
    assert ours.shape == ref.shape
    err = (ours.double() - ref).abs().max().item()
    assert err < atol, f"max abs error {err:.2e}"


def _text_inputs(batch=3, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (batch, length), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones(batch, length, dtype=torch.long)
    for row, keep in ((1, 6), (2, 3)):  # padded captions
        if row < batch:
            mask[row, keep:] = 0
    ids[mask == 0] = 0
    return ids, mask


def _video(batch=2, frames=4, seed=0):
    return torch.randn(batch, 3, frames, 56, 56, generator=torch.Generator().manual_seed(seed))


def _vision_ref(model, video, keep=None):
    sd = f64(_sub(model.state_dict(), "vision_encoder."))
    cfg = model.cfg.vision
    return vision_forward(sd, video, heads=cfg.num_heads, pool_heads=cfg.attn_pool_num_heads, keep=keep)


@pytest.mark.parametrize("frames", [4, 1], ids=["video", "image"])
def test_encode_video(tiny_model, frames):
    video = _video(frames=frames)
    with torch.no_grad():
        tokens, pooled = tiny_model.encode_video(video)
    ref_tokens, ref_pooled = _vision_ref(tiny_model, video)
    _close(tokens, ref_tokens)
    _close(pooled, ref_pooled)


def test_encode_video_masked(tiny_model):
    video = _video()
    n = tiny_model.vision_encoder.cfg.num_patches
    g = torch.Generator().manual_seed(3)
    keep = torch.stack([torch.randperm(n, generator=g)[: n - int(0.8 * n)].sort().values for _ in range(2)])
    mask = torch.ones(2, n, dtype=torch.bool)
    mask.scatter_(1, keep, False)
    with torch.no_grad():
        tokens, pooled = tiny_model.encode_video(video, mask)
    ref_tokens, ref_pooled = _vision_ref(tiny_model, video, keep=keep)
    assert tokens.shape[1] == 1 + n - int(0.8 * n)
    _close(tokens, ref_tokens)
    _close(pooled, ref_pooled)


def test_encode_text_fuse_mlm_itm(tiny_model):
    ids, mask = _text_inputs()
    media = torch.randn(3, 11, tiny_model.cfg.encoder_width)
    sd = f64(_sub(tiny_model.state_dict(), "text_encoder."))
    heads, fusion, layers = 4, tiny_model.cfg.fusion_layer, 3
    with torch.no_grad():
        text_tokens, cls = tiny_model.encode_text(ids, mask)
        fused = tiny_model.fuse(media, text_tokens, mask)
        logits = tiny_model.mlm_logits(ids, mask, media)
        itm = tiny_model.match_logits(media, text_tokens, mask)
    ref_text = bert_text(sd, ids, mask, fusion, heads)
    ref_fused = bert_fuse(sd, ref_text, mask, media, fusion, layers, heads)
    _close(text_tokens, ref_text)
    _close(cls, ref_text[:, 0])
    _close(fused, ref_fused)
    _close(logits, mlm_head(sd, ref_fused))
    _close(itm, linear(ref_fused[:, 0], f64(tiny_model.state_dict()), "itm_head"))


def test_padding_does_not_change_real_tokens(tiny_model):
    """The additive -10000 mask: appending padding leaves the real positions' outputs as they were."""
    ids, mask = _text_inputs(batch=1, length=5)
    long_ids = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    long_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.long)], 1)
    media = torch.randn(1, 7, tiny_model.cfg.encoder_width)
    with torch.no_grad():
        short = tiny_model.mlm_logits(ids, mask, media)
        long = tiny_model.mlm_logits(long_ids, long_mask, media)
    torch.testing.assert_close(long[:, :5], short, atol=1e-5, rtol=0)


def test_projections_and_embeddings(tiny_model):
    video = _video()
    ids, mask = _text_inputs()
    sd = f64(tiny_model.state_dict())
    _, ref_pooled = _vision_ref(tiny_model, video)
    ref_text = bert_text(f64(_sub(tiny_model.state_dict(), "text_encoder.")), ids, mask, 2, 4)
    ref_v = linear(ref_pooled, sd, "vision_proj")
    ref_t = linear(ref_text[:, 0], sd, "text_proj")
    _close(tiny_model.embed_video(video), ref_v / ref_v.norm(dim=-1, keepdim=True))
    _close(tiny_model.embed_text(ids, mask), ref_t / ref_t.norm(dim=-1, keepdim=True))


def _beats_cfg(model):
    return model.cfg.audio.to_dict()


def test_beats_tokens(tiny_av_model):
    fbank = torch.randn(2, 998, 64, generator=torch.Generator().manual_seed(5))
    beats = tiny_av_model.audio_encoder
    with torch.no_grad():
        tokens = beats(fbank)
    assert tokens.shape == (2, 62 * 4, 32)  # the (998, 64) fbank gives 62 x 4 = 248 time-major tokens
    ref = beats_forward(f64(beats.state_dict()), fbank, _beats_cfg(tiny_av_model))
    _close(tokens, ref)


def test_beats_pre_ln_variant():
    from _align_helpers import randomize_

    from iv2_align import BEATs, BEATsConfig

    cfg = BEATsConfig(input_patch_size=4, embed_dim=8, encoder_layers=2, encoder_embed_dim=8,
                      encoder_ffn_embed_dim=16, encoder_attention_heads=2, conv_pos=5, conv_pos_groups=2,
                      layer_norm_first=True, dropout=0.0, attention_dropout=0.0)
    beats = randomize_(BEATs(cfg)).eval()
    fbank = torch.randn(1, 24, 8)
    sd = f64(beats.state_dict())
    # pre-LN (layer_norm_first): x + attn(LN(x)), x + FFN(LN(x)), final LayerNorm; no relative bias
    from _align_reference import gelu, heads_merge, heads_split, softmax
    x = torch.nn.functional.conv2d(fbank.double()[:, None], sd["patch_embedding.weight"], stride=4)
    x = layer_norm(x.flatten(2).transpose(1, 2), sd["layer_norm.weight"], sd["layer_norm.bias"], 1e-5)
    v, g = sd["encoder.pos_conv.0.weight_v"], sd["encoder.pos_conv.0.weight_g"]
    w = v * g / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
    x = x + gelu(torch.nn.functional.conv1d(x.transpose(1, 2), w, sd["encoder.pos_conv.0.bias"], padding=2,
                                            groups=2)).transpose(1, 2)
    for i in range(2):
        p = f"encoder.layers.{i}."
        h = layer_norm(x, sd[p + "self_attn_layer_norm.weight"], sd[p + "self_attn_layer_norm.bias"], 1e-5)
        q, k, vv = (heads_split(linear(h, sd, p + f"self_attn.{n}_proj"), 2) for n in ("q", "k", "v"))
        x = x + linear(heads_merge(softmax(q @ k.transpose(-1, -2) / 2.0) @ vv), sd, p + "self_attn.out_proj")
        h = layer_norm(x, sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"], 1e-5)
        x = x + linear(gelu(linear(h, sd, p + "fc1")), sd, p + "fc2")
    x = layer_norm(x, sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"], 1e-5)
    with torch.no_grad():
        _close(beats(fbank), x)


def test_audio_visual_model(tiny_av_model):
    m = tiny_av_model
    video, fbank = _video(), torch.randn(2, 998, 64, generator=torch.Generator().manual_seed(6))
    ids, mask = _text_inputs(batch=2)
    sd = f64(m.state_dict())
    with torch.no_grad():
        v_tokens, v_pooled = m.encode_video(video)
        a_tokens, a_pooled = m.encode_audio(fbank)
        text_tokens, _ = m.encode_text(ids, mask)
        av_tokens = torch.cat([a_tokens, v_tokens], dim=1)
        avtm = m.match_logits(av_tokens, text_tokens, mask, head="avtm")
        av_feat = m.audio_video_features(a_pooled, v_pooled)
    # vision tokens are projected (Linear + LayerNorm, class token included) in every encode_video call
    ref_v, ref_vp = _vision_ref(m, video)
    ref_v = layer_norm(linear(ref_v, sd, "av_concat_vision_proj.0"), sd["av_concat_vision_proj.1.weight"],
                       sd["av_concat_vision_proj.1.bias"], 1e-5)
    _close(v_tokens, ref_v)
    # audio pooled = mean of the raw BEATs tokens; tokens after av_concat_audio_proj
    raw = beats_forward(f64(m.audio_encoder.state_dict()), fbank, _beats_cfg(m))
    _close(a_pooled, raw.mean(1))
    _close(a_tokens, layer_norm(linear(raw, sd, "av_concat_audio_proj.0"), sd["av_concat_audio_proj.1.weight"],
                                sd["av_concat_audio_proj.1.bias"], 1e-5))
    # av_fusion on [audio_proj, vision_proj]
    _close(av_feat, linear(torch.cat([linear(raw.mean(1), sd, "audio_proj"), linear(ref_vp, sd, "vision_proj")], -1),
                           sd, "av_fusion"))
    # AVTM: fusion layers over [audio (248), vision] tokens, then avtm_head
    tsd = f64(_sub(m.state_dict(), "text_encoder."))
    ref_text = bert_text(tsd, ids, mask, 2, 4)
    ref_media = torch.cat([layer_norm(linear(raw, sd, "av_concat_audio_proj.0"), sd["av_concat_audio_proj.1.weight"],
                                      sd["av_concat_audio_proj.1.bias"], 1e-5), ref_v], 1)
    ref_fused = bert_fuse(tsd, ref_text, mask, ref_media, 2, 3, 4)
    _close(avtm, linear(ref_fused[:, 0], sd, "avtm_head"))


def test_input_errors(tiny_model):
    ids, mask = _text_inputs()
    with pytest.raises(ValueError, match="encoder_width"):
        tiny_model.fuse(torch.randn(3, 5, 7), tiny_model.encode_text(ids, mask)[0], mask)
    with pytest.raises(ValueError, match="same"):
        tiny_model.encode_text(ids, mask[:, :4])
    with pytest.raises(ValueError, match="audio-visual"):
        tiny_model.encode_audio(torch.randn(1, 998, 64))
    with pytest.raises(ValueError, match="head"):
        tiny_model.match_head("xtm")
