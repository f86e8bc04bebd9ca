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

from policykd.checks import check_int, check_probability
from policykd.data.actions import masked_output
from policykd.data.buffers import DRIVER_STUDENT, DRIVER_TEACHER, LabelledBuffer
from policykd.data.envs import env_action_masks
from policykd.data.fast_forward import fast_labeller
from policykd.data.step_chunks import StepChunks
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.learn.merging import as_student_output
from policykd.learn.targets import soften
from policykd.progress import progress_bar
from policykd.types import ActFn, DistillTarget


@dataclasses.dataclass
class CollectStats:
    n_transitions: int = 0
    n_teacher_steps: int = 0  # transitions where the teacher acted
    episode_returns: list[float] = dataclasses.field(default_factory=list)  # episodes that ended, whoever drove
    episode_lengths: list[int] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def count(self, teacher_drives: np.ndarray, infos: Sequence[dict[str, Any]]) -> None:
        """Count one vector step and the episodes that ended in it (``teacher_drives (n_envs,)``)."""
        self.n_transitions += len(teacher_drives)
        self.n_teacher_steps += int(teacher_drives.sum())
        for info in infos:
            if "episode" in info:  # Monitor: the true episode, across Atari life losses
                self.episode_returns.append(float(info["episode"]["r"]))
                self.episode_lengths.append(int(info["episode"]["l"]))


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
    progress: str | None = None,
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
    - ``progress``: a progress bar over the transitions with this description (None: none).
    Returns the buffer (created on the first step when None) and the collection statistics.
    """
    n_transitions = _check_collect_args(teachers, n_transitions, beta, student_act, epsilon, action_noise)
    drivers = _Drivers(teachers, teacher_drive, merge, beta, student_act, deterministic, venv.num_envs)
    stats = CollectStats()
    obs, episode_starts = _start(venv, cursor)
    bar = progress_bar(n_transitions, progress or "", enabled=progress is not None, unit="transitions")
    labellers = [fast_labeller(teacher) for teacher in teachers]  # no nn.Module calls for MLPs (fast_forward.py)
    chunks: StepChunks | None = None
    while stats.n_transitions < n_transitions:
        outputs = [label(obs) for label in labellers]  # one batched forward pass per teacher
        actions, teacher_drives = drivers.act(obs, outputs, episode_starts, rng, venv)
        actions = _explore(actions, teachers[0].mapper, rng, epsilon, action_noise)
        next_obs, rewards, dones, infos = venv.step(actions)
        if buffer is None:
            buffer = _new_buffer(venv, teachers[0], outputs, n_transitions, meta, drivers.masks)
        chunks = chunks or StepChunks(buffer)  # one buffer add per chunk of vector steps (step_chunks.py)
        _store(chunks, obs, actions, rewards, dones, infos, episode_starts, teacher_drives, outputs, drivers.masks)
        stats.count(teacher_drives, infos)
        drivers.episodes_ended(dones)
        obs, episode_starts = next_obs, dones
        bar.update(len(teacher_drives))
    if chunks is not None:
        chunks.flush()
    bar.close()
    if cursor is not None:
        cursor.observations, cursor.episode_starts = obs, episode_starts
    assert buffer is not None
    return buffer, stats


TEACHER_DRIVES = ("first", "merged", "round-robin", "random")
LONGEST_COVERED_EPISODE = 10_000
"""Time limits above this (Atari's 108,000 frames) say nothing of a real episode's length:
:func:`episode_covering_envs` keeps the asked env count there."""


def episode_covering_envs(n_transitions: int, n_envs: int, max_episode_steps: int | None) -> int:
    """How many of ``n_envs`` envs to collect ``n_transitions`` with so that each env plays at least
    one episode to its time limit (``max_episode_steps``): ``n_transitions // max_episode_steps``,
    at least 1 and at most ``n_envs``. Each env adds ``n_transitions / n_envs`` consecutive steps,
    so with 8 envs a small budget holds only the first steps of 8 episodes (a LunarLander student
    would never see a landing); with fewer envs it holds whole episodes, from start to end.
    ``max_episode_steps`` None or above LONGEST_COVERED_EPISODE: ``n_envs``, unchanged."""
    if not max_episode_steps or max_episode_steps > LONGEST_COVERED_EPISODE:
        return n_envs
    return max(1, min(n_envs, n_transitions // max_episode_steps))


def max_episode_steps(env_id: str) -> int | None:
    """The registered time limit of ``env_id`` (None: none, or not a registered id)."""
    import gymnasium as gym

    try:
        return gym.spec(env_id).max_episode_steps
    except gym.error.Error:
        return None


def _check_collect_args(
    teachers: Sequence[Teacher],
    n_transitions: int,
    beta: float,
    student_act: ActFn | None,
    epsilon: float,
    action_noise: float,
) -> int:
    """Refuse what collect_rollouts cannot run, before the env moves; returns ``n_transitions``."""
    if not teachers:
        raise PolicyKDError("collect_rollouts needs at least one teacher to label the transitions")
    n_transitions = check_int("n_transitions", n_transitions)
    check_probability("beta", beta)
    if beta < 1.0 and student_act is None:
        raise PolicyKDError("a student must be given when it drives (beta < 1)")
    check_probability("epsilon", epsilon)
    if not (action_noise >= 0 and np.isfinite(action_noise)):  # `not >=` refuses NaN
        raise PolicyKDError(
            f"action noise must be a finite number >= 0 (a fraction of the half range), got {action_noise}"
        )
    return n_transitions


class _Drivers:
    """Who acts at each env step: the teachers (under ``drive``) with probability ``beta`` per
    env, the student otherwise. Keeps, per env, which teacher acts under round-robin / random."""

    def __init__(
        self,
        teachers: Sequence[Teacher],
        drive: str,
        merge: Callable[[Sequence[DistillTarget]], DistillTarget] | None,
        beta: float,
        student_act: ActFn | None,
        deterministic: bool,
        n_envs: int,
    ) -> None:
        if drive not in TEACHER_DRIVES:
            raise PolicyKDError(f"unknown teacher drive {drive!r}; use one of {', '.join(TEACHER_DRIVES)}")
        if drive == "merged" and merge is None:
            raise PolicyKDError("teacher_drive='merged' needs a merge function (see merging.make_merge)")
        self.teachers, self.drive, self.merge = teachers, drive, merge
        self.beta, self.student_act, self.deterministic = beta, student_act, deterministic
        self.n_envs = n_envs
        self.which = np.arange(n_envs) % len(teachers)  # per env: the teacher that acts (round-robin / random)
        self.masked = any(getattr(teacher, "masked", False) for teacher in teachers)  # MaskablePPO teachers
        self.masks: np.ndarray | None = None  # the env's action masks at the last step (MaskablePPO), else None

    def act(
        self,
        obs: np.ndarray,
        outputs: Sequence[Any],
        episode_starts: np.ndarray,
        rng: np.random.Generator,
        venv: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Env actions ``(n_envs, ...)`` before exploration, and whether the teacher drove each ``(n_envs,)``.
        With MaskablePPO teachers, ``venv``'s action masks (kept as ``masks``) are obeyed by teachers and
        student (``student_act(obs, action_masks=...)``)."""
        self.masks = action_masks = env_action_masks(venv) if self.masked else None
        teacher_drives = rng.random(self.n_envs) < self.beta
        outputs = [masked_output(out, action_masks) for out in outputs]
        if self.drive == "random":
            self.which = np.where(episode_starts, rng.integers(0, len(self.teachers), self.n_envs), self.which)
        actions = _teacher_actions(self.teachers, outputs, self.drive, self.which, self.merge, self.deterministic, rng)
        if not teacher_drives.all():
            assert self.student_act is not None  # checked: beta < 1 needs a student
            masks = {} if action_masks is None else {"action_masks": action_masks}
            actions = np.where(_broadcast(teacher_drives, actions), actions, self.student_act(obs, **masks))
        return actions, teacher_drives

    def episodes_ended(self, dones: np.ndarray) -> None:
        """Round-robin: each env whose episode ended moves to the next teacher."""
        if self.drive == "round-robin":
            self.which = np.where(dones, (self.which + 1) % len(self.teachers), self.which)


def _start(venv: Any, cursor: RolloutCursor | None) -> tuple[np.ndarray, np.ndarray]:
    """The observations to act on first and whether each starts an episode: the cursor's, else a reset."""
    if cursor is not None and cursor.observations is not None and cursor.episode_starts is not None:
        return cursor.observations, cursor.episode_starts
    return venv.reset(), np.ones(venv.num_envs, dtype=bool)


def _new_buffer(
    venv: Any,
    driver: Teacher,
    outputs: Sequence[Any],
    n_transitions: int,
    meta: dict[str, Any] | None,
    action_masks: np.ndarray | None = None,
) -> LabelledBuffer:
    """A buffer for ``n_transitions`` rounded up to whole vector steps, laid out after the first outputs."""
    n_envs = venv.num_envs
    dict_space = getattr(driver, "dict_space", None)
    if dict_space is not None:  # observations are flat_dict_space rows: the header names each key's slice
        keys = {key: list(sub.shape) for key, sub in dict_space.spaces.items()}
        meta = {**(meta or {}), "observation_keys": keys}
    return LabelledBuffer.for_teachers(
        -(-n_transitions // n_envs) * n_envs,
        venv.observation_space,
        venv.action_space,
        outputs,
        meta=meta,
        frame_stack=_dedup_frames(driver, venv.observation_space),
        n_envs=n_envs,
        action_mask_shape=None if action_masks is None else action_masks.shape[1:],
    )


def buffer_nbytes(teachers: Sequence[Teacher], n_transitions: int, n_envs: int = 1) -> int:
    """Bytes of the buffer :func:`collect_rollouts` fills with ``n_transitions`` labelled by
    ``teachers`` on ``n_envs`` envs: its memory, and the size of its saved ``.npz`` give or take
    the header. Costs one forward pass of each teacher, nothing is collected."""
    teacher, space = teachers[0], teachers[0].observation_space
    example = [t(np.asarray(space.sample())[None]) for t in teachers]
    frame_stack = _dedup_frames(teacher, space)
    row = LabelledBuffer.for_teachers(1, space, teacher.action_space, example, frame_stack=frame_stack).nbytes
    return row * -(-n_transitions // n_envs) * n_envs


def _store(
    chunks: StepChunks,
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    dones: np.ndarray,
    infos: Sequence[dict[str, Any]],
    episode_starts: np.ndarray,
    teacher_drives: np.ndarray,
    outputs: Sequence[Any],
    action_masks: np.ndarray | None = None,
) -> None:
    """Add one vector step; a time-limit end is stored as truncated, not terminated."""
    truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos], dtype=bool)
    drivers = np.where(teacher_drives, DRIVER_TEACHER, DRIVER_STUDENT).astype(np.int8)
    chunks.add(obs, actions, rewards, dones & ~truncated, truncated, episode_starts, drivers, outputs=outputs,
               action_masks=action_masks)  # fmt: skip


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
