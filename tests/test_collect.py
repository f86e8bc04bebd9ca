"""collect_rollouts with the shipped CartPole teacher on 4 envs: labels are the teacher's at the
stored observations whoever drives, epsilon explores, episode bookkeeping follows the env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policykd.data.buffers import DRIVER_STUDENT, DRIVER_TEACHER, LabelledBuffer
from policykd.data.collect import CollectStats, check_spaces, collect_rollouts
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.errors import PolicyKDError

N_ENVS = 4


@pytest.fixture
def venv(cartpole_teacher):
    env = make_vec_env(cartpole_teacher.recipe, N_ENVS, seed=0)
    yield env
    env.close()


def collect(venv, teacher, n_transitions: int, seed: int = 0, **kwargs) -> tuple[LabelledBuffer, CollectStats]:
    return collect_rollouts(venv, [teacher], n_transitions, rng=np.random.default_rng(seed), **kwargs)


def chronological(buffer: LabelledBuffer, name: str) -> np.ndarray:
    """Column ``name`` as ``(steps, n_envs, ...)``, oldest step first."""
    column = buffer.column(name)[buffer.chronological_indices()]
    return column.reshape(-1, N_ENVS, *column.shape[1:])


def assert_labels_are_the_teachers(buffer: LabelledBuffer, teacher, n: int = 64) -> None:
    indices = np.random.default_rng(1).choice(len(buffer), size=n, replace=False)
    batch = buffer.batch_at(indices)
    relabelled = teacher(batch.observations.numpy())
    stored = batch.teacher_outputs[0]
    assert stored.kind == "categorical"
    torch.testing.assert_close(stored.logits, relabelled.logits)
    torch.testing.assert_close(stored.value, relabelled.value)


def episode_returns_in(buffer: LabelledBuffer) -> list[float]:
    """Returns of the episodes that ended inside the buffer, summed from its stored rewards."""
    rewards = chronological(buffer, "rewards")
    ended = chronological(buffer, "terminated") | chronological(buffer, "truncated")
    running, returns = np.zeros(N_ENVS), []
    for step_rewards, step_ended in zip(rewards, ended):
        running += step_rewards
        returns += running[step_ended].tolist()
        running[step_ended] = 0.0
    return returns


def test_teacher_driven_rollouts_store_the_teachers_labels(venv, cartpole_teacher):
    buffer, stats = collect(venv, cartpole_teacher, 2_000, meta={"note": "test"})
    assert len(buffer) == stats.n_transitions == 2_000 and stats.n_teacher_steps == 2_000
    assert buffer.meta == {"note": "test"}
    assert_labels_are_the_teachers(buffer, cartpole_teacher)
    logits = buffer.column("teacher_logits")[:, 0]
    np.testing.assert_array_equal(buffer.column("actions"), logits.argmax(axis=1))  # greedy, epsilon = 0
    assert (buffer.column("drivers") == DRIVER_TEACHER).all()
    assert buffer.driver_shares() == {"teacher": 1.0, "student": 0.0}
    # the teacher balances the pole for the full 500 steps: every env ends one episode, truncated
    assert stats.episode_returns == [500.0] * N_ENVS and stats.episode_lengths == [500] * N_ENVS
    assert sorted(episode_returns_in(buffer)) == sorted(stats.episode_returns)
    assert buffer.column("truncated").sum() == N_ENVS and not buffer.column("terminated").any()


def test_epsilon_one_acts_at_random(venv, cartpole_teacher):
    buffer, stats = collect(venv, cartpole_teacher, 2_000, epsilon=1.0)
    greedy = buffer.column("teacher_logits")[:, 0].argmax(axis=1)
    disagreement = (buffer.column("actions") != greedy).mean()
    assert disagreement == pytest.approx(1 - 1 / 2, abs=0.05)  # (1 - 1/A) with A = 2
    assert_labels_are_the_teachers(buffer, cartpole_teacher)
    # random play ends many short episodes; each return is its length (reward 1 per step) ...
    assert len(stats.episode_returns) > 40 and np.mean(stats.episode_returns) < 60
    assert stats.episode_returns == [float(length) for length in stats.episode_lengths]
    # ... and the buffer's rewards add up to the same episodes
    assert sorted(episode_returns_in(buffer)) == sorted(stats.episode_returns)


def test_episode_starts_follow_dones(venv, cartpole_teacher):
    buffer, _ = collect(venv, cartpole_teacher, 1_200, epsilon=1.0)
    starts = chronological(buffer, "episode_starts")
    dones = chronological(buffer, "terminated") | chronological(buffer, "truncated")
    assert starts[0].all(), "the first step of every env starts an episode"
    np.testing.assert_array_equal(starts[1:], dones[:-1])
    assert dones.any() and not starts[1:].all()


def test_student_driven_rollouts_keep_the_teachers_targets(venv, cartpole_teacher):
    always_left = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    buffer, stats = collect(venv, cartpole_teacher, 800, beta=0.0, student_act=always_left)
    assert (buffer.column("drivers") == DRIVER_STUDENT).all()
    assert buffer.driver_shares()["student"] == 1.0 and stats.n_teacher_steps == 0
    assert (buffer.column("actions") == 0).all(), "the student's actions are what the env received"
    assert_labels_are_the_teachers(buffer, cartpole_teacher)
    teacher_choice = buffer.column("teacher_logits")[:, 0].argmax(axis=1)
    assert (teacher_choice == 1).mean() > 0.5, "targets are the teacher's (it pushes right), not the student's actions"
    assert stats.episode_returns and max(stats.episode_returns) < 50


def test_a_beta_mixture_splits_the_steps(venv, cartpole_teacher):
    always_left = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731
    buffer, stats = collect(venv, cartpole_teacher, 1_200, beta=0.5, student_act=always_left)
    drivers, actions = buffer.column("drivers"), buffer.column("actions")
    greedy = buffer.column("teacher_logits")[:, 0].argmax(axis=1)
    assert buffer.driver_shares()["teacher"] == pytest.approx(0.5, abs=0.06)
    assert stats.n_teacher_steps == (drivers == DRIVER_TEACHER).sum()
    np.testing.assert_array_equal(actions[drivers == DRIVER_TEACHER], greedy[drivers == DRIVER_TEACHER])
    assert (actions[drivers == DRIVER_STUDENT] == 0).all()


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan")])
def test_beta_outside_unit_interval_is_refused(venv, cartpole_teacher, beta):
    with pytest.raises(PolicyKDError, match="beta"):
        collect(venv, cartpole_teacher, 100, beta=beta, student_act=lambda obs: np.zeros(len(obs), np.int64))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.5}, "student must be given"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"action_noise": -1.0}, "noise"),
        ({"n_transitions": 0}, "n_transitions"),
    ],
)
def test_other_bad_arguments_are_refused(venv, cartpole_teacher, kwargs, message):
    n_transitions = kwargs.pop("n_transitions", 100)
    with pytest.raises(PolicyKDError, match=message):
        collect(venv, cartpole_teacher, n_transitions, **kwargs)


def test_a_teacher_for_another_env_is_refused(cartpole_teacher):
    env = make_vec_env(EnvRecipe("Acrobot-v1"), 1, seed=0)
    try:
        with pytest.raises(PolicyKDError, match="observation space"):
            check_spaces(cartpole_teacher, env)
    finally:
        env.close()


def test_collect_stats_count_one_vector_step():
    stats = CollectStats()
    infos = [{}, {"episode": {"r": 12.5, "l": 9}}, {"TimeLimit.truncated": True}]
    stats.count(np.array([True, False, True]), infos)
    stats.count(np.array([False, False, False]), [{}, {}, {"episode": {"r": 3.0, "l": 3}}])
    assert stats.n_transitions == 6 and stats.n_teacher_steps == 2
    assert stats.episode_returns == [12.5, 3.0] and stats.episode_lengths == [9, 3]
    assert stats.to_json()["episode_lengths"] == [9, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"teacher_drive": "nobody"}, "unknown teacher drive"),
        ({"teacher_drive": "merged"}, "needs a merge function"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"action_noise": float("nan")}, "noise"),
        ({"n_transitions": 10.0}, "n_transitions"),
        ({"n_transitions": True}, "n_transitions"),
    ],
)
def test_bad_drives_and_numbers_are_refused(venv, cartpole_teacher, kwargs, message):
    n_transitions = kwargs.pop("n_transitions", 100)
    with pytest.raises(PolicyKDError, match=message):
        collect(venv, cartpole_teacher, n_transitions, **kwargs)
    with pytest.raises(PolicyKDError, match="at least one teacher"):
        collect_rollouts(venv, [], 100, rng=np.random.default_rng(0))
