"""Several tasks into one student: a shared trunk, with a small input layer and a head per task.

- Vector tasks (Box observations of any shapes): per task, ``Flatten -> Linear(obs_dim,
  input_width) -> ReLU`` (after the task's own input normalisation), then the shared MLP trunk
  ``[input_width, *hidden_sizes]``, then the task's head. Every vector task has its own input
  layer, even two of one shape: their coordinates need not mean the same things.
- Image tasks: all must have one ``(C, H, W)``; they share a NatureCNN trunk on ``obs / 255``
  and have no input layer. Images mixed with vectors, or of several shapes, are refused.
- Heads follow each task's teacher kind (``student_kind_for``) and action space, as in
  ``students.Student``.

Saved as ``multitask.safetensors`` (the state dict; deterministic bytes, no pickle) next to
``multitask.json`` (the config); an older folder's ``multitask.pt`` (read with ``weights_only=True``)
still loads. Training is ``trainer.Trainer`` with a
:class:`MultiTaskSampler`, which draws every step's batch from all tasks' buffers in proportion to
the task weights; :func:`check_tasks` is what the Trainer refuses before it starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.checks import check_int
from policykd.data.actions import ActionMapper, masked_output
from policykd.data.buffers import LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.learn.merging import ensemble_teacher_kind
from policykd.learn.students import (
    action_space_for,
    head_fields,
    head_output,
    json_tuples,
    load_without_pickle,
    make_head,
    mlp,
    nature_cnn,
    save_without_pickle,
    seeded_weights,
)
from policykd.learn.targets import TARGET_KINDS, student_kind_for
from policykd.types import DistillBatch, LossFn, MergeFn, StudentKind, StudentOutput, TeacherKind

CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE = "multitask.json", "multitask.safetensors", "multitask.pt"
FORMAT, FORMAT_VERSION = "policykd.multitask_student", 1
T = TypeVar("T")


class TaskSpace(NamedTuple):
    """What :func:`make_multitask_student` needs to know about one task."""

    teacher_kind: TeacherKind
    observation_space: gym.spaces.Space
    action_space: gym.spaces.Space


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of a MultiTaskConfig: its name, raw observation shape and head (as StudentConfig)."""

    name: str
    observation_shape: tuple[int, ...]
    head: StudentKind
    action_dim: int  # number of discrete actions, or Box dimensions
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    squash: bool = False
    obs_clip: float | None = None  # the teacher's VecNormalize clip_obs, applied after normalising

    @property
    def action_space(self) -> gym.spaces.Space:
        return action_space_for(self.head, self.action_dim, self.action_low, self.action_high)


@dataclasses.dataclass(frozen=True)
class MultiTaskConfig:
    """What builds a MultiTaskStudent (saved as ``multitask.json``): the tasks in order and the trunk."""

    tasks: tuple[TaskSpec, ...]
    hidden_sizes: tuple[int, ...] = (64, 64)  # the shared MLP trunk (vector tasks)
    input_width: int = 64  # width of every vector task's input layer
    cnn_width: float = 1.0  # NatureCNN multiplier (image tasks)
    image: bool = False


class _TaskModules(nn.Module):
    """One task's input normalisation, input layer (vector tasks) and head."""

    def __init__(self, spec: TaskSpec, config: MultiTaskConfig, n_features: int) -> None:
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(spec.observation_shape))
        self.register_buffer("obs_std", torch.ones(spec.observation_shape))
        obs_dim = int(np.prod(spec.observation_shape))
        self.encoder = (
            nn.Identity()
            if config.image
            else nn.Sequential(nn.Flatten(), nn.Linear(obs_dim, config.input_width), nn.ReLU())
        )
        self.head = make_head(n_features, spec.head, spec.action_dim)
        self.mapper = ActionMapper(spec.action_space, squash=spec.squash)


class MultiTaskStudent(nn.Module):
    """A shared trunk with a head per task, called as ``student(obs, task)``: raw observations
    ``(B, *obs_shape)`` of that task -> its StudentOutput (see the module docstring)."""

    def __init__(self, config: MultiTaskConfig) -> None:
        super().__init__()
        _check_config(config)
        self.config = config
        self._index = {spec.name: i for i, spec in enumerate(config.tasks)}
        if config.image:
            shape = config.tasks[0].observation_shape
            self.trunk, n_features = nature_cnn(shape, config.cnn_width)
        else:
            self.trunk = mlp([config.input_width, *config.hidden_sizes])
            n_features = config.hidden_sizes[-1] if config.hidden_sizes else config.input_width
        # ModuleDict keys are positions, so any task name (``ALE/Pong-v5``) is allowed.
        self.task_modules = nn.ModuleDict(
            {f"task{i}": _TaskModules(s, config, n_features) for i, s in enumerate(config.tasks)}
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self._index)

    def spec(self, task: str) -> TaskSpec:
        return self.config.tasks[self._task_index(task)]

    def _task_index(self, task: str) -> int:
        if task not in self._index:
            raise PolicyKDError(f"unknown task {task!r}; this student knows {', '.join(self._index)}")
        return self._index[task]

    def _modules_of(self, task: str) -> _TaskModules:
        return self.task_modules[f"task{self._task_index(task)}"]  # type: ignore[return-value]

    def set_input_normalization(self, task: str, mean: np.ndarray, std: np.ndarray, clip: float | None = None) -> None:
        """Task ``task``'s observation mean, std and clip (its teacher's VecNormalize statistics):
        its inputs become ``clip((obs - mean) / std, ±clip)``, as its teacher sees them."""
        modules = self._modules_of(task)
        mean_t, std_t = (torch.as_tensor(np.asarray(x), dtype=torch.float32) for x in (mean, std))
        if mean_t.shape != modules.obs_mean.shape or std_t.shape != modules.obs_std.shape:
            raise PolicyKDError(
                f"task {task!r} normalisation statistics have shapes {tuple(mean_t.shape)} and "
                f"{tuple(std_t.shape)}, expected {tuple(modules.obs_mean.shape)}"
            )
        modules.obs_mean.copy_(mean_t)
        modules.obs_std.copy_(std_t)
        index, clip = self._task_index(task), None if clip is None else float(clip)
        tasks = tuple(
            dataclasses.replace(s, obs_clip=clip) if i == index else s for i, s in enumerate(self.config.tasks)
        )
        self.config = dataclasses.replace(self.config, tasks=tasks)

    def forward(self, observations: torch.Tensor, task: str) -> StudentOutput:
        """Raw observations ``(B, *obs_shape)`` of ``task`` -> its head's StudentOutput: logits
        ``(B, A)``, mean and log-std ``(B, D)``, or action ``(B, D)`` in [-1, 1]."""
        spec, modules = self.spec(task), self._modules_of(task)
        if tuple(observations.shape[1:]) != spec.observation_shape:
            raise PolicyKDError(
                f"task {task!r} takes observations of shape {spec.observation_shape}, got "
                f"{tuple(observations.shape[1:])}; pass that task's env observations"
            )
        x = observations.float()
        x = x / 255.0 if self.config.image else (x - modules.obs_mean) / modules.obs_std
        if spec.obs_clip is not None:
            x = x.clamp(-spec.obs_clip, spec.obs_clip)
        return head_output(spec.head, modules.head(self.trunk(modules.encoder(x))))

    @torch.no_grad()
    def act(
        self,
        observations: np.ndarray,
        task: str,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
        action_masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Env actions of ``task`` for raw observations ``(B, *obs_shape)`` (only allowed ones with
        the env's ``action_masks (B, A)``, as ``Student.act``)."""
        device = next(self.parameters()).device  # where the student is
        out = masked_output(self(torch.as_tensor(np.asarray(observations), device=device), task), action_masks)
        return self._modules_of(task).mapper.from_student(out, deterministic, rng)

    def task_policy(self, task: str) -> TaskPolicy:
        """A one-task view that acts like a ``Student`` (``policy(obs)``, ``policy.act(obs, ...)``)
        for evaluation and collection code written for single-task students."""
        self._task_index(task)
        return TaskPolicy(self, task)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> None:
        config = {"format": FORMAT, "version": FORMAT_VERSION, **dataclasses.asdict(self.config)}
        save_without_pickle(self, Path(directory), config, WEIGHTS_FILE, CONFIG_FILE, LEGACY_WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> MultiTaskStudent:
        return load_without_pickle(
            lambda raw: cls(_config_from_json(raw)),
            Path(directory),
            (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE),
            CONFIG_FILE,
            what="a policykd multi-task student",
            advice="distil one with several --task",
        )


class TaskPolicy:
    """One task of a MultiTaskStudent, with the ``Student`` calling convention."""

    def __init__(self, student: MultiTaskStudent, task: str) -> None:
        self.student, self.task = student, task

    def __call__(self, observations: torch.Tensor) -> StudentOutput:
        return self.student(observations, self.task)

    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None, **masks: Any
    ) -> np.ndarray:
        return self.student.act(observations, self.task, deterministic, rng, masks.get("action_masks"))


def make_multitask_student(
    tasks: Mapping[str, TaskSpace] | Sequence[tuple[str, TaskSpace]],
    *,
    hidden_sizes: tuple[int, ...] = (64, 64),
    input_width: int = 64,
    cnn_width: float = 1.0,
    obs_stats: Mapping[str, tuple[Any, ...]] | None = None,
    seed: int | None = None,
) -> MultiTaskStudent:
    """A student with one head per task, in the given order. ``obs_stats``: per task ``(mean,
    std)`` or ``(mean, std, clip)`` of raw observations (the teacher's VecNormalize statistics;
    vector tasks only).
    ``seed`` fixes the initial weights without touching the global RNG
    (``students.seeded_weights``); None draws them from the global RNG."""
    from stable_baselines3.common.preprocessing import is_image_space

    specs, images = [], []
    for name, (teacher_kind, obs_space, action_space) in named_items(tasks, "task"):
        if not isinstance(obs_space, gym.spaces.Box):
            raise PolicyKDError(f"task {name!r}: observation space {obs_space} is not supported (Box only)")
        fields = head_fields(teacher_kind, action_space, where=f"task {name!r}: ")
        specs.append(TaskSpec(name, tuple(int(n) for n in obs_space.shape), **fields))
        images.append(is_image_space(obs_space, check_channels=False))
    if len(set(images)) > 1:
        names = [s.name for s, image in zip(specs, images) if image]
        raise PolicyKDError(
            f"cannot mix image tasks ({', '.join(names)}) with vector tasks in one student; "
            "distil them into separate students"
        )
    config = MultiTaskConfig(
        tuple(specs),
        tuple(int(h) for h in hidden_sizes),
        int(input_width),
        float(cnn_width),
        image=bool(images and images[0]),
    )
    with seeded_weights(seed):
        student = MultiTaskStudent(config)
    for name, stats in (obs_stats or {}).items():
        if not config.image:
            student.set_input_normalization(name, *stats)
    return student


class MultiTaskSampler:
    """Draws each step's batch from several tasks' buffers, split in proportion to task weights.

    Task t gets ``floor(B w_t)`` rows plus, for the ``B - sum floor(B w)`` rows left over, one
    more with probability equal to the fractional part of ``B w_t`` (systematic sampling with one
    uniform draw from ``rng``). So every step holds every task of weight >= 1/B, and the expected
    count is exactly ``B w_t``. Rows within a task are uniform with replacement, as
    ``LabelledBuffer.sample``. Weights (mapping by task, or a sequence in task order; None =
    equal) are finite, >= 0, not all 0, and normalised to sum 1.
    """

    def __init__(
        self,
        buffers: Mapping[str, LabelledBuffer] | Sequence[tuple[str, LabelledBuffer]],
        task_weights: Mapping[str, float] | Sequence[float] | None = None,
    ) -> None:
        self.buffers = dict(named_items(buffers, "task"))
        for task, buffer in self.buffers.items():
            if len(buffer) == 0:
                raise PolicyKDError(f"the buffer of task {task!r} is empty; collect transitions for it first")
        self.weights = check_task_weights(task_weights, self.tasks)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.buffers)

    def counts(self, batch_size: int, rng: np.random.Generator) -> dict[str, int]:
        """Rows per task for one batch, summing to ``batch_size``."""
        batch_size = check_int("batch_size", batch_size)
        expected = batch_size * self.weights
        base = np.floor(expected)
        edges = np.concatenate(([0.0], np.cumsum(expected - base)))
        edges = np.clip(edges, 0.0, batch_size - base.sum())  # ends at the number of leftover rows, exactly
        edges[-1] = batch_size - base.sum()
        extra = np.diff(np.ceil(edges - rng.random()))  # points u, u + 1, ... falling in each task's interval
        return {task: int(n) for task, n in zip(self.tasks, base + extra)}

    def sample(
        self, batch_size: int, rng: np.random.Generator, device: str | torch.device = "cpu"
    ) -> dict[str, DistillBatch]:
        """One batch per task that got rows this step (tasks with 0 rows are left out)."""
        return {
            task: self.buffers[task].sample(n, rng, device) for task, n in self.counts(batch_size, rng).items() if n > 0
        }


def named_items(items: Mapping[str, T] | Sequence[tuple[str, T]], what: str) -> list[tuple[str, T]]:
    """``(name, item)`` pairs from a mapping or a sequence of pairs; refuses none, an empty name
    and a name given twice (which a mapping cannot even hold)."""
    pairs = list(items.items()) if isinstance(items, Mapping) else [tuple(pair) for pair in items]
    names = [name for name, _ in pairs]
    if not pairs:
        raise PolicyKDError(f"no {what}s given; give at least one")
    if any(not isinstance(name, str) or not name for name in names):
        raise PolicyKDError(f"{what} names must be non-empty strings, got {names}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise PolicyKDError(f"{what} {', '.join(map(repr, twice))} is listed twice; list each {what} once")
    return pairs  # type: ignore[return-value]


def check_tasks(
    student: MultiTaskStudent,
    sampler: MultiTaskSampler,
    loss_fns: Mapping[str, LossFn],
    merges: Mapping[str, MergeFn],
) -> None:
    """Refuse buffers, losses and merges that do not fit the student, before training starts:
    every task needs a buffer, a loss and a head; a merge may be given for any of them. Each
    buffer must hold that task's observations, teacher head and action count, and each loss
    must use ``reduction="mean"`` (the Trainer weighs task t's mean loss by its rows ``n_t / B``)."""
    tasks = set(sampler.tasks)
    for what, names in (("student", set(student.tasks)), ("losses", set(loss_fns))):
        if names != tasks:
            raise PolicyKDError(
                f"the {what} cover tasks {sorted(names)} but the buffers cover {sorted(tasks)}; "
                "give each task a buffer, a loss and a head"
            )
    if not set(merges) <= tasks:
        raise PolicyKDError(f"merges given for unknown tasks {sorted(set(merges) - tasks)}")
    for task, buffer in sampler.buffers.items():
        spec = student.spec(task)
        head = student_kind_for(ensemble_teacher_kind(buffer.teacher_kinds))
        field = next(f for f in ("logits", "q_values", "mean", "action") if f in buffer.teacher_field_shapes)
        layout, expected = (
            (buffer.observation_shape, head, buffer.teacher_field_shapes[field][0]),
            (spec.observation_shape, spec.head, spec.action_dim),
        )
        if layout != expected:
            raise PolicyKDError(
                f"task {task!r}: the buffer holds observations, teacher head and action count "
                f"{layout}, the student expects {expected}; "
                "collect the buffer with that task's env and teacher"
            )
        if loss_fns[task].reduction != "mean":
            raise PolicyKDError(f"task {task!r}: multi-task training needs losses with reduction='mean'")


# -- helpers ---------------------------------------------------------------------------------------


def _check_config(config: MultiTaskConfig) -> None:
    named_items([(spec.name, spec) for spec in config.tasks], "task")
    if any(h <= 0 for h in config.hidden_sizes) or config.input_width <= 0 or not config.cnn_width > 0:
        raise PolicyKDError(
            f"hidden sizes, input width and cnn width must be positive, got "
            f"{config.hidden_sizes}, {config.input_width} and {config.cnn_width}"
        )
    for spec in config.tasks:
        if spec.head not in TARGET_KINDS or spec.action_dim < 1:
            raise PolicyKDError(
                f"task {spec.name!r} has head {spec.head!r} with {spec.action_dim} actions; "
                f"use one of {', '.join(TARGET_KINDS)} and at least one action"
            )
    shapes = {spec.observation_shape for spec in config.tasks}
    if config.image and len(shapes) > 1:
        raise PolicyKDError(
            f"image tasks share one CNN and must have one observation shape, got {sorted(shapes)}; "
            "use the same wrappers (e.g. AtariWrapper, frame stack 4) for every task"
        )


def check_task_weights(weights: Mapping[str, float] | Sequence[float] | None, tasks: tuple[str, ...]) -> np.ndarray:
    if weights is None:
        return np.full(len(tasks), 1.0 / len(tasks))
    if isinstance(weights, Mapping):
        if set(weights) != set(tasks):
            raise PolicyKDError(
                f"task weights are for {sorted(weights)} but the tasks are {sorted(tasks)}; give one weight per task"
            )
        weights = [weights[task] for task in tasks]
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise PolicyKDError(f"task weights must be numbers, got {weights!r}") from None
    if values.shape != (len(tasks),):
        raise PolicyKDError(f"got {values.size} task weight(s) for {len(tasks)} task(s); give one weight per task")
    if not np.isfinite(values).all() or (values < 0).any() or not (values > 0).any():
        raise PolicyKDError(f"task weights must be finite, non-negative and not all zero, got {values.tolist()}")
    return values / values.sum()


def _config_from_json(raw: dict[str, Any]) -> MultiTaskConfig:
    """``multitask.json`` back into a config; a file of another format or version is a ValueError."""
    if raw.pop("format", None) != FORMAT or raw.pop("version", None) != FORMAT_VERSION:
        raise ValueError(f"{CONFIG_FILE} is not a version-{FORMAT_VERSION} {FORMAT}")
    tasks = tuple(TaskSpec(**json_tuples(task)) for task in raw.pop("tasks"))
    return MultiTaskConfig(tasks=tasks, **json_tuples(raw))
