"""Roll out a vectorised env and label every visited state with every teacher.

Who drives is a choice: the teacher, the student (on-policy distillation: the teacher only
labels), or a DAgger-style mixture where the teacher acts with probability ``beta`` per env step.
Labels are always the teachers' outputs, whoever drove. Nothing here reads globals, so the
function can run inside a remote worker as it is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policykd.data.buffers import DRIVER_STUDENT, DRIVER_TEACHER, LabelledBuffer
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.learn.merging import as_student_output
from policykd.learn.targets import soften
from policykd.types import DistillTarget

ActFn = Callable[[np.ndarray], np.ndarray]  # raw observations (n, ...) -> env actions (n, ...)


@dataclasses.dataclass
class CollectStats:
    n_transitions: int = 0
    n_teacher_steps: int = 0  # transitions where the teacher acted
    episode_returns: list[float] = dataclasses.field(default_factory=list)  # episodes that ended, whoever drove
    episode_lengths: list[int] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RolloutCursor:
    """Where a vectorised env's episodes stand between two ``collect_rollouts`` calls. Pass the
    same cursor to every call to continue the running episodes instead of resetting the env (the
    online loop alternates collection and training rounds, and a reset per round would cut every
    episode at the round length). Empty, the next call resets the env."""

    observations: np.ndarray | None = None  # (n_envs, *obs_shape): the next observations to act on
    episode_starts: np.ndarray | None = None  # (n_envs,) bool: whether each is an episode's first


def check_spaces(teacher: Teacher, venv: Any) -> None:
    """Refuse a teacher whose spaces are not the env's, before anything is collected."""
    check_policy_spaces(
        f"teacher {teacher.source}",
        teacher.observation_space,
        teacher.action_space,
        teacher.recipe.env_id,
        venv,
        hint="pick the teacher trained on this env (and its zoo folder, which brings its wrappers)",
    )


def check_policy_spaces(
    name: str, observation_space: Any, action_space: Any, env_id: str, venv: Any, *, hint: str
) -> None:
    """Raise PolicyKDError unless ``venv``'s spaces have the kind and shape (and ``n``) the policy
    called ``name`` was built for."""
    for what, mine, env in (
        ("observation", observation_space, venv.observation_space),
        ("action", action_space, venv.action_space),
    ):
        if (
            type(mine) is not type(env)
            or getattr(mine, "shape", None) != getattr(env, "shape", None)
            or getattr(mine, "n", None) != getattr(env, "n", None)
        ):
            raise PolicyKDError(
                f"{name} expects {what} space {_describe(mine)}, but {env_id} has {_describe(env)}; {hint}"
            )


def _describe(space: Any) -> str:
    """``Discrete(2)`` or ``Box(shape=(4,))``: short enough for a one-line error."""
    if hasattr(space, "n"):
        return f"{type(space).__name__}({space.n})"
    return f"{type(space).__name__}(shape={getattr(space, 'shape', None)})"


def collect_rollouts(
    venv: Any,
    teachers: Sequence[Teacher],
    n_transitions: int,
    *,
    rng: np.random.Generator,
    buffer: LabelledBuffer | None = None,
    student_act: ActFn | None = None,
    beta: float = 1.0,
    epsilon: float = 0.0,
    action_noise: float = 0.0,
    deterministic: bool = True,
    meta: dict[str, Any] | None = None,
    cursor: RolloutCursor | None = None,
    teacher_drive: str = "first",
    merge: Callable[[Sequence[DistillTarget]], DistillTarget] | None = None,
) -> tuple[LabelledBuffer, CollectStats]:
    """Step ``venv`` until ``n_transitions`` transitions are labelled (rounded up to whole vector steps).

    - ``beta``: per env step, the probability that the teacher (teachers[0]) acts; the student
      (``student_act``) acts otherwise. ``beta=1`` is teacher-driven, ``beta=0`` on-policy.
    - ``epsilon``: discrete actions are replaced by uniform random ones with this probability.
    - ``action_noise``: Gaussian noise on continuous actions, as a fraction of the half range.
    - ``cursor``: continue from where the last call with this cursor stopped (and update it);
      None or an empty cursor resets the env.
    - ``teacher_drive``, when the teacher acts and there are several: ``first`` (teachers[0]),
      ``merged`` (the greedy action of ``merge`` over the teachers at tau 1), ``round-robin``
      (each env moves to the next teacher at every episode end) or ``random`` (each env draws a
      teacher at every episode start). Every teacher labels every transition whoever drives.
    Returns the buffer (created on the first step when None) and the collection statistics.
    """
    if not teachers:
        raise PolicyKDError("collect_rollouts needs at least one teacher to label the transitions")
    if isinstance(n_transitions, bool) or not isinstance(n_transitions, (int, np.integer)) or n_transitions < 1:
        raise PolicyKDError(f"n_transitions must be a positive integer, got {n_transitions!r}")
    if not 0.0 <= beta <= 1.0:
        raise PolicyKDError(f"beta must be in [0, 1], got {beta}")
    if beta < 1.0 and student_act is None:
        raise PolicyKDError("a student must be given when it drives (beta < 1)")
    if not 0.0 <= epsilon <= 1.0 or not action_noise >= 0:  # `not >=` also refuses NaN
        raise PolicyKDError(f"epsilon must be in [0, 1] and action noise >= 0, got {epsilon} and {action_noise}")
    if teacher_drive not in TEACHER_DRIVES:
        raise PolicyKDError(f"unknown teacher drive {teacher_drive!r}; use one of {', '.join(TEACHER_DRIVES)}")
    if teacher_drive == "merged" and merge is None:
        raise PolicyKDError("teacher_drive='merged' needs a merge function (see merging.make_merge)")
    driver, n_envs = teachers[0], venv.num_envs
    mapper = driver.mapper
    which = np.arange(n_envs) % len(teachers)  # per env: the teacher that acts (round-robin / random)
    stats = CollectStats()
    if cursor is not None and cursor.observations is not None and cursor.episode_starts is not None:
        obs, episode_starts = cursor.observations, cursor.episode_starts
    else:
        obs, episode_starts = venv.reset(), np.ones(n_envs, dtype=bool)
    while stats.n_transitions < n_transitions:
        outputs = [teacher(obs) for teacher in teachers]  # one batched forward pass per teacher
        teacher_drives = rng.random(n_envs) < beta
        if teacher_drive == "random":
            which = np.where(episode_starts, rng.integers(0, len(teachers), n_envs), which)
        actions = _teacher_actions(teachers, outputs, teacher_drive, which, merge, deterministic, rng)
        if not teacher_drives.all():
            actions = np.where(_broadcast(teacher_drives, actions), actions, student_act(obs))
        actions = _explore(actions, mapper, rng, epsilon, action_noise)
        next_obs, rewards, dones, infos = venv.step(actions)
        truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
        if buffer is None:
            buffer = LabelledBuffer.for_teachers(
                -(-n_transitions // n_envs) * n_envs,
                venv.observation_space,
                venv.action_space,
                outputs,
                meta=meta,
                frame_stack=_dedup_frames(driver, venv.observation_space),
                n_envs=n_envs,
            )
        buffer.add(
            obs,
            actions,
            rewards,
            dones & ~truncated,
            truncated,
            episode_starts,
            np.where(teacher_drives, DRIVER_TEACHER, DRIVER_STUDENT).astype(np.int8),
            outputs,
        )
        stats.n_transitions += n_envs
        stats.n_teacher_steps += int(teacher_drives.sum())
        for info in infos:
            if "episode" in info:  # Monitor: the true episode, across Atari life losses
                stats.episode_returns.append(float(info["episode"]["r"]))
                stats.episode_lengths.append(int(info["episode"]["l"]))
        if teacher_drive == "round-robin":
            which = np.where(dones, (which + 1) % len(teachers), which)
        episode_starts = dones
        obs = next_obs
    if cursor is not None:
        cursor.observations, cursor.episode_starts = obs, episode_starts
    assert buffer is not None
    return buffer, stats


TEACHER_DRIVES = ("first", "merged", "round-robin", "random")


def _teacher_actions(
    teachers: Sequence[Teacher],
    outputs: Sequence[Any],
    drive: str,
    which: np.ndarray,
    merge: Any,
    deterministic: bool,
    rng: np.random.Generator,
) -> np.ndarray:
    """The teachers' env actions ``(n, ...)`` under the chosen drive."""
    if len(teachers) == 1 or drive == "first":
        return teachers[0].mapper.from_teacher(outputs[0], deterministic=deterministic, rng=rng)
    if drive == "merged":
        target = merge([soften(out, 1.0) for out in outputs])
        return teachers[0].mapper.from_student(as_student_output(target), deterministic=deterministic, rng=rng)
    per_teacher = np.stack(
        [t.mapper.from_teacher(o, deterministic=deterministic, rng=rng) for t, o in zip(teachers, outputs)]
    )
    return per_teacher[which, np.arange(per_teacher.shape[1])]


def _dedup_frames(teacher: Teacher, observation_space: Any) -> int:
    """Frame-stacked images are stored one frame per transition (see buffers.LabelledBuffer)."""
    stack = int(teacher.recipe.frame_stack or 1)
    shape = getattr(observation_space, "shape", ())
    is_stacked_image = (
        len(shape) == 3 and getattr(observation_space, "dtype", None) == np.uint8 and shape[0] % stack == 0
    )
    return stack if stack > 1 and is_stacked_image else 1


def _broadcast(mask: np.ndarray, actions: np.ndarray) -> np.ndarray:
    return mask.reshape(-1, *([1] * (actions.ndim - 1)))


def _explore(actions: np.ndarray, mapper: Any, rng: np.random.Generator, epsilon: float, noise: float) -> np.ndarray:
    if mapper.discrete:
        if epsilon > 0:
            actions = mapper.epsilon_greedy(actions, epsilon, rng)
        return actions
    if noise > 0:
        half_range = (mapper.high - mapper.low) / 2.0
        actions = actions + rng.standard_normal(actions.shape).astype(np.float32) * noise * half_range
        actions = np.clip(actions, mapper.low, mapper.high)
    return actions
