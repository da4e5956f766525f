"""Token masks for stage 1: ``(B, T·HW)`` bool over patch tokens, True = dropped, the same count per sample
(the encoder's convention: no class column, the class token is always kept).

``attention_mask`` is the official semantic masking (engines/engine_for_pretraining.py): per frame, a full
permutation of the tokens is drawn with ``torch.multinomial`` (without replacement, probability proportional to
the teacher's attention) and its first ``HW - int(HW * ratio)`` entries are kept, so salient tokens are kept
far more often than others without the mask being top-k. ``per_frame=False`` draws once over the whole clip
(``T·HW - int(T·HW * ratio)`` kept), as the S/B/L distillation from a video teacher does
(engines/engine_for_distill.py). ``random_mask`` and ``tube_mask`` (datasets/masking_generator.py, drawn per
sample with a torch generator; broken in the official stage-1 loop) are iv2-encoders' — the one copy the stage
packages share — re-exported here.
"""

from __future__ import annotations

import torch

from iv2_encoders.masking import random_mask, tube_mask

__all__ = ["attention_mask", "random_mask", "tube_mask"]

Grid = tuple[int, int, int]  # the student's token grid (T, H, W), ``VideoEncoderConfig.grid_size``


def attention_mask(
    attn: torch.Tensor,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    *,
    per_frame: bool = True,
) -> torch.Tensor:
    """Semantic mask from a non-negative saliency ``attn`` (B, T, HW) -> (B, T·HW) bool, True = dropped.

    Per frame (default) keeps ``HW - int(HW * mask_ratio)`` tokens drawn without replacement with probability
    proportional to ``attn``; ``per_frame=False`` keeps ``T·HW - int(T·HW * mask_ratio)`` over the clip.
    ``generator`` (on ``attn``'s device) makes the draw reproducible.
    """
    _check_ratio(mask_ratio)
    if attn.ndim != 3:
        raise ValueError(f"attn must be (B, T, HW), got shape {tuple(attn.shape)}")
    b, t, hw = attn.shape
    weights = attn.float().reshape(b * t, hw) if per_frame else attn.float().reshape(b, t * hw)
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("attn must be finite and non-negative (a saliency, e.g. softmax attention weights)")
    # Zero weights would make a full permutation impossible; the smallest normal float keeps such tokens
    # drawable (last) without changing the draw for positive weights.
    weights = weights.clamp_min(torch.finfo(torch.float32).tiny)
    rows, n = weights.shape
    num_keep = n - int(n * mask_ratio)
    order = torch.multinomial(weights, n, replacement=False, generator=generator)  # a full permutation
    mask = torch.ones(rows, n, dtype=torch.bool, device=attn.device)
    mask.scatter_(1, order[:, :num_keep], False)
    return mask.reshape(b, t * hw)


def _check_ratio(mask_ratio: float) -> None:
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
