"""Every (algorithm, policy option) pair that loads as a teacher, on a tiny expert trained here.

Each case trains an SB3 / sb3-contrib model for a few hundred steps (once per session), saves it,
loads it with ``load_teacher`` and checks the adapter against SB3 computed independently of the
adapter's code: logits / mean / std / Q-values / quantiles / actions, and ``teacher.act`` against
``model.predict(obs, deterministic=True)``. gSDE's per-sample std is checked against the formula
of SB3's StateDependentNoiseDistribution written out by hand, and, for SAC / TQC, against the
spread of the actions SB3 actually samples. The newly supported pairs then go through ``distill``
end to end on a tiny budget, and the dict-observation students are exported to SB3 and played on
the env's own dicts through the zip SB3 loads. The README's "What loads as a teacher" table lists
these cases.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from policykd.data.envs import flat_dict_space, unflatten_dict_obs
from policykd.data.fast_forward import fast_labeller
from policykd.data.teachers import load_teacher
from policykd.errors import PolicyKDError
from policykd.types import KIND_FIELDS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import toy_envs  # noqa: E402  (benchmarks/ is a folder of scripts: the toy envs live there once)

B = 32
SMALL_NET = {"net_arch": [32, 32]}
ON_POLICY = {"n_steps": 64, "batch_size": 64, "policy_kwargs": SMALL_NET}
OFF_POLICY = {"learning_starts": 100, "buffer_size": 1_000, "batch_size": 32, "policy_kwargs": SMALL_NET}
TQC_NET = {**SMALL_NET, "n_quantiles": 5, "n_critics": 2}
CNN = {"features_extractor_kwargs": {"features_dim": 32}}
IMAGE_ENV = "PolicykdTinyImage-v0"


class TinyImageEnv(gym.Env):
    """36x36 grey images (channel-last, as SB3 transposes them) whose brightness says which of two
    actions pays: the smallest image NatureCNN takes, for the CnnPolicy cases."""

    observation_space = gym.spaces.Box(0, 255, (36, 36, 1), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._observe(), {}

    def _observe(self) -> np.ndarray:
        self._bright = bool(self.np_random.random() < 0.5)
        return self.np_random.integers(0, 128, (36, 36, 1), dtype=np.uint8) + np.uint8(127 * self._bright)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(int(action) == int(self._bright))
        self._t += 1
        return self._observe(), reward, False, self._t >= 20, {}


if IMAGE_ENV not in gym.registry:
    gym.register(IMAGE_ENV, entry_point=TinyImageEnv)

MULTI_DISCRETE_ENV, MULTI_BINARY_ENV = "PolicykdTinyMultiDiscrete-v0", "PolicykdTinyMultiBinary-v0"


# Three observed numbers in [-1, 1]; each action factor pays 1 for the bin its number falls in; factors
# of unequal sizes (3, 2, 4) exercise the padding of the per-factor logits (benchmarks/toy_envs.py)
TinyFactoredEnv = toy_envs.Factored


# 5 states, 2 of the 5 actions forbidden each step, never the right one, one-hot observations, seeded
# draws only (benchmarks/toy_envs.MaskedChoice): the MaskablePPO cases' env
MASKED_ENV = "PolicykdInvalidAction-v0"


if MASKED_ENV not in gym.registry:
    gym.register(MASKED_ENV, entry_point=toy_envs.MaskedChoice, kwargs={"dim": 5, "n_invalid": 2})

for _env_id, _binary in ((MULTI_DISCRETE_ENV, False), (MULTI_BINARY_ENV, True)):
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=TinyFactoredEnv, kwargs={"binary": _binary})


DICT_DISCRETE_ENV, DICT_BOX_ENV = "PolicykdTinyDictCartPole-v0", "PolicykdTinyDictPendulum-v0"  # not toy_envs' ids


class SplitObservation(gym.ObservationWrapper):
    """A Box-observation env whose observation is split into two keys of a Dict (``head``: the first
    ``split`` numbers, ``tail``: the rest): the MultiInputPolicy cases' envs."""

    def __init__(self, env_id: str, split: int) -> None:
        super().__init__(gym.make(env_id))
        box, self._split = self.env.observation_space, split
        self.observation_space = gym.spaces.Dict(
            {
                "head": gym.spaces.Box(box.low[:split], box.high[:split], dtype=np.float32),
                "tail": gym.spaces.Box(box.low[split:], box.high[split:], dtype=np.float32),
            }
        )

    def observation(self, observation: np.ndarray) -> dict[str, np.ndarray]:
        return {"head": observation[: self._split], "tail": observation[self._split :]}


for _env_id, _base, _split in ((DICT_DISCRETE_ENV, "CartPole-v1", 2), (DICT_BOX_ENV, "Pendulum-v1", 1)):
    if _env_id not in gym.registry:
        gym.register(_env_id, entry_point=SplitObservation, kwargs={"env_id": _base, "split": _split})


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    algo: str
    env_id: str
    kind: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy: str = "MlpPolicy"
    new: bool = False  # first supported by issue 23: also distilled end to end here


MATRIX = [
    Case("ppo-discrete", "ppo", "CartPole-v1", "categorical", ON_POLICY),
    Case("a2c-discrete", "a2c", "CartPole-v1", "categorical", {"policy_kwargs": SMALL_NET}),
    Case("trpo-discrete", "trpo", "CartPole-v1", "categorical", ON_POLICY, new=True),
    Case("ppo-box", "ppo", "Pendulum-v1", "gaussian", ON_POLICY),
    Case("ppo-box-gsde", "ppo", "Pendulum-v1", "gaussian", {**ON_POLICY, "use_sde": True}),
    Case(
        "ppo-box-gsde-squash",
        "ppo",
        "Pendulum-v1",
        "squashed_gaussian",
        {**ON_POLICY, "use_sde": True, "policy_kwargs": {**SMALL_NET, "squash_output": True}},
        new=True,
    ),
    Case("a2c-box-gsde", "a2c", "Pendulum-v1", "gaussian", {"use_sde": True, "policy_kwargs": SMALL_NET}),
    Case("trpo-box", "trpo", "Pendulum-v1", "gaussian", ON_POLICY),
    Case("trpo-box-gsde", "trpo", "Pendulum-v1", "gaussian", {**ON_POLICY, "use_sde": True}, new=True),
    Case("ppo-image", "ppo", IMAGE_ENV, "categorical", {**ON_POLICY, "policy_kwargs": CNN}, "CnnPolicy"),
    Case("dqn-image", "dqn", IMAGE_ENV, "q_values", {**OFF_POLICY, "policy_kwargs": CNN}, "CnnPolicy"),
    Case("qrdqn-image", "qrdqn", IMAGE_ENV, "quantiles", {**OFF_POLICY, "policy_kwargs": CNN}, "CnnPolicy"),
    Case("dqn-discrete", "dqn", "CartPole-v1", "q_values", OFF_POLICY),
    Case("qrdqn-discrete", "qrdqn", "CartPole-v1", "quantiles", OFF_POLICY),
    Case("sac-box", "sac", "Pendulum-v1", "squashed_gaussian", OFF_POLICY),
    Case("sac-box-gsde", "sac", "Pendulum-v1", "squashed_gaussian", {**OFF_POLICY, "use_sde": True}, new=True),
    Case(
        "sac-box-gsde-expln",  # rl-zoo's gSDE SAC / TQC settings (MountainCarContinuous) use expln
        "sac",
        "Pendulum-v1",
        "squashed_gaussian",
        {**OFF_POLICY, "use_sde": True, "policy_kwargs": {**SMALL_NET, "use_expln": True, "log_std_init": 0.5}},
        new=True,
    ),
    Case("tqc-box", "tqc", "Pendulum-v1", "squashed_gaussian", {**OFF_POLICY, "policy_kwargs": TQC_NET}, new=True),
    Case(
        "tqc-box-gsde",
        "tqc",
        "Pendulum-v1",
        "squashed_gaussian",
        {**OFF_POLICY, "policy_kwargs": TQC_NET, "use_sde": True},
        new=True,
    ),
    Case("td3-box", "td3", "Pendulum-v1", "deterministic", OFF_POLICY),
    Case("ddpg-box", "ddpg", "Pendulum-v1", "deterministic", OFF_POLICY),
    Case("ars-discrete-mlp", "ars", "CartPole-v1", "q_values", {"n_delta": 2, "policy_kwargs": SMALL_NET}, new=True),
    Case("ars-discrete-linear", "ars", "CartPole-v1", "q_values", {"n_delta": 2}, "LinearPolicy", new=True),
    Case("ars-box-mlp", "ars", "Pendulum-v1", "deterministic", {"n_delta": 2, "policy_kwargs": SMALL_NET}, new=True),
    Case("ars-box-linear", "ars", "Pendulum-v1", "deterministic", {"n_delta": 2}, "LinearPolicy", new=True),
    Case("ppo-multidiscrete", "ppo", MULTI_DISCRETE_ENV, "categorical", ON_POLICY, new=True),
    Case("a2c-multidiscrete", "a2c", MULTI_DISCRETE_ENV, "categorical", {"policy_kwargs": SMALL_NET}, new=True),
    Case("ppo-multibinary", "ppo", MULTI_BINARY_ENV, "categorical", ON_POLICY, new=True),
    Case("trpo-multibinary", "trpo", MULTI_BINARY_ENV, "categorical", ON_POLICY, new=True),
    Case("maskableppo-discrete", "ppo_mask", MASKED_ENV, "categorical", ON_POLICY, new=True),
    Case("ppo-dict", "ppo", DICT_DISCRETE_ENV, "categorical", ON_POLICY, "MultiInputPolicy", new=True),
    Case("a2c-dict", "a2c", DICT_DISCRETE_ENV, "categorical", {"policy_kwargs": SMALL_NET}, "MultiInputPolicy", True),
    Case("dqn-dict", "dqn", DICT_DISCRETE_ENV, "q_values", OFF_POLICY, "MultiInputPolicy", new=True),
    Case("sac-dict", "sac", DICT_BOX_ENV, "squashed_gaussian", OFF_POLICY, "MultiInputPolicy", new=True),
    Case("td3-dict", "td3", DICT_BOX_ENV, "deterministic", OFF_POLICY, "MultiInputPolicy", new=True),
]
FACTORED_CASES = [case for case in MATRIX if case.env_id in (MULTI_DISCRETE_ENV, MULTI_BINARY_ENV)]
NEW_CASES = [case for case in MATRIX if case.new]


def _algo_class(algo: str) -> type:
    import sb3_contrib
    import stable_baselines3

    names = {"qrdqn": "QRDQN", "tqc": "TQC", "trpo": "TRPO", "ars": "ARS", "ppo_mask": "MaskablePPO"}
    return getattr(sb3_contrib, names[algo]) if algo in names else getattr(stable_baselines3, algo.upper())


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """``trained(case) -> (model, zip_path)``: the case's expert trained for 300 steps, once per session."""
    root = tmp_path_factory.mktemp("teacher_matrix")
    cache: dict[str, tuple[Any, Path]] = {}

    def make(case: Case) -> tuple[Any, Path]:
        if case.name not in cache:
            kwargs = copy.deepcopy(case.kwargs)  # SB3 writes into policy_kwargs
            model = _algo_class(case.algo)(case.policy, case.env_id, seed=0, device="cpu", **kwargs)
            model.learn(300)
            path = root / f"{case.name}.zip"
            model.save(path)
            cache[case.name] = (model, path)
        return cache[case.name]

    return make


def _observations(env_id: str, n: int = B) -> np.ndarray:
    """``n`` observations as policykd feeds them to a teacher (dict observations: flat rows)."""
    space = gym.make(env_id).observation_space
    if isinstance(space, gym.spaces.Dict):
        space = flat_dict_space(space, env_id)
    low, high = np.maximum(space.low, -3.0), np.minimum(space.high, 3.0)
    obs = np.random.default_rng(1).uniform(low, high, size=(n, *space.shape))
    return obs.astype(space.dtype if space.dtype == np.uint8 else np.float32)


def _sb3_obs(env_id: str, obs: np.ndarray) -> Any:
    """The same observations as SB3 takes them: a dict of per-key arrays for a Dict space."""
    space = gym.make(env_id).observation_space
    return unflatten_dict_obs(space, obs) if isinstance(space, gym.spaces.Dict) else obs


def _gsde_std(latent: torch.Tensor, log_std: torch.Tensor, use_expln: bool = False) -> torch.Tensor:
    """StateDependentNoiseDistribution's per-sample std, written out: the action noise is
    ``latent @ W`` with ``W[i, d] ~ N(0, s[i, d]^2)``, so its variance is ``latent^2 @ s^2`` (+ SB3's
    epsilon 1e-6), where ``s = exp(log_std)``, or with ``use_expln`` ``exp(x)`` for x <= 0 and
    ``log1p(x) + 1`` above. ``(B, latent), (latent, D) -> (B, D)``."""
    scale = (
        torch.where(log_std > 0, torch.log1p(log_std.clamp(min=0)) + 1.0, log_std.exp()) if use_expln else log_std.exp()
    )
    return torch.sqrt(latent**2 @ scale**2 + 1e-6)


def _reference(model: Any, obs: torch.Tensor, case: Case) -> dict[str, torch.Tensor]:
    """The teacher fields as SB3's modules compute them, by a route other than the adapter's."""
    policy = model.policy
    if case in FACTORED_CASES:
        return {}  # checked factor by factor in test_factored_logits_are_sb3s_distribution
    if case.algo in ("ppo", "a2c", "trpo", "ppo_mask"):  # MaskablePPO: its raw logits, before any mask
        features = policy.extract_features(obs)
        latent_pi = policy.mlp_extractor.forward_actor(features)
        out = policy.action_net(latent_pi)
        if case.kind == "categorical":
            return {"logits": torch.log_softmax(out, dim=-1)}
        use_expln = getattr(policy.action_dist, "use_expln", False)
        std = _gsde_std(latent_pi, policy.log_std, use_expln) if policy.use_sde else policy.log_std.exp().expand_as(out)
        return {"mean": out, "log_std": std.log()}
    if case.algo in ("sac", "tqc"):
        actor = policy.actor
        latent_pi = actor.latent_pi(actor.extract_features(obs, actor.features_extractor))
        mean = actor.mu(latent_pi)
        if actor.use_sde:
            std = _gsde_std(latent_pi, actor.log_std, actor.use_expln)
        else:
            std = actor.log_std(latent_pi).clamp(-20, 2).exp()
        return {"mean": mean, "log_std": std.log()}
    if case.algo == "dqn":
        return {"q_values": policy.q_net(obs)}
    if case.algo == "qrdqn":
        return {"quantiles": policy.quantile_net(obs)}
    if case.algo in ("td3", "ddpg"):
        return {"action": policy.actor(obs)}
    if case.kind == "q_values":  # ARS on Discrete: the scores its argmax acts on
        return {"q_values": policy.action_net(policy.extract_features(obs, policy.features_extractor))}
    raw = policy.action_net(policy.extract_features(obs, policy.features_extractor))  # ARS on Box
    if policy.squash_output:  # tanh inside action_net
        return {"action": raw}
    clipped = np.clip(raw.numpy(), policy.action_space.low, policy.action_space.high)  # what predict does
    return {"action": torch.as_tensor(policy.scale_action(clipped))}


OUR_ENVS = (IMAGE_ENV, MASKED_ENV, MULTI_DISCRETE_ENV, MULTI_BINARY_ENV, DICT_DISCRETE_ENV, DICT_BOX_ENV,
            toy_envs.MASKED_ENV, toy_envs.FACTORED_ENV, toy_envs.BINARY_ENV, toy_envs.DICT_ENV)  # fmt: skip


def _play(env_id: str, global_seed: int) -> list[Any]:
    """Two episodes of ``env_id`` from ``reset(seed=3)``, the same actions each time, numpy's global
    RNG seeded with ``global_seed`` first: observations, rewards, ends and action masks."""
    env = gym.make(env_id)
    np.random.seed(global_seed)
    env.action_space.seed(7)
    trajectory: list[Any] = [env.reset(seed=3)[0]]
    for _ in range(30):
        masks = env.unwrapped.action_masks() if hasattr(env.unwrapped, "action_masks") else None
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        trajectory.append((obs, reward, terminated, truncated, masks))
        if terminated or truncated:
            trajectory.append(env.reset()[0])
    env.close()
    return trajectory


@pytest.mark.parametrize("env_id", OUR_ENVS)
def test_our_envs_draw_from_their_own_seeded_generator(env_id: str) -> None:
    """The same seed, the same episodes, whatever numpy's global RNG holds (sb3-contrib's
    InvalidActionEnvDiscrete drew from it and from its action space's unseeded generator)."""
    np.testing.assert_equal(_play(env_id, 0), _play(env_id, 1))


@pytest.mark.parametrize("case", MATRIX, ids=[case.name for case in MATRIX])
def test_adapter_equals_sb3(trained, case: Case) -> None:
    model, path = trained(case)
    teacher = load_teacher(path, env_id=case.env_id)
    assert (teacher.algo, teacher.kind) == (case.algo, case.kind)
    obs = _observations(case.env_id)
    out = teacher(obs)
    assert {f for f in KIND_FIELDS[case.kind] if getattr(out, f) is not None} == set(KIND_FIELDS[case.kind])
    assert out.value.shape == (B,) and torch.isfinite(out.value).all()
    sb3_obs = _sb3_obs(case.env_id, obs)
    with torch.no_grad():  # images: transposed, as SB3 does; dicts: a tensor per key
        expected = _reference(model, model.policy.obs_to_tensor(sb3_obs)[0], case)
    for field, tensor in expected.items():
        torch.testing.assert_close(getattr(out, field), tensor.float(), rtol=1e-5, atol=1e-5, msg=field)
    actions, _ = model.predict(sb3_obs, deterministic=True)
    np.testing.assert_allclose(teacher.act(obs), actions, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", FACTORED_CASES, ids=[case.name for case in FACTORED_CASES])
def test_factored_logits_are_sb3s_distribution(trained, case: Case) -> None:
    """MultiDiscrete: factor i's logits are those of SB3's i-th Categorical, its padded choices have
    probability 0. MultiBinary: ``[0, logit]`` pairs whose softmax is SB3's Bernoulli."""
    model, path = trained(case)
    teacher = load_teacher(path, env_id=case.env_id)
    obs = _observations(case.env_id)
    out = teacher(obs)
    with torch.no_grad():
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution
    if case.env_id == MULTI_BINARY_ENV:
        assert out.logits.shape == (B, 3, 2)
        torch.testing.assert_close(out.logits[..., 1] - out.logits[..., 0], dist.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.logits[..., 1].exp(), dist.probs, rtol=1e-5, atol=1e-6)
        return
    assert out.logits.shape == (B, 3, 4)
    for i, (factor, n) in enumerate(zip(dist, (3, 2, 4))):
        torch.testing.assert_close(out.logits[:, i, :n], factor.logits, rtol=1e-5, atol=1e-5)
        assert torch.all(out.logits[:, i, n:].exp() == 0)
    assert not torch.equal(out.logits[0], out.logits[1])  # a trained policy that depends on the observation


@pytest.mark.parametrize("loss", ["kl", "nll"])
@pytest.mark.parametrize("env_id", [MULTI_DISCRETE_ENV, MULTI_BINARY_ENV])
def test_factored_student_learns_and_acts(trained, tmp_path: Path, env_id: str, loss: str) -> None:
    """A factorised student distilled from a factorised teacher acts in the env's space, one action per
    factor, and picks the teacher's whole greedy action on most states (chance: 1 in 24 or 8; the
    300-step teacher's logits are nearly flat on some states, so not all)."""
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill
    from policykd.learn.students import Student

    _, path = trained(next(c for c in FACTORED_CASES if c.env_id == env_id and c.algo == "ppo"))
    config = DistillConfig(
        teacher=str(path), env_id=env_id, loss=loss, n_transitions=512, n_updates=300, batch_size=64,
        hidden_sizes=(32,), n_eval_episodes=2, teacher_check=False, progress_bar=False, out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    summary = distill(config)
    student = Student.load(tmp_path / "run" / "student")
    space = gym.make(env_id).action_space
    assert student.config.action_space == space
    obs = _observations(env_id, n=256)
    actions = student.act(obs)
    assert actions.shape == (256, 3) and all(space.contains(a.astype(space.dtype)) for a in actions)
    sampled = student.act(obs, deterministic=False, rng=np.random.default_rng(0))
    assert sampled.shape == (256, 3) and all(space.contains(a.astype(space.dtype)) for a in sampled)
    teacher = load_teacher(path, env_id=env_id)
    agreement = np.mean(np.all(actions == teacher.act(obs), axis=1))
    assert agreement > 0.6, agreement
    assert np.isfinite(summary["student_return_mean"])


def _random_masks(n: int, n_actions: int = 5, seed: int = 2) -> np.ndarray:
    """``(n, A)`` masks allowing 1 to A actions per row (one always allowed)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n, n_actions)) < 0.5
    masks[np.arange(n), rng.integers(0, n_actions, n)] = True
    return masks


def test_maskable_teacher_acts_as_maskableppo(trained) -> None:
    """The raw logits are stored; masked (forbidden actions at INVALID_LOGIT) they are SB3's masked
    distribution, and the teacher's masked greedy action is ``predict(obs, action_masks=...)``."""
    from policykd.data.actions import masked_output

    case = next(c for c in MATRIX if c.algo == "ppo_mask")
    model, path = trained(case)
    teacher = load_teacher(path, env_id=case.env_id)
    obs, masks = _observations(case.env_id), _random_masks(B)
    out = masked_output(teacher(obs), masks)
    with torch.no_grad():
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0], action_masks=masks).distribution
    torch.testing.assert_close(out.logits.softmax(dim=-1), dist.probs, rtol=1e-5, atol=1e-6)
    assert torch.all(out.logits.softmax(dim=-1)[~torch.as_tensor(masks)] == 0)
    expected, _ = model.predict(obs, deterministic=True, action_masks=masks)
    np.testing.assert_array_equal(teacher.act(obs, action_masks=masks), expected)
    sampled = teacher.act(obs, deterministic=False, rng=np.random.default_rng(0), action_masks=masks)
    assert masks[np.arange(B), sampled].all()


def test_epsilon_is_refused_for_a_maskable_teacher(trained) -> None:
    from policykd.jobs.config import CollectConfig
    from policykd.jobs.resolve import check_exploration

    _, path = trained(next(c for c in MATRIX if c.algo == "ppo_mask"))
    teacher = load_teacher(path, env_id=MASKED_ENV)
    check_exploration(CollectConfig(epsilon=0.0), teacher)
    with pytest.raises(PolicyKDError, match="action masks forbid"):
        check_exploration(CollectConfig(epsilon=0.1), teacher)


@pytest.mark.parametrize("kl_direction", ["forward", "reverse"])
def test_maskable_distill_stores_masks_and_the_student_obeys_them(trained, tmp_path: Path, kl_direction: str) -> None:
    """distill stores the env's masks beside the raw logits (in the saved .npz, no pickle), the loss
    masks both sides (finite, also in the reverse direction), and the student only takes allowed
    actions, when collecting on its own (beta 0) and when evaluated."""
    from policykd.data.buffers import LabelledBuffer
    from policykd.data.collect import collect_rollouts
    from policykd.data.envs import make_vec_env
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill
    from policykd.learn.students import Student

    _, path = trained(next(c for c in MATRIX if c.algo == "ppo_mask"))
    config = DistillConfig(
        teacher=str(path), env_id=MASKED_ENV, loss="kl", kl_direction=kl_direction, n_transitions=256,
        n_updates=200, batch_size=64, hidden_sizes=(32,), n_eval_episodes=4, teacher_check=False,
        progress_bar=False, out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    summary = distill(config)
    assert np.isfinite(summary["student_return_mean"]) and np.isfinite(summary["final_train_metrics"]["losses/distill"])
    buffer = LabelledBuffer.load(next((tmp_path / "run").rglob("*.npz")))
    masks = buffer.column("action_masks")
    assert masks.shape == (256, 5) and masks.dtype == bool and (masks.sum(axis=1) == 3).all()
    assert masks[np.arange(256), buffer.column("actions")].all()  # the teacher drove within the masks
    student = Student.load(tmp_path / "run" / "student")
    teacher = load_teacher(path, env_id=MASKED_ENV)
    venv = make_vec_env(teacher.recipe, 2, 0)
    try:
        on_policy, _ = collect_rollouts(
            venv, [teacher], 200, rng=np.random.default_rng(0), beta=0.0,
            student_act=lambda obs, **kw: student.act(obs, False, np.random.default_rng(1), **kw),
        )  # fmt: skip
    finally:
        venv.close()
    allowed = on_policy.column("action_masks")[np.arange(len(on_policy)), on_policy.column("actions")]
    assert allowed.all()
    obs = _observations(MASKED_ENV, n=64)
    all_forbidden_but = _random_masks(64, seed=5)
    assert all_forbidden_but[np.arange(64), student.act(obs, action_masks=all_forbidden_but)].all()


@pytest.mark.parametrize("case", MATRIX, ids=[case.name for case in MATRIX])
def test_collection_labels_as_the_teacher_does(trained, case: Case) -> None:
    """Collection labels through ``fast_forward.fast_labeller``: every field, the value included,
    must be the teacher's own (a TQC critic's quantiles are not a SAC critic's Q-values)."""
    _, path = trained(case)
    teacher = load_teacher(path, env_id=case.env_id)
    obs = _observations(case.env_id)
    fast, own = fast_labeller(teacher)(obs), teacher(obs)
    for field in (*KIND_FIELDS[case.kind], "value"):
        torch.testing.assert_close(getattr(fast, field), getattr(own, field), rtol=1e-6, atol=1e-6, msg=field)


@pytest.mark.parametrize("algo", ["sac", "tqc"])
def test_gsde_std_is_the_spread_sb3_samples_with(trained, algo: str) -> None:
    """Sample 4,000 actions per state the way SB3 explores (a fresh noise matrix per sample): the
    spread of the pre-tanh actions is the std the teacher reports, and that std varies by state."""
    case = next(c for c in MATRIX if c.name == f"{algo}-box-gsde")
    model, path = trained(case)
    teacher = load_teacher(path, env_id=case.env_id)
    obs = _observations(case.env_id, n=4)
    out = teacher(obs)
    n = 4_000
    actor = model.policy.actor
    torch.manual_seed(0)
    for i in range(len(obs)):
        actor.reset_noise(batch_size=n)
        with torch.no_grad():
            sampled = actor(torch.as_tensor(obs[i : i + 1]).repeat(n, 1), deterministic=False)
        pre_tanh = torch.atanh(sampled.double().clamp(-1 + 1e-7, 1 - 1e-7))
        assert pre_tanh.std(dim=0).item() == pytest.approx(out.log_std[i].exp().item(), rel=0.08)
        assert pre_tanh.mean(dim=0).item() == pytest.approx(out.mean[i].item(), abs=0.1 * out.log_std[i].exp().item())
    assert out.log_std.shape == (4, 1) and out.log_std.std() > 1e-3


@pytest.mark.parametrize("case", NEW_CASES, ids=[case.name for case in NEW_CASES])
def test_distill_accepts_the_teacher(trained, tmp_path: Path, case: Case) -> None:
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill
    from policykd.learn.students import Student

    _, path = trained(case)
    config = DistillConfig(
        teacher=str(path),
        env_id=case.env_id,
        loss="mse" if case.kind == "deterministic" else "kl",  # kl needs a stochastic teacher
        n_transitions=128,
        n_updates=4,
        batch_size=32,
        hidden_sizes=(16,),
        n_eval_episodes=1,
        teacher_check=False,
        progress_bar=False,
        out_dir=str(tmp_path / "run"),
    )
    summary = distill(config)
    student = Student.load(tmp_path / "run" / "student")
    expected_head = {"categorical": "discrete", "q_values": "discrete"}.get(case.kind, case.kind)
    assert student.config.head == {"squashed_gaussian": "gaussian"}.get(expected_head, expected_head)
    assert student.config.squash == (case.kind == "squashed_gaussian")
    assert np.isfinite(summary["student_return_mean"]) and np.isfinite(summary["teacher_return_mean"])


# (matrix case, distillation loss, the SB3 class its student exports as)
DICT_EXPORTS = [
    ("ppo-dict", "kl", "ppo"),
    ("dqn-dict", "mse", "dqn"),
    ("sac-dict", "kl", "sac"),
    ("td3-dict", "mse", "td3"),
]


@pytest.fixture(scope="session")
def dict_run(trained, tmp_path_factory: pytest.TempPathFactory):
    """``dict_run(case name, loss) -> run folder``: a student distilled from the case's dict expert, once per session."""
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill

    root, runs = tmp_path_factory.mktemp("dict_runs"), {}

    def make(name: str, loss: str) -> Path:
        if name not in runs:
            _, path = trained(next(case for case in MATRIX if case.name == name))
            runs[name] = root / name
            distill(
                DistillConfig(
                    teacher=str(path), env_id=_case(name).env_id, loss=loss, n_transitions=256, n_updates=40,
                    batch_size=32, hidden_sizes=(16,), n_eval_episodes=1, teacher_check=False,
                    progress_bar=False, out_dir=str(runs[name]),
                )
            )  # fmt: skip
        return runs[name]

    return make


def _case(name: str) -> Case:
    return next(case for case in MATRIX if case.name == name)


def _play_dict_env(env_id: str, act: Any, n_steps: int = 300) -> tuple[list[dict[str, np.ndarray]], list[Any]]:
    """The env's own dict observations over ``n_steps`` steps of real episodes played by ``act``, and its actions."""
    env = gym.make(env_id)
    observations, actions = [], []
    obs, _ = env.reset(seed=0)
    for _ in range(n_steps):
        action = act(obs)
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return observations, actions


@pytest.mark.parametrize("name, loss, algo", DICT_EXPORTS, ids=[row[0] for row in DICT_EXPORTS])
def test_a_dict_students_sb3_zip_takes_the_envs_dicts(
    dict_run, tmp_path: Path, name: str, loss: str, algo: str
) -> None:
    """export --format sb3 of a student distilled from a MultiInputPolicy expert: plain SB3 loads a
    MultiInputPolicy zip whose space is the env's Dict, and its greedy ``predict`` on the env's own dict
    observations, over a few hundred steps of real episodes, is the student's action on the same
    observations (the student takes them as rows: the keys concatenated in the Dict's order)."""
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy

    from policykd.data.envs import flatten_dict_obs
    from policykd.jobs.export import export_sb3, sb3_class
    from policykd.learn.students import Student

    env_id = _case(name).env_id
    report = export_sb3(dict_run(name, loss), tmp_path / "student.zip")
    model = sb3_class(algo).load(tmp_path / "student.zip", device="cpu")  # SB3's own loader, nothing of policykd
    space = gym.make(env_id).observation_space
    assert report.algo == algo and model.observation_space == space and isinstance(space, gym.spaces.Dict)
    assert list(report.observation_keys.items()) == [(key, list(sub.shape)) for key, sub in space.spaces.items()]
    assert list(model.observation_space.spaces) == list(space.spaces)  # Dict equality ignores the order
    assert algo != "ppo" or isinstance(model.policy, MultiInputActorCriticPolicy)
    student = Student.load(dict_run(name, loss) / "student")
    observations, actions = _play_dict_env(env_id, lambda obs: model.predict(obs, deterministic=True)[0])
    rows = flatten_dict_obs(space, {key: np.stack([obs[key] for obs in observations]) for key in space.spaces})
    expected = student.act(rows, deterministic=True)
    if student.config.head == "discrete":
        np.testing.assert_array_equal(np.asarray(actions), expected)
        # the greedy action of a tiny student may be the same everywhere: its log-probabilities are not
        with torch.no_grad():
            obs = model.policy.obs_to_tensor({key: np.stack([o[key] for o in observations]) for key in space.spaces})[0]
            zip_logits = model.policy.get_distribution(obs).distribution.logits if algo == "ppo" else model.q_net(obs)
            student_logits = student(torch.as_tensor(rows)).logits
        torch.testing.assert_close(zip_logits.log_softmax(-1), student_logits.log_softmax(-1), atol=1e-5, rtol=1e-5)
    else:
        np.testing.assert_allclose(np.asarray(actions), expected, atol=1e-5)
        assert np.ptp(expected) > 1e-2


def test_a_dict_space_that_is_not_the_students_rows_is_refused_in_one_line() -> None:
    from policykd.learn.sb3_export import check_observation_space
    from policykd.learn.students import StudentConfig

    config = StudentConfig(observation_shape=(4,), action_dim=2, head="discrete", hidden_sizes=(8,))
    box = gym.spaces.Box(-1, 1, (2,), np.float32)
    check_observation_space(config, gym.spaces.Dict({"head": box, "tail": box}))  # 2 + 2: the student's row
    for space in (
        gym.spaces.Dict({"head": box}),
        gym.spaces.Dict({"head": box, "tail": gym.spaces.Discrete(3)}),
    ):
        with pytest.raises(PolicyKDError, match="do not flatten into this student") as err:
            check_observation_space(config, space)
        assert "\n" not in str(err.value)


def test_a_dict_students_onnx_records_its_row_layout_and_its_hub_card_plays_the_dicts(dict_run, tmp_path: Path) -> None:
    """The ONNX graph takes rows: the file names their keys and shapes in row order. The hub card's
    snippet unwraps make_vec_env's flat rows, and its zip then plays the env's dicts in SB3's evaluate_policy."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    from policykd.data.envs import EnvRecipe, make_vec_env
    from policykd.jobs.export import export_onnx
    from policykd.jobs.export_hub import export_hub
    from policykd.jobs.onnx_policy import OnnxPolicy

    run = dict_run("ppo-dict", "kl")
    export_onnx(run, tmp_path / "policy.onnx")
    assert list(OnnxPolicy(tmp_path / "policy.onnx").observation_keys.items()) == [("head", [2]), ("tail", [2])]
    hub = export_hub(run, tmp_path / "hub")
    card = (hub.folder / "README.md").read_text()
    assert "env = env.venv" in card
    env = make_vec_env(EnvRecipe(DICT_DISCRETE_ENV), 1, 0).venv  # as the card says
    model = PPO.load(hub.sb3.path, env=env, device="cpu")
    mean, _ = evaluate_policy(model, env, n_eval_episodes=2)
    assert np.isfinite(mean) and mean >= 1


def _untrained(algo: str, policy: str, env: Any) -> Any:
    import sb3_contrib

    return getattr(sb3_contrib, algo)(policy, env, seed=0, device="cpu", n_steps=64, batch_size=64)


# (algorithm, policy, action space, what the refusal says): loaded, refused in one line
REFUSED = [
    ("RecurrentPPO", "MlpLstmPolicy", "any", "recurrent teachers (RecurrentPPO) need a recurrent student"),
    ("any", "MultiInputPolicy (image key)", "any", "image keys need a CNN per key in the student"),
]


@pytest.mark.parametrize(("algo", "policy", "message"), [(r[0], r[1], r[3]) for r in REFUSED[:1]])
def test_unsupported_policies_are_refused_in_one_line(tmp_path: Path, algo, policy, message) -> None:
    _untrained(algo, policy, "CartPole-v1").save(tmp_path / "model.zip")
    with pytest.raises(PolicyKDError, match="not supported yet") as err:
        load_teacher(tmp_path / "model.zip", env_id="CartPole-v1")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("observation_space", "action_space", "message"),
    [(gym.spaces.Dict({"a": gym.spaces.Box(0, 255, (1, 36, 36), np.uint8)}), gym.spaces.Discrete(2), REFUSED[1][3])],
    ids=["dict-obs-image"],
)
def test_unsupported_spaces_are_refused_in_one_line(observation_space, action_space, message) -> None:
    from stable_baselines3.common.policies import ActorCriticPolicy, MultiInputActorCriticPolicy

    from policykd.data.envs import EnvRecipe
    from policykd.data.teachers import Teacher

    policy_class = MultiInputActorCriticPolicy if isinstance(observation_space, gym.spaces.Dict) else ActorCriticPolicy
    policy = policy_class(observation_space, action_space, lambda _: 0.0)
    with pytest.raises(PolicyKDError, match="not supported yet") as err:
        Teacher(policy, algo="ppo", source="memory", recipe=EnvRecipe("none"))
    assert message in str(err.value) and "\n" not in str(err.value)


# -- the README's "What loads as a teacher" table is this matrix ---------------------------------------
ALGO_NAMES = {"ppo": "PPO", "a2c": "A2C", "trpo": "TRPO", "dqn": "DQN", "qrdqn": "QR-DQN", "sac": "SAC",
              "tqc": "TQC", "td3": "TD3", "ddpg": "DDPG", "ars": "ARS", "ppo_mask": "MaskablePPO"}  # fmt: skip


def _option(case: Case) -> str:
    policy_kwargs = case.kwargs.get("policy_kwargs", {})
    options = ["gSDE"] if case.kwargs.get("use_sde") else []
    options += [name for name in ("squash_output", "use_expln") if policy_kwargs.get(name)]
    return " + ".join(options) or "—"


def _space(case: Case) -> str:
    names = {
        "Pendulum-v1": "Box",
        DICT_BOX_ENV: "Box",
        MULTI_DISCRETE_ENV: "MultiDiscrete",
        MULTI_BINARY_ENV: "MultiBinary",
    }
    return names.get(case.env_id, "Discrete")


def matrix_table() -> str:
    """The README table: one row per matrix case, then the refusals."""
    rows = [
        f"| {ALGO_NAMES[c.algo]} | {c.policy} | {_option(c)} | {_space(c)} | `{c.kind}` | `{c.name}` |" for c in MATRIX
    ]
    rows += [f"| {algo} | {policy} | — | {space} | refused: {message}, not supported yet | refusal |"
             for algo, policy, space, message in REFUSED]  # fmt: skip
    header = "| algorithm | policy | option | action space | teacher kind | matrix case |\n|---|---|---|---|---|---|"
    return header + "\n" + "\n".join(rows)


def test_readme_lists_what_loads() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- teacher-matrix:start -->\n")[1].split("\n<!-- teacher-matrix:end -->")[0]
    assert block == matrix_table(), "regenerate the README block from tests/test_teacher_matrix.matrix_table()"
