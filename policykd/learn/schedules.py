"""beta schedules for online distillation: round index -> probability that the teacher acts.

Each schedule is a tiny frozen callable (as imitation's ``BetaSchedule``); ``parse_schedule``
reads one from text (``teacher``, ``student``, ``constant:B``, ``linear:N``, ``exponential:D``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from policykd.checks import check_int, check_probability
from policykd.errors import PolicyKDError

BetaSchedule = Callable[[int], float]  # round index (0, 1, ...) -> probability that the teacher acts


def check_beta(beta: Any, what: str = "beta") -> float:
    """``beta`` as a float; PolicyKDError unless it lies in [0, 1] (NaN is refused)."""
    return check_probability(what, beta, "e.g. 1 = the teacher drives")


@dataclasses.dataclass(frozen=True)
class ConstantBeta:
    """beta is the same every round: 1 is teacher-driven, 0 on-policy (student-driven)."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        check_beta(self.beta)

    def __call__(self, round_index: int) -> float:
        return float(self.beta)


@dataclasses.dataclass(frozen=True)
class LinearBeta:
    """beta falls linearly from ``start`` at round 0 to ``end`` at round ``n_rounds`` and stays
    there. imitation's ``LinearBetaSchedule(rampdown_rounds)`` is ``LinearBeta(rampdown_rounds)``."""

    n_rounds: int
    start: float = 1.0
    end: float = 0.0

    def __post_init__(self) -> None:
        check_int("the linear schedule's n_rounds", self.n_rounds, 1)
        check_beta(self.start, "the schedule's start beta")
        check_beta(self.end, "the schedule's end beta")

    def __call__(self, round_index: int) -> float:
        fraction = min(max(round_index, 0) / self.n_rounds, 1.0)
        return float(self.start + fraction * (self.end - self.start))


@dataclasses.dataclass(frozen=True)
class ExponentialBeta:
    """beta = ``start * decay ** round``. imitation's ``ExponentialBetaSchedule(p)`` is
    ``ExponentialBeta(p)``."""

    decay: float
    start: float = 1.0

    def __post_init__(self) -> None:
        check_beta(self.decay, "the exponential schedule's decay")
        check_beta(self.start, "the schedule's start beta")

    def __call__(self, round_index: int) -> float:
        return float(self.start * self.decay ** max(round_index, 0))


def parse_schedule(spec: str) -> BetaSchedule:
    """A schedule from text: ``teacher`` (beta 1), ``student`` (beta 0), ``constant:B``,
    ``linear:N`` (1 -> 0 over N rounds) or ``exponential:D`` (beta = D ** round)."""
    name, _, arg = str(spec).partition(":")
    try:
        if name == "teacher" and not arg:
            return ConstantBeta(1.0)
        if name == "student" and not arg:
            return ConstantBeta(0.0)
        if name == "constant":
            return ConstantBeta(float(arg))
        if name == "linear":
            return LinearBeta(int(arg))
        if name in ("exponential", "exp"):
            return ExponentialBeta(float(arg))
    except ValueError:
        pass
    raise PolicyKDError(
        f"cannot read the beta schedule {spec!r}; use teacher, student, constant:0.5, linear:5 or exponential:0.5"
    )
