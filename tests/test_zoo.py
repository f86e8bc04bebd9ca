"""Every shipped expert loads with its recipe and steps; the classic-control ones still play at
their recorded level; an Atari zoo folder rebuilds its wrappers and feeds a CNN student."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import collect_rollouts
from policykd.data.envs import make_vec_env
from policykd.data.teachers import load_teacher
from policykd.jobs.evaluate import episode_returns
from policykd.learn.losses import make_loss
from policykd.learn.students import make_student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.zoo.presets import ZOO_DIR

FINISHED = sorted(
    p.parent for p in ZOO_DIR.glob("*/*_*/expert.json") if json.loads(p.read_text()).get("status") == "finished"
)
CLASSIC = ("CartPole", "Acrobot", "Pendulum", "LunarLander", "MountainCar")


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "expert.json").read_text())


@pytest.mark.parametrize("run_dir", FINISHED, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_every_shipped_expert_loads_and_steps(run_dir: Path) -> None:
    record = _record(run_dir)
    teacher = load_teacher(run_dir)
    assert teacher.recipe.env_id == record["env_id"]
    venv = make_vec_env(teacher.recipe, 2, seed=0)
    obs = venv.reset()
    out = teacher(obs)
    assert out.kind == teacher.kind and out.value is not None and out.value.shape == (2,)
    venv.step(teacher.act(obs))
    venv.close()
    assert record["score"] is not None, f"{run_dir}: measure it with benchmarks/check_zoo.py --record"


@pytest.mark.parametrize(
    "run_dir", [p for p in FINISHED if p.name.startswith(CLASSIC)], ids=lambda p: f"{p.parent.name}-{p.name}"
)
def test_classic_experts_still_play_at_their_recorded_level(run_dir: Path) -> None:
    from policykd.jobs.evaluate import RandomPolicy, evaluate_policy

    score = _record(run_dir)["score"]
    teacher = load_teacher(run_dir)
    returns = episode_returns(lambda o: teacher.act(o), teacher.recipe, 3, seed=123)
    random = evaluate_policy(RandomPolicy(teacher.mapper), teacher.recipe, 3, seed=123).mean
    # three episodes, so a wide margin: this catches a broken recipe, not a statistical wobble. For an
    # erratic expert (LunarLander DQN: 146 ± 142) 3 std reach below a random policy's score, so the
    # threshold is never lower than halfway from random (on the same episodes) to the recorded score.
    margin = max(3 * score["std"], 0.2 * abs(score["mean"]), 1.0)
    threshold = max(score["mean"] - margin, random + 0.5 * (score["mean"] - random))
    assert random < threshold, "a random policy must fail this test"
    assert returns.mean() >= threshold


PONG = ZOO_DIR / "ppo" / "PongNoFrameskip-v4_1"


def _untrained_pong_folder(zoo_run_dir, tmp_path: Path) -> Path:
    """An rl-zoo folder holding an untrained CNN PPO, with the zoo's Atari config."""
    from stable_baselines3 import PPO

    from policykd.data.envs import EnvRecipe

    config = {"env_wrapper": ["stable_baselines3.common.atari_wrappers.AtariWrapper"], "frame_stack": 4}
    train_env = make_vec_env(EnvRecipe("PongNoFrameskip-v4", **config), 1, seed=0)  # what rl-zoo trains on
    PPO("CnnPolicy", train_env, n_steps=16, batch_size=16, seed=0, device="cpu").save(tmp_path / "pong.zip")
    train_env.close()
    return zoo_run_dir(
        tmp_path / "zoo", "ppo", "PongNoFrameskip-v4", tmp_path / "pong.zip", config={**config, "policy": "CnnPolicy"}
    )


@pytest.mark.expensive
@pytest.mark.parametrize("source", ["untrained", "shipped"])
def test_atari_zoo_folder_rebuilds_wrappers_and_trains_a_cnn_student(source, zoo_run_dir, tmp_path) -> None:
    if source == "shipped" and not (PONG / "expert.json").is_file():
        pytest.skip("the zoo's Pong expert is not shipped yet")
    run_dir = _untrained_pong_folder(zoo_run_dir, tmp_path) if source == "untrained" else PONG
    teacher = load_teacher(run_dir)
    assert teacher.recipe.frame_stack == 4 and teacher.kind == "categorical"
    venv = make_vec_env(teacher.recipe, 2, seed=0)
    assert venv.observation_space.shape == (4, 84, 84) and venv.observation_space.dtype == np.uint8
    buffer, _ = collect_rollouts(venv, [teacher], 32, rng=np.random.default_rng(0))
    venv.close()
    assert (
        isinstance(buffer, LabelledBuffer)
        and buffer.batch_at(np.arange(4)).observations.dtype.is_floating_point is False
    )
    student = make_student(teacher.kind, teacher.observation_space, teacher.action_space, cnn_width=0.25)
    assert student.config.image and student.n_params < teacher.n_params
    before = Trainer(
        student,
        make_loss("kl", teacher.kind),
        buffer,
        config=TrainerConfig(n_updates=1, batch_size=8, progress_bar=False),
    ).train()
    after = Trainer(
        student,
        make_loss("kl", teacher.kind),
        buffer,
        config=TrainerConfig(n_updates=30, batch_size=8, learning_rate=3e-3, progress_bar=False),
    ).train()
    assert after["distill/kl_teacher_student"] < before["distill/kl_teacher_student"]


HALFCHEETAH = ZOO_DIR / "ppo" / "HalfCheetah-v5_1"


@pytest.mark.expensive
@pytest.mark.skipif(not (HALFCHEETAH / "expert.json").is_file(), reason="the HalfCheetah expert is not shipped yet")
def test_vecnormalize_expert_is_refused_without_its_statistics(tmp_path) -> None:
    """The zoo's VecNormalize expert: without vecnormalize.pkl loading is refused; with a config that
    hides the normalisation, the teacher check catches the collapse and names the likely cause."""
    import shutil

    from policykd.errors import PolicyKDError
    from policykd.jobs.evaluate import evaluate_random, evaluate_teacher
    from policykd.jobs.resolve import check_teacher_score

    copy = tmp_path / "ppo" / "HalfCheetah-v5_1"
    shutil.copytree(HALFCHEETAH, copy, ignore=shutil.ignore_patterns("train_logs", "resume"))
    (copy / "HalfCheetah-v5" / "vecnormalize.pkl").unlink()
    with pytest.raises(PolicyKDError, match="vecnormalize.pkl is missing"):
        load_teacher(copy)
    config = copy / "HalfCheetah-v5" / "config.yml"
    config.write_text(config.read_text().replace("normalize: true", "normalize: false"))
    teacher = load_teacher(copy)
    with pytest.raises(PolicyKDError, match="missing vecnormalize.pkl"):
        check_teacher_score(teacher, evaluate_teacher(teacher, 2, seed=0), evaluate_random(teacher, 2, seed=0))
