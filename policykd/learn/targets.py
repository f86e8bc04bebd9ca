"""Temperature, defined once: a raw ``TeacherOutput`` becomes the ``DistillTarget`` a student
trains towards.

- Discrete (categorical, q_values, quantiles): ``log_probs = log_softmax(x / tau)`` with x the
  logits or the Q-values (for QR-DQN, the mean over quantiles).
- Gaussian (gaussian, squashed_gaussian): the mean is kept, the standard deviation is multiplied
  by tau (``log_std + log(tau)``).
- Deterministic (TD3 / DDPG): the action is the target; tau does not apply.

Pure functions: nothing here touches an optimizer, env, file or logger.
"""

from __future__ import annotations

import math

import torch

from policykd.data.actions import masked_output
from policykd.errors import PolicyKDError
from policykd.types import (
    DISCRETE_KINDS,
    GAUSSIAN_KINDS,
    KIND_FIELDS,
    TEACHER_KINDS,
    DistillBatch,
    DistillTarget,
    TeacherOutput,
)

TARGET_KINDS: tuple[str, ...] = ("discrete", "gaussian", "deterministic")


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float; raise PolicyKDError unless it is finite and > 0."""
    try:
        tau = float(temperature)
    except (TypeError, ValueError):
        tau = math.nan
    if not math.isfinite(tau) or tau <= 0:
        raise PolicyKDError(f"temperature must be > 0, got {temperature!r}; pass a finite positive number such as 1.0")
    return tau


def student_kind_for(teacher_kind: str) -> str:
    """The student head that learns from a teacher of ``teacher_kind``: ``discrete``, ``gaussian``
    or ``deterministic``."""
    if teacher_kind in DISCRETE_KINDS:
        return "discrete"
    if teacher_kind in GAUSSIAN_KINDS:
        return "gaussian"
    if teacher_kind == "deterministic":
        return "deterministic"
    raise PolicyKDError(f"unknown teacher kind {teacher_kind!r}; expected one of {', '.join(TEACHER_KINDS)}")


def soften(out: TeacherOutput, temperature: float) -> DistillTarget:
    """Apply temperature ``tau`` to one teacher's raw output.

    Discrete kinds give ``log_probs`` (B, A) = log_softmax(x / tau) and, for Q-value kinds, the raw
    ``q_values`` (B, A). Gaussian kinds give ``mean`` (B, D), ``log_std + log(tau)`` (B, D) and
    ``action = mean``, the greedy action in the Gaussian's own space (pre-tanh for
    squashed_gaussian). Deterministic gives ``action`` (B, D) for any tau > 0.
    """
    tau = check_temperature(temperature)
    kind = student_kind_for(out.kind)
    if kind == "discrete":
        scores = _discrete_scores(out)
        q_values = None if out.kind == "categorical" else scores
        return DistillTarget("discrete", log_probs=torch.log_softmax(scores / tau, dim=-1), q_values=q_values)
    if kind == "gaussian":
        mean = _field(out, "mean")
        return DistillTarget("gaussian", mean=mean, log_std=_field(out, "log_std") + math.log(tau), action=mean)
    return DistillTarget("deterministic", action=_field(out, "action"))


def with_masks_applied(batch: DistillBatch) -> DistillBatch:
    """``batch`` with its stored action masks (MaskablePPO) applied to every teacher's raw logits
    (``data.actions.masked_output``), so that softening, merging and the loss see the distribution the
    teacher acted with; the student's logits are masked the same way before the loss. Unchanged
    without masks."""
    if batch.action_masks is None:
        return batch
    return batch._replace(
        teacher_outputs=tuple(masked_output(out, batch.action_masks) for out in batch.teacher_outputs)
    )


def confidence_temperature(out: TeacherOutput, confidence: float = 0.9) -> float:
    """The tau at which the median state's softmax(x / tau) gives its greedy action ``confidence``
    against the runner-up: ``median(gap) / log(confidence / (1 - confidence))``, the gap being the
    best score minus the second best, over the states whose gap is not 0 (1.0 where every state
    ties, or with one action). Scale-free: Q-values ten times larger give a ten times larger tau.
    ``out``: a discrete teacher's raw output on (B, ...) states."""
    if not 0.5 < confidence < 1.0:
        raise PolicyKDError(f"confidence must lie in (0.5, 1), got {confidence}")
    if student_kind_for(out.kind) != "discrete":
        raise PolicyKDError(f"a confidence temperature needs a discrete teacher, not a {out.kind!r} one")
    scores = _discrete_scores(out).detach().double()
    if scores.shape[-1] < 2:
        return 1.0
    top2 = scores.topk(2, dim=-1).values
    gaps = (top2[..., 0] - top2[..., 1]).flatten()  # factorised logits (B, F, C): every factor's gap
    gaps = gaps[gaps > 0]
    if gaps.numel() == 0:
        return 1.0
    return float(gaps.median()) / math.log(confidence / (1.0 - confidence))


def _discrete_scores(out: TeacherOutput) -> torch.Tensor:
    """The (B, A) scores a discrete teacher's softmax is taken over: logits or Q-values."""
    if out.kind == "categorical":
        return _field(out, "logits")
    if out.kind == "quantiles" and out.q_values is None:
        # Q(s, a) is the mean over the N quantiles; quantiles are (B, N, A).
        return _field(out, "quantiles").mean(dim=1)
    return _field(out, "q_values")


def _field(out: TeacherOutput, name: str) -> torch.Tensor:
    value = getattr(out, name)
    if value is None:
        needed = ", ".join(KIND_FIELDS[out.kind])
        raise PolicyKDError(
            f"a {out.kind!r} teacher output has no {name!r}; the teacher or buffer that produced it must set {needed}"
        )
    return value
