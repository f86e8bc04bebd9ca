"""Teachers against SB3 itself: every adapter's TeacherOutput is what the SB3 policy computes on the
same observations, ``act`` is ``model.predict(deterministic=True)``, and loading fails cleanly."""

from __future__ import annotations

import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from policykd.data.envs import EnvRecipe
from policykd.data.teachers import Teacher, load_teacher
from policykd.errors import PolicyKDError
from policykd.types import KIND_FIELDS, TEACHER_FIELDS

B = 16

# (algo, env id, constructor kwargs, kind): every adapter Teacher has.
ADAPTERS = [
    ("ppo", "CartPole-v1", {}, "categorical"),
    ("a2c", "CartPole-v1", {}, "categorical"),
    ("ppo", "Pendulum-v1", {}, "gaussian"),
    ("a2c", "Pendulum-v1", {}, "gaussian"),
    ("ppo", "Pendulum-v1", {"use_sde": True}, "gaussian"),
    ("dqn", "CartPole-v1", {}, "q_values"),
    ("qrdqn", "CartPole-v1", {}, "quantiles"),
    ("sac", "Pendulum-v1", {}, "squashed_gaussian"),
    ("td3", "Pendulum-v1", {}, "deterministic"),
    ("ddpg", "Pendulum-v1", {}, "deterministic"),
]
ADAPTER_IDS = [f"{algo}-{env_id}{'-sde' if kwargs else ''}" for algo, env_id, kwargs, _ in ADAPTERS]


def _observations(env_id: str, seed: int = 0, n: int = B) -> np.ndarray:
    """``(n, *obs_shape)`` float32 observations inside the env's bounds (unbounded dims: [-3, 3])."""
    space = gym.make(env_id).observation_space
    low, high = np.maximum(space.low, -3.0), np.minimum(space.high, 3.0)
    return np.random.default_rng(seed).uniform(low, high, size=(n, *space.shape)).astype(np.float32)


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected.detach(), rtol=1e-5, atol=1e-6)


def _sb3_reference(model, obs: np.ndarray, kind: str) -> dict[str, torch.Tensor]:
    """What SB3's own modules compute, field by field, in SB3's own calls."""
    policy = model.policy
    obs_tensor, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        if kind in ("categorical", "gaussian"):
            dist = policy.get_distribution(obs_tensor).distribution
            value = policy.predict_values(obs_tensor).flatten()
            if kind == "categorical":
                return {"logits": dist.logits.clone(), "value": value}
            return {"mean": dist.mean.clone(), "log_std": dist.stddev.log(), "value": value}
        if kind == "q_values":
            q = policy.q_net(obs_tensor)
            return {"q_values": q, "value": q.max(dim=1).values}
        if kind == "quantiles":
            quantiles = policy.quantile_net(obs_tensor)
            q = quantiles.mean(dim=1)
            return {"quantiles": quantiles, "q_values": q, "value": q.max(dim=1).values}
        if kind == "squashed_gaussian":
            mean, log_std, _ = policy.actor.get_action_dist_params(obs_tensor)
            q = torch.stack(policy.critic(obs_tensor, torch.tanh(mean)))  # (n_critics, B, 1)
            return {"mean": mean, "log_std": log_std, "value": q.min(dim=0).values.flatten()}
        action = policy.actor(obs_tensor)
        q = torch.stack(policy.critic(obs_tensor, action))  # DDPG has one critic, TD3 two
        return {"action": action, "value": q.min(dim=0).values.flatten()}


@pytest.mark.parametrize(("algo", "env_id", "kwargs", "kind"), ADAPTERS, ids=ADAPTER_IDS)
def test_teacher_output_equals_sb3(sb3_expert, algo, env_id, kwargs, kind) -> None:
    model, path = sb3_expert(algo, env_id, **kwargs)
    teacher = load_teacher(path, env_id=env_id)
    assert (teacher.kind, teacher.algo) == (kind, algo)
    assert teacher.recipe.env_id == env_id and teacher.normalizer is None
    obs = _observations(env_id)
    out = teacher(obs)
    assert out.kind == kind
    expected = _sb3_reference(model, obs, kind)
    assert {f for f in TEACHER_FIELDS if getattr(out, f) is not None} == set(KIND_FIELDS[kind]) == set(expected)
    for field, tensor in expected.items():
        _close(getattr(out, field), tensor)
        assert getattr(out, field).shape[0] == B and not getattr(out, field).requires_grad
    assert out.value.shape == (B,)


def test_gsde_std_is_state_dependent(sb3_expert) -> None:
    """gSDE: the policy's log_std is a (latent, D) matrix and the std varies with the state."""
    model, path = sb3_expert("ppo", "Pendulum-v1", use_sde=True)
    teacher = load_teacher(path, env_id="Pendulum-v1")
    assert teacher.policy.use_sde and teacher.policy.log_std.shape == model.policy.log_std.shape == (64, 1)
    out = teacher(_observations("Pendulum-v1"))
    assert out.log_std.std() > 1e-3


@pytest.mark.parametrize(
    ("algo", "env_id", "kwargs"),
    [("ppo", "CartPole-v1", {}), ("a2c", "Pendulum-v1", {}), ("ppo", "Pendulum-v1", {"use_sde": True})],
    ids=["categorical", "gaussian", "gsde"],
)
def test_outputs_are_copies_of_sb3_distribution(sb3_expert, algo, env_id, kwargs) -> None:
    """SB3 reuses one Distribution object per policy: a stored output must not follow it."""
    _, path = sb3_expert(algo, env_id, **kwargs)
    teacher = load_teacher(path, env_id=env_id)
    out = teacher(_observations(env_id))
    stored = {f: getattr(out, f).clone() for f in KIND_FIELDS[out.kind]}
    with torch.no_grad():  # the fused path never touches SB3's distribution: make SB3 fill it
        teacher.policy.get_distribution(teacher.policy.obs_to_tensor(_observations(env_id))[0])
    dist = teacher.policy.action_dist.distribution  # the object SB3 keeps and reuses
    with torch.no_grad():
        for tensor in (getattr(dist, "logits", None), getattr(dist, "loc", None), getattr(dist, "scale", None)):
            if tensor is not None:
                tensor.add_(100.0)
    teacher(_observations(env_id, seed=1))  # SB3 builds a new distribution into the same object (gSDE path)
    with torch.no_grad():
        teacher.policy.get_distribution(teacher.policy.obs_to_tensor(_observations(env_id, seed=1))[0])
    for field, tensor in stored.items():
        torch.testing.assert_close(getattr(out, field), tensor, rtol=0, atol=0)


@pytest.mark.parametrize(("algo", "env_id", "kwargs", "kind"), ADAPTERS, ids=ADAPTER_IDS)
def test_act_equals_sb3_predict(sb3_expert, algo, env_id, kwargs, kind) -> None:
    """Including the rescaling of SAC / TD3 / DDPG actions to Pendulum's [-2, 2] and PPO's clipping."""
    model, path = sb3_expert(algo, env_id, **kwargs)
    teacher = load_teacher(path, env_id=env_id)
    obs = _observations(env_id, seed=3, n=64)
    expected, _ = model.predict(obs, deterministic=True)
    actions = teacher.act(obs)
    if isinstance(model.action_space, gym.spaces.Discrete):
        np.testing.assert_array_equal(actions, expected)
    else:
        assert actions.shape == expected.shape == (64, 1)
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
        assert np.all(np.abs(actions) <= 2.0)
        if kind in ("squashed_gaussian", "deterministic"):
            assert np.abs(actions).max() > 1.0, "actions should use Pendulum's full [-2, 2] range"


def _modules_params(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@pytest.mark.parametrize(("algo", "env_id", "kwargs", "kind"), ADAPTERS, ids=ADAPTER_IDS)
def test_n_params_leaves_out_value_and_critics(sb3_expert, algo, env_id, kwargs, kind) -> None:
    model, path = sb3_expert(algo, env_id, **kwargs)
    teacher = load_teacher(path, env_id=env_id)
    policy = model.policy
    if kind in ("categorical", "gaussian"):
        expected = _modules_params(policy.features_extractor, policy.mlp_extractor.policy_net, policy.action_net)
        expected += policy.log_std.numel() if kind == "gaussian" else 0
        assert expected < _modules_params(policy)
    elif kind == "q_values":
        expected = _modules_params(policy.q_net)
    elif kind == "quantiles":
        expected = _modules_params(policy.quantile_net)
    else:
        expected = _modules_params(policy.actor)
        assert expected < _modules_params(policy.critic)
    assert teacher.n_params == expected
    assert f"{expected:,} params" in teacher.describe()


def test_n_params_unshared_cnn_leaves_out_value_extractor() -> None:
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    obs_space = gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)
    policy = ActorCriticCnnPolicy(
        obs_space,
        gym.spaces.Discrete(3),
        lambda _: 0.0,
        share_features_extractor=False,
        ortho_init=False,
        features_extractor_kwargs={"features_dim": 32},
    )
    teacher = Teacher(policy, algo="ppo", source="memory", recipe=EnvRecipe("none"))
    expected = _modules_params(policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net)
    assert teacher.n_params == expected
    assert teacher.n_params + _modules_params(
        policy.vf_features_extractor, policy.mlp_extractor.value_net, policy.value_net
    ) == (_modules_params(policy))


def test_image_observations_are_scaled_like_sb3() -> None:
    """uint8 images go through SB3's own preprocessing (divide by 255) inside the policy."""
    from stable_baselines3.common.policies import ActorCriticCnnPolicy

    space = gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)
    policy = ActorCriticCnnPolicy(
        space, gym.spaces.Discrete(3), lambda _: 0.0, ortho_init=False, features_extractor_kwargs={"features_dim": 32}
    )
    teacher = Teacher(policy, algo="ppo", source="memory", recipe=EnvRecipe("none"))
    space.seed(0)
    obs = np.stack([space.sample() for _ in range(4)])
    with torch.no_grad():
        expected = policy.get_distribution(torch.as_tensor(obs)).distribution.logits
    _close(teacher(obs).logits, expected)
    np.testing.assert_array_equal(teacher.act(obs), policy.predict(obs, deterministic=True)[0])


# -- loading --------------------------------------------------------------------------------------


def test_bare_zip_needs_env_id(sb3_expert) -> None:
    _, path = sb3_expert("ppo", "CartPole-v1")
    with pytest.raises(PolicyKDError, match="--env"):
        load_teacher(path)
    assert load_teacher(str(path), env_id="CartPole-v1").recipe == EnvRecipe("CartPole-v1")


@pytest.mark.parametrize(
    ("algo", "env_id", "policy"),
    [
        ("trpo", "CartPole-v1", "MlpPolicy"),
        ("a2c", "CartPole-v1", "MlpPolicy"),
        ("ppo", "CartPole-v1", "MlpPolicy"),
        ("dqn", "CartPole-v1", "MlpPolicy"),
        ("qrdqn", "CartPole-v1", "MlpPolicy"),
        ("sac", "Pendulum-v1", "MlpPolicy"),
        ("td3", "Pendulum-v1", "MlpPolicy"),
        ("ddpg", "Pendulum-v1", "MlpPolicy"),
    ],
)
def test_bare_zip_algo_from_zip(sb3_expert, algo, env_id, policy) -> None:
    """A bare zip (outside the zoo's <algo>/ folders) still says which algorithm trained it."""
    _, path = sb3_expert(algo, env_id, policy=policy)
    assert load_teacher(path, env_id=env_id).algo == algo


def test_zoo_folder(sb3_expert, zoo_run_dir, tmp_path) -> None:
    model, path = sb3_expert("a2c", "CartPole-v1")
    config = {"n_envs": 8, "policy": "MlpPolicy", "env_kwargs": {"sutton_barto_reward": True}}
    run_dir = zoo_run_dir(tmp_path, "a2c", "CartPole-v1", path, config=config, args={"env_kwargs": None, "seed": 3})
    (run_dir / "expert.json").write_text('{"score": {"mean": 500.0}}')
    teacher = load_teacher(run_dir)
    assert (teacher.algo, teacher.kind, teacher.score) == ("a2c", "categorical", {"mean": 500.0})
    assert teacher.recipe == EnvRecipe("CartPole-v1", env_kwargs={"sutton_barto_reward": True})
    obs = _observations("CartPole-v1")
    _close(teacher(obs).logits, _sb3_reference(model, obs, "categorical")["logits"])
    assert load_teacher(run_dir, env_id="CartPole-v1").recipe.env_id == "CartPole-v1"


def test_zoo_folder_name_gives_algo(sb3_expert, zoo_run_dir, tmp_path) -> None:
    """A TRPO zip under ``ppo/`` is what the zoo folder says it is; an unknown folder name is ignored."""
    _, path = sb3_expert("trpo", "CartPole-v1")
    assert load_teacher(zoo_run_dir(tmp_path / "a", "ppo", "CartPole-v1", path)).algo == "ppo"
    assert load_teacher(zoo_run_dir(tmp_path / "b", "experts", "CartPole-v1", path)).algo == "trpo"


def test_zoo_folder_with_ordered_dict_yaml(sb3_expert, zoo_run_dir, tmp_path) -> None:
    """rl_zoo3 writes config.yml / args.yml with yaml.dump(OrderedDict(...)): python tags."""
    _, path = sb3_expert("ppo", "CartPole-v1")
    config = {"policy": "MlpPolicy", "n_envs": 8, "normalize": False, "policy_kwargs": "dict(net_arch=[64, 64])"}
    args = {"algo": "ppo", "env": "CartPole-v1", "env_kwargs": {"max_episode_steps": 200}, "seed": 0}
    run_dir = zoo_run_dir(tmp_path, "ppo", "CartPole-v1", path, config=config, args=args, ordered=True)
    assert "!!python/object/apply:collections.OrderedDict" in (run_dir / "CartPole-v1" / "config.yml").read_text()
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load((run_dir / "CartPole-v1" / "config.yml").read_text())
    teacher = load_teacher(run_dir)
    assert teacher.recipe == EnvRecipe("CartPole-v1", env_kwargs={"max_episode_steps": 200}, normalize=False)


def _vecnormalize(path: Path, env_id: str, *, norm_obs: bool = True, clip_obs: float = 2.5):
    """A VecNormalize with hand-set observation statistics, saved the way rl-zoo saves it."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: gym.make(env_id)]), norm_obs=norm_obs, clip_obs=clip_obs)
    if norm_obs:  # with norm_obs=False SB3 keeps no obs_rms at all
        venv.obs_rms.mean = np.array([0.5, -1.0, 0.02, 0.3])
        venv.obs_rms.var = np.array([0.04, 4.0, 0.0001, 2.0])
    venv.save(path)
    return venv


def test_vecnormalize_statistics_are_applied(sb3_expert, zoo_run_dir, tmp_path) -> None:
    model, path = sb3_expert("ppo", "CartPole-v1")
    run_dir = zoo_run_dir(tmp_path, "ppo", "CartPole-v1", path, config={"policy": "MlpPolicy", "normalize": True})
    vecnormalize = _vecnormalize(run_dir / "CartPole-v1" / "vecnormalize.pkl", "CartPole-v1")
    teacher = load_teacher(run_dir)
    assert teacher.recipe.normalize and teacher.normalizer is not None
    obs = _observations("CartPole-v1").astype(np.float32)
    normalized = vecnormalize.normalize_obs(obs)
    assert np.abs(normalized).max() == pytest.approx(2.5)  # some observations hit the clip
    np.testing.assert_allclose(teacher.normalizer(obs), normalized, rtol=1e-5, atol=1e-5)
    _close(teacher(obs).logits, _sb3_reference(model, normalized, "categorical")["logits"])
    assert not np.allclose(teacher(obs).logits.numpy(), _sb3_reference(model, obs, "categorical")["logits"].numpy())

    (run_dir / "CartPole-v1" / "vecnormalize.pkl").unlink()
    with pytest.raises(PolicyKDError, match="vecnormalize.pkl") as excinfo:
        load_teacher(run_dir)
    assert "\n" not in str(excinfo.value)


def test_vecnormalize_reward_only_leaves_observations(sb3_expert, zoo_run_dir, tmp_path) -> None:
    """rl-zoo's normalize string with norm_obs=False: the statistics must not touch observations."""
    model, path = sb3_expert("ppo", "CartPole-v1")
    config = {"policy": "MlpPolicy", "normalize": "dict(norm_obs=False, norm_reward=True)"}
    run_dir = zoo_run_dir(tmp_path, "ppo", "CartPole-v1", path, config=config, ordered=True)
    _vecnormalize(run_dir / "CartPole-v1" / "vecnormalize.pkl", "CartPole-v1", norm_obs=False)
    teacher = load_teacher(run_dir)
    assert not teacher.recipe.normalize
    obs = _observations("CartPole-v1")
    _close(teacher(obs).logits, _sb3_reference(model, obs, "categorical")["logits"])


def test_corrupt_vecnormalize(sb3_expert, zoo_run_dir, tmp_path) -> None:
    _, path = sb3_expert("ppo", "CartPole-v1")
    run_dir = zoo_run_dir(tmp_path, "ppo", "CartPole-v1", path, config={"normalize": True})
    (run_dir / "CartPole-v1" / "vecnormalize.pkl").write_bytes(pickle.dumps({"not": "a VecNormalize"}))
    with pytest.raises(PolicyKDError, match="VecNormalize"):
        load_teacher(run_dir)


def _one_line_error(source, **kwargs) -> str:
    with pytest.raises(PolicyKDError) as excinfo:
        load_teacher(source, **kwargs)
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_missing_file(tmp_path) -> None:
    assert "does not exist" in _one_line_error(tmp_path / "nope.zip", env_id="CartPole-v1")


def test_corrupt_zip(tmp_path) -> None:
    path = tmp_path / "model.zip"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a readable SB3 model" in _one_line_error(path, env_id="CartPole-v1")


def test_zip_with_mismatched_weights(sb3_expert, tmp_path) -> None:
    """A zip whose weights do not fit its policy (torch's error spans lines) is one line too."""
    import zipfile

    _, good = sb3_expert("ppo", "CartPole-v1")
    _, other = sb3_expert("ppo", "Pendulum-v1")
    bad = tmp_path / "mixed.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(other) as weights, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, (weights if name == "policy.pth" else src).read(name))
    assert "not a readable SB3 model" in _one_line_error(bad, env_id="CartPole-v1")


def test_zoo_folder_for_another_env(sb3_expert, zoo_run_dir, tmp_path) -> None:
    _, path = sb3_expert("ppo", "CartPole-v1")
    run_dir = zoo_run_dir(tmp_path, "ppo", "CartPole-v1", path)
    message = _one_line_error(run_dir, env_id="Acrobot-v1")
    assert "CartPole-v1" in message and "Acrobot-v1" in message


def test_zoo_folder_without_zip(tmp_path) -> None:
    (tmp_path / "ppo" / "CartPole-v1_1" / "CartPole-v1").mkdir(parents=True)
    assert "CartPole-v1.zip" in _one_line_error(tmp_path / "ppo" / "CartPole-v1_1")


def test_recurrent_policy_is_refused() -> None:
    """RecurrentPPO's policy is an ActorCriticPolicy whose calls need LSTM states."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    policy = RecurrentActorCriticPolicy(space, gym.spaces.Discrete(2), lambda _: 0.0, lstm_hidden_size=8)
    with pytest.raises(PolicyKDError, match="recurrent"):
        Teacher(policy, algo="ppo", source="memory", recipe=EnvRecipe("CartPole-v1"))


def test_repo_zoo_expert_loads() -> None:
    """The expert the repository ships (skipped while it is being retrained)."""
    run_dir = Path(__file__).resolve().parents[1] / "agents" / "ppo" / "CartPole-v1_1"
    if not (run_dir / "CartPole-v1.zip").is_file():
        pytest.skip("agents/ppo/CartPole-v1_1 holds no CartPole-v1.zip")
    teacher = load_teacher(run_dir)
    assert (teacher.algo, teacher.kind, teacher.recipe.env_id) == ("ppo", "categorical", "CartPole-v1")
    assert teacher.act(_observations("CartPole-v1")).shape == (B,)


def test_algo_from_zip_tells_same_named_cnn_policies_apart() -> None:
    """DQN's and QR-DQN's Atari policies are both called ``CnnPolicy``; the class name alone said "a2c"."""
    from sb3_contrib.qrdqn.policies import CnnPolicy as QRDQNCnn
    from stable_baselines3.dqn.policies import CnnPolicy as DQNCnn
    from stable_baselines3.ppo import CnnPolicy as PPOCnn

    from policykd.data.teachers import _algo_from_zip

    assert _algo_from_zip({"policy_class": QRDQNCnn}) == "qrdqn"
    assert _algo_from_zip({"policy_class": DQNCnn}) == "dqn"
    assert _algo_from_zip({"policy_class": PPOCnn, "clip_range": 0.1}) == "ppo"


def test_a_q_learner_acts_epsilon_greedily_when_stochastic(sb3_expert) -> None:
    """As SB3's DQN.predict(deterministic=False), and so as rl-zoo scores Atari experts: the
    exploration rate comes from the zip; greedy when deterministic, and for labels."""
    model, path = sb3_expert("qrdqn", "CartPole-v1")
    teacher = load_teacher(path, env_id="CartPole-v1")
    assert teacher.exploration_rate == pytest.approx(model.exploration_rate)
    obs = _observations("CartPole-v1", n=2_000)
    greedy = teacher.act(obs, deterministic=True)
    teacher.exploration_rate = 0.5
    rng = np.random.default_rng(0)
    acted = teacher.act(obs, deterministic=False, rng=rng)
    # half the actions are random, and half of those happen to agree with the greedy one
    assert 0.2 < np.mean(acted != greedy) < 0.3
    assert np.array_equal(teacher.act(obs, deterministic=False, rng=np.random.default_rng(0)), acted)
    teacher.exploration_rate = 0.0
    assert np.array_equal(teacher.act(obs, deterministic=False), greedy)
