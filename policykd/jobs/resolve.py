"""One resolver for every job: the teacher(s) and their env recipe, a saved student and the env it
plays in, and a fresh student for a teacher. Every check here runs before a job writes anything."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from policykd.checks import check_int, check_positive_float, check_positive_sizes, check_probability
from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import check_policy_spaces, check_spaces
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.data.hub import is_hub_id
from policykd.data.teachers import Teacher, load_teacher
from policykd.errors import PolicyKDError
from policykd.jobs.config import CollectConfig
from policykd.jobs.evaluate import ReturnStats, evaluate_random, evaluate_teacher
from policykd.learn.merging import check_weights, ensemble_teacher_kind, make_merge, single_teacher
from policykd.learn.students import Student, StudentConfig, make_student
from policykd.zoo.presets import DEFAULT_ENV_ID, default_expert, load_preset, missing_teacher, resolve

RECIPE_FILE = "recipe.json"


def resolve_teacher(
    source: str | None, env_id: str | None, *, trust_pickles: bool = False, zoo_dir: str | None = None
) -> Teacher:
    """Load the teacher (default: the env preset's expert, from the zoo ``zoo_dir`` or the default
    one: presets.find_zoo) and refuse it at once if its spaces are not its env's (e.g. a bare
    CartPole zip with ``--env Acrobot-v1``), before any file is written. A path that does not exist
    is refused with where it was looked for. ``trust_pickles``: see :func:`load_teacher`."""
    if source is None:
        source = str(default_expert(env_id or DEFAULT_ENV_ID, zoo_dir))
    elif not is_hub_id(source) and not Path(source).exists():
        raise missing_teacher(source, zoo_dir)
    teacher = load_teacher(source, env_id=env_id, trust_pickles=trust_pickles)
    check_teacher_env(teacher)
    return teacher


def resolve_teachers(config: CollectConfig) -> list[Teacher]:
    """Every teacher of the run; several must share the first one's env and spaces."""
    sources = list(config.teachers) or [config.teacher]
    if len(sources) > 1 and None in sources:
        raise PolicyKDError("with several teachers, name each one with --teacher")
    twice = sorted({str(s) for s in sources if sources.count(s) > 1})
    if twice:
        raise PolicyKDError(f"--teacher {twice[0]} is given twice; an ensemble names each teacher once")
    options = {"trust_pickles": config.trust_pickles, "zoo_dir": config.zoo_dir}
    teachers = [resolve_teacher(sources[0], config.env_id, **options)]
    for source in sources[1:]:
        other = resolve_teacher(source, config.env_id or teachers[0].recipe.env_id, **options)
        if (
            other.recipe.env_id != teachers[0].recipe.env_id
            or other.observation_space != teachers[0].observation_space
            or other.action_space != teachers[0].action_space
        ):
            raise PolicyKDError(
                f"teachers {teachers[0].source} and {source} do not share one env and its spaces "
                f"({teachers[0].recipe.env_id} vs {other.recipe.env_id}); an ensemble needs teachers of the same task"
            )
        teachers.append(other)
    check_weights(config.teacher_weights, len(teachers))
    ensemble_teacher_kind([t.kind for t in teachers])  # refuses mixes such as PPO-Gaussian + SAC
    check_exploration(config, teachers[0])
    return teachers


def check_exploration(config: CollectConfig, teacher: Teacher) -> None:
    """``--epsilon`` applies to discrete actions and ``--action-noise`` to continuous ones: either
    given (above 0) for the other kind of action space is refused, not ignored."""
    discrete = teacher.mapper.discrete  # Discrete, MultiDiscrete or MultiBinary
    option, value, other = (
        ("--action-noise", config.action_noise, "--epsilon")
        if discrete
        else ("--epsilon", config.epsilon, "--action-noise")
    )
    if getattr(teacher, "masked", False) and config.epsilon:  # its random actions would ignore the env's masks
        raise PolicyKDError(f"--epsilon {config.epsilon:g} would take actions {teacher.recipe.env_id}'s action masks "
                            "forbid (MaskablePPO teacher); drop it")  # fmt: skip
    if value:
        kind = "discrete" if discrete else "continuous"
        raise PolicyKDError(f"{option} {value:g} does not apply to {teacher.recipe.env_id}'s {kind} actions; "
                            f"drop it (use {other} for exploration)")  # fmt: skip


def make_run_merge(config: CollectConfig, n_teachers: int) -> Any:
    if n_teachers == 1:
        if config.merge is not None or config.teacher_weights is not None:
            raise PolicyKDError("--merge and --teacher-weights need several --teacher")
        if config.teacher_drive not in ("merged", "first"):
            raise PolicyKDError(f"--teacher-drive {config.teacher_drive} needs several --teacher")
        return single_teacher
    return make_merge(config.merge or "mean-probs", config.teacher_weights)


def check_teacher_env(teacher: Teacher) -> None:
    """Build one copy of the teacher's env and compare spaces (raises PolicyKDError)."""
    venv = make_vec_env(teacher.recipe, 1, 0)
    try:
        check_spaces(teacher, venv)
    finally:
        venv.close()


def playing_recipe(
    recorded: EnvRecipe | None, env_id: str | None, name: str, config: StudentConfig, *, trust_pickles: bool = False
) -> EnvRecipe:
    """The env recipe a student (or its export) called ``name`` plays in: the one recorded with it,
    or with ``env_id`` (which must then agree with it) the env's preset. Refuses an env whose
    spaces are not the ones ``config`` describes. A recorded recipe names env wrappers from the
    allow-list only, unless ``trust_pickles``."""
    if recorded is not None:
        if env_id is not None and env_id != recorded.env_id:
            raise PolicyKDError(f"{name} is for {recorded.env_id}, not {env_id}; drop --env or pick its env")
        recipe = recorded.trusting() if trust_pickles else recorded
    elif env_id is not None:
        preset = load_preset(env_id)
        recipe = EnvRecipe(env_id, env_wrapper=preset.get("env_wrapper"), frame_stack=preset.get("frame_stack"))
    else:
        raise PolicyKDError(f"{name} records no env recipe ({RECIPE_FILE}); pass --env to evaluate it")
    venv = make_vec_env(recipe, 1, 0)
    try:
        check_policy_spaces(
            name,
            gym.spaces.Box(-np.inf, np.inf, config.observation_shape),
            config.action_space,
            recipe.env_id,
            venv,
            hint="evaluate it on the env it was distilled on",
        )
    finally:
        venv.close()
    return recipe


def make_student_for(
    teacher: Teacher, kind: str, hidden_sizes: tuple[int, ...], cnn_width: float = 1.0, seed: int | None = None
) -> Student:
    """A fresh student with a ``kind`` head for ``teacher``'s env: its spaces, and its VecNormalize
    statistics (clip included) copied in so the student acts on raw observations. ``seed`` fixes its initial
    weights without touching torch's global RNG (None: drawn from it)."""
    normalizer = teacher.normalizer
    return make_student(
        kind,
        teacher.observation_space,
        teacher.action_space,
        hidden_sizes=hidden_sizes,
        cnn_width=cnn_width,
        obs_mean=None if normalizer is None else normalizer.mean,
        obs_std=None if normalizer is None else normalizer.std,
        obs_clip=None if normalizer is None else normalizer.clip,
        seed=seed,
    )


SKIP_TEACHER_CHECK = "pass --no-teacher-check to use it anyway"


def check_teacher_score(teacher: Teacher, measured: ReturnStats, random: ReturnStats) -> None:
    """Refuse a teacher that plays far below the score its zoo folder records, or (recorded score
    or not) that is not clearly better than a uniformly random policy on the same episodes
    (``random``). Either way it is almost surely untrained, for another task, or loaded with the
    wrong env recipe (missing VecNormalize statistics, other wrappers, no frame stack).

    Clearly better: the teacher's 95 % interval of the mean lies above the random policy's
    (bootstrap intervals, so with all-equal returns a point: a MountainCar teacher that never
    reaches the flag ties the random policy's -200 and is refused)."""
    recorded = teacher.score
    tolerance = max(3.0 * recorded["std"], 0.2 * abs(recorded["mean"]), 1.0) if recorded else 0.0
    if recorded and measured.mean < recorded["mean"] - tolerance:
        raise PolicyKDError(
            f"teacher {teacher.source} scored {measured.mean:.1f} over {measured.n_episodes} episodes but its recorded "
            f"score is {recorded['mean']:.1f} ± {recorded['std']:.1f}: its env recipe is likely wrong "
            f"(a missing vecnormalize.pkl, other wrappers or frame stack than it was trained with); {SKIP_TEACHER_CHECK}"
        )
    if measured.ci95[0] <= random.ci95[1]:
        raise PolicyKDError(
            f"teacher {teacher.source} scored {_scored(measured)}, not clearly better than a uniformly random policy's "
            f"{_scored(random)} on the same episodes: it is probably untrained, for another env, or loaded with the "
            f"wrong env recipe (a missing vecnormalize.pkl, other wrappers or frame stack); {SKIP_TEACHER_CHECK}"
        )


def measure_teachers(
    teachers: Sequence[Teacher], budgets: Budgets, eval_seed: int, *, check: bool, progress: bool = False
) -> tuple[list[ReturnStats], ReturnStats]:
    """Each teacher's returns and a uniformly random policy's on the evaluation episodes (env seeds
    from ``eval_seed``: distill's are ``seed + EVAL_SEED_OFFSET``; ``budgets``' episodes, greedy or
    not); with ``check``, :func:`check_teacher_score` refuses a teacher first. ``progress``: bars."""
    n_eval, deterministic = budgets.n_eval_episodes, budgets.deterministic_eval
    bar = "teacher check" if progress else None
    each_teacher = [evaluate_teacher(t, n_eval, eval_seed, deterministic, bar) for t in teachers]
    # teachers share one env and its spaces (resolve_teachers), so one random policy serves them all
    random = evaluate_random(teachers[0], n_eval, eval_seed, "random policy" if progress else None)
    if check:
        for teacher, stats in zip(teachers, each_teacher):
            check_teacher_score(teacher, stats, random)
    return each_teacher, random


def _scored(stats: ReturnStats) -> str:
    episodes = "1 episode" if stats.n_episodes == 1 else f"{stats.n_episodes} episodes"
    return f"{stats.mean:.1f} [95 % CI {stats.ci95[0]:.1f}, {stats.ci95[1]:.1f}] over {episodes}"


def check_buffer_fits(buffer: LabelledBuffer, teachers: Sequence[Teacher], path: str) -> None:
    """A saved buffer must hold these teachers' kinds of labels on their spaces."""
    kinds = tuple(t.kind for t in teachers)
    if buffer.teacher_kinds != kinds:
        raise PolicyKDError(
            f"buffer {path} holds {list(buffer.teacher_kinds)} labels, not {list(kinds)}; "
            "collect it with these teachers or pass the teachers that labelled it"
        )
    teacher = teachers[0]
    obs_shape = tuple(teacher.observation_space.shape)
    act_shape = () if isinstance(teacher.action_space, gym.spaces.Discrete) else tuple(teacher.action_space.shape)
    if buffer.observation_shape != obs_shape or buffer.action_shape != act_shape:
        raise PolicyKDError(
            f"buffer {path} holds observations {buffer.observation_shape} and actions {buffer.action_shape}, but "
            f"teacher {teacher.source} uses {obs_shape} and {act_shape}; pass the teacher and env it was collected with"
        )


def load_recipe(student_dir: str | Path) -> EnvRecipe:
    from policykd.fileio import read_json

    path = Path(student_dir) / RECIPE_FILE
    if not path.is_file():
        raise PolicyKDError(f"{student_dir} has no {RECIPE_FILE}; pass --env to evaluate this student")
    return EnvRecipe.from_json(read_json(path), str(path))


MAX_HIDDEN_WEIGHTS = 100_000_000  # far past any useful student; a typo (an extra 0) would exhaust memory


@dataclasses.dataclass(frozen=True)
class Budgets:
    """What one task spends and how it is measured: the config's value where it sets one, else
    ``fallback``'s, else the env preset's (zoo/presets.py). Checked once, before anything runs;
    the trainer's own numbers (n_updates, batch_size, learning_rate) are checked by TrainerConfig."""

    n_transitions: int
    n_envs: int
    epsilon: float
    action_noise: float
    n_eval_episodes: int
    deterministic_eval: bool
    hidden_sizes: tuple[int, ...]
    cnn_width: float
    n_updates: int
    batch_size: int
    learning_rate: float


def resolve_budgets(env_id: str, config: Any, fallback: Mapping[str, Any] | None = None) -> Budgets:
    keys = [field.name for field in dataclasses.fields(Budgets)]
    given = {key: getattr(config, key, None) for key in keys}
    merged = {key: given[key] if given[key] is not None else (fallback or {}).get(key) for key in keys}
    values = resolve(env_id, merged, keys)
    budgets = Budgets(
        **{
            **values,
            "n_transitions": check_int("--n-transitions", values["n_transitions"]),
            "n_envs": check_int("--n-envs", values["n_envs"]),
            "epsilon": check_probability("--epsilon", values["epsilon"]),
            "action_noise": check_action_noise(values["action_noise"]),
            "n_eval_episodes": check_int("--eval-episodes", values["n_eval_episodes"]),
            "deterministic_eval": bool(values["deterministic_eval"]),
            "hidden_sizes": check_hidden_sizes(values["hidden_sizes"]),
            "cnn_width": check_positive_float("--cnn-width", values["cnn_width"]),
        }
    )
    if budgets.n_envs > budgets.n_transitions:
        raise PolicyKDError(f"--n-envs {budgets.n_envs} is more than the {budgets.n_transitions:,} transitions to "
                            "collect (each env adds one per step); lower --n-envs")  # fmt: skip
    return budgets


def check_hidden_sizes(sizes: Sequence[Any]) -> tuple[int, ...]:
    """``--hidden``: integers >= 1 that make a student of at most MAX_HIDDEN_WEIGHTS weights."""
    hidden = check_positive_sizes("--hidden", sizes)
    if sum(a * b for a, b in zip(hidden, hidden[1:])) > MAX_HIDDEN_WEIGHTS:
        raise PolicyKDError(f"--hidden {' '.join(map(str, hidden))} makes a student of over {MAX_HIDDEN_WEIGHTS:,} "
                            "weights; a distilled student is meant to be small: pick layers of a few hundred units")  # fmt: skip
    return hidden


def check_batch_size(batch_size: int, n_rows: int, more: str = "collect more (--n-transitions)") -> None:
    """A batch larger than the transitions it draws from would only repeat them: refused."""
    if batch_size > n_rows:
        raise PolicyKDError(
            f"--batch-size {batch_size} is more than the {n_rows:,} transitions to train on; lower --batch-size or {more}"
        )


def check_action_noise(value: Any) -> float:
    """``--action-noise``: a finite fraction of the half action range, >= 0."""
    noise = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    if not (noise >= 0 and math.isfinite(noise)):  # `not >=` also refuses NaN
        raise PolicyKDError(f"--action-noise must be a finite number >= 0 (a fraction of the half range), got {value}")
    return noise
