"""Dict observations (MultiInputPolicy teachers): flat rows in the env, the buffer and the student;
the teacher takes each row apart and labels it through SB3's own preprocessing.

The adapter-equals-SB3 checks and ``distill`` of each (algorithm, dict) pair are matrix cases in
``tests/test_teacher_matrix.py``; here: the env wrapper, the buffer's saved header, a distilled
student that acts like its teacher, and the refusals.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from policykd.data.envs import EnvRecipe, flatten_dict_obs, make_vec_env, unflatten_dict_obs
from policykd.data.teachers import ObsNormalizer, Teacher, load_teacher
from policykd.errors import PolicyKDError
from tests.test_teacher_matrix import DICT_DISCRETE_ENV


@pytest.fixture(scope="module")
def dict_ppo(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A PPO MultiInputPolicy expert on CartPole split into ``head`` (x, x') and ``tail`` (theta, theta'),
    trained long enough to balance better than chance."""
    from stable_baselines3 import PPO

    model = PPO("MultiInputPolicy", DICT_DISCRETE_ENV, seed=0, device="cpu", n_steps=256, batch_size=64)
    model.learn(4_096)
    path = tmp_path_factory.mktemp("dict") / "ppo.zip"
    model.save(path)
    return model, path


def test_env_rows_are_the_keys_concatenated_in_order() -> None:
    """Each row is head then tail (the space's key order), terminal observations too, and unflattening
    gives back the dict the env produced."""
    venv = make_vec_env(EnvRecipe(DICT_DISCRETE_ENV), 2, 0)
    raw = make_vec_env(EnvRecipe("CartPole-v1"), 2, 0)
    try:
        assert venv.observation_space.shape == (4,) and venv.observation_space.dtype == np.float32
        obs, expected = venv.reset(), raw.reset()
        np.testing.assert_array_equal(obs, expected)
        n_ends = 0
        for _ in range(60):  # always left: episodes end within about ten steps
            actions = np.zeros(2, dtype=np.int64)
            (obs, _, _, infos), (expected, _, _, raw_infos) = venv.step(actions), raw.step(actions)
            np.testing.assert_array_equal(obs, expected)
            for info, raw_info in zip(infos, raw_infos):
                if "terminal_observation" in raw_info:
                    np.testing.assert_array_equal(info["terminal_observation"], raw_info["terminal_observation"])
                    n_ends += 1
        assert n_ends > 2
        dict_space = venv.dict_space
        parts = unflatten_dict_obs(dict_space, obs)
        assert set(parts) == {"head", "tail"} and parts["head"].shape == (2, 2)
        np.testing.assert_array_equal(flatten_dict_obs(dict_space, parts), obs)
    finally:
        venv.close()
        raw.close()


def test_distilled_student_acts_like_its_dict_teacher(dict_ppo, tmp_path: Path) -> None:
    """distill end to end: the saved buffer holds one column per key (observations/<key>, named in its
    JSON header) and loads back as flat rows; the saved student loads and acts
    in the dict env as its teacher does on most states, and scores near it."""
    from policykd.data.buffers import LabelledBuffer
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill
    from policykd.learn.students import Student

    model, path = dict_ppo
    config = DistillConfig(
        teacher=str(path), env_id=DICT_DISCRETE_ENV, loss="kl", n_transitions=2_048, n_updates=1_500,
        batch_size=64, hidden_sizes=(32,), n_eval_episodes=4, teacher_check=False, progress_bar=False,
        out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    summary = distill(config)
    saved = next((tmp_path / "run").rglob("*.npz"))
    with np.load(saved, allow_pickle=False) as data:  # one column per key, named in the JSON header
        assert json.loads(str(data["__header__"][()]))["observation_keys"] == {"head": [2], "tail": [2]}
        assert "observations" not in data.files
        head, tail = data["observations/head"], data["observations/tail"]
    assert head.shape == tail.shape == (2_048, 2)
    buffer = LabelledBuffer.load(saved)
    np.testing.assert_array_equal(buffer.column("observations"), np.concatenate([head, tail], axis=1))
    copy = tmp_path / "copy.npz"
    buffer.save(copy)  # round trip: the same columns again
    np.testing.assert_array_equal(LabelledBuffer.load(copy).column("observations"), buffer.column("observations"))
    student = Student.load(tmp_path / "run" / "student")
    teacher = load_teacher(path, env_id=DICT_DISCRETE_ENV)
    obs = buffer.column("observations")[:512]
    sb3_actions, _ = model.predict(unflatten_dict_obs(teacher.dict_space, obs), deterministic=True)
    np.testing.assert_array_equal(teacher.act(obs), sb3_actions)
    assert np.mean(student.act(obs) == sb3_actions) > 0.9
    assert summary["teacher_return_mean"] > 50  # random play scores about 22
    assert summary["student_return_mean"] > 0.5 * summary["teacher_return_mean"]


def _dict_policy(space: gym.spaces.Dict) -> object:
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    return MultiInputActorCriticPolicy(space, gym.spaces.Discrete(2), lambda _: 0.0)


def test_vecnormalize_with_dict_observations_is_refused_in_one_line() -> None:
    space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (3,), np.float32)})
    normalizer = ObsNormalizer(np.zeros(3), np.ones(3), 10.0, 1e-8)
    with pytest.raises(PolicyKDError, match="VecNormalize with dict observations") as err:
        Teacher(_dict_policy(space), algo="ppo", source="memory", recipe=EnvRecipe("none"), normalizer=normalizer)
    assert "\n" not in str(err.value)


def test_dict_teacher_labels_rows_as_sb3_labels_the_dict() -> None:
    """Keys of different sizes and an order other than their insertion order: the row is split by the
    space's (sorted) key order, as SB3's CombinedExtractor reads it."""
    space = gym.spaces.Dict(
        {"z": gym.spaces.Box(-1, 1, (1,), np.float32), "a": gym.spaces.Box(-1, 1, (2, 2), np.float32)}
    )
    policy = _dict_policy(space)
    teacher = Teacher(policy, algo="ppo", source="memory", recipe=EnvRecipe("none"))
    assert list(space.spaces) == ["a", "z"] and teacher.observation_space.shape == (5,)
    rows = np.random.default_rng(0).uniform(-1, 1, (8, 5)).astype(np.float32)
    parts = {"a": rows[:, :4].reshape(8, 2, 2), "z": rows[:, 4:]}
    with torch.no_grad():
        expected = policy.get_distribution(policy.obs_to_tensor(parts)[0]).distribution.logits
    torch.testing.assert_close(teacher(rows).logits, torch.log_softmax(expected, dim=-1))
