"""The data types that flow from teacher to student, defined once: NamedTuples of tensors (no
behaviour), the teacher and student kinds as Literals, and the Protocols / aliases of the callables
the Trainer and the jobs take (LossFn, MergeFn, ActFn, EvalFn, Sampler). Uses nothing of ours.

Shapes: B = batch, A = number of discrete actions, D = action dimensions, N = quantiles,
K = teachers. MultiDiscrete / MultiBinary actions are F factors of up to C choices each: their logits
and log-probs are ``(B, F, C)`` where the table below says ``(B, A)`` (softmax over the last axis,
KL / NLL / entropy summed over factors; see ``data.actions.factor_logits``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple, Protocol, get_args

import numpy as np
import torch

TeacherKind = Literal["categorical", "q_values", "quantiles", "gaussian", "squashed_gaussian", "deterministic"]
"""What a teacher outputs: logits (categorical), Q-values, quantiles, a Gaussian (env units or, squashed, pre-tanh)
or a deterministic action. Losses, merges and student heads dispatch on it."""
TEACHER_KINDS: tuple[TeacherKind, ...] = get_args(TeacherKind)
DISCRETE_KINDS: tuple[TeacherKind, ...] = ("categorical", "q_values", "quantiles")
GAUSSIAN_KINDS: tuple[TeacherKind, ...] = ("gaussian", "squashed_gaussian")
StudentKind = Literal["discrete", "gaussian", "deterministic"]
"""A student head, and the kind of target it learns from (``targets.student_kind_for(teacher_kind)``)."""
Reduction = Literal["mean", "sum", "none"]
"""How a loss reduces its (B,) per-sample values over the batch."""

# The tensor fields of a TeacherOutput, in the order the buffer stores them.
TEACHER_FIELDS: tuple[str, ...] = ("logits", "q_values", "quantiles", "mean", "log_std", "action", "value")
# Which fields each kind sets. Every adapter also gives a value estimate.
KIND_FIELDS: dict[TeacherKind, tuple[str, ...]] = {
    "categorical": ("logits", "value"),
    "q_values": ("q_values", "value"),
    "quantiles": ("q_values", "quantiles", "value"),
    "gaussian": ("mean", "log_std", "value"),
    "squashed_gaussian": ("mean", "log_std", "value"),
    "deterministic": ("action", "value"),
}


class TeacherOutput(NamedTuple):
    """What a teacher said about a batch of observations, before any temperature.

    Only the fields of its ``kind`` are set; the others are None.
    """

    kind: TeacherKind
    logits: torch.Tensor | None = None  # (B, A) categorical (PPO / A2C on Discrete); (B, F, C) factorised
    q_values: torch.Tensor | None = None  # (B, A) DQN; QR-DQN: mean over quantiles
    quantiles: torch.Tensor | None = None  # (B, N, A) QR-DQN, as SB3's quantile_net returns them
    mean: torch.Tensor | None = None  # (B, D) gaussian (env units) or squashed_gaussian (pre-tanh)
    log_std: torch.Tensor | None = None  # (B, D)
    action: torch.Tensor | None = None  # (B, D) deterministic (TD3 / DDPG), in [-1, 1] before rescaling
    value: torch.Tensor | None = None  # (B,) state value (PPO / A2C), max Q (DQN), min Q(s, a*) (SAC / TD3)


class DistillTarget(NamedTuple):
    """A teacher output after temperature (and, with several teachers, merging): what the student
    is trained towards. ``kind`` is ``discrete``, ``gaussian`` or ``deterministic``."""

    kind: StudentKind
    log_probs: torch.Tensor | None = None  # (B, A) log softmax(x / tau), x = logits or Q-values
    q_values: torch.Tensor | None = None  # (B, A) raw Q-values, for the Q-value MSE loss
    mean: torch.Tensor | None = None  # (B, D)
    log_std: torch.Tensor | None = None  # (B, D) teacher log-std + log(tau)
    action: torch.Tensor | None = None  # (B, D) the teacher's greedy action in the student's output space


class StudentOutput(NamedTuple):
    """A student's raw output. ``kind`` is ``discrete`` (logits, read as Q-values by the MSE loss),
    ``gaussian`` (mean, log_std) or ``deterministic`` (action in [-1, 1])."""

    kind: StudentKind
    logits: torch.Tensor | None = None  # (B, A)
    mean: torch.Tensor | None = None  # (B, D)
    log_std: torch.Tensor | None = None  # (B, D)
    action: torch.Tensor | None = None  # (B, D)


class DistillBatch(NamedTuple):
    """A sample from a LabelledBuffer, as tensors."""

    observations: torch.Tensor  # (B, *obs_shape), raw: teachers normalise their own inputs
    actions: torch.Tensor  # (B,) discrete or (B, D) continuous: the action the driver took
    rewards: torch.Tensor  # (B,)
    teacher_outputs: tuple[TeacherOutput, ...]  # K entries, one per teacher
    action_masks: torch.Tensor | None = None  # (B, A) bool, True = allowed: the env's masks (MaskablePPO), else None


class LossOutput(NamedTuple):
    """``loss`` is the differentiable term; ``metrics`` are detached floats for logging."""

    loss: torch.Tensor
    metrics: Mapping[str, float]


# -- what the trainer and the jobs call ------------------------------------------------------------


class LossFn(Protocol):
    """A distillation loss (``losses.KLLoss``, ``NLLLoss``, ``MSELoss``): pure, called as
    ``loss_fn(student_out, target) -> LossOutput``, student tensors ``(B, A)`` or ``(B, D)``."""

    @property
    def temperature(self) -> float | None:
        """The tau the Trainer softens the teachers at (KL applies it to the student too); None
        when the loss has none (the Trainer then uses ``TrainerConfig.temperature``, else 1)."""
        ...

    @property
    def reduction(self) -> Reduction:
        """Over the batch; ``losses/distill`` in the metrics is always the mean."""
        ...

    def __call__(self, student: StudentOutput, target: DistillTarget) -> LossOutput: ...


MergeFn = Callable[[Sequence[DistillTarget]], DistillTarget]
"""K softened targets of one kind and shape -> one target (``merging.Merge``, ``single_teacher``)."""
ActFn = Callable[[np.ndarray], np.ndarray]
"""Raw observations ``(n, *obs_shape)`` -> env actions ``(n,)`` or ``(n, D)``."""
EvalFn = Callable[[torch.nn.Module], dict[str, float]]
"""The student being trained, in eval mode -> metrics such as ``{"eval/student_return": ...}``."""


class Sampler(Protocol):
    """Where the Trainer's batches come from: a ``LabelledBuffer`` gives one DistillBatch of
    ``batch_size`` rows, a ``MultiTaskSampler`` one per task (rows summing to ``batch_size``), as
    tensors on ``device``."""

    def sample(
        self, batch_size: int, rng: np.random.Generator, device: str | torch.device = "cpu"
    ) -> DistillBatch | dict[str, DistillBatch]: ...
