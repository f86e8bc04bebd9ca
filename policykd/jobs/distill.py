"""The end-to-end jobs behind the CLI: collect a labelled buffer, distil a student, evaluate.

Each job takes a frozen config, returns plain data, and writes its outputs atomically.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats, check_policy_spaces, check_spaces, collect_rollouts
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.errors import PolicyKDError
from policykd.jobs.evaluate import ReturnStats, action_latency_ms, episode_returns, pct_of
from policykd.fileio import write_json_atomic
from policykd.learn.logging import TensorBoardLogger
from policykd.learn.losses import make_loss
from policykd.learn.merging import check_weights, ensemble_teacher_kind, make_merge, single_teacher
from policykd.zoo.presets import DEFAULT_ENV_ID, default_expert, load_preset
from policykd.learn.students import Student, StudentConfig, make_student
from policykd.data.teachers import Teacher, load_teacher
from policykd.learn.trainer import Trainer, TrainerConfig

EVAL_SEED_OFFSET = 10_000  # evaluation episodes never reuse the collection seeds
RECIPE_FILE = "recipe.json"


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    teacher: str | None = None
    """Teacher source: rl-zoo folder, SB3 .zip or hub id (default: the env preset's expert)."""
    env_id: str | None = None
    """Env id (default: the teacher's, or CartPole-v1)."""
    n_transitions: int | None = None
    """Labelled transitions to collect (default: the preset's)."""
    n_envs: int | None = None
    epsilon: float | None = None
    """Epsilon-greedy exploration for discrete actions."""
    action_noise: float | None = None
    """Gaussian action noise for continuous actions, as a fraction of the half range."""
    seed: int = 0
    teacher_check: bool = True
    """Play the teacher first and refuse it if it is far below its recorded score."""
    teachers: tuple[str, ...] = ()
    """Several teachers of one env (an ensemble); overrides ``teacher``."""
    merge: str | None = None
    """How several teachers' targets combine (merging.MERGE_NAMES; default mean-probs)."""
    teacher_weights: tuple[float, ...] | None = None
    """Per-teacher weights for the merge (default equal)."""
    teacher_drive: str = "merged"
    """Who acts among several teachers while collecting: merged | round-robin | random | first."""


@dataclasses.dataclass(frozen=True)
class DistillConfig(CollectConfig):
    buffer: str | None = None
    """Train from this saved buffer instead of collecting."""
    loss: str = "kl"
    temperature: float = 1.0
    temperature_on: str = "teacher"
    kl_direction: str = "forward"
    tau2_scaling: bool = False
    center_q: bool = True
    """Q-value MSE on Q minus its mean over actions (see losses.MSELoss)."""
    nll_min_std: float = 0.1
    """Floor on the student's std in the continuous nll loss (see losses.NLLLoss); 0 disables it."""
    hidden_sizes: tuple[int, ...] | None = None
    cnn_width: float | None = None
    n_updates: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    n_eval_episodes: int | None = None
    eval_every: int = 0
    out_dir: str | None = None
    progress_bar: bool = True


def _pick(value: Any, preset: dict[str, Any], key: str) -> Any:
    return preset[key] if value is None else value


def resolve_teacher(source: str | None, env_id: str | None) -> Teacher:
    """Load the teacher (default: the env preset's expert) and refuse it at once if its spaces are
    not its env's (e.g. a bare CartPole zip with ``--env Acrobot-v1``), before any file is written."""
    if source is None:
        source = str(default_expert(env_id or DEFAULT_ENV_ID))
    teacher = load_teacher(source, env_id=env_id)
    check_teacher_env(teacher)
    return teacher


def resolve_teachers(config: CollectConfig) -> list[Teacher]:
    """Every teacher of the run; several must share the first one's env and spaces."""
    sources = list(config.teachers) or [config.teacher]
    if len(sources) > 1 and None in sources:
        raise PolicyKDError("with several teachers, name each one with --teacher")
    teachers = [resolve_teacher(sources[0], config.env_id)]
    for source in sources[1:]:
        other = resolve_teacher(source, config.env_id or teachers[0].recipe.env_id)
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
    return teachers


def make_run_merge(config: CollectConfig, n_teachers: int) -> Any:
    if n_teachers == 1:
        if config.merge is not None or config.teacher_weights is not None:
            raise PolicyKDError("--merge and --teacher-weights need several --teacher")
        return single_teacher
    return make_merge(config.merge or "mean-probs", config.teacher_weights)


def check_teacher_env(teacher: Teacher) -> None:
    """Build one copy of the teacher's env and compare spaces (raises PolicyKDError)."""
    venv = make_vec_env(teacher.recipe, 1, 0)
    try:
        check_spaces(teacher, venv)
    finally:
        venv.close()


def resolve_student(source: str | Path, env_id: str | None = None) -> tuple[Student, EnvRecipe]:
    """Load a saved student and the env recipe to play it in: its ``recipe.json``, or with
    ``env_id`` (which must then agree with it) the env's preset. Refuses an env whose spaces
    are not the student's."""
    student = Student.load(source)
    recorded = load_recipe(source) if (Path(source) / RECIPE_FILE).is_file() else None
    return student, playing_recipe(recorded, env_id, f"student {source}", student.config)


def playing_recipe(recorded: EnvRecipe | None, env_id: str | None, name: str, config: StudentConfig) -> EnvRecipe:
    """The env recipe a student (or its export) called ``name`` plays in: the one recorded with it,
    or with ``env_id`` (which must then agree with it) the env's preset. Refuses an env whose
    spaces are not the ones ``config`` describes."""
    if recorded is not None:
        if env_id is not None and env_id != recorded.env_id:
            raise PolicyKDError(f"{name} is for {recorded.env_id}, not {env_id}; drop --env or pick its env")
        recipe = recorded
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


def make_student_for(teacher: Teacher, kind: str, hidden_sizes: tuple[int, ...], cnn_width: float = 1.0) -> Student:
    """A fresh student with a ``kind`` head for ``teacher``'s env: its spaces, and its VecNormalize
    statistics (clip included) copied in so the student acts on raw observations."""
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
    )


def evaluate_teacher(teacher: Teacher, n_episodes: int, seed: int, deterministic: bool = True) -> ReturnStats:
    rng = np.random.default_rng(seed)
    return ReturnStats.of(
        episode_returns(lambda obs: teacher.act(obs, deterministic, rng), teacher.recipe, n_episodes, seed=seed)
    )


def evaluate_random(teacher: Teacher, n_episodes: int, seed: int) -> ReturnStats:
    """A uniformly random policy on the teacher's env and episodes: the 0 % of "% of teacher"."""
    rng = np.random.default_rng(seed)
    return ReturnStats.of(
        episode_returns(lambda obs: teacher.mapper.random(len(obs), rng), teacher.recipe, n_episodes, seed=seed)
    )


def check_teacher_score(teacher: Teacher, measured: ReturnStats) -> None:
    """Refuse a teacher that plays far below the score its zoo folder records: the env recipe is
    almost surely wrong (missing VecNormalize statistics, other wrappers, no frame stack)."""
    recorded = teacher.score
    if not recorded:
        return
    tolerance = max(3.0 * recorded["std"], 0.2 * abs(recorded["mean"]), 1.0)
    if measured.mean < recorded["mean"] - tolerance:
        raise PolicyKDError(
            f"teacher {teacher.source} scored {measured.mean:.1f} over {measured.n_episodes} episodes but its recorded "
            f"score is {recorded['mean']:.1f} ± {recorded['std']:.1f}: its env recipe is likely wrong "
            f"(a missing vecnormalize.pkl, other wrappers or frame stack than it was trained with)"
        )


def collect(
    config: CollectConfig, teachers: Sequence[Teacher] | None = None
) -> tuple[LabelledBuffer, CollectStats, Teacher]:
    """Collect with the run's teachers (resolved from ``config`` when not given); returns the
    buffer, the statistics and the first teacher."""
    teachers = list(teachers or resolve_teachers(config))
    teacher = teachers[0]
    preset = load_preset(teacher.recipe.env_id)
    n_envs = _pick(config.n_envs, preset, "n_envs")
    n_transitions = _pick(config.n_transitions, preset, "n_transitions")
    epsilon, action_noise = _pick(config.epsilon, preset, "epsilon"), _pick(config.action_noise, preset, "action_noise")
    if n_transitions <= 0 or n_envs <= 0:
        raise PolicyKDError(f"--n-transitions and --n-envs must be positive, got {n_transitions} and {n_envs}")
    venv = make_vec_env(teacher.recipe, n_envs, config.seed)
    try:
        for t in teachers:
            check_spaces(t, venv)
        meta = {
            "env_id": teacher.recipe.env_id,
            "recipe": teacher.recipe.to_json(),
            "teachers": [{"source": t.source, "algo": t.algo, "kind": t.kind} for t in teachers],
            "teacher_drive": config.teacher_drive if len(teachers) > 1 else "first",
            "seed": config.seed,
            "epsilon": epsilon,
            "action_noise": action_noise,
            "driver": "teacher",
        }
        buffer, stats = collect_rollouts(
            venv,
            teachers,
            n_transitions,
            rng=np.random.default_rng(config.seed),
            epsilon=epsilon,
            action_noise=action_noise,
            meta=meta,
            teacher_drive=config.teacher_drive if len(teachers) > 1 else "first",
            merge=make_run_merge(config, len(teachers)),
        )
    finally:
        venv.close()
    buffer.meta["collect_stats"] = {
        "n_transitions": stats.n_transitions,
        "episode_returns": stats.episode_returns,
    }
    return buffer, stats, teacher


def _make_out_dir(config: DistillConfig, env_id: str) -> Path:
    """Create and return the run folder. ``--out`` is used as given; the default
    ``runs/<env>/<loss>-tau<t>-seed<s>`` gets a ``-2``, ``-3`` ... suffix so an earlier run is never
    overwritten (``mkdir`` without ``exist_ok`` claims a name atomically, even against a concurrent run)."""
    if config.out_dir is not None:
        out_dir = Path(config.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir
    base = Path("runs") / env_id / f"{config.loss}-tau{config.temperature:g}-seed{config.seed}"
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


def _check_buffer_fits(buffer: LabelledBuffer, teachers: Sequence[Teacher], path: str) -> None:
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


def distill(config: DistillConfig) -> dict[str, Any]:
    """Collect (or load) a labelled buffer, train a student, evaluate both; write the run folder.

    Every user error (bad teacher, env, loss, number or buffer) is raised before anything is
    written. Returns the summary that is also written to ``<out_dir>/summary.json``."""
    started = time.perf_counter()
    if config.buffer is not None:
        buffer = LabelledBuffer.load(config.buffer)
        if config.teacher is None and not config.teachers:
            recorded = buffer.meta.get("teachers") or []
            if not recorded or not all(isinstance(t, dict) and "source" in t for t in recorded):
                raise PolicyKDError(f"buffer {config.buffer} does not record its teacher; pass --teacher")
            config = dataclasses.replace(
                config, teachers=tuple(t["source"] for t in recorded), env_id=config.env_id or buffer.meta.get("env_id")
            )
        teachers = resolve_teachers(config)
        _check_buffer_fits(buffer, teachers, config.buffer)
    else:
        teachers = resolve_teachers(config)
    teacher = teachers[0]  # the reference for env, recipe, spaces and input normalisation
    kind = ensemble_teacher_kind([t.kind for t in teachers])
    merge = make_run_merge(config, len(teachers))
    env_id = teacher.recipe.env_id
    preset = load_preset(env_id)
    # Validate the loss and every budget before spending minutes on evaluation and collection.
    loss_fn = make_loss(
        config.loss,
        kind,
        temperature=config.temperature,
        temperature_on=config.temperature_on,
        direction=config.kl_direction,
        tau2_scaling=config.tau2_scaling,
        center_q=config.center_q,
        nll_min_std=config.nll_min_std,
    )
    trainer_config = TrainerConfig(
        n_updates=_pick(config.n_updates, preset, "n_updates"),
        batch_size=_pick(config.batch_size, preset, "batch_size"),
        learning_rate=_pick(config.learning_rate, preset, "learning_rate"),
        temperature=config.temperature,
        eval_every=config.eval_every,
        seed=config.seed,
        progress_bar=config.progress_bar,
    )
    n_eval = _pick(config.n_eval_episodes, preset, "n_eval_episodes")
    if isinstance(n_eval, bool) or not isinstance(n_eval, int) or n_eval < 1:
        raise PolicyKDError(f"--eval-episodes must be a positive integer, got {n_eval!r}")
    if config.buffer is None:
        n_transitions = _pick(config.n_transitions, preset, "n_transitions")
        n_envs = _pick(config.n_envs, preset, "n_envs")
        if n_transitions <= 0 or n_envs <= 0:
            raise PolicyKDError(f"--n-transitions and --n-envs must be positive, got {n_transitions} and {n_envs}")
    hidden_sizes = tuple(_pick(config.hidden_sizes, preset, "hidden_sizes"))
    cnn_width = _pick(config.cnn_width, preset, "cnn_width")
    if any(h <= 0 for h in hidden_sizes) or cnn_width <= 0:
        raise PolicyKDError(
            f"--hidden sizes and --cnn-width must be positive, got {list(hidden_sizes)} and {cnn_width}"
        )
    if config.out_dir is not None and Path(config.out_dir).exists() and not Path(config.out_dir).is_dir():
        raise PolicyKDError(f"--out {config.out_dir} is a file; pass a folder for the run")

    deterministic = bool(preset["deterministic_eval"])
    eval_seed = config.seed + EVAL_SEED_OFFSET  # teacher and student play the same episodes
    each_teacher = [evaluate_teacher(t, n_eval, eval_seed, deterministic) for t in teachers]
    if config.teacher_check:
        for t, stats in zip(teachers, each_teacher):
            check_teacher_score(t, stats)
    best = int(np.argmax([stats.mean for stats in each_teacher]))
    teacher_stats = each_teacher[best]  # with several teachers, the student is measured against the best one
    # % of teacher is normalised so that a uniformly random policy scores 0 % (returns can be negative)
    random_stats = evaluate_random(teacher, n_eval, eval_seed)
    if config.buffer is None:
        buffer, _, _ = collect(config, teachers)

    torch.manual_seed(config.seed)  # the student's initial weights depend on the seed only
    student = make_student_for(teacher, kind, hidden_sizes, cnn_width)
    evaluations: list[ReturnStats] = []

    def evaluate(s: Student) -> dict[str, float]:
        rng = np.random.default_rng(eval_seed)  # a fresh generator: every evaluation plays the same episodes
        returns = episode_returns(lambda obs: s.act(obs, deterministic, rng), teacher.recipe, n_eval, seed=eval_seed)
        r = ReturnStats.of(returns)
        evaluations.append(r)
        return {
            "eval/student_return": r.mean,
            "eval/pct_of_teacher": pct_of(r.mean, teacher_stats.mean, random_stats.mean),
        }

    out_dir = _make_out_dir(config, env_id)
    logger = TensorBoardLogger(out_dir / "tb")
    try:
        logger.log_hparams({**dataclasses.asdict(config), **dataclasses.asdict(trainer_config)})
        trainer = Trainer(
            student,
            loss_fn,
            buffer,
            config=trainer_config,
            logger=logger,
            evaluate=evaluate,
            merge=merge,
            checkpoint_dir=out_dir / "student",
        )
        train_metrics = trainer.train()  # evaluates every eval_every updates and after the last one
    finally:
        logger.close()
    student_stats = evaluations[-1]
    write_json_atomic(out_dir / "student" / RECIPE_FILE, teacher.recipe.to_json())

    example_obs = buffer.batch_at(np.arange(1)).observations.numpy()[0]
    summary = {
        "env_id": env_id,
        "teacher": teachers[best].source,
        "teacher_algo": teachers[best].algo,
        "teacher_kind": kind,
        "teachers": [
            {"source": t.source, "algo": t.algo, "kind": t.kind, "params": t.n_params, **stats.to_json()}
            for t, stats in zip(teachers, each_teacher)
        ],
        "merge": None if len(teachers) == 1 else (config.merge or "mean-probs"),
        "teacher_weights": list(config.teacher_weights) if config.teacher_weights else None,
        "loss": config.loss,
        "temperature": config.temperature,
        "temperature_on": config.temperature_on,
        "kl_direction": config.kl_direction,
        "teacher_return_mean": teacher_stats.mean,
        "teacher_return_std": teacher_stats.std,
        "teacher_return_ci95": list(teacher_stats.ci95),
        "student_return_mean": student_stats.mean,
        "student_return_std": student_stats.std,
        "student_return_ci95": list(student_stats.ci95),
        "random_return_mean": random_stats.mean,
        "pct_of_teacher": pct_of(student_stats.mean, teacher_stats.mean, random_stats.mean),
        "pct_of_teacher_raw": pct_of(student_stats.mean, teacher_stats.mean),
        "n_eval_episodes": n_eval,
        "teacher_params": sum(t.n_params for t in teachers),
        "student_params": student.n_params,
        "param_fraction": student.n_params / sum(t.n_params for t in teachers),
        "teacher_latency_ms": action_latency_ms(lambda o: teacher.act(o), example_obs),
        "student_latency_ms": action_latency_ms(lambda o: student.act(o), example_obs),
        "n_teacher_transitions": len(buffer),
        "n_updates": trainer.n_updates_done,
        "hidden_sizes": list(student.config.hidden_sizes),
        "final_train_metrics": {k: v for k, v in train_metrics.items() if not k.startswith("eval/")},
        "wall_time_s": time.perf_counter() - started,
        "seed": config.seed,
        "out_dir": str(out_dir),
    }
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def load_recipe(student_dir: str | Path) -> EnvRecipe:
    from policykd.fileio import read_json

    path = Path(student_dir) / RECIPE_FILE
    if not path.is_file():
        raise PolicyKDError(f"{student_dir} has no {RECIPE_FILE}; pass --env to evaluate this student")
    return EnvRecipe(**read_json(path))
