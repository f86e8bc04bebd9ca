"""rl-zoo recipes (config.yml / args.yml) and the vectorised envs built from them."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import yaml

from policykd.data.envs import EnvRecipe, check_env_id, make_vec_env, read_zoo_yaml, recipe_from_zoo_config
from policykd.errors import PolicyKDError

PONG_CONFIG = {  # agents/ppo/PongNoFrameskip-v4_1/PongNoFrameskip-v4/config.yml, as rl_zoo3 writes it
    "batch_size": 256,
    "env_wrapper": ["stable_baselines3.common.atari_wrappers.AtariWrapper"],
    "frame_stack": 4,
    "normalize": False,
    "policy": "CnnPolicy",
    "policy_kwargs": "dict(net_arch=[64])",
}


# -- read_zoo_yaml --------------------------------------------------------------------------------


def test_read_plain_yaml(tmp_path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("policy: MlpPolicy\nn_envs: 8\nenv_wrapper:\n- sb3_contrib.common.wrappers.TimeFeatureWrapper\n")
    assert read_zoo_yaml(path) == {
        "policy": "MlpPolicy",
        "n_envs": 8,
        "env_wrapper": ["sb3_contrib.common.wrappers.TimeFeatureWrapper"],
    }


def test_read_ordered_dict_yaml(tmp_path) -> None:
    """rl_zoo3 dumps OrderedDicts (python tags), with nested lists, mappings and tuples inside."""
    content = {
        "env_kwargs": {"continuous": True, "size": (3, 4)},
        "env_wrapper": [{"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 100}}],
        "frame_stack": 4,
        "normalize": "dict(norm_obs=True, norm_reward=False)",
        "n_timesteps": 1e6,
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(OrderedDict(content)))
    assert path.read_text().startswith("!!python/object/apply:collections.OrderedDict")
    loaded = read_zoo_yaml(path)
    assert loaded == content and type(loaded) is dict and list(loaded) == list(content)
    assert loaded["env_kwargs"]["size"] == (3, 4)
    path.write_text(yaml.dump(OrderedDict()))
    assert read_zoo_yaml(path) == {}


def test_read_yaml_refuses_other_python_tags(tmp_path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "config.yml"
    path.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(PolicyKDError, match="cannot read") as excinfo:
        read_zoo_yaml(path)
    assert "os.system" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert not marker.exists()


@pytest.mark.parametrize(("text", "expected"), [("", {}), ("- [a, 1]\n- [b, 2]\n", {"a": 1, "b": 2})])
def test_read_yaml_empty_and_pair_list(tmp_path, text, expected) -> None:
    path = tmp_path / "args.yml"
    path.write_text(text)
    assert read_zoo_yaml(path) == expected


@pytest.mark.parametrize("text", ["just a string\n", "- 1\n- 2\n", "key: [unclosed\n"])
def test_read_yaml_not_a_mapping(tmp_path, text) -> None:
    path = tmp_path / "config.yml"
    path.write_text(text)
    with pytest.raises(PolicyKDError, match="config.yml"):
        read_zoo_yaml(path)


def test_read_yaml_missing(tmp_path) -> None:
    with pytest.raises(PolicyKDError, match="nope.yml"):
        read_zoo_yaml(tmp_path / "nope.yml")


# -- recipe_from_zoo_config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("normalize", "expected"),
    [
        (True, True),
        (False, False),
        ("dict(norm_obs=True, norm_reward=False)", True),
        ("dict(norm_obs=False, norm_reward=True)", False),
        ("dict(norm_obs = False)", False),
        ("{'norm_obs': False, 'norm_reward': True}", False),
        ("dict(norm_reward=False)", True),  # VecNormalize's default norm_obs=True
        ({"norm_obs": False, "norm_reward": True}, False),
        ({"norm_reward": False}, True),
    ],
)
def test_recipe_normalize(normalize, expected) -> None:
    assert recipe_from_zoo_config("Pendulum-v1", {"normalize": normalize}).normalize is expected


def test_recipe_defaults_and_fields() -> None:
    assert recipe_from_zoo_config("CartPole-v1", {}) == EnvRecipe("CartPole-v1")
    recipe = recipe_from_zoo_config("PongNoFrameskip-v4", PONG_CONFIG)
    assert recipe == EnvRecipe(
        "PongNoFrameskip-v4", env_wrapper=["stable_baselines3.common.atari_wrappers.AtariWrapper"], frame_stack=4
    )
    assert recipe.to_json()["frame_stack"] == 4


def test_recipe_json_round_trip() -> None:
    """What distill writes into recipe.json (and export into ONNX metadata) reads back equal; a
    trusted recipe's trust is not written, so a file never carries it."""
    recipe = recipe_from_zoo_config("PongNoFrameskip-v4", PONG_CONFIG)
    assert EnvRecipe.from_json(recipe.to_json(), "recipe.json") == recipe
    assert recipe.trusting().to_json() == recipe.to_json() and "trusted" not in recipe.to_json()
    assert not EnvRecipe.from_json(recipe.trusting().to_json(), "recipe.json").trusted


def test_recipe_env_kwargs_merge_args_over_config() -> None:
    config = {"env_kwargs": {"continuous": True, "gravity": -10.0}}
    args = {"env_kwargs": {"gravity": -9.0, "enable_wind": True}, "seed": 3}
    recipe = recipe_from_zoo_config("LunarLander-v3", config, args)
    assert recipe.env_kwargs == {"continuous": True, "gravity": -9.0, "enable_wind": True}
    assert recipe_from_zoo_config("LunarLander-v3", config, {"env_kwargs": None}).env_kwargs == config["env_kwargs"]
    assert recipe_from_zoo_config("LunarLander-v3", {"env_kwargs": None}, None).env_kwargs == {}
    assert config["env_kwargs"] == {"continuous": True, "gravity": -10.0}  # inputs are not modified


# -- make_vec_env ---------------------------------------------------------------------------------


def _first_obs(recipe: EnvRecipe, n_envs: int, seed: int) -> np.ndarray:
    venv = make_vec_env(recipe, n_envs=n_envs, seed=seed)
    try:
        return venv.reset()
    finally:
        venv.close()


def test_make_vec_env_seeds_deterministically() -> None:
    recipe = EnvRecipe("CartPole-v1")
    first = _first_obs(recipe, 3, seed=7)
    assert first.shape == (3, 4)
    np.testing.assert_array_equal(first, _first_obs(recipe, 3, seed=7))
    assert not np.allclose(first, _first_obs(recipe, 3, seed=8))
    np.testing.assert_array_equal(first[1:], _first_obs(recipe, 2, seed=8))  # env i is seeded with seed + i
    assert len({tuple(row) for row in first}) == 3


def test_make_vec_env_monitor_kwargs_and_wrappers() -> None:
    """env_kwargs and rl-zoo's ``{"module.Class": kwargs}`` wrappers reach the env; no VecNormalize."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import VecNormalize

    recipe = EnvRecipe(
        "CartPole-v1",
        env_kwargs={"sutton_barto_reward": True},
        env_wrapper=[{"gymnasium.wrappers.TimeLimit": {"max_episode_steps": 3}}],
        normalize=True,
    )
    venv = make_vec_env(recipe, n_envs=2, seed=0)
    assert all(venv.env_is_wrapped(Monitor)) and not isinstance(venv, VecNormalize)  # the teacher normalises
    venv.reset()
    for _ in range(3):
        _, rewards, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
        np.testing.assert_array_equal(rewards, 0.0)  # Sutton & Barto reward: 0 until failure
    assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)
    # Monitor sits inside the zoo wrappers: it records true episodes only (e.g. all of an Atari
    # game's lives), so a cut made by an outer wrapper is not an episode to it.
    assert not any("episode" in info for info in infos)
    venv.close()


def test_make_vec_env_atari_frame_stack_channel_first() -> None:
    recipe = recipe_from_zoo_config("PongNoFrameskip-v4", PONG_CONFIG)
    venv = make_vec_env(recipe, n_envs=1, seed=0)
    try:
        assert venv.observation_space.shape == (4, 84, 84) and venv.observation_space.dtype == np.uint8
        obs = venv.reset()
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8
        for _ in range(2):
            obs, *_ = venv.step(np.zeros(1, dtype=np.int64))
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8 and obs[:, -1].any()
    finally:
        venv.close()


@pytest.mark.parametrize("env_id", ["NoSuchEnv-v0", "ALE/NoSuchGame-v5", "CartPole-v99"])
def test_unknown_env_id(env_id) -> None:
    with pytest.raises(PolicyKDError, match="unknown environment") as excinfo:
        check_env_id(env_id)
    assert "\n" not in str(excinfo.value)
    with pytest.raises(PolicyKDError, match=env_id):
        make_vec_env(EnvRecipe(env_id), n_envs=1, seed=0)
