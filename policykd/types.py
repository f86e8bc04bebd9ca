"""The data types that flow from teacher to student. NamedTuples of tensors only, no behaviour.

Shapes: B = batch, A = number of discrete actions, D = action dimensions, N = quantiles,
K = teachers.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

TeacherKind = Literal["categorical", "q_values", "quantiles", "gaussian", "squashed_gaussian", "deterministic"]
TEACHER_KINDS: tuple[str, ...] = (
    "categorical",
    "q_values",
    "quantiles",
    "gaussian",
    "squashed_gaussian",
    "deterministic",
)
DISCRETE_KINDS: tuple[str, ...] = ("categorical", "q_values", "quantiles")
GAUSSIAN_KINDS: tuple[str, ...] = ("gaussian", "squashed_gaussian")

# The tensor fields of a TeacherOutput, in the order the buffer stores them.
TEACHER_FIELDS: tuple[str, ...] = ("logits", "q_values", "quantiles", "mean", "log_std", "action", "value")
# Which fields each kind sets. Every adapter also gives a value estimate.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
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

    kind: str
    logits: torch.Tensor | None = None  # (B, A) categorical (PPO / A2C on Discrete)
    q_values: torch.Tensor | None = None  # (B, A) DQN; QR-DQN: mean over quantiles
    quantiles: torch.Tensor | None = None  # (B, N, A) QR-DQN, as SB3's quantile_net returns them
    mean: torch.Tensor | None = None  # (B, D) gaussian (env units) or squashed_gaussian (pre-tanh)
    log_std: torch.Tensor | None = None  # (B, D)
    action: torch.Tensor | None = None  # (B, D) deterministic (TD3 / DDPG), in [-1, 1] before rescaling
    value: torch.Tensor | None = None  # (B,) state value (PPO / A2C), max Q (DQN), min Q(s, a*) (SAC / TD3)


class DistillTarget(NamedTuple):
    """A teacher output after temperature (and, with several teachers, merging): what the student
    is trained towards. ``kind`` is ``discrete``, ``gaussian`` or ``deterministic``."""

    kind: str
    log_probs: torch.Tensor | None = None  # (B, A) log softmax(x / tau), x = logits or Q-values
    q_values: torch.Tensor | None = None  # (B, A) raw Q-values, for the Q-value MSE loss
    mean: torch.Tensor | None = None  # (B, D)
    log_std: torch.Tensor | None = None  # (B, D) teacher log-std + log(tau)
    action: torch.Tensor | None = None  # (B, D) the teacher's greedy action in the student's output space


class StudentOutput(NamedTuple):
    """A student's raw output. ``kind`` is ``discrete`` (logits, read as Q-values by the MSE loss),
    ``gaussian`` (mean, log_std) or ``deterministic`` (action in [-1, 1])."""

    kind: str
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


class LossOutput(NamedTuple):
    """``loss`` is the differentiable term; ``metrics`` are detached floats for logging."""

    loss: torch.Tensor
    metrics: dict[str, float]
