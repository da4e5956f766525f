"""Loading official stage-2 layouts (written from the official source, at tiny sizes) and our own round trips."""

import pytest
import torch
from _align_layout import TINY_BEATS, tiny_official
from _align_reference import beats_forward, bert_fuse, bert_text, f64, mlm_head, vision_forward

from iv2_align import (
    BEATs,
    BEATsConfig,
    convert_official_state_dict,
    create_stage2_model,
    load_beats,
    load_checkpoint,
)
from iv2_encoders import CheckpointError


def random_official_state(layout, seed=0):
    """Random tensors in an official layout, with the official aliases (tied/shared tensors equal)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in sorted(layout.items()):
        fan_in = max(1, torch.Size(shape[1:]).numel()) if len(shape) > 1 else 1
        sd[k] = torch.randn(shape, generator=g) / fan_in**0.5
    sd["temp"] = torch.tensor(0.07)
    sd["text_encoder.bert.embeddings.position_ids"] = torch.arange(40)[None]
    sd["text_encoder.cls.predictions.decoder.weight"] = sd["text_encoder.bert.embeddings.word_embeddings.weight"]
    sd["text_encoder.cls.predictions.decoder.bias"] = sd["text_encoder.cls.predictions.bias"]
    for k in sd:
        if k.endswith("weight_g") or k.endswith("grep_a"):
            sd[k] = sd[k].abs() + 0.5
    rel = "audio_encoder.encoder.layers.{}.self_attn.relative_attention_bias.weight"
    if rel.format(0) in sd:
        sd[rel.format(1)] = sd[rel.format(0)]
    return sd


@pytest.mark.parametrize("audio_visual", [False, True], ids=["1b-style", "6b-style"])
def test_official_tiny_layout_loads_completely_and_computes_officially(audio_visual, tmp_path):
    layout, stage1_heads = tiny_official(audio_visual)
    official = random_official_state({**layout, **stage1_heads})
    path = tmp_path / "official.pth"
    torch.save({"module": official}, path)  # DeepSpeed wrapper
    model = create_stage2_model("internvideo2-stage2-tiny-av" if audio_visual else "internvideo2-stage2-tiny").eval()
    missing, dropped = load_checkpoint(model, path)
    assert missing == [] and dropped == sorted(stage1_heads)
    # the loaded model computes what the official maths computes from those named tensors
    video = torch.randn(2, 3, 4, 56, 56)
    ids = torch.tensor([[2, 5, 9, 7, 0], [2, 11, 12, 13, 14]])
    mask = (ids != 0).long()
    sd = f64(official)
    vision = {k[len("vision_encoder."):]: v for k, v in sd.items() if k.startswith("vision_encoder.")}
    text = {k[len("text_encoder."):]: v for k, v in sd.items() if k.startswith("text_encoder.")}
    ref_tokens, _ = vision_forward(vision, video, heads=4, pool_heads=4)
    if audio_visual:
        from _align_reference import layer_norm, linear

        ref_tokens = layer_norm(linear(ref_tokens, sd, "av_concat_vision_proj.0"), sd["av_concat_vision_proj.1.weight"],
                                sd["av_concat_vision_proj.1.bias"], 1e-5)
        fbank = torch.randn(2, 998, 64)
        audio = {k[len("audio_encoder."):]: v for k, v in sd.items() if k.startswith("audio_encoder.")}
        with torch.no_grad():
            raw = model.audio_encoder(fbank)
        torch.testing.assert_close(raw.double(), beats_forward(audio, fbank, TINY_BEATS | {"max_distance": 32}),
                                   atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        tokens, _ = model.encode_video(video)
        logits = model.mlm_logits(ids, mask, tokens)
    torch.testing.assert_close(tokens.double(), ref_tokens, atol=1e-5, rtol=1e-5)
    ref = mlm_head(text, bert_fuse(text, bert_text(text, ids, mask, 2, 4), mask, ref_tokens, 2, 3, 4))
    torch.testing.assert_close(logits.double(), ref, atol=1e-5, rtol=1e-5)
    assert model.temp.item() == pytest.approx(0.07)


def test_ret_layout_bert_model_form(tmp_path):
    layout, _ = tiny_official(False)
    official = random_official_state(layout)
    ret = {}
    for k, v in official.items():  # mode="ret": BertModel without the .bert level and without the MLM head
        if k.startswith("text_encoder.cls."):
            continue
        ret[k.replace("text_encoder.bert.", "text_encoder.", 1)] = v
    model = create_stage2_model("internvideo2-stage2-tiny")
    missing, dropped = load_checkpoint(model, {f"module.{k}": v for k, v in ret.items()})  # DDP prefix too
    assert dropped == [] and missing and all(k.startswith("text_encoder.cls.") for k in missing)
    torch.testing.assert_close(model.text_encoder.bert.encoder.layer[2].crossattention.self.key.weight,
                               official["text_encoder.bert.encoder.layer.2.crossattention.self.key.weight"])


@pytest.mark.parametrize("wrapper", ["bare", "model", "module"])
def test_round_trip_of_our_checkpoints(tiny_av_model, tmp_path, wrapper):
    sd = tiny_av_model.state_dict()
    path = tmp_path / "ours.pth"
    torch.save(sd if wrapper == "bare" else {wrapper: sd}, path)
    fresh = create_stage2_model("internvideo2-stage2-tiny-av").eval()
    missing, dropped = load_checkpoint(fresh, path)
    assert missing == [] and dropped == []
    video, fbank = torch.randn(1, 3, 4, 56, 56), torch.randn(1, 998, 64)
    with torch.no_grad():
        for a, b in zip(tiny_av_model.encode_audio(fbank) + tiny_av_model.encode_video(video),
                        fresh.encode_audio(fbank) + fresh.encode_video(video)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert fresh.text_encoder.cls.predictions.decoder.weight is fresh.text_encoder.bert.embeddings.word_embeddings.weight


def test_safetensors_without_tied_copies_and_meta_model(tiny_model, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous().clone() for k, v in tiny_model.state_dict().items()
          if k not in ("text_encoder.cls.predictions.decoder.weight", "text_encoder.cls.predictions.decoder.bias")}
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    with torch.device("meta"):
        model = create_stage2_model("internvideo2-stage2-tiny")
    missing, dropped = load_checkpoint(model, path)
    assert missing == [] and dropped == []
    assert not any(p.is_meta for p in model.parameters())
    head = model.text_encoder.cls.predictions
    assert head.decoder.weight is model.text_encoder.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(head.decoder.bias, sd["text_encoder.cls.predictions.bias"])


def test_old_plain_pos_conv_weight(tiny_av_model):
    sd = dict(tiny_av_model.state_dict())
    p = "audio_encoder.encoder.pos_conv.0."
    g, v = sd.pop(p + "weight_g"), sd.pop(p + "weight_v")
    sd[p + "weight"] = v * g / v.norm(dim=(0, 1), keepdim=True)
    fresh = create_stage2_model("internvideo2-stage2-tiny-av").eval()
    missing, dropped = load_checkpoint(fresh, sd)
    assert missing == [] and dropped == []
    fbank = torch.randn(1, 998, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_audio(fbank)[0], tiny_av_model.encode_audio(fbank)[0],
                                   atol=1e-6, rtol=1e-6)


def test_shape_mismatch_and_missing_are_errors(tiny_model):
    sd = dict(tiny_model.state_dict())
    sd["text_proj.weight"] = torch.zeros(8, 32)
    with pytest.raises(CheckpointError, match=r"'text_proj.weight'.*\(8, 32\).*\(16, 32\)"):
        load_checkpoint(create_stage2_model("internvideo2-stage2-tiny"), sd)
    sd = dict(tiny_model.state_dict())
    del sd["itm_head.bias"]
    with pytest.raises(CheckpointError, match="itm_head.bias"):
        load_checkpoint(create_stage2_model("internvideo2-stage2-tiny"), sd)
    missing, _ = load_checkpoint(create_stage2_model("internvideo2-stage2-tiny"), sd, strict=False)
    assert missing == ["itm_head.bias"]
    with pytest.raises(CheckpointError, match="vision_encoder"):
        load_checkpoint(create_stage2_model("internvideo2-stage2-tiny"), {"temp": torch.tensor(0.1)})


def test_stage1_vision_tower_with_8_frames(tiny_model):
    """A stage-1 tower (8 frames) loads into the 4-frame model: the position table is interpolated."""
    sd = dict(tiny_model.state_dict())
    pos = sd["vision_encoder.pos_embed"]
    sd["vision_encoder.pos_embed"] = torch.cat([pos[:, :1], pos[:, 1:].repeat(1, 2, 1)], dim=1)  # 8 frames
    result = load_checkpoint(create_stage2_model("internvideo2-stage2-tiny"), sd, num_frames=8)
    assert result.num_frames == 8 and result.missing == []


def test_unknown_keys_are_reported_not_lost(tiny_model):
    sd = dict(tiny_model.state_dict())
    sd["clip_teacher.blocks.0.weight"] = torch.zeros(2)
    sd["atm_head.weight"] = torch.zeros(2, 32)
    _, dropped = load_checkpoint(create_stage2_model("internvideo2-stage2-tiny"), sd)
    assert dropped == ["atm_head.weight", "clip_teacher.blocks.0.weight"]


def test_load_beats_file(tmp_path):
    beats = BEATs(BEATsConfig(**TINY_BEATS)).eval()
    sd = dict(beats.state_dict())
    g, v = sd.pop("encoder.pos_conv.0.weight_g"), sd.pop("encoder.pos_conv.0.weight_v")
    sd["encoder.pos_conv.0.weight"] = v * g / v.norm(dim=(0, 1), keepdim=True)  # pre-weight-norm layout
    torch.save({"cfg": BEATsConfig(**TINY_BEATS).to_dict(), "model": sd}, tmp_path / "beats.pt")
    loaded = load_beats(tmp_path / "beats.pt").eval()
    fbank = torch.randn(1, 100, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(fbank), beats(fbank), atol=1e-6, rtol=1e-6)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a BEATs checkpoint"):
        load_beats(tmp_path / "bad.pt")


def test_key_mapping_function():
    """The stage-2 specific mapping on its own (phase 2 plugs it into the generic loader)."""
    t = torch.zeros(1)
    official = {
        "module.vision_encoder.blocks.0.ls1.gamma": t,
        "vision_encoder.clip_decoder.0.head.weight": t, "vision_encoder.final_clip_decoder.norm.bias": t,
        "vision_encoder.clip_pos_embed": t, "vision_encoder.clip_img_pos_embed": t,
        "vision_encoder.img_pos_embed": t,
        "text_encoder.encoder.layer.0.attention.self.query.weight": t,  # mode="ret"
        "text_encoder.bert.pooler.dense.weight": t, "clip_teacher.x": t,
        "text_encoder.cls.predictions.bias": t,
        "audio_encoder.encoder.pos_conv.0.weight": torch.ones(4, 2, 3),
        "itm_head.weight": t,
    }
    converted, dropped = convert_official_state_dict(official)
    assert dropped == sorted(["vision_encoder.clip_decoder.0.head.weight", "vision_encoder.final_clip_decoder.norm.bias",
                              "vision_encoder.clip_pos_embed", "vision_encoder.clip_img_pos_embed",
                              "text_encoder.bert.pooler.dense.weight", "clip_teacher.x"])
    assert set(converted) == {
        "vision_encoder.blocks.0.ls1.gamma", "vision_encoder.img_pos_embed",
        "text_encoder.bert.encoder.layer.0.attention.self.query.weight", "text_encoder.cls.predictions.bias",
        "text_encoder.cls.predictions.decoder.bias",  # the tied copy, filled from its source
        "audio_encoder.encoder.pos_conv.0.weight_g", "audio_encoder.encoder.pos_conv.0.weight_v", "itm_head.weight",
    }
    # a plain all-ones (4, 2, 3) kernel: per tap norm over 4 x 2 entries = sqrt(8)
    torch.testing.assert_close(converted["audio_encoder.encoder.pos_conv.0.weight_g"], torch.full((1, 1, 3), 8**0.5))


def test_text_encoder_from_a_pretrained_bert(tmp_path):
    """Stage-2 training starts from bert-large-uncased: everything but the new cross-attention is copied."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=40)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "bert")
    reference = BertForMaskedLM.from_pretrained(tmp_path / "bert").state_dict()
    model = create_stage2_model("internvideo2-stage2-tiny")
    missing, unexpected = model.text_encoder.load_pretrained_bert(str(tmp_path / "bert"))
    assert missing and all(".crossattention." in k for k in missing) and unexpected == []
    ours = model.text_encoder.state_dict()
    for k, v in reference.items():
        torch.testing.assert_close(ours[k], v, msg=k)
    assert (model.text_encoder.cls.predictions.decoder.weight
            is model.text_encoder.bert.embeddings.word_embeddings.weight)
