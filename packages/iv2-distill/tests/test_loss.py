"""distillation_loss against the official engine's computation (float64, REFERENCE b/o)."""

import pytest
import torch
from _distill_reference import official_loss_reference, unit

from iv2_distill import StudentOutput, TeacherOutput, distillation_loss, random_mask


def make_case(k=3, km=2, b=2, n=12, c=8, cf=5, cm=6, dropped=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mask = random_mask(b, (3, 2, 2), dropped / n, generator=g)
    nv = n - int(n * dropped / n)
    r = lambda *s: unit(torch.randn(*s, generator=g, dtype=torch.float64)).to(dtype)
    student = StudentOutput(r(k, b, 1 + nv, c), r(b, cf), r(km, b, nv, cm))
    teacher = TeacherOutput(r(k, b, 1 + n, c), r(b, cf), r(km, b, n, cm))
    return student, teacher, mask


def test_loss_equals_the_official_engine_in_float64():
    student, teacher, mask = make_case()
    losses = distillation_loss(student, teacher, mask, weights=(1.0, 0.5, 2.0))
    # the official engine prepends a visible class column to the mask before gathering the targets
    with_cls = torch.cat([torch.zeros(mask.shape[0], 1, dtype=torch.bool), mask], dim=1)
    terms, total = official_loss_reference(student.clip_middle, student.clip_final, student.mae, teacher.clip_middle,
                                           teacher.clip_final, teacher.mae, with_cls, ratios=(1.0, 0.5, 2.0))
    assert set(losses) == {"clip_middle", "clip_final", "mae", "loss"}
    for key, ref in zip(("clip_middle", "clip_final", "mae"), terms):
        torch.testing.assert_close(losses[key], ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(losses["loss"], total, rtol=0, atol=1e-12)


def test_loss_in_float32_is_within_1e6_of_float64():
    student, teacher, mask = make_case(dtype=torch.float32)
    with_cls = torch.cat([torch.zeros(mask.shape[0], 1, dtype=torch.bool), mask], dim=1)
    _, total = official_loss_reference(student.clip_middle, student.clip_final, student.mae, teacher.clip_middle,
                                       teacher.clip_final, teacher.mae, with_cls)
    got = distillation_loss(student, teacher, mask)["loss"]
    assert got.dtype == torch.float32
    assert abs(got.double() - total).item() < 1e-6


def test_each_term_is_the_mean_squared_distance_of_unit_vectors_not_mse():
    student, teacher, mask = make_case()
    losses = distillation_loss(student, teacher, mask)
    # the final term by hand: mean over batch of ||s - t||^2 (= 2 - 2<s,t> for unit vectors)
    by_hand = sum(((s - t) ** 2).sum().item() for s, t in zip(student.clip_final, teacher.clip_final)) / 2
    assert abs(losses["clip_final"].item() - by_hand) < 1e-12
    mse = torch.nn.functional.mse_loss(student.clip_final, teacher.clip_final)
    assert abs(losses["clip_final"].item() - 5 * mse.item()) < 1e-12  # nn.MSELoss is smaller by C = 5


def test_targets_are_taken_at_the_visible_tokens_class_row_included():
    _, teacher, mask = make_case(k=1, km=1, b=1)
    visible = torch.nonzero(~mask[0])[:, 0]
    # a student that reproduces the teacher exactly at the visible tokens has zero loss
    exact = StudentOutput(teacher.clip_middle[:, :, torch.cat([torch.zeros(1, dtype=torch.long), visible + 1])],
                          teacher.clip_final, teacher.mae[:, :, visible])
    losses = distillation_loss(exact, teacher, mask)
    assert losses["loss"].abs().item() < 1e-12
    # ... and not at any other tokens
    shifted = StudentOutput(teacher.clip_middle[:, :, : 1 + len(visible)], teacher.clip_final,
                            teacher.mae[:, :, : len(visible)])
    assert distillation_loss(shifted, teacher, mask)["clip_middle"].item() > 0.1


def test_absent_heads_give_zero_terms_and_zero_weights_leave_terms_out():
    student, teacher, mask = make_case()
    no_heads = StudentOutput(student.clip_middle, None, None)
    losses = distillation_loss(no_heads, TeacherOutput(teacher.clip_middle, None), mask)
    assert losses["clip_final"].item() == 0 and losses["mae"].item() == 0
    torch.testing.assert_close(losses["loss"], losses["clip_middle"])
    # official: a final ratio of 0 drops the term from the total; it is still reported
    weighted = distillation_loss(student, teacher, mask, weights=(1.0, 0.0, 1.0))
    assert weighted["clip_final"].item() > 0
    torch.testing.assert_close(weighted["loss"], weighted["clip_middle"] + weighted["mae"])


def test_gradient_flows_to_the_student_only():
    student, teacher, mask = make_case(dtype=torch.float32)
    for t in (student.clip_middle, student.clip_final, student.mae):
        t.requires_grad_(True)
    distillation_loss(student, teacher, mask)["loss"].backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (student.clip_middle, student.mae))


def test_mismatches_are_clear_errors():
    student, teacher, mask = make_case()
    with pytest.raises(ValueError, match="teacher_out.mae is None"):
        distillation_loss(student, TeacherOutput(teacher.clip_middle, teacher.clip_final), mask)
    with pytest.raises(ValueError, match=r"clip_middle: student output \(2, 2"):
        distillation_loss(StudentOutput(student.clip_middle[:2], student.clip_final, student.mae), teacher, mask)
    with pytest.raises(ValueError, match="teacher clip_middle has shape"):
        distillation_loss(student, teacher, torch.zeros(2, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match="weights"):
        distillation_loss(student, teacher, mask, weights=(1.0, 1.0))
