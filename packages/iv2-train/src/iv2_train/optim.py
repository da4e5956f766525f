"""Parameter groups (no weight decay, layer-wise lr decay, frozen parameters), AdamW and the lr schedule."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .config import OptimizerConfig, ScheduleConfig

_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:blocks|layers|layer|h)\.(\d+)\.")
_EMBEDDING_NAMES = ("patch_embed", "pos_embed", "cls_token", "embeddings", "mask_token", "tok_embeddings")


def default_layer_id(name: str, num_layers: int) -> int:
    """Depth of ``name`` for layer-wise lr decay: 0 embeddings, i+1 block i, num_layers+1 the rest."""
    match = _BLOCK_INDEX.search(name)
    if match:
        return min(int(match.group(1)) + 1, num_layers)
    if any(part in name for part in _EMBEDDING_NAMES):
        return 0
    return num_layers + 1


def count_blocks(model: nn.Module) -> int:
    """Number of numbered blocks (``blocks.N.``, ``layers.N.``...) in ``model``'s parameter names."""
    found = [int(m.group(1)) for n, _ in model.named_parameters() if (m := _BLOCK_INDEX.search(n))]
    return max(found) + 1 if found else 0


def uses_weight_decay(name: str, param: torch.Tensor, no_decay_keywords: Iterable[str]) -> bool:
    """False for 1-D parameters (norm weights, biases, scalars) and names containing a no-decay keyword."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return False
    return not any(keyword in name for keyword in no_decay_keywords)


def build_param_groups(
    model: nn.Module,
    cfg: OptimizerConfig,
    *,
    num_layers: int | None = None,
    layer_id_fn: Callable[[str, int], int] | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups for ``model``'s trainable parameters.

    Each group carries ``weight_decay``, ``lr_scale`` (the layer-wise decay factor; the scheduler multiplies
    the peak lr by it) and ``param_names``. Frozen parameters (``requires_grad=False``) are left out.
    """
    if cfg.layer_decay != 1.0 and num_layers is None:
        num_layers = count_blocks(model)
    layer_id_fn = layer_id_fn or default_layer_id
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = cfg.weight_decay if uses_weight_decay(name, param, cfg.no_weight_decay_keywords) else 0.0
        scale = 1.0
        if cfg.layer_decay != 1.0:
            assert num_layers is not None
            scale = cfg.layer_decay ** (num_layers + 1 - layer_id_fn(name, num_layers))
        group = groups.setdefault(
            (decay, scale), {"params": [], "param_names": [], "weight_decay": decay, "lr_scale": scale}
        )
        group["params"].append(param)
        group["param_names"].append(name)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters (all have requires_grad=False)")
    # Stable order (decay groups by descending scale) so optimizer state dicts line up across runs.
    return [groups[k] for k in sorted(groups, key=lambda k: (-k[1], -k[0]))]


def build_optimizer(param_groups: list[dict[str, Any]], cfg: OptimizerConfig) -> torch.optim.AdamW:
    """torch AdamW over ``param_groups``; each group's lr is ``cfg.lr * lr_scale``."""
    groups = []
    for group in param_groups:
        g = {k: v for k, v in group.items() if k != "param_names"}
        g["lr"] = cfg.lr * g.get("lr_scale", 1.0)
        groups.append(g)
    # foreach=False keeps the update order identical whatever the group sizes (exact resume comparisons).
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=False)


def lr_multiplier(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the peak lr after ``step`` steps: linear warmup from 0, then cosine to the floor.

    ``cfg.min_lr_mode`` picks how the floor ``min_lr_ratio`` enters: ``"rescale"`` gives
    ``floor + (1 - floor)·cosine`` after a warmup from 0; ``"clamp"`` gives ``max(floor, ·)`` of the plain
    warmup and cosine (so the warmup starts at the floor), as the official stage-2/3 schedulers do.
    """
    floor = cfg.min_lr_ratio
    clamp = cfg.min_lr_mode == "clamp"
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        warm = step / cfg.warmup_steps
        return max(floor, warm) if clamp else warm
    if cfg.kind == "constant":
        return 1.0
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    if clamp:
        return max(floor, cosine)
    return floor + (1.0 - floor) * cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :func:`lr_multiplier` to every group's own lr (so layer decay is kept)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, total_steps, cfg))


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Counts of trainable and frozen parameters (elements)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}
