"""A student sees what its teacher sees: VecNormalize statistics and their clip, copied from a
VecNormalize teacher by ``make_student_for``, kept through save / load and the ONNX export."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from policykd.data.teachers import load_teacher
from policykd.jobs.distill import make_student_for
from policykd.learn.students import Student

CLIP_OBS = 3.0  # below VecNormalize's default 10, so a student that ignores the teacher's clip shows it


@pytest.fixture(scope="module")
def vecnormalize_teacher_dir(tmp_path_factory) -> Path:
    """An rl-zoo folder for a PPO trained a few hundred steps on Pendulum inside VecNormalize
    (clip_obs=3): ``ppo/Pendulum-v1_1/Pendulum-v1.zip`` + ``Pendulum-v1/{config.yml,vecnormalize.pkl}``."""
    import gymnasium as gym
    import yaml
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    run_dir = tmp_path_factory.mktemp("zoo") / "ppo" / "Pendulum-v1_1"
    (run_dir / "Pendulum-v1").mkdir(parents=True)
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=CLIP_OBS)
    model = PPO("MlpPolicy", venv, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    model.save(run_dir / "Pendulum-v1.zip")
    venv.save(run_dir / "Pendulum-v1" / "vecnormalize.pkl")
    (run_dir / "Pendulum-v1" / "config.yml").write_text(yaml.dump({"policy": "MlpPolicy", "normalize": True}))
    venv.close()
    return run_dir


def _far_observations(teacher, n: int = 64) -> np.ndarray:
    """Observations from 0 to 20 standard deviations away from the teacher's statistics."""
    rng = np.random.default_rng(0)
    norm = teacher.normalizer
    scale = rng.uniform(0.0, 20.0, (n, 1)) * rng.choice([-1.0, 1.0], (n, *norm.mean.shape))
    return (norm.mean + scale * norm.std).astype(np.float32)


def test_the_student_normalises_and_clips_as_its_vecnormalize_teacher(vecnormalize_teacher_dir):
    from stable_baselines3.common.vec_env import VecNormalize

    teacher = load_teacher(vecnormalize_teacher_dir)
    assert teacher.normalizer is not None and teacher.normalizer.clip == CLIP_OBS
    torch.manual_seed(0)
    student = make_student_for(teacher, teacher.kind, (16,))
    assert student.config.obs_clip == CLIP_OBS
    obs = _far_observations(teacher)
    seen = student.normalize_input(torch.as_tensor(obs)).numpy()
    expected = teacher.normalizer(obs)
    assert np.abs(expected).max() == pytest.approx(CLIP_OBS) and (np.abs(expected) == CLIP_OBS).mean() > 0.3
    np.testing.assert_allclose(seen, expected, rtol=1e-5, atol=1e-5)
    # and both are what SB3's own VecNormalize feeds the policy
    with open(vecnormalize_teacher_dir / "Pendulum-v1" / "vecnormalize.pkl", "rb") as f:
        vec_normalize = pickle.load(f)  # noqa: S301 - the file this test just wrote with SB3
    assert isinstance(vec_normalize, VecNormalize)
    np.testing.assert_allclose(seen, vec_normalize.normalize_obs(obs), rtol=1e-5, atol=1e-5)


def test_inputs_beyond_the_clip_act_as_the_clip_itself(vecnormalize_teacher_dir, tmp_path):
    """After save / load: an observation 10 or 1,000 standard deviations out gets the student's
    output at the clip boundary, so the student never extrapolates where its teacher did not."""
    teacher = load_teacher(vecnormalize_teacher_dir)
    torch.manual_seed(0)
    make_student_for(teacher, teacher.kind, (16,)).save(tmp_path / "student")
    student = Student.load(tmp_path / "student")
    assert student.config.obs_clip == CLIP_OBS
    norm = teacher.normalizer
    boundary = norm.mean + CLIP_OBS * norm.std
    outputs = [student(torch.as_tensor(np.float32(norm.mean + k * norm.std)[None])).mean for k in (CLIP_OBS, 10, 1e3)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs[2], outputs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(student.normalize_input(torch.as_tensor(boundary[None])).numpy()[0], CLIP_OBS, rtol=1e-5)


def test_a_student_saved_before_the_clip_loads_unclipped(vecnormalize_teacher_dir, tmp_path):
    teacher = load_teacher(vecnormalize_teacher_dir)
    make_student_for(teacher, teacher.kind, (16,)).save(tmp_path / "student")
    config_path = tmp_path / "student" / "student.json"
    config = json.loads(config_path.read_text())
    del config["obs_clip"]  # what policykd wrote before the clip was stored
    config_path.write_text(json.dumps(config))
    student = Student.load(tmp_path / "student")
    assert student.config.obs_clip is None
    norm = teacher.normalizer
    far = (norm.mean + 50.0 * norm.std)[None].astype(np.float32)
    np.testing.assert_allclose(student.normalize_input(torch.as_tensor(far)).numpy(), 50.0, rtol=1e-4)


def test_a_teacher_without_vecnormalize_gives_a_student_without_clip(cartpole_teacher):
    student = make_student_for(cartpole_teacher, cartpole_teacher.kind, (8,))
    assert student.config.obs_clip is None
    obs = torch.tensor([[100.0, -100.0, 5.0, 1e4]])
    torch.testing.assert_close(student.normalize_input(obs), obs)
