"""Play a policy for N episodes with fixed seeds and summarise: mean, std, 95 % CI, % of teacher,
and per-step action latency; and which episodes ``policykd evaluate`` plays (:func:`choose_episodes`).

Figures that cannot mislead: the CI of a policy's mean return is a percentile bootstrap, so it
never leaves the range of the returns it summarises (a Student-t interval put CartPole at
[217.5, 632.9] when no episode can pass 500); "% of teacher" is normalised so that a uniformly
random policy scores 0 %; the raw ratio student / teacher is given only where no return observed
is negative (with negative returns, a student five times worse than its teacher read 526.7 %)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy import stats as scipy_stats

from policykd.checks import check_int
from policykd.data.envs import EnvRecipe, env_action_masks, make_vec_env
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import read_json
from policykd.progress import progress_bar
from policykd.types import ActFn
from policykd.zoo.presets import load_preset

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 9_999  # scipy's default
BOOTSTRAP_SEED = 0  # fixed: the same returns always give the same interval


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
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None, **masks: Any
    ) -> np.ndarray:
        """``action_masks=`` ``(n, A)`` (an env's, as MaskablePPO's): uniform over the allowed actions."""
        rng = rng if rng is not None else np.random.default_rng()
        return self.mapper.random(len(observations), rng, masks.get("action_masks"))


@dataclasses.dataclass(frozen=True)
class ReturnStats:
    mean: float
    std: float
    ci95: tuple[float, float]  # percentile-bootstrap 95 % interval of the mean, inside [min, max] of the returns
    n_episodes: int
    returns: tuple[float, ...]

    @classmethod
    def of(cls, returns: np.ndarray | list[float]) -> ReturnStats:
        r = _finite_values(returns)
        std = float(r.std(ddof=1)) if len(r) > 1 else 0.0
        return cls(float(r.mean()), std, bootstrap_ci(r), len(r), tuple(float(x) for x in r))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "ci95": list(self.ci95), "n_episodes": self.n_episodes}


def bootstrap_ci(values: np.ndarray) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (scipy.stats.bootstrap,
    ``BOOTSTRAP_RESAMPLES`` resamples drawn from a generator seeded ``BOOTSTRAP_SEED``, so the same
    values give the same interval); a point at the mean for one value or all-equal values.

    Every resample's mean lies between the smallest and the largest value, so the interval does
    too. Percentile rather than BCa: BCa's bias correction counts resampled means below the
    observed one, which is erratic on the tied returns of capped episodes (CartPole's 500) and on
    a handful of episodes (two returns give [min, midpoint])."""
    mean = float(np.mean(values))
    if len(values) < 2 or np.ptp(values) == 0:
        return mean, mean
    result = scipy_stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=CI_LEVEL,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(BOOTSTRAP_SEED),  # rng= from scipy 1.15 on; the same draws
    )
    low, high = np.clip([result.confidence_interval.low, result.confidence_interval.high], values.min(), values.max())
    return float(low), float(high)


def _finite_values(values: np.ndarray | list[float]) -> np.ndarray:
    r = np.asarray(values, dtype=np.float64)
    if not len(r):
        raise PolicyKDError("no episode finished, so there is no return to summarise; play at least one episode")
    if not np.isfinite(r).all():
        raise PolicyKDError(f"an episode returned {r[~np.isfinite(r)][0]}; the env or the policy produced NaN")
    return r


def episode_returns(
    act: ActFn, recipe: EnvRecipe, n_episodes: int, *, seed: int, n_envs: int = 8, progress: str | None = None
) -> np.ndarray:
    """Returns of ``n_episodes`` full episodes (Monitor's, so Atari life losses don't cut them).

    Env i is seeded ``seed + i``; each env plays a fixed share of the episodes, as SB3's
    evaluate_policy does, so short episodes are not over-represented. ``progress``: a progress
    bar over the episodes with this description (None: none)."""
    check_int("the number of evaluation episodes", n_episodes)
    n_envs = max(1, min(n_envs, n_episodes))
    venv = make_vec_env(recipe, n_envs, seed)
    targets = np.array([(n_episodes + i) // n_envs for i in range(n_envs)])
    counts = np.zeros(n_envs, dtype=int)
    returns: list[float] = []
    bar = progress_bar(n_episodes, progress or "", enabled=progress is not None, unit="episodes")
    obs = venv.reset()
    try:
        while (counts < targets).any():
            masks = env_action_masks(venv)  # an env with action masks (MaskablePPO's): every policy obeys them
            obs, _, _, infos = venv.step(act(obs) if masks is None else act(obs, action_masks=masks))
            for i, info in enumerate(infos):
                if "episode" in info and counts[i] < targets[i]:
                    returns.append(float(info["episode"]["r"]))
                    counts[i] += 1
                    bar.update(1)
    finally:
        bar.close()
        venv.close()
    return np.asarray(returns)


def evaluate_policy(
    policy: Policy,
    recipe: EnvRecipe,
    n_episodes: int,
    *,
    seed: int,
    deterministic: bool = True,
    progress: str | None = None,
) -> ReturnStats:
    """Play ``n_episodes`` of ``recipe``'s env (env i seeded ``seed + i``) with ``policy`` and
    summarise the returns. The policy's own randomness (sampled actions, epsilon) comes from a
    fresh generator seeded ``seed``, so every call with the same arguments plays the same episodes.
    ``progress``: a progress bar over the episodes with this description (None: none)."""
    check_int("--seed", seed, 0)
    rng = np.random.default_rng(seed)
    act = lambda obs, **masks: policy.act(obs, deterministic, rng, **masks)  # noqa: E731
    return ReturnStats.of(episode_returns(act, recipe, n_episodes, seed=seed, progress=progress))


def pct_of(student_mean: float, teacher_mean: float, random_mean: float | None = None) -> float:
    """Student return as a % of the teacher's; with ``random_mean``, normalised so random = 0 %."""
    base = 0.0 if random_mean is None else random_mean
    denom = teacher_mean - base
    return float("nan") if denom == 0 else 100.0 * (student_mean - base) / denom


def raw_pct_of(student: ReturnStats, teacher: ReturnStats, *others: ReturnStats) -> float | None:
    """Student mean / teacher mean in %, or None where any return observed (the student's, the
    teacher's, or ``others``' such as the random policy's on the same env) is negative: a ratio of
    means reads as a fraction only when returns are >= 0. With negative returns it misleads (a
    Pendulum student five times worse than its teacher scored 526.7 %); use :func:`pct_of` with
    the random policy's mean there."""
    if any(min(stats.returns, default=0.0) < 0 for stats in (student, teacher, *others)):
        return None
    return pct_of(student.mean, teacher.mean)


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


def evaluate_teacher(
    teacher: Teacher, n_episodes: int, seed: int, deterministic: bool = True, progress: str | None = None
) -> ReturnStats:
    """The teacher on its own env recipe."""
    return evaluate_policy(
        teacher, teacher.recipe, n_episodes, seed=seed, deterministic=deterministic, progress=progress
    )


def evaluate_random(teacher: Teacher, n_episodes: int, seed: int, progress: str | None = None) -> ReturnStats:
    """A uniformly random policy on the teacher's env and episodes: the 0 % of "% of teacher"."""
    return evaluate_policy(RandomPolicy(teacher.mapper), teacher.recipe, n_episodes, seed=seed, progress=progress)


def mean_ci(values: list[float] | np.ndarray) -> tuple[float, float, float]:
    """``(mean, ci_low, ci_high)``: Student-t 95 % interval of the mean over seeds (a point for one).

    Over the handful of seeds a benchmark trains (3 to 5), a bootstrap interval is far too narrow
    (three values can only resample ten distinct means), while the t-interval keeps its coverage
    for roughly normal per-seed means; it may reach past the seeds' range, which with so few
    seeds is honest. Returns of episodes use :func:`bootstrap_ci` (ReturnStats.ci95)."""
    v = _finite_values(values)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    half = float(scipy_stats.t.ppf(0.5 + CI_LEVEL / 2, len(v) - 1) * std / np.sqrt(len(v))) if std > 0 else 0.0
    return mean, mean - half, mean + half


def teacher_baselines(teacher: Teacher, n_episodes: int, seed: int, progress: bool = False) -> dict[str, Any]:
    """Mean returns of the teacher (greedy and sampled) and of a uniform random policy on the
    evaluation episodes (the 100 % and 0 % of "% of teacher"), plus the greedy and random returns.
    ``progress``: a progress bar over each one's episodes."""
    bars = ("teacher check (greedy)", "teacher (sampled)", "random policy") if progress else (None, None, None)
    greedy = evaluate_teacher(teacher, n_episodes, seed, progress=bars[0])
    sampled = evaluate_teacher(teacher, n_episodes, seed, deterministic=False, progress=bars[1])
    random = evaluate_random(teacher, n_episodes, seed, progress=bars[2])
    return {
        "teacher_greedy": greedy.mean,
        "teacher_sampled": sampled.mean,
        "random": random.mean,
        "teacher_greedy_returns": list(greedy.returns),
        "random_returns": list(random.returns),
    }


# -- which episodes ``policykd evaluate`` plays ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalEpisodes:
    """The episodes an evaluation plays: env ``i`` seeded ``env_seed + i`` and the policy's own
    randomness from a generator seeded ``env_seed`` (as :func:`evaluate_policy`), ``n_episodes``
    of them, greedy or not; ``origin`` says where ``env_seed`` came from."""

    env_seed: int
    n_episodes: int
    deterministic: bool
    origin: str

    def describe(self) -> str:
        mode = "greedy" if self.deterministic else "stochastic"
        return f"{mode}, env seeds from {self.env_seed}: {self.origin}"


def choose_episodes(
    source: str,
    env_id: str,
    *,
    seed: int | None = None,
    episode_seed: int | None = None,
    n_episodes: int | None = None,
    deterministic: bool | None = None,
    zoo: tuple[int, int] | None = None,
) -> EvalEpisodes:
    """The episodes ``policykd evaluate SOURCE`` plays on ``env_id``; None means "not given".

    Env seeds: ``episode_seed`` exactly when given; else ``zoo`` = (seed, episodes) of the zoo's
    scoring protocol (``--record``); else distill's evaluation episodes, ``seed + EVAL_SEED_OFFSET``,
    with ``seed`` the given one, else that of the distill run SOURCE belongs to, else 0, so that a
    student evaluates to the number in its run's summary.json. Episodes: given, else the run's,
    the zoo's or the env preset's (what distill plays). Greedy: given, else the env preset's
    ``deterministic_eval`` (distill and the zoo's score both follow it); an ONNX file acts greedily."""
    if seed is not None and (episode_seed is not None or zoo is not None):
        flag = "--episode-seed" if episode_seed is not None else "--record (the zoo's episodes)"
        raise PolicyKDError(
            f"--seed S replays distill --seed S's evaluation episodes (env seeds from S + {EVAL_SEED_OFFSET}) "
            f"and {flag} picks the env seeds itself; give one of them"
        )
    check_int("--seed", seed if seed is not None else 0, 0)
    run = _run_summary(source, env_id)
    preset = load_preset(env_id)
    greedy = deterministic if deterministic is not None else bool(preset["deterministic_eval"])
    greedy = greedy or str(source).endswith(".onnx")
    if episode_seed is not None:
        env_seed, origin = check_int("--episode-seed", episode_seed, 0), f"--episode-seed {episode_seed}"
    elif zoo is not None:
        env_seed, origin = zoo[0], "the zoo's scoring episodes"
    else:
        seed = seed if seed is not None else int(run.get("seed", 0))
        env_seed, origin = seed + EVAL_SEED_OFFSET, f"distill --seed {seed}'s evaluation episodes"
        origin += ", as in its run's summary.json" if run else ""
    default_n = run.get("n_eval_episodes") or (zoo[1] if zoo is not None else preset["n_eval_episodes"])
    n_episodes = n_episodes if n_episodes is not None else int(default_n)
    return EvalEpisodes(env_seed, check_int("--episodes", n_episodes), greedy, origin)


def _run_summary(source: str, env_id: str) -> Mapping[str, Any]:
    """The summary.json of the single-task distill run that student folder (or ONNX file in one)
    ``source`` belongs to, if it is a run on ``env_id``; else empty."""
    folder = Path(source).parent
    path = (folder.parent if str(source).endswith(".onnx") else folder) / "summary.json"
    if not path.is_file():
        return {}
    summary = read_json(path)
    return summary if isinstance(summary, dict) and summary.get("env_id") == env_id else {}
