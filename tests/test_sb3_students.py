"""Students that speak SB3 (issue 17): ``load_student(...).predict`` acts as ``Student.act``, SB3's
``evaluate_policy`` scores what policykd scores, and ``export --format sb3 | hub`` writes zips that
PPO / DQN / SAC / TD3.load read and play with the student's actions."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.errors import PolicyKDError
from policykd.fileio import write_json_atomic
from policykd.jobs.export import export_onnx, export_sb3, random_observations
from policykd.jobs.load import load_student
from policykd.learn.multitask import TaskSpace, make_multitask_student
from policykd.learn.sb3_export import sb3_algo_for
from policykd.learn.students import Student, make_student

N_OBS = 1_000
BOX_OBS = spaces.Box(-np.inf, np.inf, (5,), np.float32)
BOX_ACTIONS = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
# teacher kind -> (action space, loss of the run, the SB3 class that must load the zip)
HEADS = {
    "categorical": (spaces.Discrete(4), "kl", "ppo"),
    "q_values": (spaces.Discrete(4), "mse", "dqn"),
    "gaussian": (BOX_ACTIONS, "kl", "ppo"),
    "squashed_gaussian": (BOX_ACTIONS, "kl", "sac"),
    "deterministic": (BOX_ACTIONS, "mse", "td3"),
}


def _save_student(folder: Path, teacher_kind: str, hidden: tuple[int, ...] = (16, 8), loss: str = "kl") -> Student:
    """A student with input normalisation (mean 0..4, std 2) and head biases that push actions past
    the bounds, saved as the ``student/`` of a finished run folder whose summary names ``loss``."""
    student = make_student(
        teacher_kind,
        BOX_OBS,
        HEADS[teacher_kind][0],
        hidden_sizes=hidden,
        obs_mean=np.arange(5.0),
        obs_std=np.full(5, 2.0),
        seed=0,
    )
    with torch.no_grad():
        student.head.bias.copy_(torch.linspace(-3, 3, student.head.bias.numel()))
    student.save(folder / "student")
    write_json_atomic(folder / "summary.json", {"loss": loss})
    write_json_atomic(folder / "state.json", {"state": "done"})
    return student


def _observations(student: Student, n: int = N_OBS) -> np.ndarray:
    return random_observations(student, n, np.random.default_rng(1))


def _assert_same_actions(actions: np.ndarray, expected: np.ndarray, discrete: bool) -> None:
    assert actions.shape == expected.shape
    if discrete:
        assert actions.dtype.kind == "i" and (actions == expected).all()
    else:
        np.testing.assert_allclose(actions, expected, atol=1e-5)


# -- load_student(...).predict ---------------------------------------------------------------------


@pytest.mark.parametrize("teacher_kind", ["categorical", "gaussian", "squashed_gaussian", "deterministic"])
def test_predict_is_student_act_batched_and_unbatched(tmp_path, teacher_kind):
    student = _save_student(tmp_path / "run", teacher_kind)
    policy = load_student(tmp_path / "run")  # the run folder, as `policykd distill` prints it
    obs = _observations(student)
    discrete = teacher_kind == "categorical"

    actions, state = policy.predict(obs, deterministic=True)
    assert state is None
    _assert_same_actions(actions, student.act(obs), discrete)
    single, _ = policy.predict(obs[0], deterministic=True)  # SB3: unbatched in, unbatched out
    assert single.shape == (() if discrete else (2,))
    _assert_same_actions(single[None], student.act(obs[:1]), discrete)

    policy.set_random_seed(3)  # sampled actions: the student's, from the policy's own generator
    sampled, _ = policy.predict(obs, deterministic=False)
    _assert_same_actions(sampled, student.act(obs, False, np.random.default_rng(3)), discrete)
    assert np.array_equal(sampled, actions) == (teacher_kind == "deterministic")  # TD3-like: no noise
    with pytest.raises(PolicyKDError, match=r"observation of shape \(3,\): this student takes \(5,\)"):
        policy.predict(np.zeros(3, np.float32))


def test_load_student_takes_a_student_folder_or_an_onnx_file_and_refuses_the_rest(tmp_path):
    student = _save_student(tmp_path / "run", "categorical")
    obs = _observations(student)
    export_onnx(tmp_path / "run", tmp_path / "policy.onnx")
    for source in (tmp_path / "run" / "student", tmp_path / "policy.onnx"):
        actions, _ = load_student(source).predict(obs, deterministic=True)
        assert (actions == student.act(obs)).all()
    with pytest.raises(PolicyKDError, match=r"acts greedily only; .*deterministic=True"):
        load_student(tmp_path / "policy.onnx").predict(obs)  # SB3's default is deterministic=False

    (tmp_path / "empty").mkdir()
    with pytest.raises(PolicyKDError, match="is not a policykd student, nor a run folder holding one"):
        load_student(tmp_path / "empty")
    write_json_atomic(tmp_path / "run" / "state.json", {"state": "running"})
    with pytest.raises(PolicyKDError, match="belongs to a run that is running, not done"):
        load_student(tmp_path / "run")


def test_sb3_evaluate_policy_scores_what_policykd_scores(tmp_path):
    """An untrained CartPole student (short, varied episodes): SB3's evaluate_policy on the env
    policykd.make_vec_env builds from the student's recipe gives policykd's returns, seed for seed."""
    from stable_baselines3.common.evaluation import evaluate_policy as sb3_evaluate_policy

    from policykd.jobs.evaluate import evaluate_policy

    cartpole = gym.make("CartPole-v1")
    student = make_student("categorical", cartpole.observation_space, cartpole.action_space, hidden_sizes=(8,), seed=4)
    student.save(tmp_path / "student")
    write_json_atomic(tmp_path / "student" / "recipe.json", EnvRecipe("CartPole-v1").to_json())

    policy = load_student(tmp_path / "student")
    assert policy.recipe == EnvRecipe("CartPole-v1")
    n_episodes, seed = 6, 11
    env = make_vec_env(policy.recipe, n_envs=n_episodes, seed=seed)  # policykd plays min(8, n) envs
    returns, _ = sb3_evaluate_policy(
        policy, env, n_eval_episodes=n_episodes, deterministic=True, return_episode_rewards=True
    )
    expected = evaluate_policy(student, policy.recipe, n_episodes, seed=seed)
    assert sorted(returns) == sorted(expected.returns) and len(set(returns)) > 1


def test_a_distilled_run_plays_the_same_in_sb3_and_in_policykd(cartpole_distill_run, tmp_path):
    """The printed run folder: load_student and its SB3 zip both reproduce summary.json's student
    return under SB3's evaluate_policy, on the run's evaluation seeds."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy as sb3_evaluate_policy

    from policykd.jobs.evaluate import EVAL_SEED_OFFSET

    summary, run_dir = cartpole_distill_run
    n_episodes, seed = summary["n_eval_episodes"], summary["seed"] + EVAL_SEED_OFFSET
    policy = load_student(run_dir)
    report = export_sb3(run_dir, tmp_path / "ppo-CartPole-v1.zip")
    assert report.algo == "ppo" and report.n_checked == N_OBS and report.max_abs_diff == 0.0
    env = make_vec_env(policy.recipe, n_envs=n_episodes, seed=seed)
    model = PPO.load(report.path, env=env, device="cpu")  # SB3 checks the zip's spaces against the env
    for player in (policy, model):
        env = make_vec_env(policy.recipe, n_envs=n_episodes, seed=seed)
        mean, _ = sb3_evaluate_policy(player, env, n_eval_episodes=n_episodes, deterministic=True)
        assert mean == pytest.approx(summary["student_return_mean"])


# -- export --format sb3 ---------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [(16, 8), ()], ids=["mlp", "no-hidden-layer"])
@pytest.mark.parametrize("teacher_kind", list(HEADS))
def test_the_sb3_zip_acts_as_the_student(tmp_path, teacher_kind, hidden):
    """Each head loads with its SB3 class and gives the student's greedy actions on 1,000
    observations, the input normalisation folded into the first layer."""
    from policykd.jobs.export import sb3_class

    action_space, loss, algo = HEADS[teacher_kind]
    student = _save_student(tmp_path / "run", teacher_kind, hidden, loss)
    report = export_sb3(tmp_path / "run")  # the class follows the head and the run's loss
    assert report.algo == algo and report.path == tmp_path / "run" / f"{algo}-student.zip"
    assert report.n_checked == N_OBS and report.max_abs_diff <= 1e-4

    model = sb3_class(algo).load(report.path, device="cpu")
    assert type(model).__name__ == algo.upper() and model.action_space == action_space
    obs = _observations(student)
    discrete = isinstance(action_space, spaces.Discrete)
    actions, _ = model.predict(obs, deterministic=True)
    _assert_same_actions(actions, student.act(obs), discrete)
    single, _ = model.predict(obs[0], deterministic=True)
    _assert_same_actions(np.asarray(single)[None], student.act(obs[:1]), discrete)


def test_a_gaussian_zip_keeps_the_students_spread_where_sb3_can(tmp_path):
    """SAC keeps the student's state-dependent log-std; PPO's one log-std is the student's at its
    mean observation."""
    from stable_baselines3 import PPO, SAC

    for kind, cls in (("squashed_gaussian", SAC), ("gaussian", PPO)):
        student = _save_student(tmp_path / kind, kind)
        model = cls.load(export_sb3(tmp_path / kind).path, device="cpu")
        obs = torch.as_tensor(_observations(student, 50))
        if cls is SAC:
            _, log_std, _ = model.actor.get_action_dist_params(obs)
            torch.testing.assert_close(log_std, student(obs).log_std, atol=1e-5, rtol=1e-5)
        else:
            expected = student(student.obs_mean[None]).log_std[0]
            torch.testing.assert_close(model.policy.log_std.detach(), expected)


def test_what_sb3_cannot_hold_is_refused_in_one_line(tmp_path):
    image = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    make_student("categorical", image, spaces.Discrete(6), cnn_width=0.5, seed=0).save(tmp_path / "cnn")
    _save_student(tmp_path / "run", "categorical")
    for kwargs, fragment in (
        ({"source": tmp_path / "cnn"}, "is not SB3's NatureCNN (32-64-64 channels, 512 features); export it with --format onnx"),
        ({"source": tmp_path / "run", "algo": "td3"}, "a student with a discrete head cannot be written as TD3; use ppo"),
        ({"source": tmp_path / "run", "algo": "a2c"}, "unknown SB3 algorithm 'a2c'"),
        ({"source": tmp_path / "run", "out_path": tmp_path / "x.pt"}, "must end in .zip"),
    ):  # fmt: skip
        with pytest.raises(PolicyKDError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            export_sb3(**kwargs)
    assert not list(tmp_path.rglob("*.zip"))


@pytest.mark.expensive
@pytest.mark.parametrize("teacher_kind", ["categorical", "q_values"])
def test_an_image_student_maps_onto_sb3s_nature_cnn(tmp_path, teacher_kind):
    from policykd.jobs.export import sb3_class

    image = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    student = make_student(teacher_kind, image, spaces.Discrete(6), cnn_width=1.0, seed=0)
    student.save(tmp_path / "student")
    algo = "dqn" if teacher_kind == "q_values" else "ppo"
    report = export_sb3(tmp_path / "student", tmp_path / "cnn.zip", algo=algo, n_check=64)
    assert report.n_checked == 64 and report.max_abs_diff == 0.0
    model = sb3_class(algo).load(report.path, device="cpu")
    obs = random_observations(student, 64, np.random.default_rng(5))
    assert (model.predict(obs, deterministic=True)[0] == student.act(obs)).all()


def test_sb3_algo_follows_the_head_and_the_loss():
    def config(kind: str, action_space: spaces.Space) -> object:
        return make_student(kind, BOX_OBS, action_space, hidden_sizes=(4,), seed=0).config

    assert sb3_algo_for(config("categorical", spaces.Discrete(2))) == "ppo"
    assert sb3_algo_for(config("q_values", spaces.Discrete(2)), "mse") == "dqn"
    assert sb3_algo_for(config("q_values", spaces.Discrete(2)), "kl") == "ppo"  # softmax(Q / tau): a policy
    assert sb3_algo_for(config("squashed_gaussian", BOX_ACTIONS)) == "sac"
    assert sb3_algo_for(config("deterministic", BOX_ACTIONS), "mse") == "td3"


# -- multi-task students ---------------------------------------------------------------------------

VECTOR_TASKS = {
    "CartPole-v1": TaskSpace("categorical", spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2)),
    "Acrobot-v1": TaskSpace("q_values", spaces.Box(-np.inf, np.inf, (6,), np.float32), spaces.Discrete(3)),
    "Pendulum-v1": TaskSpace("squashed_gaussian", spaces.Box(-8.0, 8.0, (3,), np.float32), spaces.Box(-2.0, 2.0, (1,))),
}


def _save_multitask(folder: Path) -> object:
    stats = {"Acrobot-v1": (np.linspace(-1, 1, 6), np.full(6, 0.5))}  # one task with its own normalisation
    student = make_multitask_student(VECTOR_TASKS, hidden_sizes=(16, 8), input_width=12, obs_stats=stats, seed=0)
    student.save(folder)
    write_json_atomic(folder / "recipes.json", {task: EnvRecipe(task).to_json() for task in VECTOR_TASKS})
    return student


def test_each_task_of_a_multitask_student_predicts_as_the_student_acts(tmp_path):
    student = _save_multitask(tmp_path / "multi")
    rng = np.random.default_rng(0)
    for task, (_, obs_space, _) in VECTOR_TASKS.items():
        policy = load_student(tmp_path / "multi", task=task)
        assert policy.recipe == EnvRecipe(task)
        obs = rng.normal(0.0, 3.0, (N_OBS, *obs_space.shape)).astype(np.float32)
        actions, _ = policy.predict(obs, deterministic=True)
        expected = student.act(obs, task)
        if task == "Pendulum-v1":
            np.testing.assert_allclose(actions, expected, atol=1e-6)
        else:
            assert (actions == expected).all()
    with pytest.raises(PolicyKDError, match=r"is a multi-task student \(tasks: CartPole-v1, Acrobot-v1, Pendulum-v1\)"):
        load_student(tmp_path / "multi")
    with pytest.raises(PolicyKDError, match="unknown task 'LunarLander-v3'"):
        load_student(tmp_path / "multi", task="LunarLander-v3")


def test_an_image_task_is_the_shared_cnn_and_its_head(tmp_path):
    image = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    tasks = {
        "Pong": TaskSpace("categorical", image, spaces.Discrete(6)),
        "Breakout": TaskSpace("q_values", image, spaces.Discrete(4)),
    }
    student = make_multitask_student(tasks, cnn_width=0.25, seed=0)
    student.save(tmp_path / "multi")
    obs = np.random.default_rng(0).integers(0, 256, (32, 4, 84, 84), dtype=np.uint8)
    for task in tasks:
        actions, _ = load_student(tmp_path / "multi", task=task).predict(obs, deterministic=True)
        assert (actions == student.act(obs, task)).all()


def test_policykd_evaluate_and_export_take_one_task_with_env(tmp_path, capsys):
    from stable_baselines3 import SAC

    from policykd.cli import main

    student = _save_multitask(tmp_path / "multi")
    main(["evaluate", str(tmp_path / "multi"), "--env", "Acrobot-v1", "--episodes", "2", "--seed", "3"])
    out = capsys.readouterr().out
    assert out.startswith("student (task Acrobot-v1, ") and "over 2 episodes (greedy, env seeds from 10003" in out

    main(["export", str(tmp_path / "multi"), "--env", "Pendulum-v1", "--format", "sb3"])
    assert "SAC.load plays it" in capsys.readouterr().out
    model = SAC.load(tmp_path / "multi" / "sac-Pendulum-v1.zip", env=make_vec_env(EnvRecipe("Pendulum-v1"), 1, 0))
    obs = np.random.default_rng(2).normal(0.0, 2.0, (N_OBS, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], student.act(obs, "Pendulum-v1"), atol=1e-5)

    main(["export", str(tmp_path / "multi"), "--env", "CartPole-v1"])
    assert (tmp_path / "multi" / "policy-CartPole-v1.onnx").is_file()
    obs = np.random.default_rng(3).normal(0.0, 2.0, (N_OBS, 4)).astype(np.float32)
    onnx_actions, _ = load_student(tmp_path / "multi" / "policy-CartPole-v1.onnx").predict(obs, deterministic=True)
    assert (onnx_actions == student.act(obs, "CartPole-v1")).all()


# -- export --format hub ---------------------------------------------------------------------------


def test_the_hub_folder_holds_a_card_with_the_measured_table_and_a_zip_that_loads(cartpole_distill_run, tmp_path):
    from stable_baselines3 import PPO

    from policykd.jobs.export_hub import export_hub

    summary, run_dir = cartpole_distill_run
    report = export_hub(run_dir, tmp_path / "hub")
    files = {
        "README.md",
        "ppo-CartPole-v1.zip",
        "config.json",
        "results.json",
        "env-recipe.json",
        "policykd-config.yml",
    }
    assert set(report.files) == files and report.sb3.n_checked == N_OBS
    assert all((tmp_path / "hub" / name).stat().st_size > 0 for name in files)

    card = (tmp_path / "hub" / "README.md").read_text()
    assert f"{summary['student_return_mean']:.1f} ± {summary['student_return_std']:.1f}" in card
    assert "| student | " in card and f"{summary['pct_of_teacher']:.1f}" in card
    assert summary["teacher"] not in card and "`ppo/CartPole-v1_1`" in card  # no path of this machine
    hub_card = pytest.importorskip("huggingface_hub").ModelCard.load(tmp_path / "hub" / "README.md")  # offline
    assert hub_card.data.library_name == "stable-baselines3" and "CartPole-v1" in hub_card.data.tags
    metric = hub_card.data.eval_results[0]
    assert metric.metric_type == "mean_reward" and metric.dataset_name == "CartPole-v1"

    results = json.loads((tmp_path / "hub" / "results.json").read_text())
    assert results["mean_reward"] == summary["student_return_mean"] and results["is_deterministic"] is True
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["policy_class"]  # the zip's data
    recipe = EnvRecipe.from_json(json.loads((tmp_path / "hub" / "env-recipe.json").read_text()), "env-recipe.json")
    model = PPO.load(tmp_path / "hub" / "ppo-CartPole-v1.zip", env=make_vec_env(recipe, 1, 0), device="cpu")
    obs = random_observations(Student.load(run_dir / "student"), 100, np.random.default_rng(0))
    assert (model.predict(obs, deterministic=True)[0] == Student.load(run_dir / "student").act(obs)).all()

    export_hub(run_dir, tmp_path / "hub")  # an earlier export is replaced ...
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(PolicyKDError, match=r"holds other files \(notes.txt\); pass another --out"):
        export_hub(run_dir, tmp_path / "other")  # ... a folder of anything else is not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub", "other"]  # no staging folder left
