"""soften() and student_kind_for(): temperature is defined once, for every teacher kind."""

from __future__ import annotations

import math

import pytest
import torch

from policykd.errors import PolicyKDError
from policykd.learn.targets import check_temperature, soften, student_kind_for
from policykd.types import TEACHER_KINDS, TeacherOutput

B, A, D, N = 5, 4, 3, 7


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _teacher(kind: str, seed: int = 0) -> TeacherOutput:
    g = _gen(seed)
    value = torch.randn(B, generator=g)
    if kind == "categorical":
        return TeacherOutput(kind, logits=torch.randn(B, A, generator=g) * 3, value=value)
    if kind == "q_values":
        return TeacherOutput(kind, q_values=torch.randn(B, A, generator=g) * 3, value=value)
    if kind == "quantiles":
        quantiles = torch.randn(B, N, A, generator=g) * 3
        return TeacherOutput(kind, q_values=quantiles.mean(dim=1), quantiles=quantiles, value=value)
    if kind in ("gaussian", "squashed_gaussian"):
        mean, log_std = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g) * 0.5
        return TeacherOutput(kind, mean=mean, log_std=log_std, value=value)
    return TeacherOutput(kind, action=torch.rand(B, D, generator=g) * 2 - 1, value=value)


def _scores(out: TeacherOutput) -> torch.Tensor:
    return out.logits if out.kind == "categorical" else out.q_values


@pytest.mark.parametrize(
    ("teacher_kind", "student_kind"),
    [
        ("categorical", "discrete"),
        ("q_values", "discrete"),
        ("quantiles", "discrete"),
        ("gaussian", "gaussian"),
        ("squashed_gaussian", "gaussian"),
        ("deterministic", "deterministic"),
    ],
)
def test_student_kind_for(teacher_kind: str, student_kind: str) -> None:
    assert student_kind_for(teacher_kind) == student_kind
    assert soften(_teacher(teacher_kind), 1.0).kind == student_kind


def test_student_kind_for_unknown_kind() -> None:
    with pytest.raises(PolicyKDError, match="unknown teacher kind 'beta'.*categorical"):
        student_kind_for("beta")


@pytest.mark.parametrize("kind", ["categorical", "q_values", "quantiles"])
@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5])
def test_soften_discrete_is_log_softmax_of_scores_over_tau(kind: str, tau: float) -> None:
    out = _teacher(kind)
    target = soften(out, tau)
    expected = torch.log_softmax(_scores(out) / tau, dim=-1)
    torch.testing.assert_close(target.log_probs, expected)
    torch.testing.assert_close(target.log_probs.exp().sum(-1), torch.ones(B))
    assert target.action is None and target.mean is None and target.log_std is None
    if kind == "categorical":
        assert target.q_values is None
    else:
        # softmax(Q / tau) for the probabilities, raw Q carried for the MSE loss.
        torch.testing.assert_close(target.q_values, out.q_values)


def test_soften_quantiles_without_q_values_uses_mean_over_quantiles() -> None:
    out = _teacher("quantiles")._replace(q_values=None)
    target = soften(out, 0.5)
    torch.testing.assert_close(target.q_values, out.quantiles.mean(dim=1))
    torch.testing.assert_close(target.log_probs, torch.log_softmax(out.quantiles.mean(dim=1) / 0.5, dim=-1))


@pytest.mark.parametrize("kind", ["categorical", "q_values", "quantiles"])
def test_soften_small_tau_is_one_hot_on_argmax(kind: str) -> None:
    out = _teacher(kind)
    probs = soften(out, 1e-4).log_probs.exp()
    one_hot = torch.nn.functional.one_hot(_scores(out).argmax(-1), A).float()
    torch.testing.assert_close(probs, one_hot)


@pytest.mark.parametrize("kind", ["categorical", "q_values"])
def test_soften_large_tau_is_near_uniform(kind: str) -> None:
    probs = soften(_teacher(kind), 1e4).log_probs.exp()
    torch.testing.assert_close(probs, torch.full((B, A), 1 / A), atol=1e-3, rtol=0)


def test_soften_underflowing_probability_stays_finite() -> None:
    out = TeacherOutput("categorical", logits=torch.tensor([[0.0, -1e4]]))
    target = soften(out, 0.01)
    assert torch.isfinite(target.log_probs).all()
    torch.testing.assert_close(target.log_probs.exp(), torch.tensor([[1.0, 0.0]]))


@pytest.mark.parametrize("kind", ["gaussian", "squashed_gaussian"])
@pytest.mark.parametrize("tau", [0.1, 1.0, 3.0])
def test_soften_gaussian_scales_std_by_tau(kind: str, tau: float) -> None:
    out = _teacher(kind)
    target = soften(out, tau)
    torch.testing.assert_close(target.mean, out.mean)
    torch.testing.assert_close(target.log_std, out.log_std + math.log(tau))
    torch.testing.assert_close(target.log_std.exp(), out.log_std.exp() * tau)
    # The greedy action in the Gaussian's own space (pre-tanh for squashed_gaussian).
    torch.testing.assert_close(target.action, out.mean)
    assert target.log_probs is None and target.q_values is None


@pytest.mark.parametrize("tau", [1e-3, 1.0, 50.0])
def test_soften_deterministic_ignores_tau(tau: float) -> None:
    out = _teacher("deterministic")
    target = soften(out, tau)
    assert target.kind == "deterministic"
    torch.testing.assert_close(target.action, out.action)
    assert target.mean is None and target.log_std is None and target.log_probs is None


@pytest.mark.parametrize("kind", TEACHER_KINDS)
@pytest.mark.parametrize("tau", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_soften_rejects_bad_temperature(kind: str, tau: float) -> None:
    with pytest.raises(PolicyKDError, match="temperature must be > 0, got"):
        soften(_teacher(kind), tau)


def test_check_temperature_rejects_non_numbers() -> None:
    assert check_temperature(2) == 2.0
    with pytest.raises(PolicyKDError, match="temperature must be > 0"):
        check_temperature("hot")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "missing"),
    [("categorical", "logits"), ("q_values", "q_values"), ("gaussian", "log_std"), ("deterministic", "action")],
)
def test_soften_missing_field_names_it(kind: str, missing: str) -> None:
    out = _teacher(kind)._replace(**{missing: None})
    with pytest.raises(PolicyKDError, match=f"no '{missing}'"):
        soften(out, 1.0)


def test_soften_keeps_gradient_path_to_teacher_tensors() -> None:
    # soften is a pure transform; the losses, not soften, decide to treat the target as constant.
    logits = torch.randn(B, A, generator=_gen(), requires_grad=True)
    soften(TeacherOutput("categorical", logits=logits), 2.0).log_probs.sum().backward()
    assert logits.grad is not None
