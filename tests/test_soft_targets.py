"""kl's soft-target options (issue 18): ``hard_label_weight`` (L = L_soft + lambda * L_hard) and
``label_smoothing`` (p' = (1 - eps) p + eps / |A|). Off by default, where the loss is bit for bit
the plain KL the code computed before them."""

from __future__ import annotations

import math

import pytest
import torch

from policykd.data.actions import INVALID_LOGIT
from policykd.errors import PolicyKDError
from policykd.learn.losses import (
    KLLoss,
    MSELoss,
    NLLLoss,
    categorical_kl,
    diag_gaussian_kl,
    make_loss,
    smooth_log_probs,
)
from policykd.learn.targets import soften
from policykd.types import StudentOutput, TeacherOutput

B, A, D = 32, 5, 3


def _discrete(seed: int) -> tuple[TeacherOutput, StudentOutput]:
    g = torch.Generator().manual_seed(seed)
    teacher = TeacherOutput("q_values", q_values=torch.randn(B, A, generator=g) * 3)
    logits = (torch.randn(B, A, generator=g) * 2).requires_grad_()
    return teacher, StudentOutput("discrete", logits=logits)


def _gaussian(seed: int) -> tuple[TeacherOutput, StudentOutput]:
    g = torch.Generator().manual_seed(seed)
    teacher = TeacherOutput("gaussian", mean=torch.randn(B, D, generator=g), log_std=torch.randn(B, D, generator=g))
    mean, log_std = torch.randn(B, D, generator=g).requires_grad_(), torch.randn(B, D, generator=g).requires_grad_()
    return teacher, StudentOutput("gaussian", mean=mean, log_std=log_std)


def _plain_kl(student: StudentOutput, target, tau: float, temperature_on: str, direction: str) -> torch.Tensor:
    """The per-sample KL as KLLoss computed it before the soft-target options existed."""
    tau_s = tau if temperature_on == "both" else 1.0
    if target.kind == "discrete":
        teacher, student_lp = target.log_probs.detach(), torch.log_softmax(student.logits / tau_s, dim=-1)
        return categorical_kl(teacher, student_lp) if direction == "forward" else categorical_kl(student_lp, teacher)
    t = (target.mean.detach(), target.log_std.detach())
    s = (student.mean, student.log_std + math.log(tau_s))
    return diag_gaussian_kl(*t, *s) if direction == "forward" else diag_gaussian_kl(*s, *t)


def _grads(loss: torch.Tensor, student: StudentOutput) -> list[torch.Tensor]:
    leaves = [x for x in (student.logits, student.mean, student.log_std) if x is not None]
    return list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("make", [_discrete, _gaussian])
@pytest.mark.parametrize(
    ("direction", "temperature_on", "tau2"), [("forward", "teacher", False), ("reverse", "both", True)]
)
@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_defaults_are_bit_for_bit_the_plain_kl(make, direction, temperature_on, tau2, tau) -> None:
    teacher, student = make(0)
    target = soften(teacher, tau)
    kind = teacher.kind
    loss_fn = make_loss(
        "kl", kind, temperature=tau, temperature_on=temperature_on, direction=direction, tau2_scaling=tau2
    )
    assert (loss_fn.hard_label_weight, loss_fn.label_smoothing) == (0.0, 0.0)
    out = loss_fn(student, target)
    expected = _plain_kl(student, target, tau, temperature_on, direction) * (tau**2 if tau2 else 1.0)
    assert torch.equal(out.loss, expected.mean())
    assert torch.equal(torch.tensor(out.metrics["losses/distill"]), expected.detach().mean())
    assert set(out.metrics) == {"losses/distill"}  # no hard-label metric when it is off
    for got, want in zip(_grads(out.loss, student), _grads(expected.mean(), student)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("tau2", [False, True])
def test_hard_label_weight_adds_lambda_times_nll_on_discrete(tau2: bool) -> None:
    teacher, student = _discrete(1)
    target, lam = soften(teacher, 2.0), 0.7
    mixed = KLLoss(2.0, tau2_scaling=tau2, reduction="none", hard_label_weight=lam)(student, target)
    soft = KLLoss(2.0, tau2_scaling=tau2, reduction="none")(student, target).loss
    hard = NLLLoss(reduction="none")(student, target).loss
    torch.testing.assert_close(mixed.loss, soft + lam * hard, rtol=1e-6, atol=1e-6)
    assert mixed.metrics["losses/hard_label"] == pytest.approx(hard.mean().item(), rel=1e-6)
    assert mixed.metrics["losses/distill"] == pytest.approx((soft + lam * hard).mean().item(), rel=1e-6)


def test_hard_label_weight_on_gaussian_is_squared_error_to_the_teacher_mean() -> None:
    teacher, student = _gaussian(2)
    target, lam = soften(teacher, 1.0), 0.25
    mixed = make_loss("kl", "gaussian", hard_label_weight=lam, reduction="none")(student, target)
    soft = KLLoss(reduction="none")(student, target).loss
    hard = MSELoss(reduction="none")(student, target).loss  # the student's mean against target.action
    torch.testing.assert_close(target.action, teacher.mean)
    torch.testing.assert_close(mixed.loss, soft + lam * hard, rtol=1e-6, atol=1e-6)
    assert mixed.metrics["losses/hard_label"] == pytest.approx(hard.mean().item(), rel=1e-6)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_label_smoothing_mixes_the_target_with_uniform(direction: str) -> None:
    teacher, student = _discrete(3)
    target, eps = soften(teacher, 0.5), 0.1
    smoothed_p = (1 - eps) * target.log_probs.exp() + eps / A
    out = make_loss("kl", "q_values", temperature=0.5, direction=direction, label_smoothing=eps, reduction="none")
    student_lp = torch.log_softmax(student.logits, dim=-1)
    pair = (smoothed_p.log(), student_lp) if direction == "forward" else (student_lp, smoothed_p.log())
    torch.testing.assert_close(out(student, target).loss, categorical_kl(*pair), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(
        out(student, target).loss, KLLoss(0.5, direction=direction, reduction="none")(student, target).loss
    )


def test_label_smoothing_leaves_masked_and_padded_actions_at_zero() -> None:
    """A masked action (or a factor's padded choice) has logit INVALID_LOGIT: it stays at probability
    0 and the eps mass spreads over the allowed actions only, factor by factor."""
    logits = torch.tensor([[[2.0, 0.0, INVALID_LOGIT], [1.0, -1.0, 0.5]]])  # (B=1, F=2, C=3)
    log_p = torch.log_softmax(logits, dim=-1)
    smoothed = smooth_log_probs(log_p, 0.2).exp()
    assert smoothed[0, 0, 2] == 0.0
    torch.testing.assert_close(smoothed.sum(dim=-1), torch.ones(1, 2))
    torch.testing.assert_close(smoothed[0, 0, :2], 0.8 * log_p.exp()[0, 0, :2] + 0.1)
    torch.testing.assert_close(smoothed[0, 1], 0.8 * log_p.exp()[0, 1] + 0.2 / 3)
    student = StudentOutput("discrete", logits=logits + torch.tensor([0.0, 0.3, 0.0]))
    loss = KLLoss(label_smoothing=0.2, hard_label_weight=0.5)(
        student, soften(TeacherOutput("categorical", logits=logits), 1.0)
    )
    assert torch.isfinite(loss.loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hard_label_weight": -0.1}, "--hard-label-weight must be a finite number >= 0"),
        ({"hard_label_weight": math.inf}, "--hard-label-weight must be a finite number >= 0"),
        ({"label_smoothing": 1.0}, r"--label-smoothing must lie in \[0, 1\)"),
        ({"label_smoothing": math.nan}, r"--label-smoothing must lie in \[0, 1\)"),
    ],
)
def test_soft_target_options_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(PolicyKDError, match=match):
        KLLoss(**kwargs)
    with pytest.raises(PolicyKDError, match=match):
        make_loss("nll", "categorical", **kwargs)  # validated for every loss, so a typo never passes


def test_label_smoothing_refuses_gaussian_teachers() -> None:
    with pytest.raises(PolicyKDError, match="--label-smoothing needs a discrete-action teacher"):
        make_loss("kl", "squashed_gaussian", label_smoothing=0.1)
    teacher, student = _gaussian(4)
    with pytest.raises(PolicyKDError, match="--label-smoothing needs a discrete-action teacher"):
        KLLoss(label_smoothing=0.1)(student, soften(teacher, 1.0))
