"""Each online round's collection split across workers (jobs/online.py), in this process or as Ray actors.

The split is the one collection makes (jobs/ray_backend.py): ``workers`` W share a round's
``n_transitions_per_round`` (worker ``w`` takes ``N // W``, one more while ``w < N % W``), each on
its own ``n_envs`` envs seeded ``seed + w * n_envs``, drawing its beta coin flips from
``default_rng(seed + w * n_envs)`` and its student's sampled actions from ``default_rng(seed +
w * n_envs + 1)``; worker 0 is the single-worker run. A worker keeps its envs, its episodes
(a RolloutCursor) and its random streams from round to round; the chunks are joined in worker
order. So the same seed and worker count give the same buffer in this process and on Ray.

On Ray, each worker is an actor (one CPU) that loads its own teacher; every round the driver
sends it the round's beta and the student's weights as numpy arrays with the student's config as
JSON, and it rebuilds the student from them (nothing pickled of ours is read from a file).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats, RolloutCursor, collect_rollouts
from policykd.data.envs import make_vec_env
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.learn.students import Student, StudentConfig

Chunk = tuple[LabelledBuffer, CollectStats]


def round_shares(n_transitions: int, workers: int, n_envs: int) -> list[int]:
    """Each worker's transitions per round; refuses a share below one vector step."""
    shares = [n_transitions // workers + (w < n_transitions % workers) for w in range(workers)]
    if workers > 1 and min(shares) < n_envs:  # one worker rounds up to a whole vector step, as collection does
        raise PolicyKDError(
            f"--workers {workers} leaves a worker {min(shares):,} of the {n_transitions:,} transitions per round, "
            f"fewer than its {n_envs} envs take in one step; use fewer workers or more --round-transitions"
        )
    return shares


class RoundWorker:
    """One worker's envs, episodes and random streams across rounds (see the module docstring)."""

    def __init__(self, teacher: Teacher, n_envs: int, seed: int, n_transitions: int, deterministic: bool,
                 venv: Any = None) -> None:  # fmt: skip
        self.teacher, self.n_transitions, self.deterministic = teacher, n_transitions, deterministic
        self.owns_venv = venv is None
        self.venv = make_vec_env(teacher.recipe, n_envs, seed) if venv is None else venv
        self.rng, self.act_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
        self.cursor = RolloutCursor()

    def collect(self, beta: float, student: Student) -> Chunk:
        """This round's chunk, the student (in eval mode) driving where the beta coin says so."""
        student.eval()
        act_rng, deterministic = self.act_rng, self.deterministic
        return collect_rollouts(
            self.venv,
            [self.teacher],
            self.n_transitions,
            rng=self.rng,
            student_act=lambda obs, **masks: student.act(obs, deterministic, act_rng, **masks),
            beta=beta,
            deterministic=deterministic,
            cursor=self.cursor,
        )

    def close(self) -> None:
        if self.owns_venv:
            self.venv.close()


@dataclasses.dataclass(frozen=True)
class RoundSplit:
    """How rounds are collected: ``workers`` on ``backend`` (local | ray, ``ray_address``)."""

    workers: int = 1
    backend: str = "local"
    ray_address: str | None = None
    trust_pickles: bool = False
    """The teacher's pickles are read as SB3 reads them on Ray workers, as they were here."""


def student_weights(student: Student) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The student's config as JSON and its state dict as numpy arrays: what a worker rebuilds it from."""
    state = {name: tensor.detach().cpu().numpy() for name, tensor in student.state_dict().items()}
    return dataclasses.asdict(student.config), state


def rebuilt_student(config: dict[str, Any], state: dict[str, np.ndarray], student: Student | None) -> Student:
    """A student from :func:`student_weights` (``student``: the one rebuilt last round, reused when its config matches)."""
    if student is None or dataclasses.asdict(student.config) != config:
        student = Student(StudentConfig.from_json(config))
    student.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in state.items()})
    return student


class LocalRounds:
    """The workers one after another in this process, acting with the learner's own student."""

    def __init__(self, student: Student, workers: Sequence[RoundWorker]) -> None:
        self.student, self.workers = student, list(workers)

    def __call__(self, beta: float) -> list[Chunk]:
        return [worker.collect(beta, self.student) for worker in self.workers]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


class _RayWorker:
    """What a Ray actor holds: its own teacher (loaded from its source) and a RoundWorker."""

    def __init__(self, source: str, env_id: str, trust_pickles: bool, args: tuple[int, int, int, bool]) -> None:
        from policykd.jobs.resolve import resolve_teacher

        torch.set_num_threads(1)  # one CPU per actor
        self.worker = RoundWorker(resolve_teacher(source, env_id, trust_pickles=trust_pickles), *args)
        self.student: Student | None = None

    def collect(self, beta: float, config: dict[str, Any], state: dict[str, np.ndarray]) -> Chunk:
        self.student = rebuilt_student(config, state, self.student)
        return self.worker.collect(beta, self.student)

    def close(self) -> None:
        self.worker.close()


class RayRounds:
    """The workers as Ray actors (one CPU each), the student's weights sent every round."""

    def __init__(self, teacher: Teacher, student: Student, worker_args: Sequence[tuple], split: RoundSplit) -> None:
        from policykd.jobs.ray_backend import ray_session

        self.student, self.stack = student, contextlib.ExitStack()
        self.ray = self.stack.enter_context(ray_session(split.ray_address))
        source = str(Path(teacher.source).resolve()) if Path(teacher.source).exists() else teacher.source
        actor = self.ray.remote(num_cpus=1)(_RayWorker)
        env_id = teacher.recipe.env_id
        self.actors = [actor.remote(source, env_id, split.trust_pickles, tuple(args)) for args in worker_args]

    def __call__(self, beta: float) -> list[Chunk]:
        config, state = student_weights(self.student)
        state_ref = self.ray.put(state)  # once in the object store, read by every actor
        try:
            return self.ray.get([actor.collect.remote(beta, config, state_ref) for actor in self.actors])
        except self.ray.exceptions.RayError as err:
            reason = " ".join(str(err).split())[:300]
            raise PolicyKDError(f"a Ray worker failed ({reason}); run with --backend local to see the error") from None

    def close(self) -> None:
        with self.stack:
            for actor in self.actors:
                self.ray.kill(actor)


def round_collection(teacher: Teacher, student: Student, config: Any, split: RoundSplit, venv: Any = None) -> Any:
    """``collect(beta) -> [chunk per worker]`` with ``close()``, for ``config`` (an OnlineConfig).
    ``venv``: worker 0's envs when given (only with one worker)."""
    if split.workers > 1 and venv is not None:
        raise PolicyKDError("train_online takes a venv with one worker only; drop venv or use workers=1")
    if split.workers > 1 and teacher.recipe.frame_stack:
        raise PolicyKDError(
            f"--workers {split.workers}: online rounds of a frame-stacked env ({teacher.recipe.env_id}) are kept "
            "in one worker (its buffer rebuilds stacks from each env's previous rows); use --workers 1"
        )
    shares = round_shares(config.n_transitions_per_round, split.workers, config.n_envs)
    seeds = [config.seed + w * config.n_envs for w in range(split.workers)]
    args = [(config.n_envs, seed, share, config.deterministic_drivers) for seed, share in zip(seeds, shares)]
    if split.backend == "ray":
        return RayRounds(teacher, student, args, split)
    return LocalRounds(student, [RoundWorker(teacher, *a, venv=venv) for a in args])


def join_stats(chunks: Sequence[Chunk]) -> CollectStats:
    """The workers' statistics summed, episodes in worker order."""
    stats = CollectStats()
    for _, chunk_stats in chunks:
        stats.n_transitions += chunk_stats.n_transitions
        stats.n_teacher_steps += chunk_stats.n_teacher_steps
        stats.episode_returns += chunk_stats.episode_returns
        stats.episode_lengths += chunk_stats.episode_lengths
    return stats
