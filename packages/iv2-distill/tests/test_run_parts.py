"""The pieces of a stage-1 step and run: per-sample mask seeding, the bf16 input cast, the iv2-encoders teachers
against independent computations, the flavors' official settings, export, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from iv2_distill import (
    FLAVORS,
    DistillationModel,
    DistillConfig,
    DistillTeachers,
    EncoderImageTeacher,
    EncoderTeacher,
    MaskConfig,
    TeacherOutput,
    create_student,
    export_encoder,
    return_layer_indices,
)
from iv2_distill.training import _resolve_schedule, mask_seed
from iv2_encoders import VideoEncoder, create_model
from iv2_train import load_config


def _saliency(b, t=4, hw=16, seed=0):
    return torch.rand(b, t, hw, generator=torch.Generator().manual_seed(seed)) + 0.01


def test_masks_depend_on_the_sample_not_on_how_the_batch_is_split():
    model = DistillationModel(create_student("internvideo2-tiny"), None, mask=MaskConfig(ratio=0.75), seed=3).eval()
    sal = _saliency(4)
    targets = TeacherOutput(None, None, saliency=sal)
    # two processes each drawing for half of the batch at the same step draw what one process draws for all
    whole = model.draw_mask(targets, [10, 11, 12, 13], torch.device("cpu"))
    halves = [model.draw_mask(TeacherOutput(None, None, saliency=sal[i:i + 2]), idx, torch.device("cpu"))
              for i, idx in ((0, [10, 11]), (2, [12, 13]))]
    assert torch.equal(whole, torch.cat(halves))
    # per frame: 16 - int(16 * 0.75) = 4 kept; the draw is the official multinomial with the sample's generator
    assert (~whole.reshape(4, 4, 16)).sum(-1).eq(4).all()
    from iv2_distill import attention_mask

    gen = torch.Generator().manual_seed(mask_seed(3, 0, 12))
    assert torch.equal(whole[2:3], attention_mask(sal[2:3], 0.75, gen))
    # training forwards advance the draw counter (a checkpointed buffer); evaluation does not
    model.train()
    model.mask_draws.zero_()
    first = model.draw_mask(targets, [10, 11, 12, 13], torch.device("cpu"))
    second = model.draw_mask(targets, [10, 11, 12, 13], torch.device("cpu"))
    assert int(model.mask_draws) == 2 and not torch.equal(first, second)
    model.eval()
    model.draw_mask(targets, [10], torch.device("cpu"))
    assert int(model.mask_draws) == 2 and "mask_draws" in model.state_dict()


def test_the_student_input_is_rounded_to_bf16_under_bf16_precision():
    torch.manual_seed(0)
    student = create_student("internvideo2-tiny", clip_teacher_final_dim=0, mae_teacher_embed_dim=0)
    clip = torch.randn(2, 3, 4, 56, 56)
    targets = TeacherOutput(clip_middle=F.normalize(torch.randn(2, 2, 65, 48), dim=-1), clip_final=None,
                            saliency=_saliency(2))
    batch = {"video": clip, "index": torch.tensor([0, 1]), **{f"targets.{k}": v.transpose(0, 1) if k == "clip_middle"
                                                               else v for k, v in targets.tensors().items()}}
    rounded = DistillationModel(student, None, input_dtype=torch.bfloat16).eval()
    plain = DistillationModel(student, None).eval()
    with torch.no_grad():
        a = rounded(batch)["loss"]
        b = plain({**batch, "video": clip.to(torch.bfloat16).float()})["loss"]
        c = plain(batch)["loss"]
    assert a.item() == b.item() and a.item() != c.item()


def test_encoder_teacher_targets_against_an_independent_computation():
    # the S/B/L recipe: the whole clip, one class token (no averaging), L2 per token, pooled, pooling attention
    torch.manual_seed(0)
    encoder = create_model("internvideo2-tiny", depth=4, init_values=0.5).eval()
    teacher = EncoderTeacher(encoder, return_layers=2, return_interval=2.0)
    assert teacher.return_index == return_layer_indices(4, 2, 2.0) == [1, 3]
    clip = torch.randn(2, 3, 4, 56, 56)
    out = teacher(clip)
    # reference: run the blocks by hand in float64 from the encoder's own embedding
    enc64 = create_model("internvideo2-tiny", depth=4, init_values=0.5).double().eval()
    enc64.load_state_dict({k: v.double() for k, v in encoder.state_dict().items()})
    with torch.no_grad():
        x, residual, taps = enc64.embed(clip.double()), None, []
        for i, block in enumerate(enc64.blocks):
            x, residual = block(x, residual)
            if i in (1, 3):
                taps.append(x + residual)
        pooled, weights = enc64.clip_projector(x + residual, return_weights=True)
    expected = torch.stack(taps)
    expected = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(out.clip_middle.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.clip_final.double(), pooled / pooled.norm(dim=-1, keepdim=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.saliency.double(), weights[:, 1:].reshape(2, 4, 16), atol=1e-6, rtol=0)
    teachers = DistillTeachers(image=teacher)
    assert teachers.frame_stride == 1 and not teachers.mask_per_frame


def test_encoder_image_teacher_runs_per_frame_and_averages_the_class_token():
    torch.manual_seed(1)
    image_model = create_model("internvideo2-tiny", num_frames=1, embed_dim=48, attn_pool_num_heads=4,
                               init_values=0.5).eval()
    teacher = EncoderImageTeacher(image_model, return_layers=1)
    clip = torch.randn(2, 3, 4, 56, 56)
    out = teacher(clip)
    with torch.no_grad():
        per_frame = [image_model(clip[:, :, t:t + 1], return_hidden_states=[1], return_attention=True)
                     for t in range(4)]
    layer = torch.stack([o.hidden_states[0] for o in per_frame], dim=1).double()  # (B, T, 1 + HW, C)
    cls = layer[:, :, :1].mean(dim=1)
    tokens = torch.cat([cls, layer[:, :, 1:].reshape(2, 64, 48)], dim=1)
    torch.testing.assert_close(out.clip_middle[0].double(), tokens / tokens.norm(dim=-1, keepdim=True), atol=1e-5,
                               rtol=0)
    final = torch.stack([o.pooled for o in per_frame], dim=1).double().mean(dim=1)
    torch.testing.assert_close(out.clip_final.double(), final / final.norm(dim=-1, keepdim=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.saliency, torch.stack([o.attention for o in per_frame], dim=1), atol=1e-6, rtol=0)
    assert DistillTeachers(image=teacher).mask_per_frame


def test_official_flavors_carry_the_official_settings():
    one_b = load_config(DistillConfig, "1b", flavors=FLAVORS)
    assert (one_b.teachers.image.kind, one_b.teachers.image.return_layers) == ("internvit", 6)
    assert (one_b.teachers.video.kind, one_b.teachers.video.return_layers) == ("videomae", 4)
    assert one_b.teachers.video.config["hidden_size"] == 1408 and one_b.teachers.video.config["tubelet_size"] == 2
    assert (one_b.data.num_frames, one_b.data.size, one_b.data.batch_size) == (16, 224, 32)
    assert one_b.model.overrides == {"drop_path_rate": 0.25, "grad_checkpointing": True}
    opt = one_b.train.optimizer
    assert (opt.betas, opt.eps, opt.weight_decay, opt.grad_clip) == ((0.9, 0.98), 1e-6, 0.05, 3.0)
    assert one_b.train.distributed.strategy == "deepspeed" and one_b.train.distributed.precision == "bf16"
    assert (one_b.mask.kind, one_b.mask.ratio) == ("attention", 0.8)
    # official scaling: lr 1.5e-4 per 256 clips at 32 x 128 GPUs = 2.4e-3; 301 epochs of 1.1M clips, 40 warmup
    resolved = _resolve_schedule(one_b, 1_100_000, world_size=128)
    assert resolved.train.optimizer.lr == pytest.approx(2.4e-3)
    assert resolved.train.max_steps == 301 * (1_100_000 // 4096) and resolved.train.schedule.warmup_steps == 40 * 268
    assert resolved.train.schedule.min_lr_ratio * 2.4e-3 == pytest.approx(1e-5 * 4096 / 256)
    six_b = load_config(DistillConfig, "6b", flavors=FLAVORS)
    assert six_b.model.overrides["drop_path_rate"] == 0.3 and six_b.data.batch_size == 8
    base = load_config(DistillConfig, "b14", ["data.annotations=x.json"], flavors=FLAVORS)
    assert (base.teachers.image.kind, base.teachers.image.return_interval) == ("iv2_video", 3.34)
    assert base.teachers.video.kind == "none" and base.data.num_frames == 8
    assert base.train.optimizer.grad_clip == 5.0 and base.model.overrides == {"drop_path_rate": 0.05}
    assert _resolve_schedule(base, 1_100_000, 32).train.optimizer.lr == pytest.approx(1e-3 * 4096 / 256)
    from iv2_distill.training import _per_frame

    assert _per_frame(one_b) and not _per_frame(base)  # S/B/L: masks over the whole clip


def test_export_of_an_official_layout_file_drops_the_heads_and_round_trips(tmp_path):
    torch.manual_seed(0)
    student = create_student("internvideo2-tiny")
    torch.save({"module": student.state_dict()}, tmp_path / "official.pth")
    result = export_encoder(tmp_path / "official.pth", tmp_path / "out", model="internvideo2-tiny")
    assert result.load.missing == [] and any(k.startswith("clip_decoder.") for k in result.load.dropped)
    assert not any(k.startswith(("blocks.", "patch_embed")) for k in result.load.dropped)
    encoder = create_model(pretrained=result.output)
    reference = VideoEncoder(student.cfg)
    reference.load_state_dict(student.encoder_state_dict())
    video = torch.randn(1, 3, 4, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(video).pooled, reference.eval()(video).pooled, atol=0, rtol=0)
    with pytest.raises(ValueError, match="pass model="):
        export_encoder(tmp_path / "official.pth", tmp_path / "out2")


def test_help_is_fast_imports_no_torch_and_lists_the_flavors():
    from iv2_distill.cli import FLAVOR_NAMES

    assert set(FLAVOR_NAMES) == set(FLAVORS)
    code = ("import sys; from iv2_distill.cli import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NO-TORCH 0"), out.stdout + out.stderr
    assert "tiny-synthetic-quick" in out.stdout and "default: tiny-synthetic" in out.stdout
    assert time.perf_counter() - started < 10


def test_command_line_errors_are_one_line_with_usage_exit_codes(tmp_path, capsys):
    from iv2_distill.cli import main

    assert main(["train", "tiny-synthetic", "train.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'max_steps'" in err
    assert main(["train", "no-such-flavor"]) == 2
    assert "unknown config flavor 'no-such-flavor'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.pth"), "--output", str(tmp_path / "o")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval"])
    assert exit_info.value.code == 2


def test_eval_command_reports_knn_and_the_random_baseline(tmp_path, capsys):
    from iv2_data import write_corpus
    from iv2_distill.cli import main
    from iv2_encoders import save_pretrained

    write_corpus(tmp_path / "c", 12, num_frames=4, size=64)
    torch.manual_seed(0)
    save_pretrained(create_model("internvideo2-tiny"), tmp_path / "enc")
    code = main(["eval", str(tmp_path / "enc"), "--annotations", str(tmp_path / "c" / "video_label.json"),
                 "--holdout-last", "4", "--label-keys", "direction,colour", "--random-baseline",
                 "--output", str(tmp_path / "m.json")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "m.json").read_text())
    assert {"knn_top1_direction", "linear_top1_colour", "chance_colour", "random_knn_top1_direction"} <= set(printed)
    assert printed["queries"] == 4 and printed["bank"] == 8
