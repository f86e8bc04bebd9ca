"""Hub ids resolved offline from a Hugging Face cache laid out the way huggingface_hub lays it out."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import policykd.data.hub
from policykd.data.envs import EnvRecipe
from policykd.data.hub import is_hub_id, resolve_hub_id
from policykd.data.teachers import load_teacher
from policykd.errors import PolicyKDError

CARTPOLE_CONFIG = OrderedDict([("n_envs", 8), ("normalize", False), ("policy", "MlpPolicy")])


def _add_cached_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> str:
    """``<cache>/models--org--name/{blobs/<hash>, refs/main, snapshots/<commit>/<file> -> blob}``,
    as ``hf_hub_download`` leaves it. Returns the commit hash."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)  # no trailing newline, like huggingface_hub
    (repo_dir / "blobs").mkdir()
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo_dir / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob)
    return commit


@pytest.fixture
def offline_hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF cache, offline mode on, sockets refused, and policykd's hub folder under tmp_path.

    huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE into ``huggingface_hub.constants`` at
    import time and ``hf_hub_download`` reads them from there on each call, so both are patched."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(policykd.data.hub, "DEFAULT_HUB_DIR", tmp_path / "policykd-hub")

    def no_network(*args, **kwargs):
        raise AssertionError("the hub tests must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


def _logits(policy, obs: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return policy.get_distribution(policy.obs_to_tensor(obs)[0]).distribution.logits


def test_load_teacher_from_hub_id(sb3_expert, offline_hf_cache, tmp_path) -> None:
    model, zip_path = sb3_expert("ppo", "CartPole-v1")
    _add_cached_repo(
        offline_hf_cache,
        "sb3/ppo-CartPole-v1",
        {"ppo-CartPole-v1.zip": zip_path.read_bytes(), "config.yml": yaml.dump(CARTPOLE_CONFIG).encode()},
    )
    teacher = load_teacher("sb3/ppo-CartPole-v1")
    assert (teacher.algo, teacher.kind, teacher.source) == ("ppo", "categorical", "sb3/ppo-CartPole-v1")
    assert teacher.recipe == EnvRecipe("CartPole-v1")
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 4)).astype(np.float32)
    torch.testing.assert_close(teacher(obs).logits, _logits(model.policy, obs))
    np.testing.assert_array_equal(teacher.act(obs), model.predict(obs, deterministic=True)[0])
    assert (tmp_path / "policykd-hub" / "sb3" / "ppo" / "CartPole-v1_1" / "CartPole-v1.zip").is_file()


def test_resolve_hub_id_lays_out_zoo_folder(sb3_expert, offline_hf_cache, tmp_path) -> None:
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    config = yaml.dump(CARTPOLE_CONFIG).encode()
    env_kwargs = yaml.dump({"sutton_barto_reward": True}).encode()
    files = {"ppo-CartPole-v1.zip": zip_path.read_bytes(), "config.yml": config, "env_kwargs.yml": env_kwargs}
    _add_cached_repo(offline_hf_cache, "sb3/ppo-CartPole-v1", files)
    hub_dir = tmp_path / "zoo"
    run_dir = resolve_hub_id("sb3/ppo-CartPole-v1", hub_dir=hub_dir)
    assert run_dir == hub_dir / "sb3" / "ppo" / "CartPole-v1_1"
    assert (run_dir / "CartPole-v1.zip").read_bytes() == zip_path.read_bytes()
    assert (run_dir / "CartPole-v1" / "config.yml").read_bytes() == config
    assert not (run_dir / "CartPole-v1.zip").is_symlink()  # a copy, not a link into the HF cache
    assert not (run_dir / "CartPole-v1" / "vecnormalize.pkl").exists()
    teacher = load_teacher(run_dir)
    assert teacher.algo == "ppo" and teacher.recipe == EnvRecipe(
        "CartPole-v1", env_kwargs={"sutton_barto_reward": True}
    )

    # Resolving again refreshes the folder: a file the repo does not hold does not linger.
    (run_dir / "CartPole-v1" / "vecnormalize.pkl").write_bytes(b"stale")
    assert resolve_hub_id("sb3/ppo-CartPole-v1", hub_dir=hub_dir) == run_dir
    assert not (run_dir / "CartPole-v1" / "vecnormalize.pkl").exists()


def test_hub_vecnormalize_is_used(sb3_expert, offline_hf_cache, tmp_path) -> None:
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    model, zip_path = sb3_expert("ppo", "Pendulum-v1")
    vecnormalize = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=3.0)
    vecnormalize.obs_rms.mean, vecnormalize.obs_rms.var = np.array([0.5, -0.5, 1.0]), np.array([0.25, 1.0, 9.0])
    vecnormalize.save(tmp_path / "vec_normalize.pkl")
    files = {
        "ppo-Pendulum-v1.zip": zip_path.read_bytes(),
        "config.yml": yaml.dump(OrderedDict([("normalize", True), ("policy", "MlpPolicy")])).encode(),
        "vec_normalize.pkl": (tmp_path / "vec_normalize.pkl").read_bytes(),
    }
    _add_cached_repo(offline_hf_cache, "sb3/ppo-Pendulum-v1", files)
    teacher = load_teacher("sb3/ppo-Pendulum-v1", env_id="Pendulum-v1")
    assert teacher.recipe.normalize and teacher.normalizer is not None
    obs = np.random.default_rng(1).uniform([-1, -1, -8], [1, 1, 8], (8, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model.policy.get_distribution(model.policy.obs_to_tensor(vecnormalize.normalize_obs(obs))[0])
    torch.testing.assert_close(teacher(obs).mean, expected.distribution.mean)


def test_ale_repo_id_maps_to_namespaced_env(sb3_expert, offline_hf_cache, tmp_path) -> None:
    """The hub spells ALE/Pong-v5 as ALE-Pong-v5; the recipe gets the real id back. (The loader
    reads the recipe and does not build the env, so a small zip stands in for a Pong expert.)"""
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    files = {"ppo-ALE-Pong-v5.zip": zip_path.read_bytes(), "config.yml": yaml.dump({"policy": "MlpPolicy"}).encode()}
    _add_cached_repo(offline_hf_cache, "sb3/ppo-ALE-Pong-v5", files)  # a download without config.yml is refused
    run_dir = resolve_hub_id("sb3/ppo-ALE-Pong-v5", hub_dir=tmp_path / "zoo")
    assert run_dir == tmp_path / "zoo" / "sb3" / "ppo" / "ALE-Pong-v5_1" and (run_dir / "ALE-Pong-v5.zip").is_file()
    teacher = load_teacher(run_dir, env_id="ALE/Pong-v5")
    assert teacher.recipe.env_id == "ALE/Pong-v5"


class _Touch:
    """Pickles as a call of os.system that would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


@pytest.mark.parametrize("crafted", ["vec_normalize.pkl", "zip"])
def test_crafted_hub_download_is_refused(sb3_expert, offline_hf_cache, tmp_path, crafted) -> None:
    """A hub download is read through the same allow-list as a local folder: nothing in it runs."""
    import base64
    import json
    import zipfile

    _, zip_path = sb3_expert("ppo", "Pendulum-v1")
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Touch(marker))
    model_zip = zip_path.read_bytes()
    if crafted == "zip":
        with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(tmp_path / "evil.zip", "w") as dst:
            for name in src.namelist():
                content = src.read(name)
                if name == "data":
                    data = json.loads(content)
                    data["observation_space"] = {":serialized:": base64.b64encode(payload).decode()}
                    content = json.dumps(data).encode()
                dst.writestr(name, content)
        model_zip = (tmp_path / "evil.zip").read_bytes()
    files = {"ppo-Pendulum-v1.zip": model_zip, "config.yml": yaml.dump({"normalize": crafted != "zip"}).encode()}
    if crafted == "vec_normalize.pkl":
        files["vec_normalize.pkl"] = payload
    _add_cached_repo(offline_hf_cache, "sb3/ppo-Pendulum-v1", files)
    with pytest.raises(PolicyKDError) as excinfo:
        load_teacher("sb3/ppo-Pendulum-v1")
    message = str(excinfo.value)
    assert f"{os.system.__module__}.system" in message and "--trust-pickles" in message and "\n" not in message
    assert not marker.exists()


def test_hub_id_not_in_cache(offline_hf_cache) -> None:
    with pytest.raises(PolicyKDError, match="sb3/ppo-MountainCar-v0") as excinfo:
        load_teacher("sb3/ppo-MountainCar-v0")
    assert "\n" not in str(excinfo.value)


def test_hub_repo_without_model_zip(offline_hf_cache) -> None:
    _add_cached_repo(offline_hf_cache, "sb3/dqn-CartPole-v1", {"config.yml": yaml.dump(CARTPOLE_CONFIG).encode()})
    with pytest.raises(PolicyKDError, match="dqn-CartPole-v1.zip"):
        resolve_hub_id("sb3/dqn-CartPole-v1")


def test_resolve_rejects_non_hub_id(tmp_path) -> None:
    with pytest.raises(PolicyKDError, match="not a hub id"):
        resolve_hub_id("agents/ppo/CartPole-v1_1", hub_dir=tmp_path)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("sb3/ppo-CartPole-v1", True),
        ("sb3/qrdqn-ALE-Pong-v5", True),
        ("sb3/tqc-HalfCheetah-v3", True),
        ("some.user/a2c-LunarLander-v3", True),
        ("agents/ppo/CartPole-v1_1", False),
        ("agents/ppo/CartPole-v1_1/CartPole-v1.zip", False),
        ("sb3/ppo-CartPole-v1.zip", False),
        ("ppo-CartPole-v1", False),
        ("CartPole-v1", False),
        ("/abs/ppo-CartPole-v1", False),
        ("./sb3/ppo-CartPole-v1", False),
        ("sb3/PPO-CartPole-v1", False),
        ("sb3/ppo", False),
        ("sb3/ppo-..", False),
        ("sb3/ppo-.hidden", False),
        ("", False),
    ],
)
def test_is_hub_id(source, expected) -> None:
    assert is_hub_id(source) is expected


def test_existing_path_wins_over_hub_id(sb3_expert, zoo_run_dir, tmp_path, monkeypatch) -> None:
    """``ppo/cartpole-v1_1`` (a zoo run of a lower-case env id) reads like a hub id; when it exists
    it is loaded from disk and the hub is never asked."""
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    zoo_run_dir(tmp_path, "ppo", "cartpole-v1", zip_path)
    monkeypatch.chdir(tmp_path)

    def no_hub(*args, **kwargs):
        raise AssertionError("an existing path must not be resolved on the hub")

    monkeypatch.setattr(policykd.data.hub, "resolve_hub_id", no_hub)
    assert is_hub_id("ppo/cartpole-v1_1") and os.path.isdir("ppo/cartpole-v1_1")
    teacher = load_teacher("ppo/cartpole-v1_1")
    assert (teacher.algo, teacher.recipe.env_id, teacher.source) == ("ppo", "cartpole-v1", "ppo/cartpole-v1_1")
