"""Detached diagnostics of a distillation step, for logging. Pure: no optimizer, env, file or
logger; every function runs under ``torch.no_grad``.

Entropies of squashed_gaussian teachers and their students are those of the pre-tanh Gaussian
(the squashed distribution has no closed form); deterministic policies have no entropy, and the
functions return None for them rather than raising, so one logging call serves every kind.
"""

from __future__ import annotations

import math

import torch

from policykd.errors import PolicyKDError
from policykd.learn.losses import categorical_kl, diag_gaussian_kl, sum_per_sample
from policykd.types import DistillTarget, StudentOutput

# Entropy of a unit-variance 1-D Gaussian: 0.5 * log(2 * pi * e).
_GAUSSIAN_ENTROPY_CONST = 0.5 * math.log(2 * math.pi * math.e)


def categorical_entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """-sum_a p log p from log-probabilities (B, A) -> (B,) (factorised (B, F, C): summed over factors);
    actions with p == 0 count 0."""
    p = log_probs.exp()
    terms = p * log_probs
    return -sum_per_sample(torch.where(p > 0, terms, torch.zeros_like(terms)))


def same_greedy_action(scores_a: torch.Tensor, scores_b: torch.Tensor) -> torch.Tensor:
    """Whether two discrete policies' argmax actions agree, (B, A) each -> (B,) bool; factorised
    (B, F, C): whether every factor agrees."""
    same = scores_a.argmax(dim=-1) == scores_b.argmax(dim=-1)
    return same.reshape(len(same), -1).all(dim=1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian, summed over dimensions: (B, D) -> (B,)."""
    return (_GAUSSIAN_ENTROPY_CONST + log_std).sum(dim=-1)


@torch.no_grad()
def target_entropy(target: DistillTarget) -> torch.Tensor | None:
    """Entropy (B,) of the target as softened; None for a deterministic target."""
    if target.kind == "discrete":
        return categorical_entropy(_field(target, "log_probs"))
    if target.kind == "gaussian":
        return gaussian_entropy(_field(target, "log_std"))
    return None


@torch.no_grad()
def student_entropy(student: StudentOutput) -> torch.Tensor | None:
    """Entropy (B,) of the student as it acts (tau = 1); None for a deterministic student."""
    if student.kind == "discrete":
        return categorical_entropy(torch.log_softmax(_field(student, "logits"), dim=-1))
    if student.kind == "gaussian":
        return gaussian_entropy(_field(student, "log_std"))
    return None


@torch.no_grad()
def distill_metrics(student: StudentOutput, target: DistillTarget, reference: DistillTarget) -> dict[str, float]:
    """Detached floats describing how close the student is to its teacher.

    ``target`` is what the student trains towards (at tau); ``reference`` is the same teacher
    softened at tau = 1. Keys:

    - ``teacher/entropy``: mean entropy of ``target`` (omitted when deterministic);
    - ``student/entropy``: mean entropy of the student at tau = 1 (omitted when deterministic);
    - ``distill/kl_teacher_student``: mean forward KL(reference || student) (omitted unless both
      are stochastic of the same kind);
    - ``distill/action_agreement``: discrete: fraction of samples whose student argmax equals the
      reference argmax (higher is better). Continuous: mean L2 distance between the student's
      greedy action (gaussian: mean; deterministic: action) and ``reference.action`` - a gap,
      lower is better.
    """
    if (student.kind == "discrete") != (reference.kind == "discrete"):
        raise PolicyKDError(
            f"a {student.kind} student cannot be compared with a {reference.kind} teacher; "
            "build the student head with student_kind_for(teacher_kind)"
        )
    metrics: dict[str, float] = {}
    entropy = target_entropy(target)
    if entropy is not None:
        metrics["teacher/entropy"] = entropy.mean().item()
    entropy = student_entropy(student)
    if entropy is not None:
        metrics["student/entropy"] = entropy.mean().item()
    kl = _forward_kl(student, reference)
    if kl is not None:
        metrics["distill/kl_teacher_student"] = kl.mean().item()
    metrics["distill/action_agreement"] = _action_agreement(student, reference).item()
    return metrics


def _forward_kl(student: StudentOutput, reference: DistillTarget) -> torch.Tensor | None:
    """KL(reference || student) (B,) at tau = 1, or None when either side is deterministic."""
    if student.kind != reference.kind or student.kind == "deterministic":
        return None
    if student.kind == "discrete":
        student_lp = torch.log_softmax(_field(student, "logits"), dim=-1)
        return categorical_kl(_field(reference, "log_probs"), student_lp)
    return diag_gaussian_kl(
        _field(reference, "mean"), _field(reference, "log_std"), _field(student, "mean"), _field(student, "log_std")
    )


def _action_agreement(student: StudentOutput, reference: DistillTarget) -> torch.Tensor:
    """Discrete: top-1 agreement fraction. Continuous: mean L2 gap of greedy actions. Scalar."""
    if student.kind == "discrete":
        return same_greedy_action(_field(student, "logits"), _field(reference, "log_probs")).float().mean()
    greedy = _field(student, "mean" if student.kind == "gaussian" else "action")
    return torch.linalg.vector_norm(greedy - _field(reference, "action"), dim=-1).mean()


def _field(data: StudentOutput | DistillTarget, name: str) -> torch.Tensor:
    value = getattr(data, name)
    if value is None:
        raise PolicyKDError(f"a {data.kind} {type(data).__name__} has no {name!r}; metrics need it set")
    return value
