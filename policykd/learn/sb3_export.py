"""A Student as a Stable-Baselines3 model, for ``policykd export --format sb3``.

Which SB3 class (:func:`sb3_algo_for`): a discrete head is a PPO policy (its logits), or a DQN
Q-network when it was trained with ``mse`` on Q-values; a Gaussian head is PPO's (state-
independent log-std, see below) or, squashed, SAC's actor; a deterministic head is TD3's actor.
The student's layers are copied into SB3's own modules (``MlpPolicy`` / ``CnnPolicy`` with
``activation_fn=nn.ReLU`` and ``net_arch`` = the student's hidden sizes), so the zip loads with
``PPO.load`` / ``DQN.load`` / ``SAC.load`` / ``TD3.load`` and nothing of policykd:

- Input normalisation is folded into the first layer: ``W (x - m) / s + b`` is
  ``(W / s) x + (b - (W / s) m)``, computed in float64. No VecNormalize is needed (or must be
  applied) when playing the zip: it acts on raw env observations, like the student.
- Image students map onto SB3's NatureCNN (32-64-64 channels, 512 features, ``obs / 255``); a
  student of another ``cnn_width`` cannot be expressed and is refused.
- What the student does not have is neutral: PPO's value head and the SAC / TD3 critics are
  untrained (value 0 for PPO), DQN's exploration rate is 0 (``predict`` acts greedily either
  way), replay buffers have size 1 (pass ``custom_objects={"buffer_size": N}`` to train on).
- PPO's Gaussian has one log-std per action dimension, not one per state: the zip's is the
  student's log-std at its mean observation. Greedy actions (``deterministic=True``) are the
  student's exactly; sampled ones differ in their spread. SAC's actor keeps the student's
  state-dependent log-std, so SAC zips sample as the student does.
- Dict observations (a MultiInputPolicy teacher, vector Box keys): the student learnt on flat rows,
  each key flattened and the keys concatenated in the env's Dict key order (``data.envs.flat_dict_space``),
  and that is exactly the features SB3's ``MultiInputPolicy`` computes (``CombinedExtractor``: a
  flatten per key, concatenated in ``observation_space.spaces`` order; no weights). Given the env's
  Dict space, the zip is a ``MultiInputPolicy`` with that space and the student's layers after the
  extractor, so ``model.predict(env.reset()[0])`` takes the env's own dicts, as the teacher's zip
  did, and the zip still loads with plain SB3. A policykd features extractor that flattens the
  dict was the other option; it would need policykd installed to load, for nothing more.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.errors import PolicyKDError
from policykd.learn.sb3_policy import copy_linears, linears
from policykd.learn.students import Student, StudentConfig, seeded_weights

SB3_ALGOS = ("ppo", "dqn", "sac", "td3")
# Which heads each SB3 class can hold: (head, squash).
HEADS_OF = {
    "ppo": {("discrete", False), ("gaussian", False)},
    "dqn": {("discrete", False)},
    "sac": {("gaussian", True)},
    "td3": {("deterministic", False)},
}


def sb3_algo_for(config: StudentConfig, loss: str | None = None) -> str:
    """The SB3 class (``ppo``, ``dqn``, ``sac``, ``td3``) that holds a student of ``config``
    trained with ``loss`` (None: unknown, taken as a policy's logits for a discrete head)."""
    if config.head == "discrete":
        return "dqn" if loss == "mse" else "ppo"
    if config.head == "deterministic":
        return "td3"
    return "sac" if config.squash else "ppo"


def check_expressible(config: StudentConfig, algo: str) -> None:
    """Refuse, in one line, a student that ``algo``'s SB3 policy cannot hold exactly."""
    if algo not in HEADS_OF:
        raise PolicyKDError(f"unknown SB3 algorithm {algo!r}; use one of {', '.join(SB3_ALGOS)}")
    if (config.head, config.squash) not in HEADS_OF[algo]:
        head = f"{'squashed ' if config.squash else ''}{config.head}"
        raise PolicyKDError(
            f"a student with a {head} head cannot be written as {algo.upper()}; use {sb3_algo_for(config)}"
        )
    if config.action_nvec and algo != "ppo":
        raise PolicyKDError(
            f"a student with MultiDiscrete / MultiBinary actions cannot be written as {algo.upper()}; use ppo"
        )
    sizes = nature_cnn_sizes(config.cnn_width)
    if config.image and sizes != nature_cnn_sizes(1.0):
        raise PolicyKDError(
            f"this student's CNN (--cnn-width {config.cnn_width:g}: {'-'.join(map(str, sizes[:3]))} channels, "
            f"{sizes[3]} features) is not SB3's NatureCNN (32-64-64 channels, 512 features); "
            "export it with --format onnx, or distil with --cnn-width 1"
        )


def check_observation_space(config: StudentConfig, space: gym.spaces.Space) -> None:
    """Refuse, in one line, a Dict ``space`` whose keys do not flatten into the student's row
    (only vector Box keys, which SB3's CombinedExtractor flattens and concatenates in order)."""
    if not isinstance(space, gym.spaces.Dict):
        return
    from stable_baselines3.common.preprocessing import is_image_space

    bad = [key for key, sub in space.spaces.items() if not isinstance(sub, gym.spaces.Box) or is_image_space(sub)]
    size = sum(int(np.prod(sub.shape)) for sub in space.spaces.values())
    if bad or config.image or (size,) != tuple(config.observation_shape):
        raise PolicyKDError(
            f"the env's dict observations ({', '.join(f'{k}: {v}' for k, v in space.spaces.items())}) do not "
            f"flatten into this student's {config.observation_shape} rows; export it from the run it was distilled in"
        )


def nature_cnn_sizes(width: float) -> tuple[int, ...]:
    """Channels of the three convolutions and the feature count of ``students.nature_cnn(.., width)``."""
    return tuple(max(1, round(n * width)) for n in (32, 64, 64, 512))


def to_sb3_model(
    student: Student, algo: str, observation_space: gym.spaces.Space, action_space: gym.spaces.Space
) -> Any:
    """An SB3 ``algo`` model (see the module docstring) whose greedy actions are ``student``'s.
    ``observation_space`` / ``action_space`` are the env's (SB3 compares them with the env the
    zip is loaded with); a Dict (the env's own, not the flat rows) gives a ``MultiInputPolicy``.
    Uninitialised weights are drawn from a fixed seed, so the same student gives the same zip;
    torch's global generator is left as it was."""
    config = student.config
    check_expressible(config, algo)
    check_observation_space(config, observation_space)
    with seeded_weights(0):
        model = _new_model(algo, config, observation_space, action_space)
    with torch.no_grad():
        _COPY[algo](model.policy, student, _student_layers(student))
    return model


def copy_into_sb3(policy: Any, student: Student, algo: str) -> None:
    """Copy ``student`` into an SB3 ``algo`` policy built with its layers (``MlpPolicy``, ReLU,
    ``net_arch`` = its hidden sizes): what :func:`to_sb3_model` does to a fresh model, for a
    model built elsewhere (RL fine-tuning, ``learn/kickstart_start.py``)."""
    check_expressible(student.config, algo)
    with torch.no_grad():
        _COPY[algo](policy, student, _student_layers(student))


def _new_model(algo: str, config: StudentConfig, observation_space: Any, action_space: Any) -> Any:
    """An SB3 model of ``algo`` for these spaces, built without an env (as ``BaseAlgorithm.load`` does)."""
    from stable_baselines3 import DQN, PPO, SAC, TD3

    arch = [] if config.image else list(config.hidden_sizes)
    net_arch: Any = {"ppo": {"pi": arch, "vf": []}, "dqn": arch}.get(algo, {"pi": arch, "qf": arch})
    kwargs: dict[str, Any] = {} if algo == "ppo" else {"buffer_size": 1}
    if algo == "sac":
        kwargs["target_entropy"] = -float(config.action_dim)  # SB3's "auto", which needs an env to compute
    multi_input = isinstance(observation_space, gym.spaces.Dict)  # see the module docstring
    model = {"ppo": PPO, "dqn": DQN, "sac": SAC, "td3": TD3}[algo](
        "CnnPolicy" if config.image else "MultiInputPolicy" if multi_input else "MlpPolicy",
        env=None,
        policy_kwargs={"activation_fn": nn.ReLU, "net_arch": net_arch},
        device="cpu",
        _init_setup_model=False,
        **kwargs,
    )
    model.observation_space, model.action_space, model.n_envs = observation_space, action_space, 1
    model._setup_model()
    return model


def _student_layers(student: Student) -> list[nn.Linear]:
    """The student's Linear layers after its trunk's CNN (if any), head last, with the input
    normalisation folded into the first one that reads the observation (MLP students)."""
    layers = [_copy_of(layer) for layer in (linears(student.trunk) + [student.head])]
    if student.config.image:
        return layers[-1:]  # the CNN's own Linear is copied with the CNN
    first = layers[0]
    std = student.obs_std.double().flatten()
    weight = first.weight.double() / std[None, :]
    first.weight.copy_(weight)
    first.bias.copy_(first.bias.double() - weight @ student.obs_mean.double().flatten())
    return layers


def _copy_of(layer: nn.Linear) -> nn.Linear:
    copy = nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        copy.load_state_dict(layer.state_dict())
    return copy


def _rows(layer: nn.Linear, rows: slice) -> nn.Linear:
    """A Linear holding ``rows`` of ``layer``'s outputs (a Gaussian head's mean or log-std half)."""
    part = nn.Linear(layer.in_features, len(range(*rows.indices(layer.out_features))))
    part.weight.copy_(layer.weight[rows])
    part.bias.copy_(layer.bias[rows])
    return part


def _copy_cnn(extractor: nn.Module, student: Student) -> None:
    """SB3's NatureCNN (``cnn`` + ``linear``) from the student's trunk, layer by layer."""
    if student.config.image:
        extractor.load_state_dict(
            dict(zip(extractor.state_dict(), student.trunk.state_dict().values(), strict=True))
        )  # the same layers in the same order: Conv, Conv, Conv, Linear


def _copy_ppo(policy: Any, student: Student, layers: list[nn.Linear]) -> None:
    _copy_cnn(policy.features_extractor, student)
    dim = student.config.action_dim
    head = _rows(layers[-1], slice(0, dim)) if student.config.head == "gaussian" else layers[-1]
    copy_linears([*linears(policy.mlp_extractor.policy_net), policy.action_net], [*layers[:-1], head])
    nn.init.zeros_(policy.value_net.weight)
    nn.init.zeros_(policy.value_net.bias)
    if student.config.head == "gaussian":
        mean_obs = (
            student.obs_mean[None] if not student.config.image else torch.zeros(1, *student.config.observation_shape)
        )
        policy.log_std.copy_(student(mean_obs).log_std[0])


def _copy_dqn(policy: Any, student: Student, layers: list[nn.Linear]) -> None:
    _copy_cnn(policy.q_net.features_extractor, student)
    copy_linears(linears(policy.q_net.q_net), layers)
    policy.q_net_target.load_state_dict(policy.q_net.state_dict())


def _copy_sac(policy: Any, student: Student, layers: list[nn.Linear]) -> None:
    _copy_cnn(policy.actor.features_extractor, student)
    dim = student.config.action_dim
    mean, log_std = _rows(layers[-1], slice(0, dim)), _rows(layers[-1], slice(dim, 2 * dim))
    copy_linears(
        [*linears(policy.actor.latent_pi), policy.actor.mu, policy.actor.log_std], [*layers[:-1], mean, log_std]
    )


def _copy_td3(policy: Any, student: Student, layers: list[nn.Linear]) -> None:
    _copy_cnn(policy.actor.features_extractor, student)
    copy_linears(linears(policy.actor.mu), layers)
    policy.actor_target.load_state_dict(policy.actor.state_dict())


_COPY = {"ppo": _copy_ppo, "dqn": _copy_dqn, "sac": _copy_sac, "td3": _copy_td3}
