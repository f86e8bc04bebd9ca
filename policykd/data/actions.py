"""Turn a policy's outputs into env actions, the same way for teachers and students.

Output spaces, by kind:
- discrete: logits or Q-values ``(B, A)`` -> argmax, or a sample of softmax(logits);
- gaussian (PPO / A2C): mean in env units -> clipped to the Box bounds;
- squashed gaussian (SAC): pre-tanh mean -> tanh, rescaled from [-1, 1] to the bounds;
- deterministic (TD3 / DDPG): action in [-1, 1] -> rescaled to the bounds.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from policykd.types import StudentOutput, TeacherOutput


class ActionMapper:
    def __init__(self, action_space: gym.spaces.Space, *, squash: bool = False) -> None:
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.squash = squash
        if self.discrete:
            self.n_actions = int(action_space.n)
        else:
            self.low = np.asarray(action_space.low, dtype=np.float32)
            self.high = np.asarray(action_space.high, dtype=np.float32)

    def to_env(self, action: torch.Tensor, deterministic_kind: bool = False) -> torch.Tensor:
        """A continuous policy's action in its own space -> env units, as the module docstring
        lists (``deterministic_kind``: a TD3 / DDPG action, already in [-1, 1]). Torch ops only,
        so an exported student (``policykd export``) computes exactly what ``act`` does."""
        low, high = (torch.as_tensor(bound, device=action.device) for bound in (self.low, self.high))
        if not (deterministic_kind or self.squash):
            return torch.clamp(action, low, high)
        unit = action if deterministic_kind else torch.tanh(action)
        return low + (torch.clamp(unit, -1.0, 1.0) + 1.0) * 0.5 * (high - low)

    def greedy(self, out: StudentOutput) -> torch.Tensor:
        """A student's greedy env action, as a tensor: argmax, or the mean mapped by ``to_env``."""
        if out.kind == "discrete":
            return out.logits.argmax(dim=-1)
        if out.kind == "deterministic":
            return self.to_env(out.action, deterministic_kind=True)
        return self.to_env(out.mean)

    def _discrete(self, logits: torch.Tensor, deterministic: bool, rng: np.random.Generator | None) -> np.ndarray:
        if deterministic:
            return logits.argmax(dim=-1).cpu().numpy()
        probs = torch.softmax(logits.double(), dim=-1).cpu().numpy()
        u = (rng or np.random.default_rng()).random((probs.shape[0], 1))
        return np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)

    def _gaussian(
        self, mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool, rng: np.random.Generator | None
    ) -> np.ndarray:
        action = mean.detach().cpu().float()
        if not deterministic:
            noise = (rng or np.random.default_rng()).standard_normal(tuple(action.shape)).astype(np.float32)
            action = action + torch.from_numpy(noise) * log_std.detach().cpu().exp()
        return self.to_env(action).numpy()

    def _deterministic(self, action: torch.Tensor) -> np.ndarray:
        return self.to_env(action.detach().cpu().float(), deterministic_kind=True).numpy()

    def from_teacher(
        self, out: TeacherOutput, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        if out.kind == "categorical":
            return self._discrete(out.logits, deterministic, rng)
        if out.kind in ("q_values", "quantiles"):
            return self._discrete(out.q_values, True, rng)  # a Q-learner acts greedily
        if out.kind == "deterministic":
            return self._deterministic(out.action)
        return self._gaussian(out.mean, out.log_std, deterministic, rng)

    def from_student(
        self, out: StudentOutput, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        if out.kind == "discrete":
            return self._discrete(out.logits, deterministic, rng)
        if out.kind == "deterministic":
            return self._deterministic(out.action)
        return self._gaussian(out.mean, out.log_std, deterministic, rng)

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Uniform random env actions ``(n,)`` / ``(n, D)`` for epsilon-greedy exploration."""
        if self.discrete:
            return rng.integers(0, self.n_actions, size=n)
        return rng.uniform(self.low, self.high, size=(n, *self.low.shape)).astype(np.float32)

    def epsilon_greedy(self, actions: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """``actions`` with each replaced by a uniform random one with probability ``epsilon``."""
        random_mask = rng.random(len(actions)) < epsilon
        return np.where(random_mask, self.random(len(actions), rng), actions)
