from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from iv2_train import (
    OptimizerConfig,
    ScheduleConfig,
    build_optimizer,
    build_param_groups,
    build_scheduler,
    default_layer_id,
    lr_multiplier,
)


class TinyViT(nn.Module):
    def __init__(self, depth: int = 3, dim: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(12, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2)
        self.teacher = nn.Linear(dim, dim)
        self.teacher.requires_grad_(False)


def group_of(groups: list[dict], name: str) -> dict:
    matches = [g for g in groups if name in g["param_names"]]
    assert len(matches) == 1, name
    return matches[0]


def test_no_weight_decay_for_norms_biases_embeddings_and_frozen_left_out() -> None:
    model = TinyViT()
    groups = build_param_groups(model, OptimizerConfig(weight_decay=0.05))
    names = [n for g in groups for n in g["param_names"]]
    assert not any(n.startswith("teacher.") for n in names)  # frozen: not in the optimizer at all
    assert len(names) == sum(1 for _, p in model.named_parameters() if p.requires_grad)
    for name in ("pos_embed", "cls_token", "blocks.0.0.weight", "blocks.1.1.bias", "norm.weight", "head.bias"):
        assert group_of(groups, name)["weight_decay"] == 0.0, name
    for name in ("patch_embed.weight", "blocks.2.1.weight", "head.weight"):
        assert group_of(groups, name)["weight_decay"] == 0.05, name


def test_extra_no_decay_keywords() -> None:
    cfg = OptimizerConfig(no_weight_decay_keywords=("pos_embed", "cls_token", "head"))
    groups = build_param_groups(TinyViT(), cfg)
    assert group_of(groups, "head.weight")["weight_decay"] == 0.0


def test_layer_decay_scales() -> None:
    groups = build_param_groups(TinyViT(depth=3), OptimizerConfig(layer_decay=0.5))
    # 3 blocks: embeddings are layer 0, block i is layer i+1, the rest layer 4; scale 0.5 ** (4 - layer).
    assert group_of(groups, "pos_embed")["lr_scale"] == 0.5**4
    assert group_of(groups, "patch_embed.weight")["lr_scale"] == 0.5**4
    assert group_of(groups, "blocks.0.1.weight")["lr_scale"] == 0.5**3
    assert group_of(groups, "blocks.2.1.weight")["lr_scale"] == 0.5**1
    assert group_of(groups, "head.weight")["lr_scale"] == 1.0
    optimizer = build_optimizer(groups, OptimizerConfig(lr=0.1, layer_decay=0.5))
    scales = {round(g["lr"] / 0.1, 8) for g in optimizer.param_groups}
    assert scales == {0.5**k for k in range(5)}
    assert default_layer_id("encoder.layers.7.attn.qkv.weight", 12) == 8


def test_all_frozen_is_an_error() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_param_groups(model, OptimizerConfig())


def test_cosine_with_warmup_and_floor() -> None:
    cfg = ScheduleConfig(warmup_steps=10, min_lr_ratio=0.01)
    assert lr_multiplier(0, 110, cfg) == 0.0  # warmup starts from 0
    assert lr_multiplier(5, 110, cfg) == pytest.approx(0.5)
    assert lr_multiplier(10, 110, cfg) == pytest.approx(1.0)
    assert lr_multiplier(60, 110, cfg) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_multiplier(110, 110, cfg) == pytest.approx(0.01)
    assert lr_multiplier(500, 110, cfg) == pytest.approx(0.01)  # stays on the floor
    values = [lr_multiplier(s, 110, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert lr_multiplier(50, 110, ScheduleConfig(kind="constant", warmup_steps=10)) == 1.0


def test_scheduler_keeps_layer_scales() -> None:
    model = TinyViT()
    opt_cfg = OptimizerConfig(lr=1.0, layer_decay=0.5)
    optimizer = build_optimizer(build_param_groups(model, opt_cfg), opt_cfg)
    scheduler = build_scheduler(optimizer, ScheduleConfig(warmup_steps=2), total_steps=6)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == [0.0] * len(seen[0])
    peak = seen[2]
    assert peak == [g["lr_scale"] for g in optimizer.param_groups]
    assert math.isclose(seen[4][0], 0.5 * (1 + math.cos(math.pi * 2 / 4)) * peak[0])


def test_clamped_floor_matches_the_official_stage2_and_stage3_scheduler() -> None:
    # Official multi_modality/utils/scheduler.py (and VideoChat2's copy): max(min_lr_multi, step / warmup) in
    # warmup, max(min_lr_multi, 0.5 (1 + cos(pi p))) after; the floor clips, it does not rescale the cosine.
    from iv2_train import TRAIN_FLAVORS

    cfg = ScheduleConfig(warmup_steps=10, min_lr_ratio=0.25, min_lr_mode="clamp")
    assert lr_multiplier(0, 110, cfg) == 0.25  # warmup starts at the floor
    assert lr_multiplier(1, 110, cfg) == 0.25
    assert lr_multiplier(5, 110, cfg) == pytest.approx(0.5)
    assert lr_multiplier(10, 110, cfg) == pytest.approx(1.0)
    assert lr_multiplier(60, 110, cfg) == pytest.approx(0.5)  # rescaled would be 0.25 + 0.75 * 0.5
    assert lr_multiplier(35, 110, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_multiplier(100, 110, cfg) == 0.25  # cosine 0.024 is cut off at the floor
    assert lr_multiplier(110, 110, cfg) == 0.25
    for name in ("stage2", "stage3"):
        assert TRAIN_FLAVORS[name]().schedule.min_lr_mode == "clamp", name
    assert TRAIN_FLAVORS["stage1"]().schedule.min_lr_mode == "rescale"  # single-modality cosine_scheduler


def test_flavor_optimizer_constants_follow_the_official_configs() -> None:
    from iv2_train import TRAIN_FLAVORS

    stage1, stage2, stage3 = (TRAIN_FLAVORS[f"stage{i}"]().optimizer for i in (1, 2, 3))
    # stage 1 (REFERENCE d): DeepSpeed Adam in adamw mode, betas (0.9, 0.98), eps 1e-6
    assert (stage1.betas, stage1.eps, stage1.weight_decay, stage1.grad_clip) == ((0.9, 0.98), 1e-6, 0.05, 3.0)
    # stage 2: multi_modality utils/config_utils.py setup_deepspeed_config writes eps 1e-8
    assert (stage2.betas, stage2.eps, stage2.weight_decay, stage2.grad_clip) == ((0.9, 0.98), 1e-8, 0.05, 3.0)
    # stage 3 (REFERENCE k): AdamW (0.9, 0.999), wd 0.02, no clipping
    assert (stage3.betas, stage3.weight_decay, stage3.grad_clip) == ((0.9, 0.999), 0.02, 0.0)


def test_step_disabled_restores_the_optimizer_step() -> None:
    from iv2_train.strategy import _step_disabled

    param = nn.Parameter(torch.ones(2))
    optimizer = torch.optim.AdamW([param], lr=0.1, foreach=False)
    param.grad = torch.ones(2)
    with _step_disabled(optimizer):
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(2)) and not optimizer.state  # nothing happened
    patched = []
    optimizer.step = lambda *a, **k: patched.append(1)  # an instance-level patch (e.g. a wrapper's)
    with _step_disabled(optimizer):
        optimizer.step()
    optimizer.step()
    assert patched == [1]  # the patch is back, and was not called inside the block
    del optimizer.step
    optimizer.step()
    assert not torch.equal(param.detach(), torch.ones(2))  # the class method is back
