"""Small envs for the teacher pairs rl_zoo3 2.9.2 has no env or hyperparameters for (action masks,
MultiDiscrete / MultiBinary actions, dict observations), registered with gymnasium on import.

- ``PolicykdMaskedChoice-v0``: sb3-contrib's ``InvalidActionEnvDiscrete`` (10 states, 4 of the 10
  actions forbidden each step, never the right one; reward 1 for the action equal to the state,
  20 steps) with its state one-hot encoded and ``action_masks()``: MaskablePPO. Written here, as
  every env of this module, to draw only from the env's own ``np_random`` (seeded by
  ``reset(seed=...)``): sb3-contrib's draws its state from the action space's unseeded generator and
  its forbidden actions from numpy's global one, so one seed gave different episodes.
- ``PolicykdFactored-v0`` / ``PolicykdFactoredBinary-v0``: three numbers in [-1, 1]; each action
  factor pays 1 for the bin its number falls in (MultiDiscrete([3, 2, 4]); MultiBinary(3): the sign).
- ``PolicykdDictCartPole-v0``: CartPole-v1 whose observation is a Dict of ``position`` (x, x') and
  ``angle`` (theta, theta'): a MultiInputPolicy teacher.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

MASKED_ENV, FACTORED_ENV, BINARY_ENV, DICT_ENV = (
    "PolicykdMaskedChoice-v0",
    "PolicykdFactored-v0",
    "PolicykdFactoredBinary-v0",
    "PolicykdDictCartPole-v0",
)


class MaskedChoice(gym.Env):
    """One of ``dim`` states (one-hot) per step, ``n_invalid`` of the ``dim`` actions forbidden, never
    the one equal to the state, which pays 1; 20 steps. Every draw from ``self.np_random``."""

    def __init__(self, dim: int = 10, n_invalid: int = 4, ep_length: int = 20) -> None:
        if not 0 <= n_invalid < dim:
            raise ValueError(f"n_invalid must lie in [0, dim), got {n_invalid} of {dim}")
        self.dim, self.n_invalid, self.ep_length = dim, n_invalid, ep_length
        self.observation_space = gym.spaces.Box(0, 1, (dim,), np.float32)
        self.action_space = gym.spaces.Discrete(dim)
        self.state, self.invalid_actions, self._t = 0, np.zeros(0, int), 0

    def _next_state(self) -> np.ndarray:
        self.state = int(self.np_random.integers(self.dim))
        others = np.delete(np.arange(self.dim), self.state)
        self.invalid_actions = self.np_random.choice(others, self.n_invalid, replace=False)
        return np.eye(self.dim, dtype=np.float32)[self.state]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._next_state(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(int(action) == self.state)
        self._t += 1
        return self._next_state(), reward, False, self._t >= self.ep_length, {}

    def action_masks(self) -> list[bool]:
        return [action not in self.invalid_actions for action in range(self.dim)]


class Factored(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)

    def __init__(self, binary: bool = False) -> None:
        self.action_space = gym.spaces.MultiBinary(3) if binary else gym.spaces.MultiDiscrete([3, 2, 4])
        self._bins = np.array([2, 2, 2]) if binary else self.action_space.nvec

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        self._obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self._obs, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        best = np.minimum(((self._obs + 1) / 2 * self._bins).astype(int), self._bins - 1)
        reward = float(np.sum(np.asarray(action) == best))
        self._t += 1
        self._obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self._obs, reward, False, self._t >= 20, {}


class DictCartPole(gym.ObservationWrapper):
    def __init__(self) -> None:
        super().__init__(gym.make("CartPole-v1"))
        box = self.env.observation_space
        self.observation_space = gym.spaces.Dict(
            {
                "position": gym.spaces.Box(box.low[:2], box.high[:2], dtype=np.float32),
                "angle": gym.spaces.Box(box.low[2:], box.high[2:], dtype=np.float32),
            }
        )

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"position": observation[:2], "angle": observation[2:]}


for _env_id, _entry, _kwargs in (
    (MASKED_ENV, MaskedChoice, {}),
    (FACTORED_ENV, Factored, {}),
    (BINARY_ENV, Factored, {"binary": True}),
    (DICT_ENV, DictCartPole, {}),
):
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=_entry, kwargs=_kwargs)
