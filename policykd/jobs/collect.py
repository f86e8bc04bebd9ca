"""The collect job: the run's teachers drive their env and label every transition into a buffer."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from policykd.checks import check_int
from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats, buffer_nbytes, check_spaces, collect_rollouts
from policykd.data.envs import make_vec_env
from policykd.data.overlap import collect_overlapped, make_env_groups
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import check_folder_path, check_room
from policykd.jobs.config import CollectConfig
from policykd.jobs.evaluate import EVAL_SEED_OFFSET
from policykd.jobs.ray_backend import check_backend, collect_split
from policykd.jobs.resolve import Budgets, make_run_merge, measure_teachers, resolve_budgets, resolve_teachers


def collect(
    config: CollectConfig, teachers: Sequence[Teacher] | None = None, *, teachers_checked: bool | None = None
) -> tuple[LabelledBuffer, CollectStats, Teacher]:
    """Collect with the run's teachers (resolved from ``config`` when not given) and return the
    buffer, the statistics and the first teacher. Unless ``teachers_checked`` (default: whether
    ``teachers`` were given, as distill gives the teachers it has played) or
    ``config.teacher_check`` is off, the teachers are checked first as distill checks them."""
    resolved = not teachers_checked if teachers_checked is not None else teachers is None
    check_int("--seed", config.seed, 0)
    check_backend(config)  # before the teachers are played
    teachers = list(teachers or resolve_teachers(config))
    teacher = teachers[0]
    budgets = resolve_budgets(teacher.recipe.env_id, config, teacher=teacher)
    if resolved and config.teacher_check:  # a buffer is labelled by a teacher that plays, as distill's is
        measure_teachers(teachers, budgets, config.seed + EVAL_SEED_OFFSET, check=True)
    if config.backend != "local" or config.workers != 1:  # several workers: jobs/ray_backend.py
        buffer, stats = collect_split(config, teachers, budgets.n_transitions, budgets.n_envs, collect_chunk)
    else:
        buffer, stats = _collect_here(config, teachers, budgets)
    buffer.meta["collect_stats"] = {"n_transitions": stats.n_transitions, "episode_returns": stats.episode_returns}
    return buffer, stats, teacher


def collect_chunk(config: CollectConfig) -> tuple[LabelledBuffer, CollectStats]:
    """One worker's chunk (jobs/ray_backend.py): its teachers loaded afresh, unchecked, in this process."""
    buffer, stats, _ = collect(config, teachers_checked=True)
    return buffer, stats


def _collect_here(
    config: CollectConfig, teachers: list[Teacher], budgets: Budgets
) -> tuple[LabelledBuffer, CollectStats]:
    """Collect in this process, on one vector env of ``budgets.n_envs`` envs seeded from ``config.seed``.

    The driving teacher acts as the run evaluates it (``budgets.deterministic_eval``): greedily, or,
    where evaluation samples (Atari, as rl-zoo trains and scores it), sampling its policy, so the
    buffer holds the states the teacher visits when it is scored, not those of its argmax."""
    teacher = teachers[0]
    drive = config.teacher_drive if len(teachers) > 1 else "first"
    overlap = config.vec_env == "subproc"
    venvs = make_env_groups(teacher.recipe, budgets.n_envs, config.seed, subproc=True) if overlap else []
    venv = venvs[0] if overlap else make_vec_env(teacher.recipe, budgets.n_envs, config.seed)
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
            "teacher_acts": "greedy" if budgets.deterministic_eval else "sampled",
            **({"vec_env": "subproc"} if overlap else {}),
        }
        run = functools.partial(collect_overlapped, venvs) if overlap else functools.partial(collect_rollouts, venv)
        buffer, stats = run(
            teachers,
            budgets.n_transitions,
            rng=np.random.default_rng(config.seed),
            epsilon=budgets.epsilon,
            action_noise=budgets.action_noise,
            deterministic=budgets.deterministic_eval,
            meta=meta,
            teacher_drive=drive,
            merge=make_run_merge(config, len(teachers)),
            progress="collect" if config.progress_bar else None,
        )
    finally:
        for each in venvs or [venv]:
            each.close()
    return buffer, stats


def collect_to_file(
    config: CollectConfig, out: str | os.PathLike, *, overwrite: bool = False
) -> tuple[LabelledBuffer, CollectStats, Teacher]:
    """The collect command: refuse an ``out`` that is not a free ``.npz`` path (an existing file
    is replaced only with ``overwrite``) or has no room for the buffer, all before the env
    moves; then collect and save the buffer atomically. Returns what :func:`collect` returns."""
    check_int("--seed", config.seed, 0)
    path = check_buffer_path(out, overwrite)
    teachers = resolve_teachers(config)
    budgets = resolve_budgets(teachers[0].recipe.env_id, config, teacher=teachers[0])
    check_room(path, buffer_nbytes(teachers, budgets.n_transitions, budgets.n_envs), "the buffer")
    buffer, stats, teacher = collect(config, teachers, teachers_checked=False)
    buffer.save(path)
    return buffer, stats, teacher


def check_buffer_path(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """``out`` as the path of a buffer to write: ends in ``.npz``, its folder can exist, and no
    file is there unless ``overwrite`` (a folder never)."""
    path = Path(out)
    if path.suffix != ".npz":
        raise PolicyKDError(f"--out {out}: a buffer file must end in .npz")
    check_folder_path(path.parent)
    if os.path.lexists(path):
        if path.is_dir():
            raise PolicyKDError(f"--out {out} is a folder; pass the buffer's file name, e.g. {path / 'buffer.npz'}")
        if not overwrite:
            raise PolicyKDError(f"--out {out} already exists; pass another --out, or --overwrite to replace it")
    return path
