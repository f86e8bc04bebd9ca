"""Students of dict-observation (MultiInputPolicy) teachers through SB3's interfaces: a loaded
student's ``predict`` takes the env's own dicts, one or a batch, and acts as on the flat rows
collection stored; ``policykd finetune`` of such a student, from an rl-zoo folder whose
hyperparameters name MultiInputPolicy, writes a MultiInputPolicy ``model.zip`` that plain SB3 loads
and plays on those dicts.

How dict teachers are distilled, and their ``export --format sb3``: ``tests/test_dict_observations.py``
and the dict cases of ``tests/test_teacher_matrix.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml

import policykd
from policykd.data.envs import EnvRecipe, unflatten_dict_obs
from policykd.errors import PolicyKDError
from policykd.learn.sb3_policy import StudentPolicy
from tests.test_teacher_matrix import DICT_DISCRETE_ENV

# (expert algo, its rl-zoo hyperparameters, the distillation loss): a PPO student of logits, a DQN one of raw Q-values
EXPERTS = {
    "ppo": ({"n_steps": 32, "batch_size": 32, "n_epochs": 1}, {"loss": "kl"}),
    "dqn": (
        {"buffer_size": 1_000, "learning_starts": 16, "batch_size": 16, "train_freq": 8, "gradient_steps": 1},
        {"loss": "mse", "center_q": False},
    ),
}


@pytest.fixture(scope="module")
def dict_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """``{algo: (rl-zoo folder, distill run folder)}``: a MultiInputPolicy expert on the dict CartPole,
    trained 64 steps and laid out as rl-zoo does (``config.yml`` naming MultiInputPolicy, one env),
    and a student distilled from it with a tiny budget."""
    from stable_baselines3 import DQN, PPO

    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill

    root, runs = tmp_path_factory.mktemp("dict_students"), {}
    for algo, (hyperparams, loss) in EXPERTS.items():
        model = {"ppo": PPO, "dqn": DQN}[algo](
            "MultiInputPolicy", DICT_DISCRETE_ENV, seed=0, device="cpu", **hyperparams
        )
        model.learn(64)
        zoo = root / algo / f"{DICT_DISCRETE_ENV}_1"
        (zoo / DICT_DISCRETE_ENV).mkdir(parents=True)
        model.save(zoo / f"{DICT_DISCRETE_ENV}.zip")
        config = {"policy": "MultiInputPolicy", "n_envs": 1, **hyperparams}
        (zoo / DICT_DISCRETE_ENV / "config.yml").write_text(yaml.safe_dump(config))
        distill(
            DistillConfig(
                teacher=str(zoo), n_transitions=256, n_updates=40, batch_size=32, hidden_sizes=(16,),
                n_eval_episodes=1, teacher_check=False, progress_bar=False, out_dir=str(root / f"{algo}-run"), **loss,
            )
        )  # fmt: skip
        runs[algo] = (zoo, root / f"{algo}-run")
    return runs


def _env_dicts(n_steps: int = 60) -> list[dict[str, np.ndarray]]:
    """The dict env's own observations over ``n_steps`` steps of random play (episodes restart)."""
    env, rng, observations = gym.make(DICT_DISCRETE_ENV), np.random.default_rng(0), []
    obs, _ = env.reset(seed=0)
    for _ in range(n_steps):
        observations.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return observations


@pytest.mark.parametrize("algo", list(EXPERTS))
def test_a_dict_students_predict_takes_the_envs_dicts_as_the_rows(dict_runs: dict, algo: str) -> None:
    """One dict gives the action (shape ``()``) and a batch of dicts the actions that the same
    observations give as rows (``head`` then ``tail``, the Dict's key order); sampled actions too, for
    the same seed; SB3's evaluate_policy plays the student on the raw dict env."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    run_dir = dict_runs[algo][1]
    policy = policykd.load_student(run_dir)
    dicts = _env_dicts()
    batch = {key: np.stack([obs[key] for obs in dicts]) for key in ("head", "tail")}
    rows = np.concatenate([batch["head"], batch["tail"]], axis=1)
    expected = policy.predict(rows, deterministic=True)[0]
    assert len(np.unique(expected)) == 2  # both actions: a key order gone wrong would show
    np.testing.assert_array_equal(policy.predict(batch, deterministic=True)[0], expected)
    singles = [policy.predict(obs, deterministic=True)[0] for obs in dicts]
    assert all(np.shape(action) == () for action in singles)
    np.testing.assert_array_equal(np.array(singles), expected)
    reversed_keys = {"tail": batch["tail"], "head": batch["head"]}  # the Dict's order, not the caller's
    np.testing.assert_array_equal(policy.predict(reversed_keys, deterministic=True)[0], expected)
    sampled = policykd.load_student(run_dir, seed=3).predict(batch)[0]
    np.testing.assert_array_equal(sampled, policykd.load_student(run_dir, seed=3).predict(rows)[0])
    env = DummyVecEnv([lambda: gym.make(DICT_DISCRETE_ENV)])
    mean, _ = evaluate_policy(policy, env, n_eval_episodes=2)
    assert mean > 0


def test_dict_observations_a_student_cannot_read_are_refused_in_one_line(dict_runs: dict) -> None:
    policy = policykd.load_student(dict_runs["ppo"][1])
    obs = _env_dicts(1)[0]
    student, config = policy.policy, policy.config
    cases = [
        (policy, {"head": obs["head"]}, "this student's env gives ['head', 'tail']"),
        (policy, {"head": obs["head"], "tail": obs["tail"], "goal": obs["head"]}, "pass the env's own observation"),
        (policy, {"head": obs["head"][:1], "tail": obs["tail"]}, "or a batch of them"),
        (policy, {"head": np.zeros((3, 2)), "tail": np.zeros((2, 2))}, "the same n for every key"),
        (StudentPolicy(student, config), obs, "records no env"),
        (StudentPolicy(student, config, EnvRecipe("CartPole-v1")), obs, "CartPole-v1 gives arrays of shape (4,)"),
        (StudentPolicy(student, config, dict_space=gym.spaces.Dict({"head": gym.spaces.Box(-1, 1, (2,))})),
         {"head": obs["head"]}, "do not flatten into this student's (4,) rows"),
    ]  # fmt: skip
    for case_policy, observation, fragment in cases:
        with pytest.raises(
            PolicyKDError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
        ) as err:
            case_policy.predict(observation, deterministic=True)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("algo", list(EXPERTS))
def test_finetune_of_a_dict_student_writes_a_multi_input_zip_that_plays_the_envs_dicts(
    dict_runs: dict, tmp_path: Path, algo: str
) -> None:
    """From an rl-zoo folder whose hyperparameters name MultiInputPolicy, the student trains on the
    flat rows (the model planned is their MlpPolicy: the same function) and ``model.zip`` loads in
    plain SB3 as a MultiInputPolicy of the env's Dict: greedy on the env's own dicts it plays the
    evaluation episodes with the return the run recorded for the trained model; so does
    ``best_model.zip``, with the return recorded for the best checkpoint."""
    from stable_baselines3 import DQN, PPO

    from policykd.jobs.evaluate import EVAL_SEED_OFFSET, evaluate_policy
    from policykd.jobs.finetune import FinetuneConfig, finetune, plan_model
    from policykd.jobs.resolve import resolve_teacher

    zoo, run_dir = dict_runs[algo]
    config = FinetuneConfig(teacher=str(zoo), start=str(run_dir), n_timesteps=64, n_eval_episodes=2, seed=1,
                            out_dir=str(tmp_path / "ft"), progress_bar=False)  # fmt: skip
    teacher = resolve_teacher(config.teacher, None)
    plan = plan_model(config, teacher, algo)
    assert plan.hyperparams_source.endswith("config.yml") and plan.policy == "MlpPolicy"
    summary = finetune(config)
    space = gym.make(DICT_DISCRETE_ENV).observation_space
    for name, recorded in (
        ("model.zip", summary["student_return"]),
        ("best_model.zip", summary["best"]["student_return"]),
    ):
        model = {"ppo": PPO, "dqn": DQN}[algo].load(tmp_path / "ft" / name, device="cpu")
        assert model.observation_space == space and list(model.observation_space.spaces) == ["head", "tail"]
        assert type(model.policy) is type(model).policy_aliases["MultiInputPolicy"]

        class DictZip:  # plays the zip on the env's dicts, made from the rows policykd's evaluation steps
            def act(self, observations: np.ndarray, deterministic: bool = True, rng: Any = None) -> np.ndarray:
                return model.predict(unflatten_dict_obs(space, observations), deterministic=True)[0]  # noqa: B023

        stats = evaluate_policy(DictZip(), teacher.recipe, 2, seed=config.seed + EVAL_SEED_OFFSET)
        assert stats.mean == recorded["mean"], name
