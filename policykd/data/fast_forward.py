"""A teacher's forward pass without ``nn.Module`` calls, for the small MLP experts that collection
labels one vector step at a time.

At 4-64 rows a call, an SB3 MLP policy spends most of its time in module dispatch, hooks,
``Distribution`` objects and SB3's input checks rather than arithmetic: a call costs as much as
stepping 8 CartPoles. :func:`fast_labeller` takes the weights out once and computes the same
``TeacherOutput`` with the very kernels the modules call (``F.linear``, ``tanh``, ``relu``, in place
where it changes nothing) under ``torch.inference_mode``, so the outputs are the teacher's bit for bit
and collection walks the same trajectories (continuous control is chaotic: an action 1e-7 off
gives another episode within a few hundred steps). It covers what the zoo's vector experts are made of (a flatten,
``Linear`` layers and ``Tanh`` / ``ReLU`` activations) for PPO / A2C (without gSDE), DQN,
QR-DQN, SAC (without gSDE), TD3 and DDPG, on any device; anything else (CNNs, other layers) is
labelled by the teacher itself. Torch, not numpy: it keeps to ``torch.set_num_threads`` (numpy's
OpenBLAS would start a thread per core on a 256-wide layer) and to the teacher's device
(tests/test_fast_forward.py checks the outputs against SB3's and the buffers against the old path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from policykd.types import TeacherOutput

Labeller = Callable[[np.ndarray], TeacherOutput]
Forward = Callable[[torch.Tensor], TeacherOutput]
Layers = list[Any]
"""``(weight (out, in), bias (out,) or None)`` pairs and in-place activations, applied in order."""

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's SAC actor clamps its log-std so
_ACTIVATIONS = {nn.Tanh: torch.tanh_, nn.ReLU: torch.relu_}


def compile_layers(module: nn.Module) -> Layers | None:
    """``module`` (a Linear, an activation, a Flatten / Identity or a Sequential of those) as
    layers for :func:`run_layers`; None when it holds anything else."""
    if isinstance(module, nn.Sequential):
        layers: Layers = []
        for child in module:
            compiled = compile_layers(child)
            if compiled is None:
                return None
            layers.extend(compiled)
        return layers
    if isinstance(module, nn.Linear):
        return [(module.weight.detach(), None if module.bias is None else module.bias.detach())]
    if type(module) in _ACTIVATIONS:
        return [_ACTIVATIONS[type(module)]]
    if isinstance(module, (nn.Flatten, nn.Identity)):
        return []
    return None


def run_layers(layers: Layers, x: torch.Tensor) -> torch.Tensor:
    """Apply ``layers`` to ``x (B, in)``; ``x`` itself is never written to (the activations work
    in place on the tensors the layers make)."""
    owned = False
    for layer in layers:
        x = layer(x if owned else x.clone()) if callable(layer) else F.linear(x, *layer)
        owned = True
    return x


def _flat_features(extractor: nn.Module) -> bool:
    """Whether a features extractor only flattens (SB3's FlattenExtractor)."""
    from stable_baselines3.common.torch_layers import FlattenExtractor

    return type(extractor) is FlattenExtractor


def fast_labeller(teacher: Any) -> Labeller:
    """A callable labelling raw observations as ``teacher(obs)`` does, without module calls where
    the teacher is a small MLP on Box observations (see the module docstring); else ``teacher``."""
    try:
        forward = _compile(teacher)
        normalizer, shape, device = teacher.normalizer, tuple(teacher.observation_space.shape), teacher.device
    except AttributeError:  # a stand-in with a Teacher's call but not its parts labels by itself
        return teacher
    if forward is None:
        return teacher
    mean, std = (None, None) if normalizer is None else (normalizer.mean, normalizer.std)

    @torch.inference_mode()
    def labeller(observations: np.ndarray) -> TeacherOutput:
        obs = np.asarray(observations)
        if obs.shape[1:] != shape:  # what the teacher makes of other shapes is its own business
            return teacher(obs)
        if normalizer is not None:
            obs = np.clip((obs - mean) / std, -normalizer.clip, normalizer.clip)
        x = torch.as_tensor(obs, device=device).reshape(len(obs), -1)
        return forward(x if x.dtype == torch.float32 else x.float())

    return labeller


def _compile(teacher: Any) -> Forward | None:
    """The forward of ``teacher``'s kind on flattened float32 observations, or None."""

    if getattr(teacher, "dict_space", None) is not None or getattr(teacher, "nvec", ()):
        # dict observations: SB3 takes them apart per key; MultiDiscrete / MultiBinary: per-factor logits
        return None
    builders = {
        "categorical": _actor_critic,
        "gaussian": _actor_critic,
        "q_values": _q_values,
        "quantiles": _quantiles,
        "squashed_gaussian": _sac,
        "deterministic": _td3,
    }
    try:
        return builders[teacher.kind](teacher.policy, teacher.kind)
    except AttributeError:  # a policy class laid out otherwise than SB3's
        return None


def _actor_critic(policy: Any, kind: str) -> Forward | None:
    extractors = (policy.features_extractor, policy.pi_features_extractor, policy.vf_features_extractor)
    if policy.use_sde or not all(_flat_features(e) for e in extractors):
        return None
    parts = [policy.mlp_extractor.policy_net, policy.mlp_extractor.value_net, policy.action_net, policy.value_net]
    pi, vf, action, value = (compile_layers(part) for part in parts)
    if pi is None or vf is None or action is None or value is None:
        return None
    log_std = policy.log_std.detach() if kind == "gaussian" else None

    def label(x: torch.Tensor) -> TeacherOutput:
        out = run_layers(action, run_layers(pi, x))
        values = run_layers(value, run_layers(vf, x)).reshape(-1)
        if kind == "categorical":  # torch's Categorical stores its logits normalised so
            return TeacherOutput(kind, logits=torch.log_softmax(out, dim=-1), value=values)
        return TeacherOutput(kind, mean=out, log_std=log_std.expand_as(out).clone(), value=values)

    return label


def _q_values(policy: Any, kind: str) -> Forward | None:
    q_net = compile_layers(policy.q_net.q_net) if _flat_features(policy.q_net.features_extractor) else None
    if q_net is None:
        return None

    def label(x: torch.Tensor) -> TeacherOutput:
        q = run_layers(q_net, x)
        return TeacherOutput(kind, q_values=q, value=q.max(dim=1).values)

    return label


def _quantiles(policy: Any, kind: str) -> Forward | None:
    network = policy.quantile_net
    layers = compile_layers(network.quantile_net) if _flat_features(network.features_extractor) else None
    if layers is None:
        return None
    n_quantiles, n_actions = int(network.n_quantiles), int(network.action_space.n)

    def label(x: torch.Tensor) -> TeacherOutput:
        quantiles = run_layers(layers, x).view(-1, n_quantiles, n_actions)
        q = quantiles.mean(dim=1)
        return TeacherOutput(kind, q_values=q, quantiles=quantiles, value=q.max(dim=1).values)

    return label


def _critic(critic: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """``(x, action) -> min over the critic's Q networks (B,)``, or None."""
    networks = [compile_layers(q) for q in critic.q_networks]
    if not _flat_features(critic.features_extractor) or any(n is None for n in networks):
        return None

    def value(x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([x, action], dim=1)
        return torch.cat([run_layers(n, inputs) for n in networks], dim=1).min(dim=1).values

    return value


def _sac(policy: Any, kind: str) -> Forward | None:
    from stable_baselines3.sac.policies import SACPolicy

    actor = policy.actor
    # SAC's own policy only: TQC's critics give quantiles (its value is their mean, not a minimum over them)
    if not isinstance(policy, SACPolicy) or actor.use_sde or not _flat_features(actor.features_extractor):
        return None
    latent, mu, log_std = (compile_layers(m) for m in (actor.latent_pi, actor.mu, actor.log_std))
    critic = _critic(policy.critic)
    if latent is None or mu is None or log_std is None or critic is None:
        return None

    def label(x: torch.Tensor) -> TeacherOutput:
        hidden = run_layers(latent, x)
        mean = run_layers(mu, hidden)
        log_stds = run_layers(log_std, hidden).clamp_(LOG_STD_MIN, LOG_STD_MAX)
        return TeacherOutput(kind, mean=mean, log_std=log_stds, value=critic(x, torch.tanh(mean)))

    return label


def _td3(policy: Any, kind: str) -> Forward | None:
    actor = policy.actor
    mu = compile_layers(actor.mu) if _flat_features(actor.features_extractor) else None
    critic = _critic(policy.critic)
    if mu is None or critic is None:
        return None

    def label(x: torch.Tensor) -> TeacherOutput:
        action = run_layers(mu, x)
        return TeacherOutput(kind, action=action, value=critic(x, action))

    return label
