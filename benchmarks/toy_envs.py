"""Small envs for the teacher pairs rl_zoo3 2.9.2 has no env or hyperparameters for (action masks,
MultiDiscrete / MultiBinary actions, dict observations), registered with gymnasium on import.

- ``PolicykdMaskedChoice-v0``: sb3-contrib's ``InvalidActionEnvDiscrete`` (10 states, 4 of the 10
  actions forbidden each step, never the right one; reward 1 for the action equal to the state,
  20 steps), its state one-hot encoded, ``action_masks()`` passed through: MaskablePPO.
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


class OneHotMaskedChoice(gym.ObservationWrapper):
    def __init__(self, dim: int = 10, n_invalid: int = 4) -> None:
        from sb3_contrib.common.envs import InvalidActionEnvDiscrete

        super().__init__(InvalidActionEnvDiscrete(dim=dim, ep_length=20, n_invalid_actions=n_invalid))
        self._dim = dim
        self.observation_space = gym.spaces.Box(0, 1, (dim,), np.float32)

    def observation(self, observation: int) -> np.ndarray:
        return np.eye(self._dim, dtype=np.float32)[int(observation)]

    def action_masks(self) -> list[bool]:
        return self.env.unwrapped.action_masks()


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
    (MASKED_ENV, OneHotMaskedChoice, {}),
    (FACTORED_ENV, Factored, {}),
    (BINARY_ENV, Factored, {"binary": True}),
    (DICT_ENV, DictCartPole, {}),
):
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=_entry, kwargs=_kwargs)
