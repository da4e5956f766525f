import os
import pickle

import pytest
import torch
from _enc_helpers import randomize_
from _enc_official_layout import official_distillation_heads
from safetensors.torch import save_file

from iv2_encoders import (
    CheckpointError,
    VideoEncoder,
    VideoEncoderConfig,
    create_model,
    interpolate_pos_embed,
    load_checkpoint,
    save_checkpoint,
)

CFG = dict(img_size=42, patch_size=14, num_frames=4, embed_dim=48, depth=2, num_heads=4, mlp_ratio=4.0,
           attn_pool_num_heads=4, clip_embed_dim=40)


def build(**kw) -> VideoEncoder:
    return VideoEncoder(VideoEncoderConfig(**{**CFG, **kw})).eval()


@pytest.fixture
def source():
    torch.manual_seed(0)
    return randomize_(build(), seed=3)


def _write(path, obj):
    if path.suffix == ".safetensors":
        save_file(obj, str(path))
    else:
        torch.save(obj, path)
    return path


WRAPPINGS = {
    "bare": lambda sd: sd,
    "module": lambda sd: {"module": sd, "optimizer": None, "epoch": 3},
    "model": lambda sd: {"model": sd, "epoch": 3},
    "state_dict": lambda sd: {"state_dict": sd},
    "model+state_dict": lambda sd: {"model": {"state_dict": sd}},
}
PREFIXES = ["", "module.", "vision_encoder.", "module.vision_encoder."]


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
@pytest.mark.parametrize("prefix", PREFIXES)
def test_round_trip_in_every_wrapping_and_prefix(tmp_path, source, wrapping, prefix):
    sd = {prefix + k: v for k, v in source.state_dict().items()}
    sd[prefix.replace("vision_encoder.", "") + "text_encoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 2)
    path = _write(tmp_path / "ckpt.pt", WRAPPINGS[wrapping](sd))
    target = build()
    missing, dropped = load_checkpoint(target, path)
    assert missing == []
    assert dropped == [prefix.replace("vision_encoder.", "") + "text_encoder.bert.embeddings.word_embeddings.weight"]
    video = torch.randn(1, 3, 4, 42, 42)
    torch.testing.assert_close(target(video).pooled, source(video).pooled, rtol=0, atol=0)


def test_safetensors_and_save_checkpoint_round_trip(tmp_path, source):
    save_checkpoint(source, tmp_path / "enc.safetensors")
    assert not list(tmp_path.glob("*.tmp-*"))
    target = build()
    result = load_checkpoint(target, tmp_path / "enc.safetensors")
    assert result.missing == [] and result.dropped == [] and result.num_frames == 4
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k


def test_distillation_heads_are_dropped_and_reported(tmp_path, source):
    sd = dict(source.state_dict())
    heads = official_distillation_heads(48, num_patches=4 * 9, clip_layers=2, mae_layers=1)
    sd.update({k: torch.zeros(s) for k, s in heads.items()})
    sd["head.weight"] = torch.zeros(10, 48)
    target = build()
    missing, dropped = load_checkpoint(target, _write(tmp_path / "s1.safetensors", sd))
    assert missing == []
    assert sorted(dropped) == sorted([*heads, "head.weight"])


def test_missing_keys_are_reported_with_strict_false(tmp_path, source):
    sd = {k: v for k, v in source.state_dict().items() if not k.startswith(("blocks.1.", "clip_projector."))}
    missing, dropped = load_checkpoint(build(), _write(tmp_path / "tower.pt", {"module": sd}), strict=False)
    assert dropped == []
    assert missing == sorted(k for k in source.state_dict() if k.startswith(("blocks.1.", "clip_projector.")))


def test_a_checkpoint_lacking_a_parameter_is_refused_by_default(tmp_path, source):
    sd = {k: v for k, v in source.state_dict().items() if k != "blocks.1.mlp.fc2.bias"}
    path = _write(tmp_path / "partial.safetensors", sd)
    target = build()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"partial.safetensors: the checkpoint lacks 1 parameter\(s\) the "
                                              r"model needs: blocks.1.mlp.fc2.bias; pass strict=False"):
        load_checkpoint(target, path)
    for k, v in target.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k
    with pytest.raises(CheckpointError, match="partial.safetensors.*blocks.1.mlp.fc2.bias"):
        create_model("internvideo2-tiny", pretrained=path, **CFG)


def test_wrong_shape_names_key_shapes_and_cause(tmp_path):
    other = build(embed_dim=64)
    with pytest.raises(CheckpointError, match=r"big.pt: key 'cls_token' has shape \(1, 1, 64\).*expects \(1, 1, 48\).*model size"):
        load_checkpoint(build(), _write(tmp_path / "big.pt", other.state_dict()))


def test_wrong_size_is_reported_before_any_frame_count_question(tmp_path):
    # another width AND a position table whose frame count would be ambiguous (see the test below): the
    # size mismatch is what the user must hear about
    other = build(embed_dim=64, img_size=84)
    with pytest.raises(CheckpointError, match=r"wide.pt: key '.*' has shape .* but the model expects .*model size"):
        load_checkpoint(build(), _write(tmp_path / "wide.pt", other.state_dict()))
    only_pos = dict(build().state_dict())
    only_pos["pos_embed"] = torch.zeros(1, 1 + 4 * 36, 64)  # width 64 on an otherwise matching checkpoint
    with pytest.raises(CheckpointError, match=r"key 'pos_embed' has shape \(1, 145, 64\) but the model expects "
                                              r"\(1, 37, 48\)"):
        load_checkpoint(build(), only_pos)


def test_missing_file_and_non_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(build(), tmp_path / "nothing.pt")
    (tmp_path / "notes.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(build(), tmp_path / "notes.pt")
    torch.save({"text_encoder.x": torch.zeros(1)}, tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="no vision encoder"):
        load_checkpoint(build(), tmp_path / "text.pt")


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("random.safetensors", os.urandom(4000), r"random.safetensors: not a readable safetensors file \(.*header"),
    ("empty.safetensors", b"", r"empty.safetensors: the file is empty \(0 bytes\)"),
    ("empty.pt", b"", r"empty.pt: the file is empty \(0 bytes\)"),
    ("random.pt", os.urandom(4000), r"random.pt: cannot be read as a torch checkpoint"),
    ("truncated.pt", None, r"truncated.pt: cannot be read as a torch checkpoint"),
])
def test_unreadable_files_are_errors_naming_the_file(tmp_path, source, name, content, expected):
    path = tmp_path / name
    if content is None:  # a real torch zip archive cut in half
        torch.save(source.state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as info:
        load_checkpoint(build(), path)
    # never torch's advice to load untrusted pickles with weights_only=False
    assert "weights_only=False" not in str(info.value) and "weights_only` set to `False" not in str(info.value)


class _Evil:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_torch_files_are_loaded_with_weights_only(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"model": source.state_dict(), "extra": _Evil()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(build(), path)
    assert not (tmp_path / "PWNED").exists()


def test_position_embedding_interpolated_in_time_from_inferred_frame_count(tmp_path):
    src = build(num_frames=2)
    randomize_(src, seed=5)
    target = build(num_frames=4)
    result = load_checkpoint(target, _write(tmp_path / "f2.pt", src.state_dict()))
    assert result.num_frames == 2
    expected = interpolate_pos_embed(src.pos_embed.detach(), (2, 3, 3), (4, 3, 3))
    torch.testing.assert_close(target.pos_embed.detach(), expected)


def test_position_embedding_interpolated_in_space(tmp_path):
    src = build(img_size=28)
    randomize_(src, seed=6)
    target = build(img_size=42)
    result = load_checkpoint(target, _write(tmp_path / "s28.pt", src.state_dict()))
    assert result.num_frames == 4
    expected = interpolate_pos_embed(src.pos_embed.detach(), (4, 2, 2), (4, 3, 3))
    torch.testing.assert_close(target.pos_embed.detach(), expected)


def test_ambiguous_frame_count_asks_for_num_frames(tmp_path):
    # 4 frames of 6x6 = 144 rows into a 4-frame 3x3 model: the spatial rule reads 16 frames of 3x3, the
    # frame rule 4 frames of 6x6 -> ambiguous.
    src = build(num_frames=4, img_size=84)
    target = build(num_frames=4, img_size=42)
    path = _write(tmp_path / "amb.pt", src.state_dict())
    with pytest.raises(CheckpointError, match="num_frames"):
        load_checkpoint(target, path)
    load_checkpoint(target, path, num_frames=4)
    expected = interpolate_pos_embed(src.pos_embed.detach(), (4, 6, 6), (4, 3, 3))
    torch.testing.assert_close(target.pos_embed.detach(), expected)


def test_image_position_table_is_decided_by_the_config_not_the_file(tmp_path, source):
    sd = dict(source.state_dict())
    sd["img_pos_embed"] = torch.randn(1, 1 + 9, 48)
    path = _write(tmp_path / "img.pt", sd)
    target = build()  # no image table: the checkpoint's is dropped and reported, the architecture unchanged
    missing, dropped = load_checkpoint(target, path)
    assert missing == [] and dropped == ["img_pos_embed"]
    assert target.img_pos_embed is None and not target.cfg.sep_image_video_pos_embed
    with_table = build(sep_image_video_pos_embed=True)
    assert tuple(load_checkpoint(with_table, path)) == ([], [])
    torch.testing.assert_close(with_table.img_pos_embed.detach(), sd["img_pos_embed"])
    # the image table is resampled in space like the video table
    small = build(sep_image_video_pos_embed=True, img_size=28)
    load_checkpoint(small, path, num_frames=4)
    torch.testing.assert_close(small.img_pos_embed.detach(),
                               interpolate_pos_embed(sd["img_pos_embed"], (1, 3, 3), (1, 2, 2)))
    # a model with an image table and a checkpoint without one: missing, refused by default
    with pytest.raises(CheckpointError, match="lacks 1 parameter.*img_pos_embed"):
        load_checkpoint(build(sep_image_video_pos_embed=True), source.state_dict())


def test_load_into_meta_model_assigns_real_tensors(tmp_path, source):
    path = _write(tmp_path / "m.safetensors", source.state_dict())
    with torch.device("meta"):
        target = build()
    load_checkpoint(target, path)
    assert not any(p.is_meta for p in target.parameters())
    video = torch.randn(1, 3, 4, 42, 42)
    torch.testing.assert_close(target(video).pooled, source(video).pooled)


def test_create_model_with_pretrained_path(tmp_path, source):
    save_checkpoint(source, tmp_path / "w.safetensors")
    model = create_model("internvideo2-tiny", pretrained=tmp_path / "w.safetensors", **{
        k: v for k, v in CFG.items()})
    video = torch.randn(1, 3, 4, 42, 42)
    torch.testing.assert_close(model.eval()(video).pooled, source(video).pooled)
    with pytest.raises(FileNotFoundError, match="not-here"):
        create_model("internvideo2-tiny", pretrained=tmp_path / "not-here.pt")


def test_vision_tower_inside_a_chat_checkpoint(tmp_path, source):
    """IV2-chat builds depth-1 blocks, no pooling head, a separate image table, under ``vision_encoder.``
    beside the QFormer, the projection and the LLM. Into a full (pooling, deeper) model it loads only with
    strict=False, reporting what it lacks."""
    sd = {"vision_encoder." + k: v for k, v in source.state_dict().items()
          if not k.startswith(("blocks.1.", "clip_projector."))}
    sd["vision_encoder.img_pos_embed"] = torch.randn(1, 1 + 9, 48)
    others = ["vision_layernorm.weight", "qformer.bert.encoder.layer.0.attention.self.query.weight",
              "query_tokens", "project_up.weight", "lm.model.layers.0.self_attn.q_proj.weight"]
    sd.update({k: torch.zeros(2, 2) for k in others})
    path = _write(tmp_path / "chat.safetensors", sd)
    with pytest.raises(CheckpointError, match="chat.safetensors: the checkpoint lacks"):
        load_checkpoint(build(sep_image_video_pos_embed=True), path)
    target = build(sep_image_video_pos_embed=True)
    result = load_checkpoint(target, path, strict=False)
    assert result.prefix == "vision_encoder."
    assert sorted(result.dropped) == sorted(others)
    assert result.missing == sorted(k for k in source.state_dict() if k.startswith(("blocks.1.", "clip_projector.")))
    torch.testing.assert_close(target.img_pos_embed.detach(), sd["vision_encoder.img_pos_embed"])
    torch.testing.assert_close(target.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_chat_tower_layerscale_names_load_both_ways(source):
    """The InternVideo2-Chat tower stores LayerScale as bare ``blocks.N.ls1`` (REFERENCE o, stage 3)."""
    gamma_sd = source.state_dict()
    bare_sd = {k.removesuffix(".gamma"): v for k, v in gamma_sd.items()}  # the chat checkpoint's names
    assert "blocks.0.ls1" in bare_sd and "blocks.1.ls2" in bare_sd

    chat_tower = build(layerscale_keys="bare")
    own = chat_tower.state_dict()
    assert set(own) == set(bare_sd), "a bare-layout model's state dict uses the chat checkpoint's names"

    for target in (build(), build(layerscale_keys="bare")):
        for sd in (gamma_sd, bare_sd):
            missing, dropped = load_checkpoint(target, {f"vision_encoder.{k}": v for k, v in sd.items()})
            assert missing == [] and dropped == []
            for block, ref in zip(target.blocks, source.blocks):
                assert torch.equal(block.ls1.gamma, ref.ls1.gamma) and torch.equal(block.ls2.gamma, ref.ls2.gamma)

    nested = torch.nn.Module()
    nested.vision_encoder = chat_tower
    keys = nested.state_dict()
    assert "vision_encoder.blocks.0.ls1" in keys and "vision_encoder.blocks.0.ls1.gamma" not in keys
    nested.load_state_dict(keys)  # the renaming hooks work under a parent's prefix


def test_layerscale_keys_is_validated():
    with pytest.raises(ValueError, match="layerscale_keys"):
        build(layerscale_keys="weight")
