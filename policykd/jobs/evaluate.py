"""Play a policy for N episodes with fixed seeds and summarise: mean, std, 95 % CI, % of teacher,
and per-step action latency."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol

import numpy as np
from scipy import stats as scipy_stats

from policykd.checks import check_int
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.types import ActFn


class Policy(Protocol):
    """Anything that acts in an env: a Teacher, a Student, a task of a multi-task student, an
    exported ONNX student, :class:`RandomPolicy`."""

    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray: ...


class RandomPolicy:
    """Uniformly random actions from ``mapper`` (a teacher's ActionMapper): the 0 % of "% of teacher"."""

    def __init__(self, mapper: Any) -> None:
        self.mapper = mapper

    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        return self.mapper.random(len(observations), rng if rng is not None else np.random.default_rng())


@dataclasses.dataclass(frozen=True)
class ReturnStats:
    mean: float
    std: float
    ci95: tuple[float, float]  # Student-t interval of the mean
    n_episodes: int
    returns: tuple[float, ...]

    @classmethod
    def of(cls, returns: np.ndarray | list[float]) -> ReturnStats:
        r = np.asarray(returns, dtype=np.float64)
        if not np.isfinite(r).all():
            raise PolicyKDError(f"an episode returned {r[~np.isfinite(r)][0]}; the env or the policy produced NaN")
        mean = float(r.mean())
        std = float(r.std(ddof=1)) if len(r) > 1 else 0.0
        half = float(scipy_stats.t.ppf(0.975, len(r) - 1) * std / np.sqrt(len(r))) if len(r) > 1 and std > 0 else 0.0
        return cls(mean, std, (mean - half, mean + half), len(r), tuple(float(x) for x in r))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "ci95": list(self.ci95), "n_episodes": self.n_episodes}


def episode_returns(act: ActFn, recipe: EnvRecipe, n_episodes: int, *, seed: int, n_envs: int = 8) -> np.ndarray:
    """Returns of ``n_episodes`` full episodes (Monitor's, so Atari life losses don't cut them).

    Env i is seeded ``seed + i``; each env plays a fixed share of the episodes, as SB3's
    evaluate_policy does, so short episodes are not over-represented."""
    check_int("the number of evaluation episodes", n_episodes)
    n_envs = max(1, min(n_envs, n_episodes))
    venv = make_vec_env(recipe, n_envs, seed)
    targets = np.array([(n_episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    obs = venv.reset()
    try:
        while (counts < targets).any():
            obs, _, _, infos = venv.step(act(obs))
            for i, info in enumerate(infos):
                if "episode" in info and counts[i] < targets[i]:
                    returns.append(float(info["episode"]["r"]))
                    counts[i] += 1
    finally:
        venv.close()
    return np.asarray(returns)


def evaluate_policy(
    policy: Policy, recipe: EnvRecipe, n_episodes: int, *, seed: int, deterministic: bool = True
) -> ReturnStats:
    """Play ``n_episodes`` of ``recipe``'s env (env i seeded ``seed + i``) with ``policy`` and
    summarise the returns. The policy's own randomness (sampled actions, epsilon) comes from a
    fresh generator seeded ``seed``, so every call with the same arguments plays the same episodes."""
    check_int("--seed", seed, 0)
    rng = np.random.default_rng(seed)
    return ReturnStats.of(
        episode_returns(lambda obs: policy.act(obs, deterministic, rng), recipe, n_episodes, seed=seed)
    )


def pct_of(student_mean: float, teacher_mean: float, random_mean: float | None = None) -> float:
    """Student return as a % of the teacher's; with ``random_mean``, normalised so random = 0 %."""
    base = 0.0 if random_mean is None else random_mean
    denom = teacher_mean - base
    return float("nan") if denom == 0 else 100.0 * (student_mean - base) / denom


def action_latency_ms(act: ActFn, observation: np.ndarray, n_calls: int = 200) -> float:
    """Median wall time of one batch-1 action, in milliseconds."""
    return call_latency_ms(act, observation[None], n_calls)


def call_latency_ms(call: ActFn, inputs: np.ndarray, n_calls: int = 200, n_warmup: int = 10) -> float:
    """Median wall time of ``call(inputs)`` after ``n_warmup`` untimed calls, in milliseconds."""
    for _ in range(n_warmup):
        call(inputs)
    times = []
    for _ in range(n_calls):
        start = time.perf_counter()
        call(inputs)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


EVAL_SEED_OFFSET = 10_000  # evaluation episodes never reuse the collection seeds


def evaluate_teacher(teacher: Teacher, n_episodes: int, seed: int, deterministic: bool = True) -> ReturnStats:
    """The teacher on its own env recipe."""
    return evaluate_policy(teacher, teacher.recipe, n_episodes, seed=seed, deterministic=deterministic)


def evaluate_random(teacher: Teacher, n_episodes: int, seed: int) -> ReturnStats:
    """A uniformly random policy on the teacher's env and episodes: the 0 % of "% of teacher"."""
    return evaluate_policy(RandomPolicy(teacher.mapper), teacher.recipe, n_episodes, seed=seed)


def mean_ci(values: list[float] | np.ndarray) -> tuple[float, float, float]:
    """``(mean, ci_low, ci_high)``: Student-t 95 % interval of the mean over seeds (a point for one)."""
    stats = ReturnStats.of(np.asarray(values, dtype=np.float64))
    return stats.mean, stats.ci95[0], stats.ci95[1]


def teacher_baselines(teacher: Teacher, n_episodes: int, seed: int) -> dict[str, Any]:
    """Mean returns of the teacher (greedy and sampled) and of a uniform random policy on the
    evaluation episodes (the 100 % and 0 % of "% of teacher"), plus the greedy returns."""
    greedy = evaluate_teacher(teacher, n_episodes, seed)
    sampled = evaluate_teacher(teacher, n_episodes, seed, deterministic=False)
    return {
        "teacher_greedy": greedy.mean,
        "teacher_sampled": sampled.mean,
        "random": evaluate_random(teacher, n_episodes, seed).mean,
        "teacher_greedy_returns": list(greedy.returns),
    }
