"""Teacher adapters: targets on the student's grid, normalised as the official teachers, saliency, the frozen
protocol, grid-mismatch errors, and the teachers feeding the student and the loss end to end."""

import math

import numpy as np
import pytest
import torch
from _distill_reference import pool_reference, unit
from _distill_standins import StandInInternVisionModel, StandInInternVLC

from iv2_distill import (
    CLIPTeacher,
    DistillTeachers,
    InternViTTeacher,
    TeacherOutput,
    TimmTeacher,
    VideoMAETeacher,
    attention_mask,
    create_student,
    distillation_loss,
    videomae_state_dict_from_official,
)
from iv2_distill.teachers import official_videomae_attention


def tiny_vit(seed=0, **kw):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    args = dict(img_size=56, patch_size=14, embed_dim=32, depth=4, num_heads=4, num_classes=0)
    return VisionTransformer(**{**args, **kw})


def tiny_videomae(seed=0, **kw):
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(seed)
    cfg = dict(image_size=56, patch_size=14, num_frames=8, tubelet_size=2, hidden_size=32, num_hidden_layers=4,
               num_attention_heads=4, intermediate_size=64, use_mean_pooling=False, layer_norm_eps=1e-6)
    return VideoMAEModel(VideoMAEConfig(**{**cfg, **kw}))


def frames_of(video):
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


def expected_image_targets(layers, pooled, b, t):
    """The official InternViT teacher's normalisation, by hand in float64: per layer, the class rows averaged
    over the T frames, patches laid out frame after frame, every token L2-normalised; pooled averaged, L2."""
    middle = []
    for z in layers:
        z = z.double().reshape(b, t, *z.shape[1:])
        cls = z[:, :, 0].mean(1, keepdim=True)
        middle.append(unit(torch.cat([cls, z[:, :, 1:].reshape(b, -1, z.shape[-1])], dim=1)))
    return torch.stack(middle), unit(pooled.double().reshape(b, t, -1).mean(1))


# ------------------------------------------------------------------------------------------------ image
def test_timm_teacher_matches_a_per_frame_reference():
    vit = tiny_vit().eval()
    teacher = TimmTeacher(vit, return_layers=2, return_interval=1.0)
    assert teacher.return_index == [2, 3]
    video = torch.randn(2, 3, 4, 56, 56)
    out = teacher(video)
    # reference: the timm blocks run one by one, the last block's attention recomputed from its weights
    with torch.no_grad():
        x = vit.norm_pre(vit._pos_embed(vit.patch_embed(frames_of(video))))
        states = []
        for blk in vit.blocks:
            if blk is vit.blocks[-1]:
                a = blk.attn
                q, k, _ = a.qkv(blk.norm1(x)).double().reshape(8, 17, 3, 4, 8).permute(2, 0, 3, 1, 4)
                probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
                saliency = probs.mean(1)[:, 0, 1:]
            x = blk(x)
            states.append(x)
        pooled = vit.forward_head(vit.norm(x))
    middle, final = expected_image_targets([states[2], states[3]], pooled, 2, 4)
    assert out.clip_middle.shape == (2, 2, 1 + 4 * 16, 32) and out.mae is None
    torch.testing.assert_close(out.clip_middle.double(), middle, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.clip_final.double(), final, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.saliency.double(), saliency.reshape(2, 4, 16), rtol=0, atol=1e-6)
    assert vit.blocks[-1].attn.fused_attn == timm_fused_default()  # the switch is put back


def timm_fused_default():
    from timm.layers import use_fused_attn

    return use_fused_attn()


def test_timm_teacher_drops_register_tokens_and_needs_a_class_token():
    vit = tiny_vit(reg_tokens=2).eval()
    out = TimmTeacher(vit, return_layers=1)(torch.randn(1, 3, 2, 56, 56))
    assert out.clip_middle.shape == (1, 1, 1 + 2 * 16, 32) and out.saliency.shape == (1, 2, 16)
    with pytest.raises(ValueError, match="class token"):
        TimmTeacher(tiny_vit(class_token=False, global_pool="avg"))


def test_clip_teacher_folds_frames_and_averages_like_the_official_teacher():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=56, patch_size=14, projection_dim=24)
    model = CLIPVisionModelWithProjection(cfg).eval()
    teacher = CLIPTeacher(model, return_layers=2)
    video = torch.randn(2, 3, 4, 56, 56)
    out = teacher(video)
    # reference: every frame through the model on its own, in (sample, frame) order
    with torch.no_grad():
        per_frame = [model(pixel_values=video[i, :, j][None], output_hidden_states=True, output_attentions=True)
                     for i in range(2) for j in range(4)]
    layers = [torch.cat([o.hidden_states[i + 1] for o in per_frame]) for i in (1, 2)]
    middle, final = expected_image_targets(layers, torch.cat([o.image_embeds for o in per_frame]), 2, 4)
    torch.testing.assert_close(out.clip_middle.double(), middle, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.clip_final.double(), final, rtol=0, atol=1e-5)
    saliency = torch.cat([o.attentions[-1].mean(1)[:, 0, 1:] for o in per_frame]).reshape(2, 4, 16)
    torch.testing.assert_close(out.saliency, saliency, rtol=0, atol=1e-6)


def test_internvit_teacher_saliency_is_the_pooling_heads_attention():
    torch.manual_seed(0)
    model = StandInInternVLC().eval()
    teacher = InternViTTeacher(model, return_layers=2, frames_per_batch=3)  # chunks of 3 frames
    video = torch.randn(2, 3, 4, 28, 28)
    out = teacher(video)
    with torch.no_grad():
        vision = model.vision_model(frames_of(video), output_hidden_states=True)
        pooled, probs = pool_reference(model.state_dict(), vision.last_hidden_state.double(), 2)
    middle, final = expected_image_targets([vision.hidden_states[3], vision.hidden_states[4]], pooled, 2, 4)
    torch.testing.assert_close(out.clip_middle.double(), middle, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.clip_final.double(), final, rtol=0, atol=1e-5)
    # official: softmax over all keys, averaged over heads, class key dropped -> (B, T, HW)
    torch.testing.assert_close(out.saliency.double(), probs.mean(1)[:, 0, 1:].reshape(2, 4, 4), rtol=0, atol=1e-6)


def test_internvit_without_pooling_head_uses_the_class_tokens_attention():
    torch.manual_seed(0)
    vision = StandInInternVisionModel().eval()
    out = InternViTTeacher(vision, return_layers=1)(torch.randn(1, 3, 2, 28, 28))
    assert out.clip_final.shape == (1, 32) and out.saliency.shape == (1, 2, 4)
    assert (out.saliency > 0).all() and (out.saliency.sum(-1) < 1).all()  # class key dropped, not renormalised
    assert vision.encoder.layers[-1].attn.use_flash_attn  # the fused path is switched back on


def test_internvit_from_pretrained_goes_through_automodel_with_remote_code(monkeypatch, tmp_path):
    import transformers

    calls = {}

    def fake_from_pretrained(path, **kwargs):
        calls.update(path=path, **kwargs)
        return StandInInternVLC()

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", fake_from_pretrained)
    teacher = InternViTTeacher.from_pretrained(tmp_path, dtype=torch.float32, return_layers=2)
    assert calls == {"path": str(tmp_path), "trust_remote_code": True, "dtype": torch.float32}
    assert teacher.return_index == [2, 3] and teacher.projector is not None


# ------------------------------------------------------------------------------------------------ video
def test_videomae_teacher_taps_blocks_with_the_final_norm_on_the_last_only():
    model = tiny_videomae().eval()
    teacher = VideoMAETeacher(model, return_layers=2)
    assert teacher.return_index == [2, 3] and teacher.token_grid(8, 56) == (4, 4, 4)
    video = torch.randn(2, 3, 8, 56, 56)
    out = teacher(video)
    with torch.no_grad():
        ref = model(pixel_values=video.transpose(1, 2), output_hidden_states=True)
    expected = torch.stack([unit(ref.hidden_states[3].double()), unit(model.layernorm(ref.hidden_states[4]).double())])
    assert out.mae.shape == (2, 2, 4 * 16, 32) and out.clip_middle is None and out.saliency is None
    torch.testing.assert_close(out.mae.double(), expected, rtol=0, atol=1e-5)


def test_videomae_teacher_needs_the_final_layernorm():
    with pytest.raises(ValueError, match="use_mean_pooling=False"):
        VideoMAETeacher(tiny_videomae(use_mean_pooling=True))


def test_official_videomae_attention_reproduces_the_flash_layout_quirk():
    g = torch.Generator().manual_seed(0)
    b, h, n, d = 2, 3, 5, 4
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    out, _ = official_videomae_attention(None, q, k, v, None, scaling=d**-0.5)
    # flash_attn_func reads (B, heads, N, d) as (batch, seqlen, nheads, d): for every token n it attends over
    # the heads axis; the official code reshapes that (B, heads, N, d) result straight to (B, N, heads * d)
    flash = torch.zeros(b, h, n, d, dtype=torch.float64)
    for bi in range(b):
        for ni in range(n):
            scores = q[bi, :, ni] @ k[bi, :, ni].T * d**-0.5  # (heads, heads)
            flash[bi, :, ni] = torch.softmax(scores, dim=-1) @ v[bi, :, ni]
    torch.testing.assert_close(out.reshape(b, n, h * d), flash.reshape(b, n, -1), rtol=0, atol=1e-12)


def test_official_attention_option_changes_the_targets():
    video = torch.randn(1, 3, 8, 56, 56)
    standard = VideoMAETeacher(tiny_videomae().eval(), return_layers=1)(video).mae
    official = VideoMAETeacher(tiny_videomae().eval(), return_layers=1, attention="official")(video).mae
    assert standard.shape == official.shape and (standard - official).abs().max() > 1e-3


def official_videomae_forward(sd, video, heads, eps=1e-6):
    """Float64 forward of the official VideoMAE encoder (SM/models/videomae.py, standard attention)."""
    sd = {k: v.double() for k, v in sd.items()}
    w = sd["encoder.patch_embed.proj.weight"]
    x = torch.nn.functional.conv3d(video.double(), w, sd["encoder.patch_embed.proj.bias"], stride=w.shape[2:])
    x = x.flatten(2).transpose(1, 2)
    n, c = x.shape[1:]
    pos = np.array([[p / np.power(10000, 2 * (j // 2) / c) for j in range(c)] for p in range(n)])
    pos[:, 0::2], pos[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
    x = x + torch.from_numpy(pos)
    ln = lambda t, p: torch.nn.functional.layer_norm(t, (c,), sd[p + ".weight"], sd[p + ".bias"], eps)
    depth = len({k.split(".")[2] for k in sd if k.startswith("encoder.blocks.")})
    for i in range(depth):
        p = f"encoder.blocks.{i}."
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(c, dtype=torch.float64), sd[p + "attn.v_bias"]])
        q, k, v = (ln(x, p + "norm1") @ sd[p + "attn.qkv.weight"].T + bias).reshape(1, n, 3, heads, -1).permute(
            2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c // heads), -1) @ v
        x = x + a.transpose(1, 2).reshape(1, n, c) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = torch.nn.functional.gelu(ln(x, p + "norm2") @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return ln(x, "encoder.norm")


def test_official_videomae_checkpoint_converts_to_transformers_with_the_same_outputs():
    g = torch.Generator().manual_seed(0)
    c, hidden = 32, 64
    shapes = {"encoder.patch_embed.proj.weight": (c, 3, 2, 14, 14), "encoder.patch_embed.proj.bias": (c,),
              "encoder.norm.weight": (c,), "encoder.norm.bias": (c,)}
    for i in range(2):
        p = f"encoder.blocks.{i}."
        shapes.update({p + "norm1.weight": (c,), p + "norm1.bias": (c,), p + "attn.qkv.weight": (3 * c, c),
                       p + "attn.q_bias": (c,), p + "attn.v_bias": (c,), p + "attn.proj.weight": (c, c),
                       p + "attn.proj.bias": (c,), p + "norm2.weight": (c,), p + "norm2.bias": (c,),
                       p + "mlp.fc1.weight": (hidden, c), p + "mlp.fc1.bias": (hidden,),
                       p + "mlp.fc2.weight": (c, hidden), p + "mlp.fc2.bias": (c,)})
    official = {k: 0.3 * torch.randn(s, generator=g) for k, s in shapes.items()}
    model = tiny_videomae(num_hidden_layers=2).eval()
    model.load_state_dict(videomae_state_dict_from_official(official), strict=True)
    video = torch.randn(1, 3, 8, 56, 56, generator=g)
    with torch.no_grad():
        ours = model(pixel_values=video.transpose(1, 2)).last_hidden_state
    torch.testing.assert_close(ours.double(), official_videomae_forward(official, video, heads=4), rtol=0, atol=1e-4)
    # the pretraining checkpoint's decoder and mask token sit beside ``encoder.``: left out, as officially
    with_decoder = {**official, "decoder.head.weight": torch.zeros(1), "mask_token": torch.zeros(1)}
    assert videomae_state_dict_from_official(with_decoder).keys() == model.state_dict().keys()
    with pytest.raises(KeyError, match="gamma_1"):  # layer scale has no VideoMAEModel counterpart
        videomae_state_dict_from_official({**official, "encoder.blocks.0.gamma_1": torch.zeros(1)})


# ------------------------------------------------------------------------------------------------ protocol
@pytest.mark.parametrize("make", [
    lambda: TimmTeacher(tiny_vit(drop_rate=0.5, drop_path_rate=0.5), return_layers=2),
    lambda: VideoMAETeacher(tiny_videomae(hidden_dropout_prob=0.5), return_layers=2),
    lambda: InternViTTeacher(StandInInternVLC(), return_layers=2),
], ids=["timm", "videomae", "internvit"])
def test_teachers_are_frozen_stay_in_eval_and_run_without_grad(make):
    teacher = make()
    teacher.train()  # what a trainer does to every module: a teacher ignores it
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    frames = 8 if isinstance(teacher, VideoMAETeacher) else 4
    size = teacher.input_size
    video = torch.randn(1, 3, frames, size, size, dtype=torch.float64)  # any input dtype
    with torch.enable_grad():
        a, b = teacher(video), teacher(video)
    for t in a.tensors().values():
        assert t.dtype == torch.float32 and not t.requires_grad
    for key, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[key]), key  # deterministic: dropout and drop-path are off


def test_a_bfloat16_teacher_gives_float32_targets_close_to_the_float32_one():
    video = torch.randn(1, 3, 2, 56, 56)
    full = TimmTeacher(tiny_vit(), return_layers=2)(video)
    half = TimmTeacher(tiny_vit().to(torch.bfloat16), return_layers=2)(video)
    assert half.clip_middle.dtype == torch.float32
    assert (half.clip_middle - full.clip_middle).abs().max() < 0.05


def test_teacher_output_round_trips_through_tensors():
    out = TeacherOutput(torch.zeros(1, 1, 2, 3), torch.ones(1, 3), saliency=torch.rand(1, 1, 1))
    back = TeacherOutput.from_tensors(out.to(torch.float16).tensors())
    assert back.mae is None and back.clip_final.dtype == torch.float16 and set(back.tensors()) == set(out.tensors())
    with pytest.raises(KeyError, match="unknown"):
        TeacherOutput.from_tensors({"bogus": torch.zeros(1)})


# --------------------------------------------------------------------------------------------- grid / e2e
def tiny_student(**kw):
    return create_student("internvideo2-tiny", clip_teacher_embed_dim=32, clip_teacher_final_dim=32,
                          mae_teacher_embed_dim=32, **kw)


def test_grid_mismatches_are_errors_naming_both_grids():
    student = tiny_student()
    bad_patch = DistillTeachers(image=TimmTeacher(tiny_vit(patch_size=8), return_layers=2))
    with pytest.raises(ValueError, match=r"\(4, 7, 7\).*patch 8 at 56 px.*student's grid \(4, 4, 4\).*patch 14"):
        bad_patch.check_student(student.cfg)
    bad_tubelet = DistillTeachers(video=VideoMAETeacher(tiny_videomae(), return_layers=2), frame_stride=1)
    with pytest.raises(ValueError, match=r"video teacher's token grid \(2, 4, 4\).*tubelet 2"):
        bad_tubelet.check_student(student.cfg)
    # a patch-16 teacher fed 64 px frames has the student's 4 x 4 grid: accepted (frames are resized)
    DistillTeachers(image=TimmTeacher(tiny_vit(img_size=64, patch_size=16), return_layers=2)).check_student(student.cfg)


def test_teachers_feed_the_student_and_the_loss_as_the_official_pipeline():
    torch.manual_seed(0)
    image = TimmTeacher(tiny_vit(), return_layers=2)
    teachers = DistillTeachers(image=image, video=VideoMAETeacher(tiny_videomae(), return_layers=2))
    student = tiny_student()
    teachers.check_student(student.cfg)
    clip = torch.randn(2, 3, 8, 56, 56)  # 2 x the student's frames: the video teacher sees all, tubelet 2
    targets = teachers(clip)
    assert teachers.frame_stride == 2 and teachers.student_frames(clip).shape[2] == 4
    torch.testing.assert_close(targets.clip_final, image(clip[:, :, ::2]).clip_final)  # the image teacher saw ::2
    assert targets.clip_middle.shape == (2, 2, 1 + 64, 32) and targets.mae.shape == (2, 2, 64, 32)
    mask = attention_mask(targets.saliency, 0.75, torch.Generator().manual_seed(0))
    losses = distillation_loss(student(teachers.student_frames(clip), mask), targets, mask)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    losses["loss"].backward()
    assert student.clip_decoder[0].head.weight.grad is not None


def test_the_student_can_fit_fixed_teacher_targets():
    torch.manual_seed(0)
    teachers = DistillTeachers(image=TimmTeacher(tiny_vit(), return_layers=2),
                               video=VideoMAETeacher(tiny_videomae(), return_layers=2))
    student = tiny_student()
    clip = torch.randn(2, 3, 8, 56, 56)
    targets = teachers(clip)
    mask = attention_mask(targets.saliency, 0.5, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    history = []
    for _ in range(12):
        loss = distillation_loss(student(teachers.student_frames(clip), mask), targets, mask)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]


def test_a_teachers_state_dict_holds_each_weight_once():
    teacher = InternViTTeacher(StandInInternVLC(), return_layers=2)
    keys = list(teacher.state_dict())
    assert keys == [f"model.{k}" for k in teacher.model.state_dict()]
