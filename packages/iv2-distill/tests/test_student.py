"""DistillStudent: official key layouts (meta), initialisation, forward vs an independent float64 reference,
export of the encoder keys, checkpoint loading."""

import math

import pytest
import torch
from _distill_official_layout import OFFICIAL_COUNTS, SIZES, official_layout
from _distill_reference import randomize_, student_reference

from iv2_distill import (
    DistillHeadsConfig,
    DistillStudent,
    create_student,
    load_checkpoint,
    random_mask,
    return_layer_indices,
)
from iv2_encoders import CheckpointError, VideoEncoder, VideoEncoderConfig, save_checkpoint
from iv2_encoders import load_checkpoint as load_encoder_checkpoint

TINY = dict(img_size=28, patch_size=14, num_frames=4, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0,
            attn_pool_num_heads=2, clip_embed_dim=24)


def tiny_student(decoder="linear", mae=True, final=True, seed=0):
    heads = DistillHeadsConfig(
        clip_teacher_embed_dim=20, clip_teacher_final_dim=12 if final else 0, clip_return_layer=2,
        clip_decoder=decoder, mae_teacher_embed_dim=16 if mae else 0, mae_return_layer=2 if mae else 0,
    )
    return randomize_(DistillStudent(VideoEncoderConfig(**TINY), heads), seed)


# ----------------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("name", sorted(SIZES))
def test_full_size_key_layout_matches_the_official_one_on_meta(name):
    with torch.device("meta"):
        student = create_student(name)
    assert all(p.is_meta for p in student.parameters())  # nothing allocated
    got = {k: tuple(v.shape) for k, v in student.state_dict().items()}
    want = official_layout(name)
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert got == want


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_full_size_key_and_parameter_counts_match_reference(name):
    with torch.device("meta"):
        student = create_student(name)
    sd = student.state_dict()
    keys, params = OFFICIAL_COUNTS[name]
    assert len(sd) == keys
    assert sum(v.numel() for v in sd.values()) == params
    assert sum(math.prod(s) for s in official_layout(name).values()) == params


def test_small_models_have_mlp_heads_and_no_mae_parts():
    with torch.device("meta"):
        student = create_student("internvideo2-b14")
    keys = student.state_dict().keys()
    assert "clip_decoder.0.head.2.weight" in keys and "final_clip_decoder.head.0.weight" in keys
    assert not any(k.startswith(("mae_decoder", "mae_pos_embed")) for k in keys)
    assert student.state_dict()["clip_decoder.5.head.2.weight"].shape == (1408, 768)


@pytest.mark.parametrize(("name", "clip", "mae"), [
    ("internvideo2-s14", list(range(6, 12)), []),
    ("internvideo2-b14", list(range(6, 12)), []),
    ("internvideo2-l14", list(range(18, 24)), []),
    ("internvideo2-1b", list(range(34, 40)), list(range(36, 40))),
    ("internvideo2-6b", list(range(42, 48)), list(range(44, 48))),
])
def test_tapped_blocks_follow_the_official_interval_rule(name, clip, mae):
    with torch.device("meta"):
        student = create_student(name)
    assert student.clip_return_index == clip and student.mae_return_index == mae


def test_teacher_interval_rule_reproduces_the_s_b_l_teacher_blocks():
    # REFERENCE a: 6 layers of the 40-block 1B teacher at interval 3.34 -> blocks 39, 36, 33, 29, 26, 23
    assert return_layer_indices(40, 6, 3.34) == [23, 26, 29, 33, 36, 39]
    assert return_layer_indices(48, 6, 1) == [42, 43, 44, 45, 46, 47]  # InternViT-6B
    with pytest.raises(ValueError, match="distinct"):
        return_layer_indices(12, 3, 0.5)  # 11, 11, 10: duplicates
    with pytest.raises(ValueError, match=">= 0"):
        return_layer_indices(4, 6, 1.0)


def test_create_student_routes_overrides_and_names_unknown_fields():
    with torch.device("meta"):
        student = create_student("internvideo2-1b", num_frames=4, clip_return_layer=2, mae_teacher_embed_dim=0)
    assert student.cfg.num_frames == 4 and student.pos_embed.shape == (1, 1 + 4 * 256, 1408)
    assert student.clip_return_index == [38, 39] and student.mae_decoder is None
    with pytest.raises(TypeError, match="not_a_field"):
        create_student("internvideo2-tiny", not_a_field=1)
    with pytest.raises(KeyError, match="registered"):
        create_student("internvideo2-xxl")
    with pytest.raises(ValueError, match="clip_norm_type"):
        DistillHeadsConfig(clip_norm_type="l1")  # the official heads raise on anything but l2/none


# -------------------------------------------------------------------------------------------------- init
def test_heads_are_initialised_as_the_official_model_ends_up():
    torch.manual_seed(0)
    student = DistillStudent(VideoEncoderConfig(**TINY), DistillHeadsConfig(
        clip_teacher_embed_dim=2048, clip_teacher_final_dim=1024, clip_return_layer=2, mae_teacher_embed_dim=2048,
        mae_return_layer=1))
    # trunc-normal(0.02), zero bias: the model-wide _init_weights runs after the heads' own Xavier init
    # (Xavier-uniform of a (2048, 32) weight would have std sqrt(2 / 2080) = 0.031)
    for name in ("clip_decoder.0.head", "final_clip_decoder.head", "mae_decoder.0.head.2"):
        w = student.get_submodule(name).weight
        assert abs(w.std().item() - 0.02) < 0.001, name
        assert torch.count_nonzero(student.get_submodule(name).bias) == 0
    assert torch.equal(student.clip_decoder[1].norm.weight, torch.ones(2048))
    # the heads' position tables start as the encoder's sin-cos table (mae: without the class row)
    assert torch.equal(student.clip_pos_embed, student.pos_embed)
    assert torch.equal(student.mae_pos_embed, student.pos_embed[:, 1:])
    assert {"clip_pos_embed", "mae_pos_embed", "pos_embed", "cls_token"} <= student.no_weight_decay()


# ----------------------------------------------------------------------------------------------- forward
@pytest.mark.parametrize(("decoder", "mae", "final"), [("linear", True, True), ("mlp", False, True),
                                                       ("linear", True, False)])
def test_forward_matches_the_float64_reference(decoder, mae, final):
    student = tiny_student(decoder, mae, final).eval()
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, 4, 28, 28, generator=g)
    mask = random_mask(2, student.cfg.grid_size, 0.5, generator=g)  # 16 tokens, 8 dropped per sample
    out = student(video, mask)
    keep = torch.stack([torch.nonzero(~m)[:, 0] for m in mask])
    ref_middle, ref_final, ref_mae = student_reference(
        student.state_dict(), video, keep, heads=4, pool_heads=2, clip_index=[1, 2],
        mae_index=[1, 2] if mae else [], kind=decoder)
    assert out.clip_middle.shape == (2, 2, 1 + 8, 20)
    torch.testing.assert_close(out.clip_middle.double(), ref_middle, rtol=0, atol=1e-5)
    if final:
        torch.testing.assert_close(out.clip_final.double(), ref_final, rtol=0, atol=1e-5)
    else:
        assert out.clip_final is None
    if mae:
        assert out.mae.shape == (2, 2, 8, 16)
        torch.testing.assert_close(out.mae.double(), ref_mae, rtol=0, atol=1e-5)
    else:
        assert out.mae is None


def test_unmasked_forward_equals_an_all_visible_mask_and_outputs_are_unit_vectors():
    student = tiny_student().eval()
    video = torch.randn(1, 3, 4, 28, 28)
    a = student(video)
    b = student(video, torch.zeros(1, 16, dtype=torch.bool))
    torch.testing.assert_close(a.clip_middle, b.clip_middle)
    for t in (a.clip_middle, a.clip_final, a.mae):
        torch.testing.assert_close(t.norm(dim=-1), torch.ones(t.shape[:-1]))


def test_bad_masks_are_refused():
    student = tiny_student()
    video = torch.randn(2, 3, 4, 28, 28)
    uneven = torch.zeros(2, 16, dtype=torch.bool)
    uneven[0, :3] = True
    with pytest.raises(ValueError, match="same number"):
        student(video, uneven)
    with pytest.raises(ValueError, match="mask must be bool"):
        student(video, torch.zeros(2, 17, dtype=torch.bool))


def test_gradients_reach_encoder_and_every_head():
    student = tiny_student()
    out = student(torch.randn(2, 3, 4, 28, 28), random_mask(2, (4, 2, 2), 0.5))
    (out.clip_middle.sum() + out.clip_final.sum() + out.mae.sum()).backward()
    no_grad = [n for n, p in student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


# ------------------------------------------------------------------------------------------------ export
def test_encoder_state_dict_loads_into_the_plain_encoder_with_nothing_missing(tmp_path):
    student = tiny_student()
    encoder_keys = student.encoder_state_dict()
    assert not any(k.startswith(("clip_decoder", "final_clip_decoder", "mae_", "clip_pos")) for k in encoder_keys)
    save_checkpoint(student.to_encoder(), tmp_path / "encoder.safetensors")
    encoder = VideoEncoder(student.cfg)
    missing, dropped = load_encoder_checkpoint(encoder, tmp_path / "encoder.safetensors")
    assert missing == [] and dropped == []
    video = torch.randn(1, 3, 4, 28, 28)
    torch.testing.assert_close(encoder(video).pooled, student.encode(video).pooled)
    # the full student file (heads included) also loads into the encoder: heads reported as dropped
    save_checkpoint(student, tmp_path / "student.safetensors")
    missing, dropped = load_encoder_checkpoint(VideoEncoder(student.cfg), tmp_path / "student.safetensors")
    assert missing == [] and "clip_decoder.0.head.weight" in dropped and "mae_pos_embed" in dropped


# -------------------------------------------------------------------------------------------- checkpoints
def official_state_dict(student, seed=0):
    """Random tensors in the official layout of the tiny student (shapes from its own layout)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in student.state_dict().items()}


@pytest.mark.parametrize("wrap", ["bare", "module", "model", "module_prefix", "safetensors"])
def test_official_checkpoint_loads_with_nothing_missing_and_round_trips(tmp_path, wrap):
    student = tiny_student()
    sd = official_state_dict(student)
    if wrap == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "ckpt.safetensors"
        save_file(sd, str(path))
    else:
        obj = {"bare": sd, "module": {"module": sd, "epoch": 3}, "model": {"model": sd},
               "module_prefix": {f"module.{k}": v for k, v in sd.items()}}[wrap]
        path = tmp_path / "ckpt.pth"
        torch.save(obj, path)
    fresh = tiny_student(seed=5)
    missing, dropped = load_checkpoint(fresh, path)
    assert missing == [] and dropped == []
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_heads_the_student_lacks_are_reported_as_dropped_and_missing_heads_as_missing():
    with_mae = tiny_student(mae=True)
    without = tiny_student(mae=False)
    missing, dropped = load_checkpoint(without, with_mae.state_dict())
    assert missing == [] and dropped and all(k.startswith(("mae_decoder", "mae_pos_embed")) for k in dropped)
    # strict by default: a student key the file lacks is an error naming it
    with pytest.raises(CheckpointError, match=r"lacks .*mae_decoder"):
        load_checkpoint(with_mae, without.state_dict())
    result = load_checkpoint(with_mae, without.state_dict(), strict=False)
    assert result.missing and all(k.startswith(("mae_decoder", "mae_pos_embed")) for k in result.missing)


def test_shape_mismatch_names_key_and_both_shapes():
    student = tiny_student()
    sd = student.state_dict()
    sd["clip_decoder.1.head.weight"] = torch.zeros(21, 32)
    with pytest.raises(CheckpointError, match=r"clip_decoder\.1\.head\.weight.*\(21, 32\).*\(20, 32\)"):
        load_checkpoint(tiny_student(), sd)


def test_position_tables_of_another_frame_count_are_resampled_when_told():
    eight = DistillStudent(VideoEncoderConfig(**{**TINY, "num_frames": 8}), tiny_student().heads_cfg)
    four = tiny_student()
    with pytest.raises(CheckpointError, match="num_frames"):
        load_checkpoint(four, eight.state_dict())
    missing, _ = load_checkpoint(four, eight.state_dict(), num_frames=8)
    assert missing == []
    # a sin-cos table resampled 8 -> 4 frames keeps the class row and the spatial layout
    assert torch.equal(four.clip_pos_embed[:, 0], eight.clip_pos_embed[:, 0])
    assert four.mae_pos_embed.shape == (1, 16, 32)


def test_stage2_prefixed_tower_loads_and_other_towers_are_dropped():
    student = tiny_student()
    sd = {f"vision_encoder.{k}": v for k, v in official_state_dict(student).items()}
    sd["text_encoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, 2)
    result = load_checkpoint(tiny_student(seed=2), sd)
    assert result.missing == [] and result.prefix == "vision_encoder."
    assert result.dropped == ["text_encoder.bert.embeddings.word_embeddings.weight"]


def test_loading_into_a_meta_student_assigns_real_tensors():
    with torch.device("meta"):
        student = DistillStudent(VideoEncoderConfig(**TINY), tiny_student().heads_cfg)
    sd = official_state_dict(tiny_student())
    missing, _ = load_checkpoint(student, sd)
    assert missing == [] and not any(p.is_meta for p in student.parameters())


@pytest.mark.parametrize("name", ["internvideo2-1b", "internvideo2-l14"])
def test_a_full_size_official_state_dict_loads_into_a_meta_student_with_nothing_missing(name):
    layout = official_layout(name)
    sd = {f"module.{k}": torch.empty(shape, device="meta") for k, shape in layout.items()}
    with torch.device("meta"):
        student = create_student(name)
    result = load_checkpoint(student, sd)
    assert result.missing == [] and result.dropped == [] and result.prefix == "module."
