"""Detached distillation metrics: entropies, forward KL to the tau = 1 teacher, action agreement."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from policykd.errors import PolicyKDError
from policykd.learn.metrics import distill_metrics, student_entropy, target_entropy
from policykd.learn.targets import soften
from policykd.types import DistillTarget, StudentOutput, TeacherOutput

B, A, D = 8, 5, 3
TAU = 2.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normal(mean: torch.Tensor, log_std: torch.Tensor) -> Independent:
    return Independent(Normal(mean, log_std.exp()), 1)


def _discrete(seed: int = 0) -> tuple[TeacherOutput, StudentOutput]:
    g = _gen(seed)
    teacher = TeacherOutput("categorical", logits=torch.randn(B, A, generator=g) * 2)
    return teacher, StudentOutput("discrete", logits=torch.randn(B, A, generator=g, requires_grad=True))


def _gaussian(seed: int = 0) -> tuple[TeacherOutput, StudentOutput]:
    g = _gen(seed)
    teacher = TeacherOutput(
        "squashed_gaussian", mean=torch.randn(B, D, generator=g), log_std=torch.randn(B, D, generator=g) * 0.3
    )
    mean = torch.randn(B, D, generator=g, requires_grad=True)
    return teacher, StudentOutput("gaussian", mean=mean, log_std=torch.randn(B, D, generator=g) * 0.3)


def test_target_entropy_discrete_matches_torch() -> None:
    teacher, _ = _discrete()
    target = soften(teacher, TAU)
    torch.testing.assert_close(target_entropy(target), Categorical(logits=teacher.logits / TAU).entropy())


def test_target_entropy_gaussian_matches_torch() -> None:
    teacher, _ = _gaussian()
    target = soften(teacher, TAU)
    expected = _normal(teacher.mean, teacher.log_std).entropy() + D * torch.log(torch.tensor(TAU))
    torch.testing.assert_close(target_entropy(target), expected)


def test_entropy_zero_probability_counts_zero() -> None:
    target = soften(TeacherOutput("categorical", logits=torch.tensor([[0.0, -1e4, -torch.inf]])), 0.01)
    torch.testing.assert_close(target_entropy(target), torch.tensor([0.0]))


def test_student_entropy_matches_torch() -> None:
    _, discrete = _discrete()
    torch.testing.assert_close(student_entropy(discrete), Categorical(logits=discrete.logits).entropy().detach())
    _, gaussian = _gaussian()
    torch.testing.assert_close(student_entropy(gaussian), _normal(gaussian.mean, gaussian.log_std).entropy().detach())


def test_deterministic_entropies_are_none() -> None:
    assert target_entropy(DistillTarget("deterministic", action=torch.zeros(B, D))) is None
    assert student_entropy(StudentOutput("deterministic", action=torch.zeros(B, D))) is None


def test_distill_metrics_discrete() -> None:
    teacher, student = _discrete(seed=1)
    metrics = distill_metrics(student, soften(teacher, TAU), soften(teacher, 1.0))
    assert set(metrics) == {
        "teacher/entropy",
        "student/entropy",
        "distill/kl_teacher_student",
        "distill/action_agreement",
    }
    assert all(isinstance(v, float) for v in metrics.values())
    # teacher/entropy is of the softened target, the KL of the tau = 1 reference.
    assert metrics["teacher/entropy"] == pytest.approx(Categorical(logits=teacher.logits / TAU).entropy().mean().item())
    assert metrics["student/entropy"] == pytest.approx(Categorical(logits=student.logits).entropy().mean().item())
    kl = kl_divergence(Categorical(logits=teacher.logits), Categorical(logits=student.logits)).mean()
    assert metrics["distill/kl_teacher_student"] == pytest.approx(kl.item(), rel=1e-5)
    agree = (teacher.logits.argmax(-1) == student.logits.argmax(-1)).float().mean()
    assert metrics["distill/action_agreement"] == pytest.approx(agree.item())


@pytest.mark.parametrize(("n_agree", "expected"), [(0, 0.0), (3, 0.75), (4, 1.0)])
def test_action_agreement_is_top1_fraction(n_agree: int, expected: float) -> None:
    teacher_logits = torch.eye(4) * 5
    student_logits = torch.cat([torch.eye(4)[:n_agree], torch.eye(4)[n_agree:].roll(1, dims=1)])
    teacher = TeacherOutput("q_values", q_values=teacher_logits)
    metrics = distill_metrics(
        StudentOutput("discrete", logits=student_logits), soften(teacher, TAU), soften(teacher, 1.0)
    )
    assert metrics["distill/action_agreement"] == pytest.approx(expected)


def test_distill_metrics_gaussian() -> None:
    teacher, student = _gaussian(seed=2)
    metrics = distill_metrics(student, soften(teacher, TAU), soften(teacher, 1.0))
    assert set(metrics) == {
        "teacher/entropy",
        "student/entropy",
        "distill/kl_teacher_student",
        "distill/action_agreement",
    }
    kl = kl_divergence(_normal(teacher.mean, teacher.log_std), _normal(student.mean, student.log_std)).mean()
    assert metrics["distill/kl_teacher_student"] == pytest.approx(kl.item(), rel=1e-5)
    gap = (student.mean - teacher.mean).norm(dim=-1).mean()
    assert metrics["distill/action_agreement"] == pytest.approx(gap.item(), rel=1e-5)


def test_action_gap_is_zero_when_student_matches() -> None:
    teacher, _ = _gaussian(seed=3)
    student = StudentOutput("gaussian", mean=teacher.mean, log_std=teacher.log_std)
    metrics = distill_metrics(student, soften(teacher, TAU), soften(teacher, 1.0))
    assert metrics["distill/action_agreement"] == pytest.approx(0.0)
    assert metrics["distill/kl_teacher_student"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("student_kind", ["deterministic", "gaussian"])
def test_distill_metrics_deterministic_teacher(student_kind: str) -> None:
    g = _gen(4)
    teacher = TeacherOutput("deterministic", action=torch.rand(B, D, generator=g) * 2 - 1)
    prediction = torch.rand(B, D, generator=g) * 2 - 1
    student = (
        StudentOutput("deterministic", action=prediction)
        if student_kind == "deterministic"
        else StudentOutput("gaussian", mean=prediction, log_std=torch.zeros(B, D))
    )
    metrics = distill_metrics(student, soften(teacher, TAU), soften(teacher, 1.0))
    expected_keys = {"distill/action_agreement"} | ({"student/entropy"} if student_kind == "gaussian" else set())
    assert set(metrics) == expected_keys
    gap = (prediction - teacher.action).norm(dim=-1).mean()
    assert metrics["distill/action_agreement"] == pytest.approx(gap.item(), rel=1e-5)


def test_distill_metrics_do_not_build_a_graph() -> None:
    teacher, student = _discrete(seed=5)
    assert student.logits.requires_grad
    assert all(
        isinstance(v, float) for v in distill_metrics(student, soften(teacher, TAU), soften(teacher, 1.0)).values()
    )
    assert student_entropy(student).grad_fn is None


def test_distill_metrics_refuse_mismatched_kinds() -> None:
    teacher, _ = _gaussian()
    target = soften(teacher, 1.0)
    with pytest.raises(PolicyKDError, match="student_kind_for"):
        distill_metrics(StudentOutput("discrete", logits=torch.zeros(B, A)), target, target)
