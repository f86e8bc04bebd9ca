"""Distillation losses: small frozen dataclasses called as ``loss(student, target) -> LossOutput``.
Each is a ``types.LossFn``: it declares ``temperature`` (None for NLL and MSE) and ``reduction``.

Every loss computes one value per sample, summed over actions (discrete) or action dimensions
(continuous), then applies ``reduction`` over the batch: ``"mean"`` (default), ``"sum"`` or
``"none"`` (the (B,) per-sample tensor). ``metrics["losses/distill"]`` is always the mean over the
batch, whatever the reduction. The target is treated as a constant: no gradient reaches it.

Pure: nothing here touches an optimizer, env, file or logger.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from policykd.data.actions import INVALID_LOGIT
from policykd.errors import PolicyKDError
from policykd.learn.targets import check_temperature, student_kind_for
from policykd.types import DistillTarget, LossOutput, Reduction, StudentOutput, TeacherKind

LOSSES: tuple[str, ...] = ("kl", "nll", "mse")
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
DIRECTIONS: tuple[str, ...] = ("forward", "reverse")
TEMPERATURE_ON: tuple[str, ...] = ("teacher", "both")

KLDirection = Literal["forward", "reverse"]
TemperatureOn = Literal["teacher", "both"]

_LOG_2PI = math.log(2 * math.pi)
KL_DETERMINISTIC = "kl needs a stochastic teacher; use --loss mse for TD3/DDPG teachers"
NLL_DETERMINISTIC = "nll needs a stochastic student; use --loss mse for TD3/DDPG teachers"
LABEL_SMOOTHING_CONTINUOUS = "--label-smoothing needs a discrete-action teacher; drop it for Gaussian teachers"
MSE_NO_Q = "mse needs Q-values (DQN/QR-DQN) or continuous actions; use --loss kl or nll"


def sum_per_sample(terms: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(B,)``: the sum over every axis but the batch (actions, or factors and choices)."""
    return terms.reshape(terms.shape[0], -1).sum(dim=1)


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per sample from log-probabilities (B, A) -> (B,); factorised (B, F, C) -> (B,),
    the sum of the factors' KLs (the KL of the product distribution).

    Actions where p is exactly 0 contribute 0 (the limit of p log p), so a probability that
    underflowed, or a -inf log-probability, gives no NaN.
    """
    p = log_p.exp()
    terms = p * (log_p - log_q)
    return sum_per_sample(torch.where(p > 0, terms, torch.zeros_like(terms)))


def diag_gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p || q) between diagonal Gaussians, summed over dimensions: (B, D) each -> (B,)."""
    var_ratio = torch.exp(2 * (log_std_p - log_std_q))
    mahalanobis = ((mean_p - mean_q) * torch.exp(-log_std_q)) ** 2
    return (log_std_q - log_std_p + 0.5 * (var_ratio + mahalanobis - 1)).sum(dim=-1)


def diag_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_std)^2), summed over dimensions: (B, D) each -> (B,)."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * _LOG_2PI).sum(dim=-1)


@dataclass(frozen=True)
class KLLoss:
    """KL divergence between the softened teacher and the student.

    ``target`` arrives already softened by ``soften(out, temperature)``; ``temperature`` here is
    the same tau, used for the student side (``temperature_on="both"``: logits / tau, or std * tau)
    and for ``tau2_scaling`` (multiply by tau**2, as Hinton et al. do to keep gradient scale).

    ``direction="forward"``: KL(teacher || student), mean-seeking / mode-covering. It is the
    maximum-likelihood direction and is unbiased on data the teacher generated (torchrl's
    "forward" also needs the teacher's, i.e. the behaviour policy's, state distribution).
    ``direction="reverse"``: KL(student || teacher), mode-seeking; the natural choice on states the
    student visits itself (on-policy distillation, DAgger-style collection).

    For squashed_gaussian teachers the KL is taken between the pre-tanh Gaussians; tanh is
    invertible, so it equals the KL between the squashed action distributions.

    ``hard_label_weight`` lambda (default 0: off) adds lambda x a hard-label term to each sample, L =
    L_soft + lambda * L_hard: discrete, the cross-entropy of the student's raw logits to the teacher's argmax
    action (nll's term); Gaussian, the squared error of the student's mean to the teacher's (the greedy
    action, pre-tanh for SAC), summed over dimensions. ``tau2_scaling`` scales the KL only. Logged
    unweighted as ``losses/hard_label``.
    ``label_smoothing`` epsilon in [0, 1) (default 0: off; discrete targets only) mixes the softened
    teacher with the uniform distribution over its allowed actions: p' = (1 - epsilon) p + epsilon / |A|.
    """

    temperature: float = 1.0
    temperature_on: TemperatureOn = "teacher"
    direction: KLDirection = "forward"
    tau2_scaling: bool = False
    reduction: Reduction = "mean"
    hard_label_weight: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        _check_choice("temperature_on", self.temperature_on, TEMPERATURE_ON)
        _check_choice("direction", self.direction, DIRECTIONS)
        _check_choice("reduction", self.reduction, REDUCTIONS)
        check_soft_target_options(self.hard_label_weight, self.label_smoothing)

    def __call__(self, student: StudentOutput, target: DistillTarget) -> LossOutput:
        if "deterministic" in (student.kind, target.kind):
            raise PolicyKDError(f"{KL_DETERMINISTIC} (got a {target.kind} target and a {student.kind} student)")
        _check_same_kind(student, target)
        tau_s = self.temperature if self.temperature_on == "both" else 1.0  # student-side temperature
        if target.kind == "discrete":
            teacher = _field(target, "log_probs").detach()
            if self.label_smoothing > 0:
                teacher = smooth_log_probs(teacher, self.label_smoothing)
            student_lp = torch.log_softmax(_field(student, "logits") / tau_s, dim=-1)
            if self.direction == "forward":
                per_sample = categorical_kl(teacher, student_lp)
            else:
                per_sample = categorical_kl(student_lp, teacher)
        else:
            if self.label_smoothing > 0:
                raise PolicyKDError(f"{LABEL_SMOOTHING_CONTINUOUS} (got a {target.kind} target)")
            t_mean, t_log_std = _field(target, "mean").detach(), _field(target, "log_std").detach()
            s_mean, s_log_std = _field(student, "mean"), _field(student, "log_std") + math.log(tau_s)
            if self.direction == "forward":
                per_sample = diag_gaussian_kl(t_mean, t_log_std, s_mean, s_log_std)
            else:
                per_sample = diag_gaussian_kl(s_mean, s_log_std, t_mean, t_log_std)
        if self.tau2_scaling:
            per_sample = per_sample * self.temperature**2
        if self.hard_label_weight > 0:
            hard = hard_label_term(student, target)
            per_sample = per_sample + self.hard_label_weight * hard
            return _output(per_sample, self.reduction, {"losses/hard_label": hard.detach().mean()})
        return _output(per_sample, self.reduction)


@dataclass(frozen=True)
class NLLLoss:
    """Hard-label imitation (behaviour cloning as the imitation library does it).

    Discrete: cross-entropy of the student's logits to the teacher's argmax action (factorised: summed
    over factors). Continuous:
    negative log-likelihood of ``target.action`` under the student's diagonal Gaussian, summed over
    dimensions. Temperature does not change either (argmax and the greedy action ignore tau).

    ``min_std`` floors the student's std inside the continuous loss (in the Gaussian's own units;
    pre-tanh for SAC). A single greedy label per state lets the likelihood grow without bound as
    the std shrinks, and since each sample is weighted by 1/std^2, a few states where the student
    became confident early dominate the fit of the mean. On Pendulum SAC, 1 seed of 3 stalled at
    49-78 % of the teacher without the floor and reached 99 % with 0.1 (5k and 20k transitions).
    0 disables it.
    """

    reduction: Reduction = "mean"
    min_std: float = 0.1
    temperature: ClassVar[None] = None  # hard labels: no temperature (types.LossFn)

    def __post_init__(self) -> None:
        _check_choice("reduction", self.reduction, REDUCTIONS)
        check_min_std(self.min_std)

    def __call__(self, student: StudentOutput, target: DistillTarget) -> LossOutput:
        if student.kind == "deterministic":
            raise PolicyKDError(f"{NLL_DETERMINISTIC} (got a deterministic student)")
        _check_same_family(student, target)
        if target.kind == "discrete":
            per_sample = argmax_cross_entropy(student, target)
        else:
            action = _field(target, "action").detach()
            log_std = _field(student, "log_std")
            if self.min_std > 0:  # clamp, not softplus: below the floor the std gets no gradient at all
                log_std = log_std.clamp(min=math.log(self.min_std))
            per_sample = -diag_gaussian_log_prob(action, _field(student, "mean"), log_std)
        return _output(per_sample, self.reduction)


@dataclass(frozen=True)
class MSELoss:
    """Squared error, summed over actions or dimensions.

    Discrete: the student's logits, read as Q-values, against the teacher's raw Q-values (DQN /
    QR-DQN only). With ``center_q`` (the default) both sides first lose their mean over actions:
    a per-state constant never changes which action is best, and on tasks where Q is large next to
    its action gaps (CartPole: Q ~ 99, median gap 0.04) fitting that constant swamps the gaps.
    Continuous: the student's greedy action (gaussian: its mean; deterministic: its action)
    against ``target.action``.
    """

    reduction: Reduction = "mean"
    center_q: bool = True
    temperature: ClassVar[None] = None  # raw Q-values and greedy actions: no temperature (types.LossFn)

    def __post_init__(self) -> None:
        _check_choice("reduction", self.reduction, REDUCTIONS)

    def __call__(self, student: StudentOutput, target: DistillTarget) -> LossOutput:
        _check_same_family(student, target)
        if target.kind == "discrete":
            if target.q_values is None:
                raise PolicyKDError(f"{MSE_NO_Q} (got a discrete target without Q-values, e.g. from PPO/A2C)")
            prediction, goal = _field(student, "logits"), target.q_values
            if self.center_q:
                prediction = prediction - prediction.mean(dim=-1, keepdim=True)
                goal = goal - goal.mean(dim=-1, keepdim=True)
        else:
            prediction = _field(student, "mean" if student.kind == "gaussian" else "action")
            goal = _field(target, "action")
        per_sample = ((prediction - goal.detach()) ** 2).sum(dim=-1)
        return _output(per_sample, self.reduction)


def argmax_cross_entropy(student: StudentOutput, target: DistillTarget) -> torch.Tensor:
    """(B,) cross-entropy of the student's logits to the teacher's argmax action (factorised: summed
    over factors)."""
    labels = _field(target, "log_probs").detach().argmax(dim=-1)  # (B,) or, factorised, (B, F)
    logits = _field(student, "logits").movedim(-1, 1)  # choices second, as cross_entropy takes them
    return sum_per_sample(F.cross_entropy(logits, labels, reduction="none"))


def hard_label_term(student: StudentOutput, target: DistillTarget) -> torch.Tensor:
    """KLLoss's (B,) hard-label term: discrete, :func:`argmax_cross_entropy`; Gaussian, the squared
    error of the student's mean to the teacher's greedy action, summed over dimensions."""
    if target.kind == "discrete":
        return argmax_cross_entropy(student, target)
    return ((_field(student, "mean") - _field(target, "action").detach()) ** 2).sum(dim=-1)


def smooth_log_probs(log_probs: torch.Tensor, epsilon: float) -> torch.Tensor:
    """log((1 - epsilon) p + epsilon / n) over the last axis, n the allowed actions there (those whose
    log-probability is above INVALID_LOGIT / 2: masked actions and padded factor choices stay at 0)."""
    allowed = log_probs > INVALID_LOGIT / 2
    n_allowed = allowed.sum(dim=-1, keepdim=True).clamp(min=1).to(log_probs.dtype)
    smoothed = torch.logaddexp(log_probs + math.log1p(-epsilon), math.log(epsilon) - torch.log(n_allowed))
    return torch.where(allowed, smoothed, log_probs)


def check_soft_target_options(hard_label_weight: float, label_smoothing: float) -> None:
    """Refuse a hard-label weight that is not a finite number >= 0 and a label smoothing outside [0, 1)."""
    if not (hard_label_weight >= 0 and math.isfinite(hard_label_weight)):
        raise PolicyKDError(f"--hard-label-weight must be a finite number >= 0 (0: off), got {hard_label_weight}")
    if not 0 <= label_smoothing < 1:
        raise PolicyKDError(f"--label-smoothing must lie in [0, 1) (0: off), got {label_smoothing}")


def make_loss(
    name: str,
    teacher_kind: TeacherKind,
    *,
    temperature: float = 1.0,
    temperature_on: str = "teacher",
    direction: str = "forward",
    tau2_scaling: bool = False,
    reduction: str = "mean",
    center_q: bool = True,
    nll_min_std: float = 0.1,
    hard_label_weight: float = 0.0,
    label_smoothing: float = 0.0,
) -> KLLoss | NLLLoss | MSELoss:
    """Build loss ``name`` for a teacher of ``teacher_kind``, refusing combinations that make no
    sense. ``temperature``, ``temperature_on``, ``direction`` and ``tau2_scaling`` only affect
    ``kl`` but are validated for every loss, so a typo never passes silently."""
    if name not in LOSSES:
        raise PolicyKDError(f"unknown loss {name!r}; use one of {', '.join(LOSSES)}")
    student_kind = student_kind_for(teacher_kind)
    check_temperature(temperature)
    _check_choice("temperature_on", temperature_on, TEMPERATURE_ON)
    _check_choice("direction", direction, DIRECTIONS)
    _check_choice("reduction", reduction, REDUCTIONS)
    check_min_std(nll_min_std)
    check_soft_target_options(hard_label_weight, label_smoothing)
    if name == "kl":
        if student_kind == "deterministic":
            raise PolicyKDError(f"{KL_DETERMINISTIC} (got teacher kind {teacher_kind!r})")
        if label_smoothing > 0 and student_kind != "discrete":
            raise PolicyKDError(f"{LABEL_SMOOTHING_CONTINUOUS} (got teacher kind {teacher_kind!r})")
        soft = (hard_label_weight, label_smoothing)
        return KLLoss(temperature, temperature_on, direction, tau2_scaling, reduction, *soft)  # type: ignore[arg-type]
    if name == "nll":
        if student_kind == "deterministic":
            # A deterministic teacher gets a deterministic student, which has no likelihood.
            raise PolicyKDError(f"{NLL_DETERMINISTIC} (got teacher kind {teacher_kind!r})")
        return NLLLoss(reduction, nll_min_std)  # type: ignore[arg-type]
    if teacher_kind == "categorical":
        raise PolicyKDError(f"{MSE_NO_Q} (got teacher kind {teacher_kind!r}, which has logits only)")
    return MSELoss(reduction, center_q)  # type: ignore[arg-type]


# Options that only one loss reads: (that loss, the default, the CLI flag).
LOSS_OPTIONS: dict[str, tuple[str, object, str]] = {
    "temperature": ("kl", 1.0, "--temperature"),
    "temperature_on": ("kl", "teacher", "--temperature-on"),
    "direction": ("kl", "forward", "--kl-direction"),
    "tau2_scaling": ("kl", False, "--tau2-scaling"),
    "center_q": ("mse", True, "--no-q-center"),
    "nll_min_std": ("nll", 0.1, "--nll-min-std"),
    "hard_label_weight": ("kl", 0.0, "--hard-label-weight"),
    "label_smoothing": ("kl", 0.0, "--label-smoothing"),
}


def check_loss_options(name: str, **options: object) -> None:
    """Refuse an option of another loss than ``name`` set away from its default, which the loss
    would silently ignore (``--loss mse --temperature 2``). ``options`` are LOSS_OPTIONS' keys."""
    for option, value in options.items():
        loss, default, flag = LOSS_OPTIONS[option]
        if name != loss and value != default:
            raise PolicyKDError(
                f"{flag} applies to --loss {loss} only, not {name} (got {value}); drop it or use --loss {loss}"
            )


def reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a (B,) per-sample loss: ``mean`` and ``sum`` give a scalar, ``none`` returns it."""
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class DeviceFloats(Mapping[str, float]):
    """Detached scalar tensors read as floats only when read. The Trainer reads a loss's metrics
    at its log steps; on a GPU an ``.item()`` every update would make the host wait for the
    device every update."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def __getitem__(self, key: str) -> float:
        return float(self._tensors[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _output(per_sample: torch.Tensor, reduction: str, extra: dict[str, torch.Tensor] | None = None) -> LossOutput:
    metrics = DeviceFloats({"losses/distill": per_sample.detach().mean(), **(extra or {})})
    return LossOutput(loss=reduce(per_sample, reduction), metrics=metrics)


def check_min_std(min_std: float) -> None:
    if not (min_std >= 0 and math.isfinite(min_std)):
        raise PolicyKDError(f"nll's minimum std must be a finite number >= 0 (0 disables the floor), got {min_std}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise PolicyKDError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_same_kind(student: StudentOutput, target: DistillTarget) -> None:
    if student.kind != target.kind:
        raise PolicyKDError(
            f"a {student.kind} student cannot learn from a {target.kind} target; "
            "build the student head with student_kind_for(teacher_kind)"
        )


def _check_same_family(student: StudentOutput, target: DistillTarget) -> None:
    """Discrete with discrete; any continuous student with any continuous target."""
    if (student.kind == "discrete") != (target.kind == "discrete"):
        _check_same_kind(student, target)


def _field(data: StudentOutput | DistillTarget, name: str) -> torch.Tensor:
    value = getattr(data, name)
    if value is None:
        raise PolicyKDError(f"a {data.kind} {type(data).__name__} has no {name!r}; the loss needs it set")
    return value
