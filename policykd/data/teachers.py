"""Load an SB3 expert (a ``.zip``, an rl-zoo folder or a hub id) as a Teacher.

A Teacher maps a batch of raw observations to a ``TeacherOutput`` of plain tensors. Only the
policy is rebuilt from the zip (no algorithm, no env, no replay buffer), so every SB3 /
sb3-contrib algorithm loads the same way, and SB3's reused ``Distribution`` object never leaves
this module: its tensors are copied out. An expert is someone else's file: its pickles are read
through policykd.data.safe_pickle's allow-list unless the caller trusts it (``trust_pickles``).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policykd.data.actions import ActionMapper, factor_layout, factor_logits, masked_output
from policykd.data.envs import (
    EnvRecipe,
    check_wrappers,
    flat_dict_space,
    read_zoo_yaml,
    recipe_from_zoo_config,
    unflatten_dict_obs,
)
from policykd.data.safe_pickle import load_pickle, read_sb3_zip
from policykd.errors import PolicyKDError
from policykd.types import TeacherKind, TeacherOutput

# Schedules are cloudpickled closures in SB3 zips; inference needs none of them.
_CUSTOM_OBJECTS = {
    "learning_rate": 0.0,
    "lr_schedule": lambda _: 0.0,
    "clip_range": lambda _: 0.0,
    "clip_range_vf": None,
    "exploration_schedule": lambda _: 0.0,
    "delta_std_schedule": lambda _: 0.0,  # ARS
    "weights": None,  # ARS's flat copy of its policy's parameters (a pickled tensor); the state dict holds them
}
_VALUE_ONLY_PREFIXES = ("value_net.", "mlp_extractor.value_net.", "vf_features_extractor.")


@dataclasses.dataclass(frozen=True)
class ObsNormalizer:
    """VecNormalize's observation statistics, copied out of ``vecnormalize.pkl``."""

    mean: np.ndarray
    var: np.ndarray
    clip: float
    epsilon: float
    count: float | None = None
    """The number of observations the statistics were computed from (None: unknown)."""

    @property
    def std(self) -> np.ndarray:
        """The scale VecNormalize divides by: sqrt(var + epsilon)."""
        return np.sqrt(self.var + self.epsilon)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - self.mean) / self.std, -self.clip, self.clip).astype(np.float32)

    @classmethod
    def from_vecnormalize(cls, path: Path, *, trust_pickles: bool = False) -> ObsNormalizer | None:
        """The observation statistics in ``path``; None when it normalised rewards only
        (``norm_obs=False``: SB3 then keeps no ``obs_rms`` at all). The pickle is read through
        safe_pickle's allow-list unless ``trust_pickles``."""
        # vecnormalize.pkl is SB3's own pickle that users bring; we only read it, never write our state so.
        try:
            vec_normalize = load_pickle(path, trust_pickles=trust_pickles)
            if not vec_normalize.norm_obs:
                return None
            rms = vec_normalize.obs_rms
            mean, var = rms.mean.astype(np.float32), rms.var.astype(np.float32)
            count = float(rms.count)
            return cls(mean, var, float(vec_normalize.clip_obs), float(vec_normalize.epsilon), count)
        except PolicyKDError:
            raise
        except Exception as err:  # noqa: BLE001 - any unreadable pickle is the same user error
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise PolicyKDError(
                f"cannot read VecNormalize statistics {path} ({reason}); restore the zoo's file"
            ) from None


class Teacher:
    """An SB3 policy in evaluation mode. ``teacher(obs)`` labels a batch; ``act`` drives an env."""

    def __init__(
        self,
        policy: Any,
        *,
        algo: str,
        source: str,
        recipe: EnvRecipe,
        normalizer: ObsNormalizer | None = None,
        score: dict[str, Any] | None = None,
        exploration_rate: float = 0.0,
    ) -> None:
        self.policy = policy.eval()
        self.algo, self.source, self.recipe, self.normalizer = algo, source, recipe, normalizer
        self.score = score  # recorded in the zoo's expert.json, if any
        self.exploration_rate = float(exploration_rate)  # a Q-learner's epsilon when it acts stochastically
        self.observation_space: gym.spaces.Space = policy.observation_space
        self.action_space: gym.spaces.Space = policy.action_space
        supported = (gym.spaces.Discrete, gym.spaces.Box, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
        if not isinstance(self.action_space, supported):
            raise PolicyKDError(
                f"{source}: action space {self.action_space} is not supported "
                "(Discrete, Box, MultiDiscrete or MultiBinary only)"
            )
        self.nvec, self._binary = factor_layout(self.action_space)  # () unless MultiDiscrete / MultiBinary
        self.masked = False  # MaskablePPO: acts on the env's action masks (data.envs.env_action_masks)
        self.dict_space: gym.spaces.Dict | None = None  # MultiInputPolicy: labels flat rows (envs.flat_dict_space)
        if isinstance(self.observation_space, gym.spaces.Dict):
            if normalizer is not None:
                raise PolicyKDError(
                    f"{source}: VecNormalize with dict observations (norm_obs_keys) is not supported yet; "
                    "distil an expert trained without observation normalisation"
                )
            self.dict_space = self.observation_space
            self.observation_space = flat_dict_space(self.dict_space, source)
        self.kind, self._label = self._adapter(policy, source)
        self.mapper = ActionMapper(self.action_space, squash=self.kind == "squashed_gaussian")
        self._device = policy.device
        self._plain_box_obs = isinstance(self.observation_space, gym.spaces.Box)

    def to(self, device: str | torch.device) -> Teacher:
        """Label on ``device`` from now on (the policy's weights move there); returns the teacher."""
        self.policy.to(device)
        self._device = torch.device(device)
        return self

    @property
    def device(self) -> torch.device:
        return self._device

    def _adapter(self, policy: Any, source: str) -> tuple[TeacherKind, Any]:
        """The teacher kind and labelling method for this SB3 / sb3-contrib policy class."""
        from sb3_contrib.ars.policies import ARSPolicy
        from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
        from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
        from sb3_contrib.qrdqn.policies import QRDQNPolicy
        from sb3_contrib.tqc.policies import TQCPolicy
        from stable_baselines3.common.policies import ActorCriticPolicy
        from stable_baselines3.dqn.policies import DQNPolicy
        from stable_baselines3.sac.policies import SACPolicy
        from stable_baselines3.td3.policies import TD3Policy

        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        if self.nvec and not isinstance(policy, ActorCriticPolicy):
            raise PolicyKDError(
                f"{source}: {type(policy).__name__} on {self.action_space} is not supported as a teacher; "
                "MultiDiscrete / MultiBinary teachers are PPO, A2C or TRPO"
            )
        if isinstance(policy, RecurrentActorCriticPolicy):
            raise PolicyKDError(
                f"{source}: recurrent teachers (RecurrentPPO) need a recurrent student (LSTM state carried through "
                "collection, sequences sampled from the buffer), not supported yet; distil a feed-forward expert"
            )
        if isinstance(policy, MaskableActorCriticPolicy):  # its logits are stored raw; the env's masks apart
            if not discrete:
                raise PolicyKDError(
                    f"{source}: MaskablePPO on {self.action_space} is not supported yet (its masks span every "
                    "factor's choices); MaskablePPO teachers on Discrete actions are"
                )
            self.masked = True
            return "categorical", self._actor_critic_fused
        if isinstance(policy, ActorCriticPolicy):  # PPO, A2C, TRPO
            squashed = policy.use_sde and policy.squash_output  # gSDE's squash_output: tanh, like SAC
            if discrete or self.nvec:
                return "categorical", self._actor_critic
            return ("squashed_gaussian" if squashed else "gaussian"), self._actor_critic
        if isinstance(policy, QRDQNPolicy):
            return "quantiles", self._quantiles
        if isinstance(policy, DQNPolicy):
            return "q_values", self._q_values
        if isinstance(policy, (SACPolicy, TQCPolicy)):
            return "squashed_gaussian", self._squashed_actor
        if isinstance(policy, TD3Policy):  # TD3 and DDPG
            return "deterministic", self._td3
        if isinstance(policy, ARSPolicy):  # ARS acts deterministically: argmax of its scores, or its action
            return ("q_values", self._ars_scores) if discrete else ("deterministic", self._ars_action)
        raise PolicyKDError(f"{source}: policy class {type(policy).__name__} is not supported as a teacher")

    # -- labelling -------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, observations: np.ndarray) -> TeacherOutput:
        """Label raw observations ``(B, *obs_shape)``: returns tensors of leading dim B."""
        obs = np.asarray(observations)
        if self.normalizer is not None:
            obs = self.normalizer(obs)
        if self.dict_space is not None:  # SB3's own obs_to_tensor and preprocessing, key by key
            return self._label(self.policy.obs_to_tensor(unflatten_dict_obs(self.dict_space, obs))[0])
        if self._plain_box_obs and obs.shape[1:] == self.observation_space.shape:
            # SB3's obs_to_tensor does the same plus checks and a device lookup that walks every
            # parameter: a third of the cost of labelling a small batch
            return self._label(torch.as_tensor(obs, device=self._device))
        obs_tensor, _ = self.policy.obs_to_tensor(obs)
        return self._label(obs_tensor)

    def _actor_critic(self, obs: torch.Tensor) -> TeacherOutput:
        if not self.policy.use_sde:
            return self._actor_critic_fused(obs)
        dist = self.policy.get_distribution(obs).distribution
        value = self.policy.predict_values(obs).flatten().clone()
        if self.kind == "categorical":
            return TeacherOutput("categorical", logits=dist.logits.clone(), value=value)
        # gSDE: the per-sample std SB3 samples from, sqrt(latent_sde^2 @ std^2 + eps); the mean is pre-tanh
        # when squash_output is set (the kind is then squashed_gaussian)
        return TeacherOutput(self.kind, mean=dist.mean.clone(), log_std=dist.stddev.log().clone(), value=value)

    def _actor_critic_fused(self, obs: torch.Tensor) -> TeacherOutput:
        """One pass through the shared layers for both heads, and no Distribution object: what
        ``get_distribution`` + ``predict_values`` compute, at about half the cost per call."""
        policy = self.policy
        features = policy.extract_features(obs)
        if policy.share_features_extractor:
            latent_pi, latent_vf = policy.mlp_extractor(features)
        else:
            latent_pi = policy.mlp_extractor.forward_actor(features[0])
            latent_vf = policy.mlp_extractor.forward_critic(features[1])
        value = policy.value_net(latent_vf).flatten()
        out = policy.action_net(latent_pi)
        if self.nvec:  # MultiDiscrete / MultiBinary: per-factor logits (B, F, C)
            out = factor_logits(out, self.nvec, self._binary)
        if self.kind == "categorical":  # torch's Categorical stores logits normalised the same way
            return TeacherOutput("categorical", logits=torch.log_softmax(out, dim=-1), value=value)
        return TeacherOutput("gaussian", mean=out, log_std=policy.log_std.expand_as(out).clone(), value=value)

    def _q_values(self, obs: torch.Tensor) -> TeacherOutput:
        q = self.policy.q_net(obs)
        return TeacherOutput("q_values", q_values=q.clone(), value=q.max(dim=1).values)

    def _quantiles(self, obs: torch.Tensor) -> TeacherOutput:
        quantiles = self.policy.quantile_net(obs)  # (B, N, A)
        q = quantiles.mean(dim=1)
        return TeacherOutput("quantiles", q_values=q, quantiles=quantiles.clone(), value=q.max(dim=1).values)

    def _squashed_actor(self, obs: torch.Tensor) -> TeacherOutput:
        """SAC / TQC: the pre-tanh mean and the log-std of the Gaussian SB3's actor samples from.
        With gSDE, ``get_action_dist_params`` gives the (latent, D) log-std matrix, so the
        per-sample std is taken from the distribution SB3 builds from it (``proba_distribution``)."""
        actor = self.policy.actor
        mean, log_std, extra = actor.get_action_dist_params(obs)
        if actor.use_sde:
            log_std = actor.action_dist.proba_distribution(mean, log_std, **extra).distribution.stddev.log()
        critic = self.policy.critic(obs, torch.tanh(mean))
        if isinstance(critic, torch.Tensor):  # TQC: quantiles (B, n_critics, n_quantiles); Q is their mean
            value = critic.mean(dim=2).min(dim=1).values
        else:  # SAC: one (B, 1) Q per critic
            value = torch.cat(critic, dim=1).min(dim=1).values
        return TeacherOutput("squashed_gaussian", mean=mean.clone(), log_std=log_std.clone(), value=value)

    def _td3(self, obs: torch.Tensor) -> TeacherOutput:
        action = self.policy.actor(obs)
        value = torch.cat(self.policy.critic(obs, action), dim=1).min(dim=1).values
        return TeacherOutput("deterministic", action=action.clone(), value=value)

    def _ars_scores(self, obs: torch.Tensor) -> TeacherOutput:
        """ARS on Discrete: the action net's scores, whose argmax is the action (read like Q-values)."""
        scores = self.policy.action_net(self.policy.extract_features(obs, self.policy.features_extractor))
        return TeacherOutput("q_values", q_values=scores.clone(), value=scores.max(dim=1).values)

    def _ars_action(self, obs: torch.Tensor) -> TeacherOutput:
        """ARS on Box: its action in [-1, 1] (tanh-squashed, or clipped to the bounds and rescaled as
        SB3's ``predict`` clips it); ARS has no critic, so the value is 0."""
        action = self.policy(obs)
        if not self.policy.squash_output:
            low, high = (torch.as_tensor(b, device=action.device) for b in (self.mapper.low, self.mapper.high))
            action = 2.0 * (torch.clamp(action, low, high) - low) / (high - low) - 1.0
        return TeacherOutput("deterministic", action=action.clone(), value=action.new_zeros(len(action)))

    # -- acting ------------------------------------------------------------------------------
    def act(
        self,
        observations: np.ndarray,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
        action_masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Env actions ``(B,)`` or ``(B, D)`` for raw observations.

        ``deterministic=False`` acts as SB3's ``predict`` does: actor-critics sample their policy, and
        a Q-learner acts epsilon-greedily with the exploration rate it was saved with (rl-zoo scores
        Atari experts this way; a greedy Q-learner can repeat one losing rally forever).
        ``action_masks (B, A)`` (True: allowed): only allowed actions are taken, as MaskablePPO's predict."""
        out = masked_output(self(observations), action_masks)
        actions = self.mapper.from_teacher(out, deterministic=deterministic, rng=rng)
        if not deterministic and self.kind in ("q_values", "quantiles") and self.exploration_rate > 0:
            actions = self.mapper.epsilon_greedy(actions, self.exploration_rate, rng or np.random.default_rng())
        return actions

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Parameters used to act (the value / critic branches are left out)."""
        for acting_part in ("actor", "q_net", "quantile_net"):  # SAC / TQC / TD3 / DDPG, DQN, QR-DQN
            if hasattr(self.policy, acting_part):
                return sum(p.numel() for p in getattr(self.policy, acting_part).parameters())
        # actor-critics without their value branch; ARS (no value branch) whole
        return sum(p.numel() for n, p in self.policy.named_parameters() if not n.startswith(_VALUE_ONLY_PREFIXES))

    def describe(self) -> str:
        return f"{self.algo} {self.kind} teacher on {self.recipe.env_id} ({self.n_params:,} params) from {self.source}"


def _algo_from_zip(data: dict[str, Any]) -> str:
    # Policy aliases share names across algorithms (QR-DQN's and DQN's are both "CnnPolicy"), so
    # the module that defines the class (``sb3_contrib.qrdqn.policies``) is what tells them apart.
    cls = data.get("policy_class")
    name = f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else str(cls)
    for algo in ("qrdqn", "tqc", "dqn", "sac", "ars"):
        if f".{algo}." in name:
            return algo
    for module, algo in ((".maskable.", "ppo_mask"), (".recurrent.", "ppo_lstm")):  # rl-zoo's names
        if module in name:
            return algo
    if ".td3." in name:  # DDPG is TD3 without delayed policy updates
        return "td3" if data.get("policy_delay", 2) > 1 else "ddpg"
    if "cg_max_steps" in data:
        return "trpo"
    return "ppo" if "clip_range" in data else "a2c"


def _load_policy(zip_path: Path, trust_pickles: bool = False) -> tuple[Any, str, float]:
    """The zip's policy, its algorithm and its exploration rate (0 for all but the DQN family).
    Its pickles are read through safe_pickle's allow-list unless ``trust_pickles``."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    if not zip_path.is_file():
        if os.path.lexists(zip_path):
            zip_path.stat()  # a symlink loop or a dangling link: its OSError says which
        raise PolicyKDError(f"teacher file {zip_path} does not exist; pass an SB3 .zip, an rl-zoo folder or a hub id")
    try:
        data, state = read_sb3_zip(zip_path, _CUSTOM_OBJECTS, trust_pickles=trust_pickles)
        policy_class = data["policy_class"]
        policy_kwargs = dict(data.get("policy_kwargs") or {})
        if issubclass(policy_class, ActorCriticPolicy):
            # On-policy algorithms pass use_sde to the policy apart from policy_kwargs (gSDE's log_std
            # is a (latent, D) matrix), so it has to be put back here.
            policy_kwargs.setdefault("use_sde", bool(data.get("use_sde", False)))
            policy_kwargs["ortho_init"] = False  # load_state_dict overwrites every weight; QR inits are slow
        if policy_class.__module__.startswith("sb3_contrib.ars."):  # ARS policies take no learning-rate schedule
            policy = policy_class(data["observation_space"], data["action_space"], **policy_kwargs)
        else:
            policy = policy_class(data["observation_space"], data["action_space"], lambda _: 0.0, **policy_kwargs)
        policy.load_state_dict(state)
    except _UNREADABLE as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())  # torch's messages span several lines
        raise PolicyKDError(
            f"{zip_path} is not a readable SB3 model ({reason}); pass a zip saved by model.save()"
        ) from None
    return policy, _algo_from_zip(data), float(data.get("exploration_rate") or 0.0)


# What a damaged zip, JSON, pickle or state dict raises (ValueError covers binascii and UnicodeDecodeError).
_UNREADABLE = (
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    KeyError,
    IndexError,
    ValueError,
    RuntimeError,
    EOFError,
    TypeError,
    AttributeError,
)


def _zoo_model_file(run_dir: Path) -> tuple[Path, str]:
    """``<algo>/<EnvId>_<n>/<EnvId>.zip`` -> (zip, env id)."""
    env_id = run_dir.name.rsplit("_", 1)[0] if run_dir.name.rsplit("_", 1)[-1].isdigit() else run_dir.name
    for candidate in (run_dir / f"{env_id}.zip", run_dir / "best_model.zip"):
        if candidate.is_file():
            return candidate, env_id
    zips = sorted(run_dir.glob("*.zip"))
    if len(zips) == 1:
        return zips[0], env_id
    raise PolicyKDError(f"{run_dir} holds no {env_id}.zip; an rl-zoo folder looks like <algo>/<EnvId>_1/<EnvId>.zip")


def load_teacher(
    source: str | Path, *, env_id: str | None = None, recipe: EnvRecipe | None = None, trust_pickles: bool = False
) -> Teacher:
    """Load a teacher from an rl-zoo folder, a bare ``.zip`` or a hub id (``org/algo-EnvId``).

    A zoo folder brings its env recipe (wrappers, frame stack, VecNormalize statistics): one
    without ``<EnvId>/config.yml`` (unless ``recipe`` is given), or whose config names observation
    normalisation without ``vecnormalize.pkl``, is refused. A bare zip needs ``env_id`` (or
    ``recipe``); its recipe then comes from the env's preset.

    The pickles in the zip and in ``vecnormalize.pkl`` are read through an allow-list of what
    SB3 experts hold (policykd.data.safe_pickle), and a ``config.yml`` may name env wrappers from
    an allow-list only (policykd.data.envs); anything else is refused. ``trust_pickles=True``
    (the CLI's ``--trust-pickles``) reads them as SB3 does, for files you trust: they may run code.
    """
    from policykd.data.hub import is_hub_id, resolve_hub_id

    source_str = str(source)
    path = resolve_hub_id(source_str) if is_hub_id(source_str) and not Path(source_str).exists() else Path(source)
    if path.is_dir():
        teacher = _load_zoo_folder(path, env_id, recipe, trust_pickles)
    else:
        teacher = _load_bare_zip(path, env_id, recipe, trust_pickles)
    teacher.source = source_str
    if teacher.recipe.frame_stack and teacher.normalizer is not None:
        raise PolicyKDError(f"{path}: VecNormalize together with frame stacking is not supported yet")
    return teacher


def _load_zoo_folder(path: Path, env_id: str | None, recipe: EnvRecipe | None, trust_pickles: bool) -> Teacher:
    from policykd.data.hub import env_id_from_name
    from policykd.fileio import read_json

    zip_path, env_name = _zoo_model_file(path)
    params_dir = path / env_name
    if recipe is None and not (params_dir / "config.yml").is_file():
        # without it the env recipe is a guess: a VecNormalize + gSDE expert then scored -2.1 instead of 93.9
        raise PolicyKDError(
            f"{path} is an rl-zoo folder without {params_dir / 'config.yml'}, so the env recipe the expert was trained "
            f"with (wrappers, frame stack, VecNormalize) is unknown; restore config.yml from the zoo, or pass "
            f"{zip_path} alone with --env to play it in the env preset's recipe"
        )
    config = read_zoo_yaml(params_dir / "config.yml") if (params_dir / "config.yml").is_file() else {}
    args = read_zoo_yaml(params_dir / "args.yml") if (params_dir / "args.yml").is_file() else {}
    # rl-zoo names files after the env with "/" written as "-" (ALE/Pong-v5 -> ALE-Pong-v5).
    folder_env_id = args["env"] if isinstance(args.get("env"), str) else env_id_from_name(env_name)
    if env_id is not None and env_id != folder_env_id:
        raise PolicyKDError(
            f"{path} is an expert for {folder_env_id}, not {env_id}; pick the matching --env or teacher"
        )
    if (params_dir / "env_kwargs.yml").is_file():  # what rl_zoo3.load_from_hub adds next to args.yml
        env_kwargs = read_zoo_yaml(params_dir / "env_kwargs.yml")
        args = dict(args, env_kwargs={**env_kwargs, **(args.get("env_kwargs") or {})})
    if recipe is None:
        recipe = recipe_from_zoo_config(folder_env_id, config, args)
        if trust_pickles:
            recipe = recipe.trusting()
        else:  # refused here, before anything is loaded, and not only when its env is built
            check_wrappers(recipe.env_wrapper, str(params_dir / "config.yml"))
    vecnorm_path = params_dir / "vecnormalize.pkl"
    if recipe.normalize and not vecnorm_path.is_file():  # config.yml's normalize: true, or a dict with norm_obs
        raise PolicyKDError(
            f"{path}: its config.yml says the expert was trained with VecNormalize but {vecnorm_path} is missing; "
            "restore it from the zoo (without the statistics the expert sees unscaled observations and fails)"
        )
    normalizer = None
    if vecnorm_path.is_file():
        normalizer = ObsNormalizer.from_vecnormalize(vecnorm_path, trust_pickles=trust_pickles)
    policy, algo, exploration_rate = _load_policy(zip_path, trust_pickles)
    if path.parent.name in _KNOWN_ALGOS:  # the zoo's <algo>/ folder names it better than the zip can
        algo = path.parent.name
    score = read_json(path / "expert.json").get("score") if (path / "expert.json").is_file() else None
    return Teacher(
        policy,
        algo=algo,
        source=str(path),
        recipe=recipe,
        normalizer=normalizer,
        score=score,
        exploration_rate=exploration_rate,
    )


def _load_bare_zip(path: Path, env_id: str | None, recipe: EnvRecipe | None, trust_pickles: bool) -> Teacher:
    if recipe is None:
        if env_id is None:
            raise PolicyKDError(
                f"{path}: a bare .zip does not say its env; pass --env ENV_ID (or use an rl-zoo folder)"
            )
        from policykd.zoo.presets import load_preset

        preset = load_preset(env_id)
        recipe = EnvRecipe(env_id, env_wrapper=preset.get("env_wrapper"), frame_stack=preset.get("frame_stack"))
    policy, algo, exploration_rate = _load_policy(path, trust_pickles)
    return Teacher(policy, algo=algo, source=str(path), recipe=recipe, exploration_rate=exploration_rate)


_KNOWN_ALGOS = ("a2c", "ppo", "dqn", "qrdqn", "sac", "td3", "ddpg", "tqc", "trpo", "ars", "ppo_mask", "ppo_lstm")
