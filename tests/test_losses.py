"""Losses against torch.distributions or a hand computation, in both directions, every reduction."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from policykd.errors import PolicyKDError
from policykd.learn.losses import LOSSES, KLLoss, MSELoss, NLLLoss, make_loss
from policykd.learn.targets import soften
from policykd.types import DistillTarget, StudentOutput, TeacherOutput

B, A, D = 6, 4, 3
REDUCTIONS = ("mean", "sum", "none")
STOCHASTIC_KINDS = ("categorical", "q_values", "quantiles", "gaussian", "squashed_gaussian")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _discrete(seed: int = 0, kind: str = "categorical") -> tuple[TeacherOutput, StudentOutput]:
    g = _gen(seed)
    scores = torch.randn(B, A, generator=g) * 2
    teacher = TeacherOutput(kind, logits=scores) if kind == "categorical" else TeacherOutput(kind, q_values=scores)
    return teacher, StudentOutput("discrete", logits=torch.randn(B, A, generator=g) * 2)


def _gaussian(seed: int = 0) -> tuple[TeacherOutput, StudentOutput]:
    g = _gen(seed)
    teacher = TeacherOutput(
        "gaussian", mean=torch.randn(B, D, generator=g), log_std=torch.randn(B, D, generator=g) * 0.5
    )
    student = StudentOutput(
        "gaussian", mean=torch.randn(B, D, generator=g), log_std=torch.randn(B, D, generator=g) * 0.5
    )
    return teacher, student


def _normal(mean: torch.Tensor, log_std: torch.Tensor) -> Independent:
    return Independent(Normal(mean, log_std.exp()), 1)


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    return {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]


def _reference_kl(teacher, student, direction: str) -> torch.Tensor:
    return kl_divergence(teacher, student) if direction == "forward" else kl_divergence(student, teacher)


KL_GRID = pytest.mark.parametrize(
    ("direction", "temperature_on", "tau2_scaling"),
    [(d, t, s) for d in ("forward", "reverse") for t in ("teacher", "both") for s in (False, True)],
)


@KL_GRID
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_kl_discrete_matches_torch(direction, temperature_on, tau2_scaling, reduction, tau) -> None:
    teacher, student = _discrete(seed=1)
    loss = KLLoss(tau, temperature_on, direction, tau2_scaling, reduction)
    out = loss(student, soften(teacher, tau))
    tau_s = tau if temperature_on == "both" else 1.0
    teacher_dist, student_dist = Categorical(logits=teacher.logits / tau), Categorical(logits=student.logits / tau_s)
    per_sample = _reference_kl(teacher_dist, student_dist, direction)
    per_sample = per_sample * (tau**2 if tau2_scaling else 1.0)
    torch.testing.assert_close(out.loss, _reduce(per_sample, reduction))
    assert out.metrics["losses/distill"] == pytest.approx(per_sample.mean().item(), rel=1e-5)


@KL_GRID
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_kl_gaussian_matches_torch(direction, temperature_on, tau2_scaling, reduction, tau) -> None:
    teacher, student = _gaussian(seed=2)
    loss = KLLoss(tau, temperature_on, direction, tau2_scaling, reduction)
    out = loss(student, soften(teacher, tau))
    log_tau_s = math.log(tau) if temperature_on == "both" else 0.0
    teacher_dist = _normal(teacher.mean, teacher.log_std + math.log(tau))
    student_dist = _normal(student.mean, student.log_std + log_tau_s)
    per_sample = _reference_kl(teacher_dist, student_dist, direction) * (tau**2 if tau2_scaling else 1.0)
    torch.testing.assert_close(out.loss, _reduce(per_sample, reduction))


@pytest.mark.parametrize("kind", ["q_values", "quantiles"])
def test_kl_q_teacher_uses_softmax_of_q_over_tau(kind: str) -> None:
    teacher, student = _discrete(seed=3, kind=kind)
    out = KLLoss(temperature=0.7)(student, soften(teacher, 0.7))
    expected = kl_divergence(Categorical(logits=teacher.q_values / 0.7), Categorical(logits=student.logits))
    torch.testing.assert_close(out.loss, expected.mean())


@pytest.mark.parametrize("make", [_discrete, _gaussian])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_kl_is_zero_when_student_equals_teacher(make, direction: str) -> None:
    teacher, _ = make(seed=4)
    student = (
        StudentOutput("discrete", logits=teacher.logits)
        if teacher.logits is not None
        else (StudentOutput("gaussian", mean=teacher.mean, log_std=teacher.log_std))
    )
    out = KLLoss(temperature=1.5, temperature_on="both", direction=direction)(student, soften(teacher, 1.5))
    torch.testing.assert_close(out.loss, torch.tensor(0.0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("temperature_on", ["teacher", "both"])
def test_kl_no_nan_when_teacher_probability_underflows(direction: str, temperature_on: str) -> None:
    teacher = TeacherOutput("categorical", logits=torch.tensor([[0.0, -1e4], [-1e4, 0.0]]))
    logits = torch.tensor([[0.5, -0.5], [1.0, 2.0]], requires_grad=True)
    out = KLLoss(0.01, temperature_on, direction)(StudentOutput("discrete", logits=logits), soften(teacher, 0.01))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logits.grad).all()


def test_kl_no_nan_with_minus_inf_teacher_logit() -> None:
    teacher = TeacherOutput("categorical", logits=torch.tensor([[0.0, -math.inf, 1.0]]))
    logits = torch.zeros(1, 3, requires_grad=True)
    out = KLLoss()(StudentOutput("discrete", logits=logits), soften(teacher, 1.0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(logits.grad).all()


def test_nll_discrete_is_cross_entropy_to_teacher_argmax() -> None:
    teacher, student = _discrete(seed=5)
    labels = teacher.logits.argmax(-1)
    for reduction in REDUCTIONS:
        out = NLLLoss(reduction)(student, soften(teacher, 3.0))  # argmax does not depend on tau
        per_sample = -Categorical(logits=student.logits).log_prob(labels)
        torch.testing.assert_close(out.loss, _reduce(per_sample, reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_gaussian_is_log_likelihood_of_teacher_action(reduction: str) -> None:
    teacher, student = _gaussian(seed=6)
    out = NLLLoss(reduction, min_std=0.0)(student, soften(teacher, 0.5))
    per_sample = -_normal(student.mean, student.log_std).log_prob(teacher.mean)
    torch.testing.assert_close(out.loss, _reduce(per_sample, reduction))


def test_nll_gaussian_floors_the_student_std() -> None:
    teacher, student = _gaussian(seed=6)
    log_std = torch.full((B, D), math.log(1e-3), requires_grad=True)  # far below the 0.1 floor
    shrunk = StudentOutput("gaussian", mean=student.mean.clone().requires_grad_(), log_std=log_std)
    out = NLLLoss()(shrunk, soften(teacher, 1.0))
    floored = -_normal(student.mean, torch.full((B, D), math.log(0.1))).log_prob(teacher.mean)
    torch.testing.assert_close(out.loss, floored.mean())
    out.loss.backward()
    assert (
        log_std.grad == 0
    ).all() and shrunk.mean.grad.abs().sum() > 0  # the std stops shrinking; the mean still learns
    above = StudentOutput("gaussian", mean=student.mean, log_std=torch.zeros(B, D))  # std 1: the floor changes nothing
    torch.testing.assert_close(
        NLLLoss()(above, soften(teacher, 1.0)).loss, NLLLoss(min_std=0.0)(above, soften(teacher, 1.0)).loss
    )


@pytest.mark.parametrize("kind", ["q_values", "quantiles"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_discrete_matches_q_values(kind: str, reduction: str) -> None:
    teacher, student = _discrete(seed=7, kind=kind)
    out = MSELoss(reduction, center_q=False)(student, soften(teacher, 0.1))  # raw Q, not softened
    per_sample = ((student.logits - teacher.q_values) ** 2).sum(-1)
    torch.testing.assert_close(out.loss, _reduce(per_sample, reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_centered_q_ignores_a_per_state_constant(reduction: str) -> None:
    teacher, student = _discrete(seed=7, kind="q_values")
    out = MSELoss(reduction)(student, soften(teacher, 1.0))
    s = student.logits - student.logits.mean(-1, keepdim=True)
    t = teacher.q_values - teacher.q_values.mean(-1, keepdim=True)
    torch.testing.assert_close(out.loss, _reduce(((s - t) ** 2).sum(-1), reduction))
    shift = 100.0 * torch.randn(
        len(teacher.q_values), 1, generator=_gen(8)
    )  # seeded: the global RNG depends on test order
    shifted = teacher._replace(q_values=teacher.q_values + shift)
    # float32 centring of values ~100 loses ~1e-5 absolute per Q-value
    torch.testing.assert_close(MSELoss(reduction)(student, soften(shifted, 1.0)).loss, out.loss, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("student_kind", ["gaussian", "deterministic"])
@pytest.mark.parametrize("teacher_kind", ["gaussian", "deterministic"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_continuous_is_squared_error_of_greedy_actions(student_kind, teacher_kind, reduction) -> None:
    g = _gen(8)
    goal = torch.randn(B, D, generator=g)
    teacher = (
        TeacherOutput("gaussian", mean=goal, log_std=torch.zeros(B, D))
        if teacher_kind == "gaussian"
        else TeacherOutput("deterministic", action=goal)
    )
    prediction = torch.randn(B, D, generator=g)
    student = (
        StudentOutput("gaussian", mean=prediction, log_std=torch.zeros(B, D))
        if student_kind == "gaussian"
        else StudentOutput("deterministic", action=prediction)
    )
    out = MSELoss(reduction)(student, soften(teacher, 2.0))
    torch.testing.assert_close(out.loss, _reduce(((prediction - goal) ** 2).sum(-1), reduction))


def _all_losses() -> list[tuple[str, object, TeacherOutput, StudentOutput]]:
    cases = []
    losses = [("kl-f", KLLoss(temperature=2.0)), ("kl-r", KLLoss(2.0, "both", "reverse", True)), ("nll", NLLLoss())]
    for name, loss in losses:
        cases.append((f"{name}-discrete", loss, *_discrete(seed=9)))
        cases.append((f"{name}-gaussian", loss, *_gaussian(seed=9)))
    cases.append(("mse-q", MSELoss(), *_discrete(seed=9, kind="q_values")))
    cases.append(("mse-gaussian", MSELoss(), *_gaussian(seed=9)))
    return cases


@pytest.mark.parametrize(("name", "loss", "teacher", "student"), _all_losses(), ids=[c[0] for c in _all_losses()])
def test_reductions_relate_exactly(name, loss, teacher, student) -> None:
    target = soften(teacher, 2.0)
    outs = {r: dataclasses.replace(loss, reduction=r)(student, target) for r in REDUCTIONS}
    assert outs["none"].loss.shape == (B,)
    assert outs["mean"].loss.shape == outs["sum"].loss.shape == ()
    torch.testing.assert_close(outs["mean"].loss, outs["sum"].loss / B)
    torch.testing.assert_close(outs["mean"].loss, outs["none"].loss.mean())
    for out in outs.values():  # the logged value is the batch mean whatever the reduction
        assert out.metrics["losses/distill"] == pytest.approx(outs["mean"].loss.item(), rel=1e-6)
        assert isinstance(out.metrics["losses/distill"], float)


def _with_grad(output: TeacherOutput | StudentOutput) -> TeacherOutput | StudentOutput:
    return output._replace(**{k: v.clone().requires_grad_() for k, v in output._asdict().items() if torch.is_tensor(v)})


@pytest.mark.parametrize(("name", "loss", "teacher", "student"), _all_losses(), ids=[c[0] for c in _all_losses()])
def test_gradients_reach_student_not_target(name, loss, teacher, student) -> None:
    teacher, student = _with_grad(teacher), _with_grad(student)
    loss(student, soften(teacher, 2.0)).loss.backward()
    # MSE on a gaussian student uses only its mean; its log_std then has no gradient.
    student_grads = [v.grad for v in student[1:] if v is not None and v.grad is not None]
    assert student_grads and all(torch.isfinite(grad).all() for grad in student_grads)
    assert any(grad.abs().sum() > 0 for grad in student_grads)
    assert all(v.grad is None for v in teacher[1:] if v is not None)


def test_losses_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KLLoss().temperature = 2.0  # type: ignore[misc]


DISCRETE_STUDENT = StudentOutput("discrete", logits=torch.zeros(B, A))
GAUSSIAN_STUDENT = StudentOutput("gaussian", mean=torch.zeros(B, D), log_std=torch.zeros(B, D))
DETERMINISTIC_STUDENT = StudentOutput("deterministic", action=torch.zeros(B, D))
GAUSSIAN_TARGET = DistillTarget("gaussian", mean=torch.zeros(B, D), log_std=torch.zeros(B, D))
DETERMINISTIC_TARGET = DistillTarget("deterministic", action=torch.zeros(B, D))
CATEGORICAL_TARGET = DistillTarget("discrete", log_probs=torch.full((B, A), -math.log(A)))


@pytest.mark.parametrize(
    ("loss", "student", "target", "match"),
    [
        (KLLoss(), DETERMINISTIC_STUDENT, DETERMINISTIC_TARGET, "use --loss mse"),
        (KLLoss(), GAUSSIAN_STUDENT, DETERMINISTIC_TARGET, "use --loss mse"),
        (KLLoss(), DISCRETE_STUDENT, GAUSSIAN_TARGET, "student_kind_for"),
        (NLLLoss(), DETERMINISTIC_STUDENT, DETERMINISTIC_TARGET, "use --loss mse"),
        (NLLLoss(), GAUSSIAN_STUDENT, CATEGORICAL_TARGET, "student_kind_for"),
        (MSELoss(), DISCRETE_STUDENT, CATEGORICAL_TARGET, "use --loss kl or nll"),
        (MSELoss(), DISCRETE_STUDENT, DETERMINISTIC_TARGET, "student_kind_for"),
    ],
)
def test_losses_refuse_mismatched_inputs(loss, student, target, match: str) -> None:
    with pytest.raises(PolicyKDError, match=match):
        loss(student, target)


@pytest.mark.parametrize(
    ("name", "teacher_kind", "cls"),
    [(n, k, c) for n, c in (("kl", KLLoss), ("nll", NLLLoss)) for k in STOCHASTIC_KINDS]
    + [("mse", k, MSELoss) for k in ("q_values", "quantiles", "gaussian", "squashed_gaussian", "deterministic")],
)
def test_make_loss_builds_valid_combinations(name: str, teacher_kind: str, cls: type) -> None:
    loss = make_loss(name, teacher_kind, temperature=2.0, reduction="sum")
    assert isinstance(loss, cls) and loss.reduction == "sum"


def test_make_loss_passes_the_nll_floor() -> None:
    assert make_loss("nll", "squashed_gaussian", nll_min_std=0.0) == NLLLoss("mean", 0.0)
    assert make_loss("nll", "gaussian").min_std == 0.1


def test_make_loss_passes_kl_options() -> None:
    loss = make_loss("kl", "gaussian", temperature=3.0, temperature_on="both", direction="reverse", tau2_scaling=True)
    assert loss == KLLoss(3.0, "both", "reverse", True, "mean")
    assert set(LOSSES) == {"kl", "nll", "mse"}


@pytest.mark.parametrize(
    ("name", "teacher_kind", "kwargs", "match"),
    [
        ("l2", "gaussian", {}, "unknown loss 'l2'; use one of kl, nll, mse"),
        ("kl", "deterministic", {}, "kl needs a stochastic teacher; use --loss mse.*'deterministic'"),
        ("nll", "deterministic", {}, "nll needs a stochastic student; use --loss mse.*'deterministic'"),
        ("mse", "categorical", {}, r"mse needs Q-values \(DQN/QR-DQN\) or .*; use --loss kl or nll.*'categorical'"),
        ("kl", "beta", {}, "unknown teacher kind 'beta'; expected one of categorical"),
        ("kl", "gaussian", {"direction": "backward"}, "direction must be one of forward, reverse, got 'backward'"),
        ("kl", "gaussian", {"temperature_on": "student"}, "temperature_on must be one of teacher, both"),
        ("nll", "gaussian", {"reduction": "avg"}, "reduction must be one of mean, sum, none"),
        ("kl", "categorical", {"temperature": 0.0}, "temperature must be > 0, got 0.0"),
        ("mse", "q_values", {"temperature": -1.0}, "temperature must be > 0, got -1.0"),
        ("nll", "gaussian", {"nll_min_std": -0.1}, "minimum std must be a finite number >= 0"),
    ],
)
def test_make_loss_refuses_invalid_combinations(name: str, teacher_kind: str, kwargs: dict, match: str) -> None:
    with pytest.raises(PolicyKDError, match=match) as info:
        make_loss(name, teacher_kind, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{"direction": "sideways"}, {"temperature_on": "none"}, {"reduction": "max"}, {"temperature": math.nan}],
)
def test_kl_loss_validates_its_fields(kwargs: dict) -> None:
    with pytest.raises(PolicyKDError):
        KLLoss(**kwargs)
