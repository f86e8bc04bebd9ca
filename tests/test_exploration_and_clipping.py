"""Paths that had no test of their own: Gaussian action noise while collecting, the trainer's
gradient-norm clipping, and frame-deduplicated stacks that cross an episode start mid-stack."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from policykd.data.actions import ActionMapper
from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import collect_rollouts
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.learn.losses import KLLoss
from policykd.learn.students import make_student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.types import TeacherOutput

# -- action noise ------------------------------------------------------------------------------------


class CentredTeacher:
    """A TD3-like teacher that always asks for the middle of Pendulum's torque range (0)."""

    kind = "deterministic"

    def __init__(self) -> None:
        self.recipe = EnvRecipe("Pendulum-v1")
        self.mapper = ActionMapper(gym.spaces.Box(-2.0, 2.0, (1,), np.float32))

    def __call__(self, obs: np.ndarray) -> TeacherOutput:
        return TeacherOutput("deterministic", action=torch.zeros(len(obs), 1), value=torch.zeros(len(obs)))


def _collected_actions(action_noise: float, seed: int = 0, epsilon: float = 0.0) -> np.ndarray:
    venv = make_vec_env(EnvRecipe("Pendulum-v1"), 4, seed=0)
    try:
        buffer, _ = collect_rollouts(
            venv,
            [CentredTeacher()],
            4_000,
            rng=np.random.default_rng(seed),
            action_noise=action_noise,
            epsilon=epsilon,
        )
    finally:
        venv.close()
    return buffer.column("actions")[:, 0]


def test_action_noise_is_gaussian_with_the_fraction_of_the_half_range():
    """Noise 0.3 on Pendulum (half range 2): actions ~ N(0, 0.6), clipped to [-2, 2]."""
    assert (_collected_actions(0.0) == 0.0).all()
    actions = _collected_actions(0.3)
    assert abs(actions.mean()) < 0.05 and actions.std() == pytest.approx(0.6, rel=0.05)
    assert np.abs(actions).max() <= 2.0 and (np.abs(actions) == 2.0).mean() < 0.01  # 3.3 std: rarely clipped
    np.testing.assert_array_equal(actions, _collected_actions(0.3))  # the rng passed in decides it
    assert not np.array_equal(actions, _collected_actions(0.3, seed=1))
    np.testing.assert_array_equal(_collected_actions(0.3, epsilon=0.5), actions)  # epsilon is for discrete actions


def test_large_action_noise_is_clipped_to_the_bounds():
    actions = _collected_actions(5.0)
    assert np.abs(actions).max() == 2.0 and (np.abs(actions) == 2.0).mean() > 0.5


# -- gradient clipping -------------------------------------------------------------------------------


def _trainer(max_grad_norm: float | None) -> Trainer:
    """A fresh student and a batch whose targets are far from it, so its gradient norm is large."""
    obs_space, act_space = spaces.Box(-np.inf, np.inf, (6,), np.float32), spaces.Discrete(4)
    obs = np.random.default_rng(0).standard_normal((256, 6)).astype(np.float32)
    logits = torch.as_tensor(50.0 * obs[:, :4])
    outputs = [TeacherOutput("categorical", logits=logits, value=torch.zeros(256))]
    buffer = LabelledBuffer.for_teachers(256, obs_space, act_space, outputs)
    zeros = np.zeros(256)
    buffer.add(obs, zeros.astype(np.int64), zeros, zeros > 0, zeros > 0, zeros > 0, 0, outputs)
    torch.manual_seed(0)
    student = make_student("categorical", obs_space, act_space, hidden_sizes=(16,))
    config = TrainerConfig(n_updates=1, batch_size=64, max_grad_norm=max_grad_norm, progress_bar=False)
    return Trainer(student, KLLoss(), buffer, config=config)


def _gradient(trainer: Trainer) -> torch.Tensor:
    """The gradient the optimizer stepped with (left in ``.grad`` after ``step``)."""
    return torch.cat([p.grad.flatten() for p in trainer.student.parameters()])


@pytest.mark.parametrize("max_grad_norm", [0.01, 0.1])
def test_max_grad_norm_clips_the_step_gradient_and_keeps_its_direction(max_grad_norm):
    unclipped, clipped = _trainer(None), _trainer(max_grad_norm)
    unclipped.step(), clipped.step()
    raw, kept = _gradient(unclipped), _gradient(clipped)
    assert raw.norm() > 2 * max_grad_norm  # the test needs a gradient the clip must act on
    assert kept.norm().item() == pytest.approx(max_grad_norm, rel=1e-4)
    torch.testing.assert_close(kept, raw * (max_grad_norm / raw.norm()), rtol=1e-4, atol=1e-7)


def test_a_gradient_below_max_grad_norm_is_left_alone():
    unclipped, loose = _trainer(None), _trainer(1e6)
    unclipped.step(), loose.step()
    torch.testing.assert_close(_gradient(loose), _gradient(unclipped))
    for a, b in zip(unclipped.student.parameters(), loose.student.parameters()):  # and so is the step
        torch.testing.assert_close(a, b)


# -- frame-deduplicated stacks across episode starts -------------------------------------------------


class CountingFrames(gym.Env):
    """1x2x2 uint8 frames counting the steps of an episode (1, 2, 3, ... ) plus 100 x the episode
    number; episodes last ``lengths[k % len(lengths)]`` steps, shorter than a 4-frame stack."""

    observation_space = spaces.Box(0, 255, (1, 2, 2), np.uint8)
    action_space = spaces.Discrete(2)

    def __init__(self, lengths: tuple[int, ...]) -> None:
        self.lengths, self.episode, self.t = lengths, -1, 0

    def _frame(self) -> np.ndarray:
        return np.full((1, 2, 2), (100 * self.episode + self.t + 1) % 256, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.lengths[self.episode % len(self.lengths)]
        return self._frame(), 0.0, done, False, {}


def test_deduplicated_stacks_zero_fill_behind_an_episode_start_as_vecframestack_does():
    """Two envs whose episodes (2, 3, 5 and 1, 4 steps) end inside 4-frame stacks, at different
    steps: every stack rebuilt from the stored newest frames is the one SB3's VecFrameStack gave."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    venv = VecFrameStack(
        DummyVecEnv([lambda: CountingFrames((2, 3, 5)), lambda: CountingFrames((1, 4))]), 4, channels_order="first"
    )
    out = TeacherOutput("categorical", logits=torch.zeros(2, 2), value=torch.zeros(2))
    layout = dict(capacity=60, observation_space=venv.observation_space, action_space=venv.action_space)
    dedup = LabelledBuffer.for_teachers(**layout, teacher_outputs_example=[out], frame_stack=4, n_envs=2)
    full = LabelledBuffer.for_teachers(**layout, teacher_outputs_example=[out])
    obs, starts, given = venv.reset(), np.ones(2, bool), []
    for _ in range(30):
        for buffer in (dedup, full):
            buffer.add(obs, np.zeros(2, np.int64), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), starts, 0, [out])
        given.append(obs)
        obs, _, starts, _ = venv.step(np.zeros(2, np.int64))
    assert dedup.column("observations").shape[1:] == (1, 2, 2)
    rebuilt = dedup.batch_at(np.arange(60)).observations.numpy()
    np.testing.assert_array_equal(rebuilt, np.concatenate(given))
    np.testing.assert_array_equal(rebuilt, full.batch_at(np.arange(60)).observations.numpy())
    # the stacks do cross episode starts mid-stack, with zeros behind the start
    newest, oldest = rebuilt[:, 3, 0, 0], rebuilt[:, 0, 0, 0]
    assert ((newest % 100 <= 3) & (newest > 100) & (oldest == 0)).sum() >= 10
