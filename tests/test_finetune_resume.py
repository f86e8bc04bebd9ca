"""``policykd finetune``'s checkpoints and ``--resume`` (jobs/finetune_run.py), and the VecNormalize
a student gets when its teacher was trained with one or rl-zoo says ``normalize`` (data/vec_normalize.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from test_cli import run_cli

from policykd.fileio import read_json

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = str(REPO / "agents" / "ppo" / "CartPole-v1_1")


def _cli(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "policykd.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_checkpoint(out: Path, steps: int, process: subprocess.Popen) -> int:
    """The env steps of the run's checkpoint, once it holds at least ``steps``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done = read_json(out / "checkpoint.json")["counters"]["num_timesteps"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= steps:
            return done
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of {steps} steps: {process.communicate(timeout=30)}")


def test_a_stopped_and_a_killed_run_resume_from_their_checkpoints(tmp_path: Path, capsys: Any) -> None:
    """SIGTERM stops the run at a checkpoint, in one line; kill -9 leaves the last checkpoint; each
    --resume continues from the checkpoint's env step (not from 0) and ends at the requested steps."""
    out = tmp_path / "run"
    argv = ["finetune", "--teacher", CARTPOLE, "--timesteps", "6144", "--eval-episodes", "1",
            "--eval-every-steps", "1024", "--checkpoint-every", "0", "--no-progress", "--out", str(out)]  # fmt: skip
    first = _cli(*argv)
    _wait_for_checkpoint(out, 1024, first)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    stopped = read_json(out / "checkpoint.json")["counters"]["num_timesteps"]
    assert first.returncode == 130 and err.strip().count("\n") == 0, err
    assert f"interrupted at env step {stopped:,} of 6,144 (checkpoint saved); resume with" in err
    assert read_json(out / "state.json")["state"] == "failed"

    second = _cli(*argv, "--resume")
    killed_at = _wait_for_checkpoint(out, stopped + 1024, second)
    second.kill()  # kill -9: no handler runs
    second.communicate(timeout=60)
    assert read_json(out / "state.json")["state"] == "running"  # as the killed process left it
    killed_at = read_json(out / "checkpoint.json")["counters"]["num_timesteps"]

    code, _, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, err
    summary, model = read_json(out / "summary.json"), PPO.load(out / "model.zip", device="cpu")
    assert summary["n_timesteps"] == 6144 and 6144 <= model.num_timesteps < 6144 + 256  # rl-zoo: 8 envs x 32 steps
    assert model._num_timesteps_at_start == killed_at > stopped > 0  # the last run began at the checkpoint
    steps = [point[0] for point in summary["curve"]]
    assert steps[0] == 0 and steps == sorted(set(steps)) and len(steps) >= 6  # curve kept across the stops
    assert read_json(out / "state.json")["state"] == "done" and not (out / "checkpoint.json").exists()

    code, _, err = run_cli([*argv[:-2], "--seed", "1", "--out", str(out), "--resume"], capsys)
    assert code == 2 and "was run with seed = 0, this command gives 1" in err and err.count("\n") == 1


def test_checkpoints_change_nothing_in_an_uninterrupted_run(tmp_path: Path, capsys: Any) -> None:
    """Same seed, same student: with a checkpoint at every rollout or none."""
    params = []
    for every in ("0", "1000"):
        out = tmp_path / every
        argv = ["finetune", "--teacher", CARTPOLE, "--timesteps", "768", "--eval-episodes", "1",
                "--checkpoint-every", every, "--no-progress", "--out", str(out)]  # fmt: skip
        assert run_cli(argv, capsys)[0] == 0
        params.append(PPO.load(out / "model.zip", device="cpu").policy.state_dict())
    assert all(torch.equal(params[0][key], params[1][key]) for key in params[0])


def test_an_off_policy_checkpoint_round_trips(tmp_path: Path) -> None:
    """Weights, optimiser, counters, recent episodes, replay buffer and VecNormalize statistics of a
    DQN student come back exactly from its checkpoint into a freshly built model."""
    from policykd.data.envs import EnvRecipe, make_vec_env
    from policykd.data.teachers import load_teacher
    from policykd.data.vec_normalize import wrap_vec_normalize
    from policykd.jobs.finetune_run import EvalCurve, FinetuneRun
    from policykd.learn.kickstart import KickstartDQN

    teacher = load_teacher(REPO / "agents" / "dqn" / "CartPole-v1_1")

    def build() -> Any:
        env = wrap_vec_normalize(make_vec_env(EnvRecipe("CartPole-v1"), 2, 0), {"norm_obs": True, "norm_reward": True})
        return KickstartDQN("MlpPolicy", env, teacher=teacher, buffer_size=1_000, learning_starts=64, batch_size=32,
                            train_freq=8, gradient_steps=2, seed=0, device="cpu")  # fmt: skip

    model = build()
    model.learn(400)
    run = FinetuneRun(tmp_path, EvalCurve(teacher.recipe, 1, 0, 0), 0.0, seed=0)
    run.curve.points = [[0, 9.0, 9.0, 9.0]]
    run.save(model)
    restored = build()
    state = FinetuneRun(tmp_path, EvalCurve(teacher.recipe, 1, 0, 0), 0.0, seed=0).restore(restored)
    assert state is not None and state["curve"] == [[0, 9.0, 9.0, 9.0]]
    for name in ("num_timesteps", "_n_updates", "_n_calls", "_episode_num"):
        assert getattr(restored, name) == getattr(model, name) > 0, name
    assert list(restored.ep_info_buffer) == [{k: float(v) for k, v in e.items()} for e in model.ep_info_buffer]
    for key, value in model.policy.state_dict().items():
        assert torch.equal(restored.policy.state_dict()[key], value), key
    saved, loaded = model.policy.optimizer.state_dict()["state"], restored.policy.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)
    for name in ("observations", "next_observations", "actions", "rewards", "dones"):
        assert np.array_equal(getattr(restored.replay_buffer, name), getattr(model.replay_buffer, name)), name
    assert restored.replay_buffer.pos == model.replay_buffer.pos == 400 // 2
    before, after = model.get_vec_normalize_env(), restored.get_vec_normalize_env()
    assert np.array_equal(before.obs_rms.mean, after.obs_rms.mean) and before.obs_rms.count == after.obs_rms.count
    assert np.array_equal(before.ret_rms.var, after.ret_rms.var)


class _ScriptedCurve:
    """An EvalCurve whose evaluations return the scripted means, in order."""

    def __init__(self, means: list[float]) -> None:
        self.means, self.points = list(means), []

    def evaluate(self, model: Any) -> None:
        mean = self.means.pop(0)
        self.points.append([int(model.num_timesteps), mean, mean, mean])


def test_the_best_evaluation_is_kept_through_checkpoints_and_a_restore(tmp_path: Path) -> None:
    """Each new best validation return saves its weights (ties keep the earlier); a checkpoint drops
    the older best files; a restore drops a best saved after its checkpoint (its evaluation runs
    again) and load_best puts the recorded best's weights back."""
    from policykd.jobs.finetune_run import FinetuneRun

    env = DummyVecEnv([lambda: gym.make("CartPole-v1")])
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=32, seed=0, device="cpu")
    run = FinetuneRun(tmp_path, _ScriptedCurve([5.0, 9.0, 9.0, 3.0]), 0.0, seed=0)  # type: ignore[arg-type]
    weights = {}
    for steps in (0, 32, 64):
        model.num_timesteps = steps
        with torch.no_grad():
            next(model.policy.parameters()).add_(1.0)  # other weights at each evaluation
        weights[steps] = {k: v.clone() for k, v in model.policy.state_dict().items()}
        run.evaluate(model)
    assert run.best is not None and (run.best["steps"], run.best["validation_return"]) == (32, 9.0)
    assert sorted(p.name for p in tmp_path.glob("best-*.zip")) == ["best-0.zip", "best-32.zip"]
    run.save(model)  # the checkpoint records best 32: best-0 goes
    assert sorted(p.name for p in tmp_path.glob("best-*.zip")) == ["best-32.zip"]
    (tmp_path / "best-96.zip").write_bytes(b"from a run killed after its checkpoint")

    restored = FinetuneRun(tmp_path, _ScriptedCurve([]), 0.0, seed=0)  # type: ignore[arg-type]
    assert restored.restore(model) is not None and restored.best == run.best
    assert sorted(p.name for p in tmp_path.glob("best-*.zip")) == ["best-32.zip"]
    restored.load_best(model)
    assert all(torch.equal(model.policy.state_dict()[k], v) for k, v in weights[32].items())


# -- VecNormalize ---------------------------------------------------------------------------------

STATS = {"mean": [0.1, -0.2, 0.05, 0.3], "var": [0.5, 2.0, 0.1, 1.5], "count": 12_345.0}


@pytest.fixture
def vecnormalize_teacher(sb3_expert: Any, zoo_run_dir: Any, tmp_path: Path) -> Path:
    """An rl-zoo folder of a (jittered) CartPole PPO trained with VecNormalize: clip_obs 3, the
    statistics of STATS, and tiny rl-zoo hyperparameters (normalize: true, gamma 0.95)."""
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    config = {"policy": "MlpPolicy", "normalize": True, "n_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1,
              "gamma": 0.95}  # fmt: skip
    run_dir = zoo_run_dir(tmp_path / "zoo", "ppo", "CartPole-v1", zip_path, config=config)
    vecnormalize = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), clip_obs=3.0)
    vecnormalize.obs_rms.mean, vecnormalize.obs_rms.var = np.array(STATS["mean"]), np.array(STATS["var"])
    vecnormalize.obs_rms.count = STATS["count"]
    vecnormalize.save(run_dir / "CartPole-v1" / "vecnormalize.pkl")
    return run_dir


def test_the_student_reads_the_observations_the_teacher_reads(vecnormalize_teacher: Path) -> None:
    """Started from the teacher's weights, the student acts as the teacher on the same raw states
    (clipped ones included) and the distillation term is 0: the env normalises with the teacher's
    statistics and clip, and the teacher is given the raw observations it normalises itself."""
    from policykd.jobs.finetune import FinetuneConfig, build_model, plan_model
    from policykd.jobs.resolve import resolve_teacher

    config = FinetuneConfig(teacher=str(vecnormalize_teacher), start="teacher")
    teacher = resolve_teacher(config.teacher, None)
    plan = plan_model(config, teacher, "ppo")
    assert plan.normalize == {"norm_obs": True, "norm_reward": True, "gamma": 0.95, "clip_obs": 3.0, "epsilon": 1e-8}
    model = build_model(config, [teacher], "ppo", plan, None)
    venv = model.get_vec_normalize_env()
    assert venv.training and venv.clip_obs == 3.0 and venv.gamma == 0.95 and venv.obs_rms.count == STATS["count"]
    raw = np.random.default_rng(0).normal(0, 3, (64, 4)).astype(np.float32)  # some beyond clip_obs
    assert (np.abs(venv.normalize_obs(raw)) == 3.0).any()
    normalized = torch.as_tensor(venv.normalize_obs(raw))
    with torch.no_grad():
        logits = model.policy.get_distribution(normalized).distribution.logits
    assert torch.allclose(torch.log_softmax(logits, -1), torch.log_softmax(teacher(raw).logits, -1), atol=1e-5)
    model.distill_lambda = 1.0
    assert abs(float(model.distill_term(normalized).detach())) < 1e-6


def test_finetune_saves_the_students_vecnormalize(vecnormalize_teacher: Path, tmp_path: Path, capsys: Any) -> None:
    """The run folder's vecnormalize.json holds the statistics the student ended with (the
    teacher's, updated by training); load_vec_normalize wraps an env with them, pickle-free."""
    from policykd.data.envs import EnvRecipe, make_vec_env
    from policykd.data.vec_normalize import load_vec_normalize

    out = tmp_path / "run"
    argv = ["finetune", "--teacher", str(vecnormalize_teacher), "--timesteps", "128", "--eval-episodes", "2",
            "--out", str(out), "--no-progress"]  # fmt: skip
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "not applied" not in stdout and "vecnormalize.json" in stdout
    summary, saved = read_json(out / "summary.json"), read_json(out / "vecnormalize.json")
    assert summary["vec_normalize"]["norm_obs"] and summary["hyperparams_not_applied"] == {}
    assert (
        saved["clip_obs"] == 3.0 and saved["norm_reward"] and saved["obs_count"] == STATS["count"] + 2 + 128
    )  # the 2 envs' first observations, 128 steps
    assert np.allclose(saved["obs_mean"], STATS["mean"], atol=0.05) and saved["obs_mean"] != STATS["mean"]
    venv = load_vec_normalize(out / "vecnormalize.json", make_vec_env(EnvRecipe("CartPole-v1"), 1, 0))
    raw = np.array([[0.5, -1.0, 0.2, 9.0]], np.float32)
    expected = np.clip((raw - saved["obs_mean"]) / np.sqrt(np.array(saved["obs_var"]) + 1e-8), -3, 3)
    assert np.allclose(venv.normalize_obs(raw), expected) and not venv.training and not venv.norm_reward
