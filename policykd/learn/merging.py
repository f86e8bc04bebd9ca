"""Combine several teachers' softened targets into one. Pure functions over DistillTargets.

Every strategy takes ``targets`` (K DistillTargets, each already softened at tau by
``targets.soften``, all of one kind and shape) and optional per-teacher ``weights`` (K,)
(finite, >= 0, not all 0; normalised here to sum to 1; None = equal weights), and returns one
DistillTarget of the same kind and shapes. The same four names cover every kind
(``w`` normalised weights, ``p_k`` probabilities, ``H_k`` entropy, ``s_k`` standard deviation):

- ``mean-probs``: discrete, the mixture ``log sum_k w_k p_k``; gaussian, the moment-matched
  mixture; deterministic, the weighted mean action.
- ``mean-logits``: discrete, the product of experts ``log_softmax(sum_k w_k log p_k)`` (weighted
  geometric mean); gaussian, the product of Gaussians, precision-weighted
  (``1/s^2 = sum_k w_k / s_k^2``, ``mu = s^2 sum_k w_k mu_k / s_k^2``); deterministic, the
  weighted mean action.
- ``entropy-weighted``: the mixture (discrete or moment-matched Gaussian) with per-state weights
  ``a_k(s) = softmax_k(log w_k - H_k(s))``; refused for deterministic teachers.
- ``most-confident``: per state, the target of the teacher maximising ``log w_k - H_k(s)`` (with
  equal weights: the lowest entropy); refused for deterministic teachers.

entropy-weighted uses weights proportional to ``w_k * exp(-H_k)``, not ``1 / H_k``: it is bounded
and defined for a one-hot teacher (H = 0); between a uniform and a one-hot teacher over A actions
the ratio is A. most-confident is its hard (argmax) version, so a teacher of weight 0 is never
picked. Because weights sum to 1, the product of K identical teachers is that teacher (not a
sharper one). Q-values (raw, for the MSE loss) are carried when every teacher has them: the
weighted mean with the same per-state weights as the distribution (most-confident: the chosen
teacher's). The merged Gaussian's ``action`` is its mean.

Teachers of different discrete kinds (PPO logits + DQN Q-values) merge fine: after soften both
are log-probabilities. A gaussian (PPO / A2C, env units) and a squashed_gaussian (SAC, pre-tanh)
teacher both give ``gaussian`` targets in different spaces, which these functions cannot see:
check the raw kinds first with :func:`ensemble_teacher_kind`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from policykd.errors import PolicyKDError
from policykd.learn.losses import categorical_kl, diag_gaussian_kl
from policykd.learn.metrics import categorical_entropy, gaussian_entropy, same_greedy_action
from policykd.learn.targets import TARGET_KINDS
from policykd.types import DISCRETE_KINDS, TEACHER_KINDS, DistillTarget, StudentKind, StudentOutput, TeacherKind

Weights = Sequence[float] | np.ndarray | torch.Tensor | None

_LOG_FLOOR = -1e4  # mean-logits clamps log-probs here, so 0 * log 0 and disjoint supports give no NaN
_FIELDS = ("log_probs", "q_values", "mean", "log_std", "action")
_NO_ENTROPY = (
    "a deterministic (TD3 / DDPG) teacher has no entropy; "
    "use --merge mean-probs or mean-logits (both average the actions)"
)


def single_teacher(targets: Sequence[DistillTarget]) -> DistillTarget:
    """The K = 1 case: the one teacher's target, unchanged."""
    if len(targets) != 1:
        raise PolicyKDError(f"{len(targets)} teachers given but no merge strategy chosen; pass --merge")
    return targets[0]


def check_weights(weights: Weights, n_teachers: int | None = None) -> tuple[float, ...] | None:
    """Validate per-teacher weights: finite, >= 0, not all 0 and, when ``n_teachers`` is given,
    one per teacher. Returns them as a tuple of floats (not normalised), or None for None."""
    if weights is None:
        return None
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise PolicyKDError(f"teacher weights must be numbers, got {weights!r}") from None
    if array.ndim != 1:
        raise PolicyKDError(f"teacher weights must be a flat list of numbers, got {weights!r}")
    values = tuple(float(w) for w in array)
    if n_teachers is not None and len(values) != n_teachers:
        raise PolicyKDError(
            f"got {len(values)} teacher weight(s) for {n_teachers} teacher(s); pass one weight per teacher"
        )
    if not values or any(not math.isfinite(w) or w < 0 for w in values) or not any(w > 0 for w in values):
        raise PolicyKDError(f"teacher weights must be finite, non-negative and not all zero, got {list(values)}")
    return values


def ensemble_teacher_kind(teacher_kinds: Sequence[TeacherKind]) -> TeacherKind:
    """The teacher kind to build an ensemble's student and loss for (``make_student``,
    ``make_loss``), refusing raw kinds that cannot be merged.

    Discrete kinds mix freely and give ``categorical`` if any teacher is categorical (so the
    Q-value MSE loss is refused: merged Q-values need every teacher to have them), else the first
    kind. Continuous kinds must all be equal (gaussian: env units, squashed_gaussian: pre-tanh,
    deterministic: [-1, 1] are three different spaces)."""
    kinds = tuple(teacher_kinds)
    unknown = [kind for kind in kinds if kind not in TEACHER_KINDS]
    if not kinds or unknown:
        raise PolicyKDError(f"unknown or no teacher kinds {list(kinds)}; use {', '.join(TEACHER_KINDS)}")
    if all(kind in DISCRETE_KINDS for kind in kinds):
        return "categorical" if "categorical" in kinds else kinds[0]
    if len(set(kinds)) > 1:
        raise PolicyKDError(
            f"cannot merge teachers of kinds {list(kinds)}; an ensemble's teachers must all be discrete, "
            "or all gaussian (PPO / A2C), all squashed_gaussian (SAC) or all deterministic (TD3 / DDPG)"
        )
    return kinds[0]


def mean_probs(targets: Sequence[DistillTarget], weights: Weights = None) -> DistillTarget:
    """``mean-probs``. Discrete: the mixture ``log sum_k w_k p_k`` (B, A). Gaussian: the
    moment-matched mixture, ``mu = sum w mu_k``, ``var = sum w (s_k^2 + (mu_k - mu)^2)`` (the same
    as ``sum w (s_k^2 + mu_k^2) - mu^2``, without the cancellation). Deterministic: mean action."""
    kind, w = _prepare(targets, weights)
    per_state = w[:, None].expand(len(targets), _any_tensor(targets[0]).shape[0])
    if kind == "discrete":
        return _discrete_mixture(targets, per_state)
    if kind == "gaussian":
        return _gaussian_mixture(targets, per_state)
    return _mean_action(targets, w)


def mean_logits(targets: Sequence[DistillTarget], weights: Weights = None) -> DistillTarget:
    """``mean-logits``. Discrete: product of experts, ``log_softmax(sum_k w_k log p_k)`` (B, A)
    (log-probs are clamped at -1e4 first). Gaussian: the product of Gaussians, precision-weighted:
    ``1/s^2 = sum w_k / s_k^2``, ``mu = s^2 sum w_k mu_k / s_k^2``. Deterministic: mean action."""
    kind, w = _prepare(targets, weights)
    if kind == "discrete":
        log_probs = _stack(targets, "log_probs").clamp_min(_LOG_FLOOR)
        merged = torch.log_softmax(torch.einsum("k,kb...->b...", w, log_probs), dim=-1)  # (B, A) or (B, F, C)
        return DistillTarget("discrete", log_probs=merged, q_values=_mean_q(targets, w[:, None]))
    if kind == "gaussian":
        precisions = torch.exp(-2 * _stack(targets, "log_std"))  # (K, B, D)
        weighted = w[:, None, None] * precisions
        precision = weighted.sum(dim=0)
        mean = (weighted * _stack(targets, "mean")).sum(dim=0) / precision
        return DistillTarget("gaussian", mean=mean, log_std=-0.5 * torch.log(precision), action=mean)
    return _mean_action(targets, w)


def entropy_weighted(targets: Sequence[DistillTarget], weights: Weights = None) -> DistillTarget:
    """``entropy-weighted``: the mixture of :func:`mean_probs` with per-state weights
    ``a_k(s) = w_k exp(-H_k(s)) / sum_j w_j exp(-H_j(s))`` (K, B): a sharper teacher gets more
    weight in the states where it is sharper. Refused for deterministic teachers."""
    kind, w = _prepare(targets, weights)
    per_state = torch.softmax(_confidence(kind, targets, w), dim=0)
    return _discrete_mixture(targets, per_state) if kind == "discrete" else _gaussian_mixture(targets, per_state)


def most_confident(targets: Sequence[DistillTarget], weights: Weights = None) -> DistillTarget:
    """``most-confident``: per state, the whole target (and Q-values) of the teacher maximising
    ``log w_k - H_k(s)``; with equal weights, the lowest-entropy one (ties: the lowest index).
    Refused for deterministic teachers."""
    kind, w = _prepare(targets, weights)
    chosen = _confidence(kind, targets, w).argmax(dim=0)  # (B,)
    rows = torch.arange(chosen.shape[0], device=chosen.device)
    picked = {f: _stack(targets, f)[chosen, rows] for f in _FIELDS if all(getattr(t, f) is not None for t in targets)}
    return DistillTarget(kind, **picked)


MERGE_STRATEGIES: dict[str, Callable[[Sequence[DistillTarget], Weights], DistillTarget]] = {
    "mean-probs": mean_probs,
    "mean-logits": mean_logits,
    "entropy-weighted": entropy_weighted,
    "most-confident": most_confident,
}
MERGE_NAMES: tuple[str, ...] = tuple(MERGE_STRATEGIES)


@dataclasses.dataclass(frozen=True)
class Merge:
    """A merge strategy with fixed weights, called as ``merge(targets) -> DistillTarget`` (a
    ``types.MergeFn``): the ``merge`` argument of ``Trainer``. Build it with :func:`make_merge`."""

    strategy: str
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.strategy not in MERGE_STRATEGIES:
            raise PolicyKDError(f"unknown merge strategy {self.strategy!r}; use one of {', '.join(MERGE_NAMES)}")
        object.__setattr__(self, "weights", check_weights(self.weights))

    def __call__(self, targets: Sequence[DistillTarget]) -> DistillTarget:
        return MERGE_STRATEGIES[self.strategy](targets, self.weights)


def make_merge(name: str, weights: Weights = None) -> Merge:
    """The merge function for strategy ``name`` (one of MERGE_NAMES) and optional fixed weights.
    Weight values are checked now; their number when called (use ``check_weights(w, K)`` to
    check it before collecting)."""
    return Merge(name, check_weights(weights))


def as_student_output(target: DistillTarget) -> StudentOutput:
    """Read a (merged) target as a policy output, so ``ActionMapper.from_student`` can act with
    it: discrete log-probs as logits, Gaussian mean and log-std, deterministic action."""
    if target.kind == "discrete":
        return StudentOutput("discrete", logits=target.log_probs)
    if target.kind == "gaussian":
        return StudentOutput("gaussian", mean=target.mean, log_std=target.log_std)
    return StudentOutput("deterministic", action=target.action)


@torch.no_grad()
def teacher_disagreement(targets: Sequence[DistillTarget]) -> dict[str, float]:
    """How much K teachers disagree, averaged over ordered pairs (k, j), k != j, and the batch
    (all 0 for K = 1). Keys: ``teachers/disagreement_kl`` (mean KL(k || j); stochastic kinds),
    ``teachers/disagreement_top1`` (fraction of states where k and j pick different argmax
    actions; discrete), ``teachers/disagreement_action`` (mean L2 distance of greedy actions;
    gaussian and deterministic)."""
    kind, _ = _prepare(targets, None)
    pairs = list(itertools.permutations(range(len(targets)), 2))

    def mean_over_pairs(value: Callable[[DistillTarget, DistillTarget], torch.Tensor]) -> float:
        return float(np.mean([value(targets[k], targets[j]).float().mean().item() for k, j in pairs])) if pairs else 0.0

    metrics: dict[str, float] = {}
    if kind == "discrete":
        metrics["teachers/disagreement_kl"] = mean_over_pairs(lambda p, q: categorical_kl(p.log_probs, q.log_probs))
        metrics["teachers/disagreement_top1"] = mean_over_pairs(
            lambda p, q: ~same_greedy_action(p.log_probs, q.log_probs)
        )
        return metrics
    if kind == "gaussian":
        metrics["teachers/disagreement_kl"] = mean_over_pairs(
            lambda p, q: diag_gaussian_kl(p.mean, p.log_std, q.mean, q.log_std)
        )
    metrics["teachers/disagreement_action"] = mean_over_pairs(
        lambda p, q: torch.linalg.vector_norm(p.action - q.action, dim=-1)
    )
    return metrics


@torch.no_grad()
def per_teacher_kl(
    student: StudentOutput, targets: Sequence[DistillTarget], names: Sequence[str] | None = None
) -> dict[str, float]:
    """How close the student is to each teacher (pass targets softened at tau = 1 to compare with
    the student as it acts). ``names``: one TensorBoard-safe name per teacher, such as
    :func:`teacher_names` gives (``ppo-CartPole-v1_1``); default ``0``, ``1``, ... Keys:
    ``teachers/<name>/kl`` = mean KL(teacher || student) (stochastic kinds),
    ``teachers/<name>/agreement`` = top-1 agreement (discrete), ``teachers/<name>/action_gap`` =
    mean L2 gap of greedy actions (continuous)."""
    kind, _ = _prepare(targets, None)
    if (student.kind == "discrete") != (kind == "discrete"):
        raise PolicyKDError(f"a {student.kind} student cannot be compared with {kind} teachers")
    names = [str(k) for k in range(len(targets))] if names is None else list(names)
    if len(names) != len(targets) or len(set(names)) != len(names):
        raise PolicyKDError(f"per_teacher_kl needs one distinct name per teacher, got {names} for {len(targets)}")
    metrics: dict[str, float] = {}
    for name, target in zip(names, targets):
        if kind == "discrete":
            student_lp = torch.log_softmax(student.logits, dim=-1)
            metrics[f"teachers/{name}/kl"] = categorical_kl(target.log_probs, student_lp).mean().item()
            agree = same_greedy_action(student.logits, target.log_probs)
            metrics[f"teachers/{name}/agreement"] = agree.float().mean().item()
            continue
        if kind == "gaussian" and student.kind == "gaussian":
            kl = diag_gaussian_kl(target.mean, target.log_std, student.mean, student.log_std)
            metrics[f"teachers/{name}/kl"] = kl.mean().item()
        greedy = student.mean if student.kind == "gaussian" else student.action
        gap = torch.linalg.vector_norm(greedy - target.action, dim=-1).mean().item()
        metrics[f"teachers/{name}/action_gap"] = gap
    return metrics


def teacher_names(teachers: Sequence[Mapping[str, Any]] | None, n_teachers: int) -> list[str]:
    """One distinct, TensorBoard-safe name per teacher, by algo and run: ``ppo-CartPole-v1_1`` for
    ``agents/ppo/CartPole-v1_1``, ``dqn-CartPole-v1`` for ``.../CartPole-v1.zip`` or the hub's
    ``sb3/dqn-CartPole-v1``; a name given twice gets ``-2``, ``-3``. ``teachers`` are a buffer's
    ``meta["teachers"]`` records (``source``, ``algo``); without them (or a count that differs
    from ``n_teachers``): ``0``, ``1``, ..."""
    if not teachers or len(teachers) != n_teachers:
        return [str(k) for k in range(n_teachers)]
    names: list[str] = []
    for record in teachers:
        source, algo = str(record.get("source", "")).rstrip("/"), str(record.get("algo", "teacher"))
        run = source.rsplit("/", 1)[-1].removesuffix(".zip") or "teacher"
        name = re.sub(r"[^\w.-]", "_", run if run.startswith(f"{algo}-") else f"{algo}-{run}")
        candidate, n = name, 1
        while candidate in names:
            n += 1
            candidate = f"{name}-{n}"
        names.append(candidate)
    return names


# -- helpers ---------------------------------------------------------------------------------------


def _prepare(targets: Sequence[DistillTarget], weights: Weights) -> tuple[StudentKind, torch.Tensor]:
    """Check that the K targets can be merged; return their kind and the weights (K,), sum 1."""
    if len(targets) == 0:
        raise PolicyKDError("no teacher targets to merge; give at least one teacher")
    kind = targets[0].kind
    if kind not in TARGET_KINDS:
        raise PolicyKDError(f"unknown target kind {kind!r}; soften each teacher output (kinds {TARGET_KINDS})")
    for k, target in enumerate(targets):
        if target.kind != kind:
            raise PolicyKDError(
                f"cannot merge a {target.kind} target (teacher {k}) with a {kind} one (teacher 0); "
                "an ensemble's teachers must share one action space"
            )
        for field in _FIELDS:
            first, this = getattr(targets[0], field), getattr(target, field)
            if this is not None and first is not None and this.shape != first.shape:
                raise PolicyKDError(
                    f"teachers disagree on the shape of {field}: {tuple(first.shape)} (teacher 0) vs "
                    f"{tuple(this.shape)} (teacher {k}); an ensemble must share one env and action space"
                )
    like = _any_tensor(targets[0])
    values = check_weights(weights, len(targets)) or (1.0,) * len(targets)
    w = torch.tensor(values, dtype=like.dtype, device=like.device)
    return kind, w / w.sum()


def _stack(targets: Sequence[DistillTarget], field: str) -> torch.Tensor:
    tensors = [getattr(t, field) for t in targets]
    if any(t is None for t in tensors):
        raise PolicyKDError(f"a {targets[0].kind} target has no {field!r}; soften each teacher output first")
    return torch.stack(tensors)  # (K, B, ...)


def _any_tensor(target: DistillTarget) -> torch.Tensor:
    tensor = next((getattr(target, f) for f in _FIELDS if getattr(target, f) is not None), None)
    if tensor is None:
        raise PolicyKDError(f"a {target.kind} target holds no tensors; soften each teacher output first")
    return tensor


def _confidence(kind: StudentKind, targets: Sequence[DistillTarget], w: torch.Tensor) -> torch.Tensor:
    """``log w_k - H_k(s)`` (K, B); -inf where w_k = 0."""
    if kind == "deterministic":
        raise PolicyKDError(_NO_ENTROPY)
    entropies = torch.stack(
        [categorical_entropy(t.log_probs) if kind == "discrete" else gaussian_entropy(t.log_std) for t in targets]
    )
    return torch.log(w)[:, None] - entropies


def _mean_q(targets: Sequence[DistillTarget], per_state: torch.Tensor) -> torch.Tensor | None:
    """``sum_k a_k(s) q_k`` (B, A) when every teacher has Q-values, else None."""
    if any(t.q_values is None for t in targets):
        return None
    return (per_state[..., None] * _stack(targets, "q_values")).sum(dim=0)


def _discrete_mixture(targets: Sequence[DistillTarget], per_state: torch.Tensor) -> DistillTarget:
    """``log sum_k a_k(s) p_k(s)`` for per-state weights (K, B) summing to 1 over k."""
    stacked = _stack(targets, "log_probs")  # (K, B, A) or, factorised, (K, B, F, C)
    log_weights = torch.log(per_state).reshape(*per_state.shape, *([1] * (stacked.dim() - 2)))
    log_probs = torch.logsumexp(log_weights + stacked, dim=0)
    return DistillTarget("discrete", log_probs=log_probs, q_values=_mean_q(targets, per_state))


def _gaussian_mixture(targets: Sequence[DistillTarget], per_state: torch.Tensor) -> DistillTarget:
    """Moment-matched mixture of diagonal Gaussians with per-state weights (K, B)."""
    a = per_state[..., None]  # (K, B, 1)
    means = _stack(targets, "mean")
    mean = (a * means).sum(dim=0)
    var = (a * (torch.exp(2 * _stack(targets, "log_std")) + (means - mean) ** 2)).sum(dim=0)
    return DistillTarget("gaussian", mean=mean, log_std=0.5 * torch.log(var), action=mean)


def _mean_action(targets: Sequence[DistillTarget], w: torch.Tensor) -> DistillTarget:
    return DistillTarget("deterministic", action=torch.einsum("k,kbd->bd", w, _stack(targets, "action")))
