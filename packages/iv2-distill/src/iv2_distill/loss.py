"""The stage-1 objective: unmasked token reconstruction (official engines/engine_for_pretraining.py and
engine_for_distill.py).

Each term is ``mean(2 - 2<s, t>)`` over every leading index (layers x batch x visible tokens for the middle
and MAE terms, batch for the final one). With unit vectors on both sides this is the per-token squared L2
distance; it is not ``nn.MSELoss`` (smaller by a factor of C) and not smooth-L1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .model import StudentOutput
from .teachers.base import TeacherOutput

LOSS_KEYS = ("clip_middle", "clip_final", "mae")


def cosine_distance_loss(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(2 - 2 * (student * target).sum(-1)).mean()``, computed in at least float32."""
    dtype = torch.promote_types(torch.promote_types(student.dtype, target.dtype), torch.float32)
    return (2 - 2 * (student.to(dtype) * target.to(dtype)).sum(dim=-1)).mean()


def visible_targets(teacher_out: TeacherOutput, mask: torch.Tensor) -> TeacherOutput:
    """The teacher targets at the tokens the student sees: ``clip_middle`` keeps the class row and the visible
    patches, ``mae`` the visible patches; ``clip_final`` is global. ``mask`` (B, N) bool, True = dropped."""
    b, n = mask.shape
    keep_with_cls = torch.cat([mask.new_ones(b, 1), ~mask], dim=1)
    clip_middle = mae = None
    if teacher_out.clip_middle is not None:
        t = teacher_out.clip_middle
        _expect(t, "teacher clip_middle", (None, b, 1 + n, None))
        clip_middle = t[:, keep_with_cls].reshape(t.shape[0], b, -1, t.shape[-1])
    if teacher_out.mae is not None:
        t = teacher_out.mae
        _expect(t, "teacher mae", (None, b, n, None))
        mae = t[:, ~mask].reshape(t.shape[0], b, -1, t.shape[-1])
    return TeacherOutput(clip_middle, teacher_out.clip_final, mae, teacher_out.saliency)


def distillation_loss(
    student_out: StudentOutput,
    teacher_out: TeacherOutput,
    mask: torch.Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, torch.Tensor]:
    """The official stage-1 loss. Returns ``{"clip_middle", "clip_final", "mae", "loss"}`` (scalars).

    ``teacher_out`` holds the targets for the full clip (:class:`TeacherOutput`); the targets at the visible
    positions of ``mask`` ((B, T·HW) bool, True = dropped, as given to the student) are gathered here.
    ``weights`` are the official ``clip_loss_ratio`` (middle, final) and ``mae_loss_ratio``; ``loss`` is the
    weighted sum. A term the student has no head for (no final head, no MAE heads) is 0, as the official code
    logs it; a term whose weight is 0 is reported but left out of ``loss``.
    """
    if len(weights) != 3:
        raise ValueError(f"weights must be (clip_middle, clip_final, mae), got {tuple(weights)}")
    if mask.dtype != torch.bool or mask.ndim != 2:
        raise ValueError(f"mask must be bool (B, T·HW), got {mask.dtype} {tuple(mask.shape)}")
    targets = visible_targets(teacher_out, mask)
    if targets.clip_middle is None:
        raise ValueError("teacher_out.clip_middle is None: the CLIP middle-layer targets are required")
    terms = {"clip_middle": _term("clip_middle", student_out.clip_middle, targets.clip_middle)}
    zero = terms["clip_middle"].new_zeros(())
    terms["clip_final"] = (
        _term("clip_final", student_out.clip_final, targets.clip_final) if student_out.clip_final is not None
        else zero
    )
    terms["mae"] = _term("mae", student_out.mae, targets.mae) if student_out.mae is not None else zero
    loss = zero
    for key, weight in zip(LOSS_KEYS, weights):
        if weight != 0:
            loss = loss + weight * terms[key]
    terms["loss"] = loss
    return terms


def _term(name: str, student: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        raise ValueError(f"the student has {name} heads but teacher_out.{name} is None (no target for them)")
    if student.shape != target.shape:
        raise ValueError(
            f"{name}: student output {tuple(student.shape)} and teacher target {tuple(target.shape)} (at the "
            "visible tokens) differ; check the teacher's tapped layer count, width and token grid"
        )
    return cosine_distance_loss(student, target)


def _expect(t: torch.Tensor, name: str, shape: tuple[int | None, ...]) -> None:
    if t.ndim != len(shape) or any(want is not None and got != want for got, want in zip(t.shape, shape)):
        wanted = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {wanted} for this mask")
