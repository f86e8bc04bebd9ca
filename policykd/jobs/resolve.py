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
from policykd.data.collect import check_policy_spaces, check_spaces, episode_covering_envs, max_episode_steps
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.data.hub import is_hub_id
from policykd.data.teachers import Teacher, load_teacher
from policykd.devices import is_image_space, resolve_device
from policykd.errors import PolicyKDError
from policykd.jobs.config import CollectConfig
from policykd.jobs.evaluate import ReturnStats, evaluate_random, evaluate_teacher
from policykd.learn.merging import check_weights, ensemble_teacher_kind, make_merge, single_teacher
from policykd.learn.students import Student, StudentConfig, make_student
from policykd.learn.targets import confidence_temperature, student_kind_for
from policykd.zoo.presets import (
    CONTINUOUS_NOISE,
    DEFAULT_ENV_ID,
    DEFAULTS,
    NO_PRESET,
    Q_TARGET_CONFIDENCE,
    STUDENT_FRACTION,
    TEACHER_DEFAULTS,
    check_preset_choice,
    default_expert,
    has_preset,
    load_preset,
    missing_teacher,
    resolve,
)

RECIPE_FILE = "recipe.json"


def resolve_teacher(
    source: str | None,
    env_id: str | None,
    *,
    trust_pickles: bool = False,
    zoo_dir: str | None = None,
    device: str | None = None,
) -> Teacher:
    """Load the teacher (default: the env preset's expert, from the zoo ``zoo_dir`` or the default
    one: presets.find_zoo) and refuse it at once if its spaces are not its env's (e.g. a bare
    CartPole zip with ``--env Acrobot-v1``), before any file is written. A path that does not exist
    is refused with where it was looked for. ``trust_pickles``: see :func:`load_teacher`. ``device``:
    where it labels and plays (``--device``; checked before the teacher is loaded, default cpu)."""
    resolve_device(device)  # a bad --device or a missing GPU is refused before anything loads
    if source is None:
        source = str(default_expert(env_id or DEFAULT_ENV_ID, zoo_dir))
    elif not is_hub_id(source) and not Path(source).exists():
        raise missing_teacher(source, zoo_dir)
    teacher = load_teacher(source, env_id=env_id, trust_pickles=trust_pickles)
    check_teacher_env(teacher)
    return teacher.to(resolve_device(device, image_observations=is_image_space(teacher.observation_space)))


def resolve_teachers(config: CollectConfig) -> list[Teacher]:
    """Every teacher of the run; several must share the first one's env and spaces."""
    sources = list(config.teachers) or [config.teacher]
    if len(sources) > 1 and None in sources:
        raise PolicyKDError("with several teachers, name each one with --teacher")
    twice = sorted({str(s) for s in sources if sources.count(s) > 1})
    if twice:
        raise PolicyKDError(f"--teacher {twice[0]} is given twice; an ensemble names each teacher once")
    options = {"trust_pickles": config.trust_pickles, "zoo_dir": config.zoo_dir, "device": config.device}
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
    teacher: Teacher,
    kind: str,
    hidden_sizes: tuple[int, ...],
    cnn_width: float = 1.0,
    seed: int | None = None,
    exploration_rate: float | None = None,
) -> Student:
    """A fresh student with a ``kind`` head for ``teacher``'s env: its spaces, and its VecNormalize
    statistics (clip included) copied in so the student acts on raw observations. ``seed`` fixes its initial
    weights without touching torch's global RNG (None: drawn from it). ``exploration_rate``: how it
    acts when sampled (:func:`student_exploration_rate`)."""
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
        exploration_rate=exploration_rate,
    )


STUDENT_SAMPLING = ("teacher", "distribution")
"""``--student-sampling``: how a student acts when evaluated stochastically (:func:`student_exploration_rate`)."""


def student_exploration_rate(sampling: str, kind: str, teacher: Teacher) -> float | None:
    """The student's exploration rate (StudentConfig.exploration_rate) under ``--student-sampling``:
    ``teacher`` (default): a student of a Q-value / quantile teacher acts, when sampled, as that
    teacher does (Teacher.act: epsilon-greedy at its saved exploration rate, as SB3's predict and
    rl-zoo's stochastic Atari scores), so both play the same kind of policy; every other student
    samples its distribution, as its teacher does (None). ``distribution``: every student samples
    its distribution (softmax of its logits)."""
    if check_student_sampling(sampling) == "distribution" or kind not in ("q_values", "quantiles"):
        return None
    return float(teacher.exploration_rate)


def check_student_sampling(sampling: str) -> str:
    if sampling not in STUDENT_SAMPLING:
        raise PolicyKDError(f"--student-sampling {sampling!r}: use one of {', '.join(STUDENT_SAMPLING)}")
    return sampling


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
    while True:
        each_teacher = [evaluate_teacher(t, n_eval, eval_seed, deterministic, bar) for t in teachers]
        # teachers share one env and its spaces (resolve_teachers), so one random policy serves them all
        random = evaluate_random(teachers[0], n_eval, eval_seed, "random policy" if progress else None)
        wanted = min(episodes_for_variance(max(each_teacher, key=lambda s: s.mean), random), budgets.max_eval_episodes)
        if wanted <= n_eval:
            break
        n_eval = wanted  # episodes i < n_eval are seeded alike, so the ones played are played again
    if check:
        for teacher, stats in zip(teachers, each_teacher):
            check_teacher_score(teacher, stats, random)
    return each_teacher, random


MAX_EVAL_EPISODES = 100
EVAL_PRECISION = 0.025
"""With no preset, evaluation episodes are added until the 95 % interval of the teacher's mean return
is within this share of the teacher - random gap on either side (up to MAX_EVAL_EPISODES)."""


def episodes_for_variance(teacher: ReturnStats, random: ReturnStats, precision: float = EVAL_PRECISION) -> int:
    """Episodes whose normal 95 % interval of the teacher's mean return is ``± precision`` of the
    teacher - random gap: ``(1.96 std / (precision gap))^2``, 1 where the returns do not vary."""
    gap = abs(teacher.mean - random.mean)
    std = float(np.std(teacher.returns, ddof=1)) if len(teacher.returns) > 1 else 0.0
    if std == 0:
        return 1
    if gap == 0:
        return MAX_EVAL_EPISODES
    return math.ceil((1.96 * std / (precision * gap)) ** 2)


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
    picked: str = ""
    """Where no preset applies (or with ``--student-fraction``): the one line that says which
    defaults were derived from the teacher and why (:func:`teacher_defaults`)."""
    max_eval_episodes: int = 0
    """Above 0 (no preset, no ``--eval-episodes``): :func:`measure_teachers` plays more evaluation
    episodes, up to this many, where the teacher's returns vary (:func:`episodes_for_variance`)."""


def resolve_budgets(
    env_id: str, config: Any, fallback: Mapping[str, Any] | None = None, teacher: Teacher | None = None
) -> Budgets:
    """Each budget: the config's, else ``fallback``'s, else the env preset's; with ``teacher``,
    where the env has no preset or the config says ``preset="none"``, the defaults derived from
    the teacher (:func:`teacher_defaults`) replace the preset's."""
    keys = [field.name for field in dataclasses.fields(Budgets) if field.name not in ("picked", "max_eval_episodes")]
    use_file = uses_preset(env_id, config)
    derived, picked = teacher_defaults(teacher, config, use_file, fallback) if teacher is not None else ({}, "")
    given = {key: getattr(config, key, None) for key in keys}
    asked = {key: given[key] if given[key] is not None else (fallback or {}).get(key) for key in keys}
    merged = {key: derived.get(key) if asked[key] is None else asked[key] for key in keys}
    values = resolve(env_id, merged, keys, use_file)
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
    if asked["n_envs"] is None:  # fewer envs where a small budget cuts episodes
        steps = (teacher.recipe.env_kwargs.get("max_episode_steps") if teacher else None) or max_episode_steps(env_id)
        n_envs = episode_covering_envs(budgets.n_transitions, budgets.n_envs, steps)
        budgets = dataclasses.replace(budgets, n_envs=n_envs)
    if picked:
        shown = [k for k in PICKED_SHOWN if asked[k] is None and (k in derived or k == "n_envs")]
        budget = ", ".join(f"{k} {getattr(budgets, k):,}" if k != "action_noise" else f"{k} {budgets.action_noise:g}"
                           for k in shown)  # fmt: skip
        budgets = dataclasses.replace(budgets, picked=picked.format(budget=budget))
    if asked["n_eval_episodes"] is None and "n_eval_episodes" in derived:
        budgets = dataclasses.replace(budgets, max_eval_episodes=MAX_EVAL_EPISODES)
    if budgets.n_envs > budgets.n_transitions:
        raise PolicyKDError(f"--n-envs {budgets.n_envs} is more than the {budgets.n_transitions:,} transitions to "
                            "collect (each env adds one per step); lower --n-envs")  # fmt: skip
    return budgets


PICKED_SHOWN = ("n_transitions", "n_updates", "n_envs", "action_noise")
"""The budgets the defaults line names (with their resolved values) where they were not given."""


def uses_preset(env_id: str, config: Any) -> bool:
    """Whether ``env_id``'s preset file applies: it exists and the config's ``preset`` is not ``none``."""
    return check_preset_choice(getattr(config, "preset", None) or "auto") != NO_PRESET and has_preset(env_id)


def teacher_domain(teacher: Teacher) -> str:
    """``image`` (uint8 image observations), ``continuous-control`` (Box actions of 2 or more
    dimensions, or 10 or more observation dimensions: MuJoCo-like) or ``classic-control``."""
    obs = teacher.observation_space
    if len(getattr(obs, "shape", ())) == 3 and getattr(obs, "dtype", None) == np.uint8:
        return "image"
    continuous = isinstance(teacher.action_space, gym.spaces.Box)
    obs_dim = int(np.prod(getattr(obs, "shape", ()) or (1,)))
    if continuous and (int(np.prod(teacher.action_space.shape)) >= 2 or obs_dim >= 10):
        return "continuous-control"
    return "classic-control"


def teacher_defaults(
    teacher: Teacher, config: Any, use_file: bool, fallback: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The budgets derived from ``teacher`` where no preset applies (``use_file`` False): its
    domain's (presets.TEACHER_DEFAULTS) and a student of about ``--student-fraction`` (default
    presets.STUDENT_FRACTION) of its acting parameters; with a preset, only the student's size,
    and only when ``--student-fraction`` is given or the preset's student is too large for this
    teacher (:func:`oversized_preset_student`). Returns them and the line that says why."""
    fraction = getattr(config, "student_fraction", None)
    oversized = ""
    if use_file and fraction is None:
        oversized = oversized_preset_student(teacher, config, fallback)
        if not oversized:
            return {}, ""
    fraction = STUDENT_FRACTION if fraction is None else check_student_fraction(fraction)
    domain = teacher_domain(teacher)
    values = {} if use_file else dict(TEACHER_DEFAULTS[domain])
    if not use_file and domain == "classic-control" and isinstance(teacher.action_space, gym.spaces.Box):
        values.update(CONTINUOUS_NOISE)
    values.update(student_size(teacher, fraction))
    student = make_student_for(teacher, teacher.kind, tuple(values["hidden_sizes"]), values.get("cnn_width", 1.0))
    size = f"CNN width {values['cnn_width']:g}" if domain == "image" else "×".join(map(str, values["hidden_sizes"]))
    why = (
        f"student {size}: {student.n_params:,} params, {100 * student.n_params / teacher.n_params:.1f} % of the "
        f"teacher's {teacher.n_params:,} acting params (student fraction {fraction:g})"
    )
    if domain != "image":
        base = load_preset(teacher.recipe.env_id, use_file).get("learning_rate", DEFAULTS["learning_rate"])
        values["learning_rate"] = base * narrow_student_scale(values["hidden_sizes"][0])
        if values["learning_rate"] != base:
            scale = values["learning_rate"] / base
            why += f", lr {values['learning_rate']:.3g} ({base:g} × {scale:.3g}: a {values['hidden_sizes'][0]}-unit student)"
    if domain != "image" and max(values["hidden_sizes"]) < MIN_RELIABLE_WIDTH:
        why += f"; {tiny_student_warning(max(values['hidden_sizes']))}"
    if not use_file:
        reason = "--preset none" if has_preset(teacher.recipe.env_id) else f"no preset for {teacher.recipe.env_id}"
        why = f"defaults from the teacher ({reason}): {domain} budgets ({{budget}}); {why}"
    elif oversized:
        why = f"{oversized}, so {why}"
    return values, why


MAX_PRESET_STUDENT_SHARE = 0.3
"""A preset's student size serves the experts it was written for; a teacher for which it would be more
than this share of the acting parameters (a 64x64 PPO expert under a preset sized for 256x256 DQN
experts) gets a student of STUDENT_FRACTION instead: a default that does not compress is no default."""


def oversized_preset_student(teacher: Teacher, config: Any, fallback: Mapping[str, Any] | None = None) -> str:
    """Why the preset's student is too large for ``teacher`` (its share of the teacher's acting
    parameters is above MAX_PRESET_STUDENT_SHARE), or "" when it fits or the config or ``fallback``
    sizes the student."""
    sizes = ("hidden_sizes", "cnn_width")
    if any(getattr(config, key, None) is not None or key in (fallback or {}) for key in sizes):
        return ""
    preset, image = load_preset(teacher.recipe.env_id), teacher_domain(teacher) == "image"
    hidden = tuple(preset["hidden_sizes"])
    cnn_width = preset["cnn_width"] if image else 1.0  # an MLP student: the preset's CNN width does not apply
    share = make_student_for(teacher, teacher.kind, hidden, cnn_width).n_params / teacher.n_params
    if share <= MAX_PRESET_STUDENT_SHARE:
        return ""
    size = f"CNN width {cnn_width:g}" if image else "×".join(map(str, hidden))
    keep = f"--cnn-width {cnn_width:g}" if image else f"--hidden {' '.join(map(str, hidden))}"
    return (f"the {teacher.recipe.env_id} preset's {size} student would be {100 * share:.0f} % of this teacher's "
            f"{teacher.n_params:,} acting params ({keep} keeps it)")  # fmt: skip


LR_REFERENCE_WIDTH, MAX_LR_SCALE = 64, 10.0
"""Adam's step for a derived MLP student: the preset's (default 1e-3) at 64 units and wider, times
64 / width below that (up to 10x), as muP scales hidden layers' steps with 1 / width. A 4x4 CartPole
student (50 params) reached 80.7 % in 2,000 steps at 1e-3 and 100 % at 1e-2."""


def narrow_student_scale(width: int) -> float:
    return min(max(LR_REFERENCE_WIDTH / width, 1.0), MAX_LR_SCALE)


def student_size(teacher: Teacher, fraction: float) -> dict[str, Any]:
    """``hidden_sizes`` (an (h, h) MLP; one hidden layer where two would be under MIN_TWO_LAYER_WIDTH
    units wide) or, for image observations, ``cnn_width`` (with the default MLP after it): the
    largest student of at most ``fraction`` of the teacher's acting parameters (the smallest one
    tried where none fits)."""
    budget = fraction * teacher.n_params

    def n_params(hidden: tuple[int, ...], cnn_width: float = 1.0) -> int:
        return make_student_for(teacher, teacher.kind, hidden, cnn_width).n_params

    if teacher_domain(teacher) == "image":
        hidden = tuple(DEFAULTS["hidden_sizes"])
        widths = [w / 16 for w in range(1, 17)]
        fits = [w for w in widths if n_params(hidden, w) <= budget]
        return {"hidden_sizes": hidden, "cnn_width": max(fits) if fits else widths[0]}
    width = _widest(lambda h: n_params((h, h)) <= budget)
    if width >= MIN_TWO_LAYER_WIDTH:
        return {"hidden_sizes": (width, width)}
    return {"hidden_sizes": (_widest(lambda h: n_params((h,)) <= budget),)}


MIN_TWO_LAYER_WIDTH = 8
"""Below this width a derived student has one hidden layer: at 1 % of the CartPole PPO expert, a
3x3 student (35 params) stayed at a random policy's return, a (6,) one (44 params) reached 500."""


MIN_RELIABLE_WIDTH = 4
"""Narrower derived students are flagged, not refused: at 0.5 % of the CartPole and LunarLander PPO
experts, 3- and 1-unit students reached 65.9 % and -19.8 % of their teachers
(benchmarks/results/fidelity_compression.md), while 6 units reached 100 % on CartPole."""


def tiny_student_warning(width: int) -> str:
    return (
        f"WARNING: a {width}-unit student is narrower than {MIN_RELIABLE_WIDTH} units, where students of the "
        "CartPole and LunarLander PPO experts failed (benchmarks/results/fidelity_compression.md): pass a larger "
        "--student-fraction"
    )


def _widest(fits: Any, low: int = 1, high: int = 1024) -> int:
    """The largest h in [low, high] with ``fits(h)`` (``fits`` holds up to some h), by bisection; ``low`` if none."""
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def check_student_fraction(value: Any) -> float:
    """``--student-fraction``: a share of the teacher's acting parameters in (0, 1]."""
    fraction = check_positive_float("--student-fraction", value)
    if fraction > 1.0:
        raise PolicyKDError(f"--student-fraction {value} is above 1: a student larger than its teacher compresses "
                            "nothing; pass a share such as 0.25")  # fmt: skip
    return fraction


DEFAULT_LOSS, DETERMINISTIC_LOSS = "kl", "mse"


def run_loss(loss: str | None, kind: str) -> tuple[str, str]:
    """A run's loss and, where it was picked for the teacher, the words that say why: ``loss``
    (``--loss``), else ``kl``, except for a deterministic teacher (TD3 / DDPG, whose student is
    deterministic: it has no distribution for kl or nll), which gets ``mse`` on its actions."""
    if loss is not None:
        return loss, ""
    if student_kind_for(kind) == "deterministic":
        return (
            DETERMINISTIC_LOSS,
            "loss mse on the teacher's actions (a deterministic teacher has no distribution for kl)",
        )
    return DEFAULT_LOSS, ""


def auto_temperature(temperature: float | None, loss: str, kind: str) -> bool:
    """Whether a run's tau comes from its buffer: ``kl`` on a Q-value / quantile teacher, no ``--temperature``."""
    return temperature is None and loss == "kl" and kind in ("q_values", "quantiles")


def run_temperature(temperature: float | None, loss: str, kind: str, buffer: LabelledBuffer) -> tuple[float, str]:
    """A run's tau and, where it was derived, the words that say how: ``temperature`` (``--temperature``),
    else for ``kl`` on a Q-value / quantile teacher the confidence temperature of the first teacher's
    Q-values over ``buffer`` (greedy action at presets.Q_TARGET_CONFIDENCE against the runner-up in
    the median state), else 1. The same buffer gives the same tau, so a resumed run trains at it too."""
    if not auto_temperature(temperature, loss, kind):
        return (1.0 if temperature is None else temperature), ""
    tau = confidence_temperature(buffer.batch_at(np.arange(len(buffer))).teacher_outputs[0], Q_TARGET_CONFIDENCE)
    why = f"tau {tau:.3g} from the teacher's Q-values (greedy action at {Q_TARGET_CONFIDENCE:.0%} against the runner-up in the median state)"
    return tau, why


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
