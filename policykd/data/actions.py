"""Turn a policy's outputs into env actions, the same way for teachers and students.

Output spaces, by kind:
- discrete: logits or Q-values ``(B, A)`` -> argmax, or a sample of softmax(logits); MultiDiscrete /
  MultiBinary actions are factorised: logits ``(B, F, C)`` (see :func:`factor_logits`) -> one
  argmax or sample per factor, ``(B, F)``;
- gaussian (PPO / A2C): mean in env units -> clipped to the Box bounds;
- squashed gaussian (SAC): pre-tanh mean -> tanh, rescaled from [-1, 1] to the bounds;
- deterministic (TD3 / DDPG): action in [-1, 1] -> rescaled to the bounds.
"""

from __future__ import annotations

from typing import TypeVar

import gymnasium as gym
import numpy as np
import torch

from policykd.errors import PolicyKDError
from policykd.types import StudentOutput, TeacherOutput

OutputT = TypeVar("OutputT", TeacherOutput, StudentOutput)

INVALID_LOGIT = -1e8
"""The logit of an action that cannot be taken (a choice a factor does not have, as factors with fewer
choices than the widest; an action an env's mask forbids): finite, so no NaN reaches a gradient, yet
its probability is exactly 0 and it is never an argmax or a sample."""


def mask_logits(logits: torch.Tensor, action_masks: torch.Tensor | np.ndarray | None) -> torch.Tensor:
    """``logits (B, A)`` with the actions ``action_masks (B, A)`` (True: allowed) forbids set to
    INVALID_LOGIT, as MaskablePPO masks its distribution; unchanged when ``action_masks`` is None."""
    if action_masks is None:
        return logits
    allowed = torch.as_tensor(np.asarray(action_masks, dtype=bool), device=logits.device)
    return torch.where(allowed, logits, torch.full_like(logits, INVALID_LOGIT))


def masked_output(out: OutputT, action_masks: torch.Tensor | np.ndarray | None) -> OutputT:
    """A teacher's ``categorical`` output or a student's ``discrete`` one with :func:`mask_logits`
    applied (other kinds, and ``action_masks`` None, unchanged). Masks are applied late: buffers keep
    the raw logits and the env's masks side by side."""
    if action_masks is None or out.logits is None:
        return out
    return out._replace(logits=mask_logits(out.logits, action_masks))


def factor_layout(action_space: gym.spaces.Space) -> tuple[tuple[int, ...], bool]:
    """``(nvec, binary)`` of a factorised action space: MultiDiscrete ``(nvec, False)``, MultiBinary(n)
    ``((2,) * n, True)``, any other space ``((), False)``. Flat spaces only, each factor starting at 0."""
    if isinstance(action_space, gym.spaces.MultiBinary):
        if not isinstance(action_space.n, (int, np.integer)):
            raise PolicyKDError(f"action space {action_space} is not supported: MultiBinary must be flat (n an int)")
        return (2,) * int(action_space.n), True
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1 or np.any(action_space.start != 0):
            raise PolicyKDError(
                f"action space {action_space} is not supported: MultiDiscrete must be flat and start at 0 (as SB3's)"
            )
        return tuple(int(n) for n in action_space.nvec), False
    return (), False


def factor_logits(flat: torch.Tensor, nvec: tuple[int, ...], binary: bool) -> torch.Tensor:
    """A factorised policy's flat output as per-factor logits ``(B, F, C)``, C = max(nvec).

    MultiDiscrete: SB3's ``action_net`` output ``(B, sum(nvec))``, split per factor, each padded to C
    with INVALID_LOGIT. MultiBinary: SB3's Bernoulli logits ``(B, F)`` as ``[0, logit]`` pairs,
    whose softmax is ``[1 - sigmoid(logit), sigmoid(logit)]``. A softmax over the last axis is then
    SB3's distribution, factor by factor."""
    if binary:
        return torch.stack([torch.zeros_like(flat), flat], dim=-1)
    width = max(nvec)
    parts = torch.split(flat, list(nvec), dim=-1)
    padded = [torch.nn.functional.pad(part, (0, width - part.shape[-1]), value=INVALID_LOGIT) for part in parts]
    return torch.stack(padded, dim=-2)


class ActionMapper:
    def __init__(self, action_space: gym.spaces.Space, *, squash: bool = False) -> None:
        self.nvec, _ = factor_layout(action_space)
        self.discrete = isinstance(action_space, gym.spaces.Discrete) or bool(self.nvec)
        self.squash = squash
        if isinstance(action_space, gym.spaces.Discrete):
            self.n_actions = int(action_space.n)
        elif not self.nvec:
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
        probs = torch.softmax(logits.double(), dim=-1).cpu().numpy()  # (B, A) or, factorised, (B, F, C)
        u = (rng or np.random.default_rng()).random((*probs.shape[:-1], 1))
        last = np.asarray(self.nvec) - 1 if self.nvec else probs.shape[-1] - 1  # never a padded choice
        return np.minimum((probs.cumsum(axis=-1) < u).sum(axis=-1), last)

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

    def random(self, n: int, rng: np.random.Generator, action_masks: np.ndarray | None = None) -> np.ndarray:
        """Uniform random env actions ``(n,)`` / ``(n, F)`` / ``(n, D)`` for epsilon-greedy exploration;
        with ``action_masks (n, A)``, uniform over the allowed actions."""
        if action_masks is not None:
            return self._discrete(mask_logits(torch.zeros(np.shape(action_masks)), action_masks), False, rng)
        if self.nvec:
            return rng.integers(0, self.nvec, size=(n, len(self.nvec)))
        if self.discrete:
            return rng.integers(0, self.n_actions, size=n)
        return rng.uniform(self.low, self.high, size=(n, *self.low.shape)).astype(np.float32)

    def epsilon_greedy(self, actions: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """``actions`` with each replaced by a uniform random one with probability ``epsilon``."""
        random_mask = rng.random(len(actions)) < epsilon
        random_mask = random_mask.reshape(-1, *([1] * (np.ndim(actions) - 1)))  # a whole factorised action
        return np.where(random_mask, self.random(len(actions), rng), actions)
