"""Schedules: beta for online distillation (round index -> probability that the teacher acts), and
lambda for RL fine-tuning (env steps, return gap -> weight of the distillation term).

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


# -- lambda schedules: the weight of the distillation term in RL fine-tuning -------------------------

LambdaSchedule = Callable[[int, "float | None"], float]
"""(env steps so far, the student's return gap to the teacher or None) -> lambda >= 0, the weight
of the distillation term added to the RL loss (``learn/kickstart.py``). The gap is
``(G_teacher - G_student) / |G_teacher|`` (``1 - G_student / G_teacher`` for a positive teacher
return), from the student's recent episodes; None before the first one ends."""


def check_lambda(value: Any, what: str = "lambda") -> float:
    """``value`` as a finite float >= 0 (NaN and infinities refused)."""
    number = float("nan")
    try:
        number = float(value)
    except (TypeError, ValueError):
        pass
    if isinstance(value, bool) or not (0.0 <= number < float("inf")):
        raise PolicyKDError(f"{what} must be a finite number >= 0, got {value!r}; e.g. 1 (0 is plain RL)")
    return number


@dataclasses.dataclass(frozen=True)
class ConstantLambda:
    """lambda is ``value`` at every step (0: plain RL, no distillation)."""

    value: float = 1.0

    def __post_init__(self) -> None:
        check_lambda(self.value)

    def __call__(self, n_steps: int, gap: float | None = None) -> float:
        return float(self.value)


@dataclasses.dataclass(frozen=True)
class LinearLambda:
    """lambda falls linearly from ``start`` at step 0 to ``end`` at env step ``n_steps``, then stays."""

    n_steps: int
    start: float = 1.0
    end: float = 0.0

    def __post_init__(self) -> None:
        check_int("the linear lambda schedule's n_steps", self.n_steps, 1)
        check_lambda(self.start, "the schedule's start lambda")
        check_lambda(self.end, "the schedule's end lambda")

    def __call__(self, n_steps: int, gap: float | None = None) -> float:
        fraction = min(max(n_steps, 0) / self.n_steps, 1.0)
        return float(self.start + fraction * (self.end - self.start))


@dataclasses.dataclass(frozen=True)
class ExponentialLambda:
    """lambda = ``start * 0.5 ** (step / half_life)``: halves every ``half_life`` env steps."""

    half_life: int
    start: float = 1.0

    def __post_init__(self) -> None:
        check_int("the exponential lambda schedule's half_life", self.half_life, 1)
        check_lambda(self.start, "the schedule's start lambda")

    def __call__(self, n_steps: int, gap: float | None = None) -> float:
        return float(self.start * 0.5 ** (max(n_steps, 0) / self.half_life))


@dataclasses.dataclass(frozen=True)
class PerformanceLambda:
    """QDagger's: lambda = ``start * clip(gap, 0, 1)`` with gap = ``1 - G_student / G_teacher``
    (in general ``(G_teacher - G_student) / |G_teacher|``), so it falls to 0 as the student catches
    up with the teacher; ``start`` until the student's first episode ends. CleanRL's QDagger leaves
    it unbounded above; here it is clipped at ``start`` like the other schedules."""

    start: float = 1.0

    def __post_init__(self) -> None:
        check_lambda(self.start, "the schedule's start lambda")

    def __call__(self, n_steps: int, gap: float | None = None) -> float:
        if gap is None:
            return float(self.start)
        return float(self.start * min(max(gap, 0.0), 1.0))


LAMBDA_SCHEDULES = "constant:L, linear:N (1 -> 0 over N env steps), exponential:H (half-life H steps) or performance"


def parse_lambda_schedule(spec: str | float) -> LambdaSchedule:
    """A lambda schedule from text: ``constant:L`` (or a bare number L), ``linear:N[:L0]`` (L0 -> 0
    over N env steps), ``exponential:H[:L0]`` (halves every H steps) or ``performance[:L0]``
    (``L0 * clip(1 - G_student / G_teacher, 0, 1)``); L0 defaults to 1."""
    name, _, rest = str(spec).partition(":")
    args = rest.split(":") if rest else []
    try:
        if not args and _is_number(name):
            return ConstantLambda(float(name))
        if name == "constant" and len(args) == 1:
            return ConstantLambda(float(args[0]))
        if name == "linear" and len(args) in (1, 2):
            return LinearLambda(_steps(args[0]), *(float(a) for a in args[1:]))
        if name in ("exponential", "exp") and len(args) in (1, 2):
            return ExponentialLambda(_steps(args[0]), *(float(a) for a in args[1:]))
        if name == "performance" and len(args) <= 1:
            return PerformanceLambda(*(float(a) for a in args))
    except ValueError:
        pass
    raise PolicyKDError(f"cannot read the lambda schedule {spec!r}; use {LAMBDA_SCHEDULES}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _steps(text: str) -> int:
    """An env-step count such as ``50000`` or ``5e4`` (a whole number)."""
    value = float(text)
    if not value.is_integer():
        raise ValueError(text)
    return int(value)
