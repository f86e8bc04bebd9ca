"""The end-to-end jobs behind the CLI: collect a labelled buffer, distil a student, evaluate.

Each job takes a frozen config, returns plain data, and writes its outputs atomically.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats, check_spaces, collect_rollouts
from policykd.data.envs import make_vec_env
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import write_json_atomic
from policykd.jobs.config import CollectConfig, DistillConfig
from policykd.jobs.evaluate import (
    EVAL_SEED_OFFSET,
    ReturnStats,
    action_latency_ms,
    episode_returns,
    evaluate_random,
    evaluate_teacher,
    pct_of,
)
from policykd.jobs.resolve import (
    RECIPE_FILE,
    check_buffer_fits,
    check_teacher_score,
    make_run_merge,
    make_student_for,
    resolve_teachers,
)
from policykd.learn.logging import TensorBoardLogger
from policykd.learn.losses import make_loss
from policykd.learn.merging import ensemble_teacher_kind
from policykd.learn.students import Student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.zoo.presets import load_preset


def _pick(value: Any, preset: dict[str, Any], key: str) -> Any:
    return preset[key] if value is None else value


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
        check_buffer_fits(buffer, teachers, config.buffer)
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
