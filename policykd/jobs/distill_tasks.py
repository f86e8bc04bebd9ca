"""Several tasks into one student: collect one buffer per task with that task's teacher, train a
shared-trunk student with a head per task, and evaluate every task against its own teacher."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from policykd.errors import PolicyKDError
from policykd.jobs.evaluate import ReturnStats, episode_returns, pct_of
from policykd.fileio import write_json_atomic
from policykd.learn.logging import TensorBoardLogger
from policykd.learn.losses import make_loss
from policykd.learn.multitask import MultiTaskSampler, TaskSpace, make_multitask_student, named_items
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.jobs.distill import CollectConfig, collect, evaluate_random, evaluate_teacher, resolve_teacher
from policykd.zoo.presets import load_preset

EVAL_SEED_OFFSET = 10_000


@dataclasses.dataclass(frozen=True)
class TasksConfig:
    tasks: tuple[tuple[str, str | None], ...]
    """(env id, teacher source or None for the env preset's expert), one per task."""
    task_weights: tuple[float, ...] | None = None
    """Share of each batch per task (default: equal)."""
    loss: str = "kl"
    temperature: float = 1.0
    hidden_sizes: tuple[int, ...] = (64, 64)
    input_width: int = 64
    n_transitions: int | None = None
    """Per task (default: each env's preset)."""
    n_updates: int = 5_000
    batch_size: int = 256
    learning_rate: float = 1e-3
    n_eval_episodes: int | None = None
    seed: int = 0
    out_dir: str | None = None


def parse_task(text: str) -> tuple[str, str | None]:
    """``ENV=TEACHER`` or ``ENV`` (the preset's expert)."""
    env_id, _, teacher = text.partition("=")
    if not env_id:
        raise PolicyKDError(f"--task {text!r}: write ENV_ID=TEACHER, e.g. CartPole-v1=agents/ppo/CartPole-v1_1")
    return env_id, teacher or None


def distill_tasks(config: TasksConfig) -> dict[str, Any]:
    """Returns the summary also written to ``<out_dir>/summary.json``."""
    started = time.perf_counter()
    tasks = named_items(list(config.tasks), "task")  # refuses a task listed twice
    if len(tasks) < 2:
        raise PolicyKDError("a multi-task run needs at least two --task ENV=TEACHER")
    teachers = {env_id: resolve_teacher(source, env_id) for env_id, source in tasks}
    loss_fns = {
        env_id: make_loss(config.loss, t.kind, temperature=config.temperature) for env_id, t in teachers.items()
    }

    per_task: dict[str, dict[str, Any]] = {}
    buffers = {}
    for env_id, teacher in teachers.items():
        preset = load_preset(env_id)
        n_eval = config.n_eval_episodes or preset["n_eval_episodes"]
        eval_seed = config.seed + EVAL_SEED_OFFSET
        per_task[env_id] = {
            "teacher": evaluate_teacher(teacher, n_eval, eval_seed, bool(preset["deterministic_eval"])),
            "random": evaluate_random(teacher, n_eval, eval_seed),
            "n_eval": n_eval,
        }
        buffers[env_id], _, _ = collect(
            CollectConfig(teacher=teacher.source, env_id=env_id, n_transitions=config.n_transitions, seed=config.seed),
            [teacher],
        )

    student = make_multitask_student(
        {env_id: TaskSpace(t.kind, t.observation_space, t.action_space) for env_id, t in teachers.items()},
        hidden_sizes=config.hidden_sizes,
        input_width=config.input_width,
        obs_stats={
            env_id: (t.normalizer.mean, t.normalizer.std) for env_id, t in teachers.items() if t.normalizer is not None
        },
        seed=config.seed,
    )
    out_dir = Path(config.out_dir or f"runs/multitask/{'+'.join(e.split('-')[0] for e in teachers)}-seed{config.seed}")
    logger = TensorBoardLogger(out_dir / "tb")
    try:
        trainer_config = TrainerConfig(
            n_updates=config.n_updates,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            seed=config.seed,
            progress_bar=False,
        )
        sampler = MultiTaskSampler(buffers, config.task_weights)
        metrics = Trainer(student, loss_fns, sampler, config=trainer_config, logger=logger).train()
        rows = {}
        for env_id, teacher in teachers.items():
            info = per_task[env_id]
            rng = np.random.default_rng(config.seed)
            policy = student.task_policy(env_id)
            deterministic = bool(load_preset(env_id)["deterministic_eval"])
            stats = ReturnStats.of(
                episode_returns(
                    lambda o: policy.act(o, deterministic, rng),
                    teacher.recipe,
                    info["n_eval"],
                    seed=config.seed + EVAL_SEED_OFFSET,
                )
            )
            pct = pct_of(stats.mean, info["teacher"].mean, info["random"].mean)
            logger.log(
                {f"tasks/{env_id}/eval/student_return": stats.mean, f"tasks/{env_id}/eval/pct_of_teacher": pct},
                config.n_updates,
            )
            rows[env_id] = {
                "teacher": info["teacher"].to_json() | {"source": teacher.source, "algo": teacher.algo},
                "random_return_mean": info["random"].mean,
                "student": stats.to_json(),
                "pct_of_teacher": pct,
                "teacher_params": teacher.n_params,
            }
    finally:
        logger.close()
    student.save(out_dir / "student")
    write_json_atomic(out_dir / "student" / "recipes.json", {e: t.recipe.to_json() for e, t in teachers.items()})
    summary = {
        "tasks": rows,
        "overall_pct_of_teacher": float(np.mean([r["pct_of_teacher"] for r in rows.values()])),
        "min_pct_of_teacher": float(min(r["pct_of_teacher"] for r in rows.values())),
        "student_params": student.n_params,
        "sum_teacher_params": sum(r["teacher_params"] for r in rows.values()),
        "loss": config.loss,
        "temperature": config.temperature,
        "task_weights": list(config.task_weights) if config.task_weights else None,
        "n_updates": config.n_updates,
        "final_train_metrics": metrics,
        "wall_time_s": time.perf_counter() - started,
        "seed": config.seed,
        "out_dir": str(out_dir),
    }
    write_json_atomic(out_dir / "summary.json", summary)
    return summary
