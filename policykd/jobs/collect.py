"""The collect job: the run's teachers drive their env and label every transition into a buffer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats, check_spaces, collect_rollouts
from policykd.data.envs import make_vec_env
from policykd.data.teachers import Teacher
from policykd.jobs.config import CollectConfig
from policykd.jobs.evaluate import EVAL_SEED_OFFSET
from policykd.jobs.resolve import make_run_merge, measure_teachers, resolve_budgets, resolve_teachers


def collect(
    config: CollectConfig, teachers: Sequence[Teacher] | None = None
) -> tuple[LabelledBuffer, CollectStats, Teacher]:
    """Collect with the run's teachers (resolved from ``config`` when not given, and then checked
    as distill checks them unless ``config.teacher_check`` is off); returns the buffer, the
    statistics and the first teacher."""
    resolved = teachers is None
    teachers = list(teachers or resolve_teachers(config))
    teacher = teachers[0]
    budgets = resolve_budgets(teacher.recipe.env_id, config)
    if resolved and config.teacher_check:  # a buffer is labelled by a teacher that plays, as distill's is
        measure_teachers(teachers, budgets, config.seed + EVAL_SEED_OFFSET, check=True)
    drive = config.teacher_drive if len(teachers) > 1 else "first"
    venv = make_vec_env(teacher.recipe, budgets.n_envs, config.seed)
    try:
        for t in teachers:
            check_spaces(t, venv)
        meta = {
            "env_id": teacher.recipe.env_id,
            "recipe": teacher.recipe.to_json(),
            "teachers": [{"source": t.source, "algo": t.algo, "kind": t.kind} for t in teachers],
            "teacher_drive": drive,
            "seed": config.seed,
            "epsilon": budgets.epsilon,
            "action_noise": budgets.action_noise,
            "driver": "teacher",
        }
        buffer, stats = collect_rollouts(
            venv,
            teachers,
            budgets.n_transitions,
            rng=np.random.default_rng(config.seed),
            epsilon=budgets.epsilon,
            action_noise=budgets.action_noise,
            meta=meta,
            teacher_drive=drive,
            merge=make_run_merge(config, len(teachers)),
            progress="collect" if config.progress_bar else None,
        )
    finally:
        venv.close()
    buffer.meta["collect_stats"] = {"n_transitions": stats.n_transitions, "episode_returns": stats.episode_returns}
    return buffer, stats, teacher
