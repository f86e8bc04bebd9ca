"""Students that speak SB3: ``predict(observation, state, episode_start, deterministic)``.

:class:`StudentPolicy` wraps anything that acts like a ``Student`` (a Student, one task of a
multi-task student, an exported ONNX file) so that SB3's ``evaluate_policy``, and any code written
for an SB3 model's ``predict``, plays it unchanged. It follows SB3's conventions: one observation
``obs_shape`` in gives one action out (``()`` for a discrete action, ``(D,)`` for a Box), a batch
``(n, *obs_shape)`` gives ``(n,)`` / ``(n, D)``; the recurrent ``state`` is returned as given (a
student has none). The student normalises its own inputs (it carries the teacher's VecNormalize
statistics); frame stacking and other wrappers are the env's, as for SB3:
``policykd.make_vec_env(policy.recipe, n_envs, seed)`` builds that env.

A student of a dict-observation env (a MultiInputPolicy teacher) acts on flat rows, each key
flattened and the keys concatenated in the env's Dict order (``data.envs.flat_dict_space``), which
is what ``make_vec_env`` gives; ``predict`` also takes the env's own dicts, one (``{key: shape}``)
or a batch (``{key: (n, *shape)}``), as SB3's ``predict`` does for a MultiInputPolicy, and flattens
them as collection did (``data.envs.flatten_dict_obs``). The Dict comes from ``dict_space=`` or,
at the first dict, from the recorded env (``recipe``).

:func:`task_student` turns one task of a :class:`~policykd.learn.multitask.MultiTaskStudent` into
a standalone :class:`~policykd.learn.students.Student` with the same weights: a vector task is
``normalise -> input layer -> shared MLP trunk -> head``, which is a Student whose hidden sizes are
``(input_width, *hidden_sizes)``; an image task is the shared NatureCNN and its head. Every
single-task tool (``predict``, ONNX and SB3 export) then serves multi-task students too.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.data.envs import flat_dict_space, flatten_dict_obs, recipe_dict_space
from policykd.errors import PolicyKDError
from policykd.learn.multitask import MultiTaskStudent
from policykd.learn.students import Student, StudentConfig


class StudentPolicy:
    """A student with SB3's ``predict``; see the module docstring.

    ``policy`` acts as ``Student.act(observations (n, *obs_shape), deterministic, rng)``;
    ``config`` is its StudentConfig; ``recipe`` the env it plays in (None when not recorded);
    ``dict_space`` that env's Dict observation space, for a student of flat dict rows (None: read
    from ``recipe`` at the first dict observation). Sampled actions (``deterministic=False``) draw
    from ``rng`` (:meth:`set_random_seed`)."""

    def __init__(
        self,
        policy: Any,
        config: StudentConfig,
        recipe: Any = None,
        seed: int | None = None,
        dict_space: gym.spaces.Dict | None = None,
    ) -> None:
        self.policy, self.config, self.recipe, self.dict_space = policy, config, recipe, dict_space
        self._checked_space: gym.spaces.Dict | None = None  # the dict_space env_dict_space last checked
        self.rng = np.random.default_rng(seed)
        self.observation_space, self.action_space = student_spaces(config)

    def set_random_seed(self, seed: int | None) -> None:
        """Where sampled actions (``deterministic=False``) come from, as SB3's ``set_random_seed``."""
        self.rng = np.random.default_rng(seed)

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """``(actions, state)`` for one observation ``obs_shape`` or a batch ``(n, *obs_shape)``,
        as SB3's ``BasePolicy.predict``: greedy with ``deterministic``, else sampled; with
        ``action_masks`` (``(A,)`` or ``(n, A)``), allowed actions only, as MaskablePPO's ``predict``.
        A dict observation (the env's own, for a student of dict rows) is flattened first (:meth:`dict_rows`)."""
        obs = self.dict_rows(observation) if isinstance(observation, dict) else np.asarray(observation)
        shape = self.config.observation_shape
        masks = (
            {} if action_masks is None else {"action_masks": np.reshape(action_masks, (-1, np.shape(action_masks)[-1]))}
        )
        if obs.shape == shape:
            return self.policy.act(obs[None], deterministic, self.rng, **masks).squeeze(axis=0), state
        if obs.shape[1:] == shape:
            return self.policy.act(obs, deterministic, self.rng, **masks), state
        raise PolicyKDError(
            f"observation of shape {obs.shape}: this student takes {shape} or a batch (n, {', '.join(map(str, shape))}); "
            "build its env with policykd.make_vec_env(policy.recipe, ...)"
        )

    def dict_rows(self, observation: dict[str, Any]) -> np.ndarray:
        """The env's dict observation as the row(s) the student acts on: ``{key: shape}`` ->
        ``(D,)``, ``{key: (n, *shape)}`` -> ``(n, D)``, flattened as collection stored them
        (``data.envs.flatten_dict_obs``). Other keys or shapes are refused in one line."""
        space = self.env_dict_space()
        arrays = {key: np.asarray(value) for key, value in observation.items()}
        if set(arrays) != set(space.spaces):
            raise PolicyKDError(
                f"dict observation with keys {sorted(arrays)}: this student's env gives {list(space.spaces)}; "
                "pass the env's own observation"
            )
        shapes = {key: tuple(sub.shape) for key, sub in space.spaces.items()}
        if all(arrays[key].shape == shape for key, shape in shapes.items()):
            return flatten_dict_obs(space, {key: value[None] for key, value in arrays.items()})[0]
        sizes = {len(value) if value.ndim else -1 for value in arrays.values()}
        if len(sizes) == 1 and all(arrays[key].shape[1:] == shape for key, shape in shapes.items()):
            return flatten_dict_obs(space, arrays)
        raise PolicyKDError(
            f"dict observation of shapes { ({key: value.shape for key, value in arrays.items()}) }: this student "
            f"takes {shapes} or a batch of them (n first, the same n for every key)"
        )

    def env_dict_space(self) -> gym.spaces.Dict:
        """``dict_space``, read from the recorded env when not given (once); refuses, in one line, a
        student without a recorded env, of an env that does not give dicts, or whose rows the Dict's
        keys do not make."""
        if self.dict_space is None:
            if self.recipe is None:
                raise PolicyKDError(
                    "a dict observation, but this student records no env to read its keys' order from; pass "
                    "StudentPolicy(..., dict_space=env.observation_space) or rows made by policykd.data.envs.flatten_dict_obs"
                )
            space = recipe_dict_space(self.recipe)
            if space is None:
                raise PolicyKDError(
                    f"a dict observation, but this student's env {self.recipe.env_id} gives arrays of shape "
                    f"{self.config.observation_shape}; pass those"
                )
            self.dict_space = space
        if self._checked_space is not self.dict_space:  # checked once per space: it costs a millisecond
            flat = flat_dict_space(self.dict_space, "this student's dict observations")
            if self.config.image or flat.shape != tuple(self.config.observation_shape):
                raise PolicyKDError(
                    f"the dict observations {self.dict_space} do not flatten into this student's "
                    f"{self.config.observation_shape} rows; pass the Dict of the env it was distilled on"
                )
            self._checked_space = self.dict_space
        return self.dict_space

    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None, **masks: Any
    ) -> np.ndarray:
        """policykd's calling convention (``Student.act``), so ``policykd``'s evaluation plays it too."""
        return self.policy.act(observations, deterministic, self.rng if rng is None else rng, **masks)


def student_spaces(config: StudentConfig) -> tuple[gym.spaces.Box, gym.spaces.Space]:
    """The spaces a student acts in, from its config alone: images ``Box(0, 255, uint8)``, vectors
    an unbounded float32 Box (the env's own bounds are not recorded); its action space."""
    if config.image:
        return gym.spaces.Box(0, 255, config.observation_shape, np.uint8), config.action_space
    return gym.spaces.Box(-np.inf, np.inf, config.observation_shape, np.float32), config.action_space


def task_student(student: MultiTaskStudent, task: str) -> Student:
    """Task ``task`` of ``student`` as a standalone Student acting exactly as
    ``student.act(obs, task)`` (see the module docstring); refuses an unknown task."""
    spec, config = student.spec(task), student.config
    hidden = config.hidden_sizes if config.image else (config.input_width, *config.hidden_sizes)
    single = Student(
        StudentConfig(
            observation_shape=spec.observation_shape,
            head=spec.head,
            action_dim=spec.action_dim,
            action_low=spec.action_low,
            action_high=spec.action_high,
            squash=spec.squash,
            hidden_sizes=hidden,
            cnn_width=config.cnn_width,
            image=config.image,
        )
    )
    modules: Any = student.task_modules[f"task{student.tasks.index(task)}"]  # ModuleDict keys are positions
    with torch.no_grad():
        if config.image:
            single.trunk.load_state_dict(student.trunk.state_dict())
        else:
            copy_linears(linears(single.trunk), [*linears(modules.encoder), *linears(student.trunk)])
        single.head.load_state_dict(modules.head.state_dict())
        single.set_input_normalization(modules.obs_mean, modules.obs_std)
    return single.eval()


def linears(module: nn.Module) -> list[nn.Linear]:
    """``module``'s Linear layers in the order they are applied (registration order)."""
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def copy_linears(targets: list[nn.Linear], sources: list[nn.Linear]) -> None:
    """Copy each source layer's weight and bias into the target at the same position."""
    if [tuple(t.weight.shape) for t in targets] != [tuple(s.weight.shape) for s in sources]:
        raise PolicyKDError(  # a bug, not a user error: the layouts are ours on both sides
            f"layer shapes differ: {[tuple(t.weight.shape) for t in targets]} vs {[tuple(s.weight.shape) for s in sources]}"
        )
    for target, source in zip(targets, sources):
        target.weight.copy_(source.weight)
        target.bias.copy_(source.bias)
