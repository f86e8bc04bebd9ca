"""Where an RL-fine-tuned student starts (``learn/kickstart.py``): from scratch with a network a
fraction of the teacher's, from a distilled policykd student, or from the teacher's own weights.

Each start is two steps: the ``policy_kwargs`` the SB3 model must be built with (so the layers
line up), then a copy of the weights into the built model's policy. A mismatch (another
architecture, another algorithm, a student trained for something else) is refused in one line.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.learn.sb3_export import copy_into_sb3
from policykd.learn.sb3_policy import linears
from policykd.learn.students import Student

START_POINTS = "scratch, teacher, or a run folder of `policykd distill` (its student)"
# The algorithm whose SB3 policy class a student is copied into (A2C's policy is PPO's).
_EXPORT_ALGO = {"ppo": "ppo", "a2c": "ppo", "dqn": "dqn", "sac": "sac", "td3": "td3"}


def teacher_hidden_sizes(teacher: Teacher) -> tuple[int, ...]:
    """The hidden layer sizes of the teacher's acting network (actor, Q-network or policy MLP)."""
    policy = teacher.policy
    if teacher.kind in ("squashed_gaussian", "deterministic"):
        net = policy.actor.latent_pi if teacher.kind == "squashed_gaussian" else policy.actor.mu
    elif teacher.kind == "q_values":
        net = policy.q_net.q_net
    elif teacher.kind == "quantiles":
        net = policy.quantile_net.quantile_net
    else:
        net = policy.mlp_extractor.policy_net
    layers = linears(net)
    if teacher.kind in ("q_values", "quantiles", "deterministic"):
        layers = layers[:-1]  # their last Linear is the output layer
    return tuple(layer.out_features for layer in layers)


def scaled_net_arch(teacher: Teacher, fraction: float) -> list[int]:
    """The teacher's hidden sizes times ``fraction`` (each at least 1): a smaller student."""
    if not (0 < fraction <= 1):
        raise PolicyKDError(f"--net-fraction must be in (0, 1] (a fraction of the teacher's layers), got {fraction!r}")
    return [max(1, round(size * fraction)) for size in teacher_hidden_sizes(teacher)]


def teacher_policy_kwargs(teacher: Teacher, algo: str) -> dict[str, Any]:
    """The ``policy_kwargs`` that rebuild the teacher's policy, to start from its weights. A teacher
    trained with VecNormalize reads normalised observations: the student's env must be wrapped in
    VecNormalize with its statistics (``data.vec_normalize.wrap_vec_normalize``; ``policykd finetune`` does it)."""
    if teacher.algo != algo:
        raise PolicyKDError(
            f"starting from the teacher's weights needs the teacher's algorithm: it is {teacher.algo}, not {algo}; "
            f"pass --algo {teacher.algo} or start from scratch"
        )
    kwargs = teacher.policy._get_constructor_parameters()
    for key in ("observation_space", "action_space", "lr_schedule"):
        kwargs.pop(key, None)
    if algo in ("ppo", "a2c"):
        kwargs.pop("use_sde", None)  # the algorithm passes its own use_sde to the policy
    return kwargs


def copy_teacher_weights(model: Any, teacher: Teacher) -> None:
    """Load the teacher's policy weights (actor and critic, and the target networks) into ``model``."""
    try:
        model.policy.load_state_dict(teacher.policy.state_dict())
    except RuntimeError as err:
        reason = " ".join(str(err).split())[:200]
        raise PolicyKDError(f"the teacher's weights do not fit this model ({reason}); drop --policy-kwargs") from None


def student_policy_kwargs(student: Student, algo: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` policy_kwargs with the distilled student's layers (ReLU MLP of its hidden sizes) for
    the acting network; the critic of SAC / TD3 keeps ``base``'s sizes (default the student's)."""
    config = student.config
    if algo not in _EXPORT_ALGO:
        raise PolicyKDError(
            f"a {algo.upper()} model cannot start from a distilled student; use ppo, a2c, dqn, sac or td3"
        )
    if config.image:
        raise PolicyKDError("starting from a distilled image (CNN) student is not supported yet; start from scratch")
    base = dict(base or {})
    activation = base.get("activation_fn", nn.ReLU)
    if activation is not nn.ReLU:
        raise PolicyKDError(
            f"a distilled student uses ReLU, not {getattr(activation, '__name__', activation)}; drop activation_fn"
        )
    hidden = list(config.hidden_sizes)
    given = base.get("net_arch")
    if algo in ("ppo", "a2c"):
        net_arch: Any = {"pi": hidden, "vf": _part(given, "vf", hidden)}
    elif algo == "dqn":
        net_arch = hidden
    else:
        net_arch = {"pi": hidden, "qf": _part(given, "qf", hidden)}
    if given is not None and _part(given, "pi", hidden) != hidden:
        raise PolicyKDError(
            f"the distilled student's layers are {hidden}, the hyperparameters' net_arch {given}; the weights "
            "cannot be mapped: distil a student of that size (--hidden) or drop net_arch"
        )
    return {**base, "net_arch": net_arch, "activation_fn": nn.ReLU}


def copy_student_weights(
    model: Any,
    student: Student,
    algo: str,
    loss: str | None = None,
    env_normalizer: Any = None,
    center_q: bool | None = None,
) -> None:
    """Copy a distilled student into ``model``'s acting network (its input normalisation folded into
    the first layer). A DQN needs a student of the teacher's raw Q-values: ``loss="mse"`` and
    ``center_q=False``, as it was distilled (:func:`check_q_value_student`).
    ``env_normalizer``: the VecNormalize statistics (an ObsNormalizer) the model's env normalises
    with; the student's own normalisation must be those, and is then left to the env."""
    if env_normalizer is not None:
        student = _without_input_normalization(student, env_normalizer)
    config = student.config
    if tuple(config.observation_shape) != tuple(model.observation_space.shape):
        raise PolicyKDError(
            f"the distilled student reads observations of shape {config.observation_shape}, the env gives "
            f"{model.observation_space.shape}; start from a student of this env"
        )
    if config.action_space != model.action_space and not _same_box(config.action_space, model.action_space):
        raise PolicyKDError(
            f"the distilled student acts in {config.action_space}, the env in {model.action_space}; start from a student of this env"
        )
    check_q_value_student(algo, loss, center_q)
    with torch.no_grad():
        copy_into_sb3(model.policy, student, _EXPORT_ALGO[algo])


def check_q_value_student(algo: str, loss: str | None, center_q: bool | None) -> None:
    """Refuse, in one line, to start a DQN / QR-DQN (``algo``) from a student whose head is not the
    teacher's raw Q-values: TD learning bootstraps from them. Only a student distilled with
    ``loss="mse"`` and ``center_q=False`` has them; ``kl`` / ``nll`` give log-probabilities, centred
    MSE Q minus its mean over actions (the right greedy actions, the wrong TD targets), and None
    (not recorded) cannot be told apart from those. Other algorithms: nothing to check."""
    if algo not in ("dqn", "qrdqn") or (loss == "mse" and center_q is False):
        return
    if loss in ("kl", "nll"):
        how = f"was distilled with --loss {loss} (log-probabilities, not Q-values)"
    elif loss == "mse" and center_q is True:
        how = (
            "was distilled with centred Q-values (--loss mse without --no-q-center: Q minus its mean, wrong TD targets)"
        )
    else:
        how = "does not record its loss and Q centring (the summary.json and config.yml of its `policykd distill` run)"
    ppo = ", fine-tune it with --algo ppo" if loss in ("kl", "nll") else ""
    raise PolicyKDError(
        f"a {algo.upper()} starts from the teacher's raw Q-values and this student {how}; distil it again with "
        f"--loss mse --no-q-center{ppo}, or start from the teacher (--start teacher) or from scratch"
    )


def _without_input_normalization(student: Student, normalizer: Any) -> Student:
    """A copy of ``student`` that reads observations already normalised by ``normalizer``."""
    clip = student.config.obs_clip
    same = (
        clip is not None
        and math.isclose(clip, float(normalizer.clip))
        and np.allclose(student.obs_mean.cpu().numpy(), normalizer.mean, rtol=1e-5, atol=1e-6)
        and np.allclose(student.obs_std.cpu().numpy(), normalizer.std, rtol=1e-5, atol=1e-6)
    )
    if not same:
        raise PolicyKDError(
            "the distilled student normalises its inputs otherwise than the teacher's VecNormalize statistics "
            "the env is normalised with; start from a student distilled from this teacher, or from scratch"
        )
    plain = copy.deepcopy(student)
    shape = tuple(student.config.observation_shape)
    plain.set_input_normalization(np.zeros(shape, np.float32), np.ones(shape, np.float32), None)
    return plain


def _part(net_arch: Any, key: str, default: list[int]) -> list[int]:
    if isinstance(net_arch, dict):
        return list(net_arch.get(key, default))
    return list(net_arch) if net_arch is not None else default


def _same_box(a: gym.spaces.Space, b: gym.spaces.Space) -> bool:
    return isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box) and a.shape == b.shape


VALUE_PREFIXES = ("mlp_extractor.value_net.", "value_net.", "vf_features_extractor.")


def value_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The parameters only the critic of a PPO / A2C policy uses (its value branch and head); the
    actor's are left out, so fitting them leaves the student's actions as they were."""
    if not hasattr(model.policy, "value_net"):
        raise PolicyKDError(
            f"{type(model).__name__} has no state-value head to initialise (PPO and A2C have one); drop --value-init"
        )
    return [p for name, p in model.policy.named_parameters() if name.startswith(VALUE_PREFIXES)]


def distill_value(
    model: Any,
    teacher: Teacher,
    observations: np.ndarray,
    *,
    n_updates: int = 500,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    student_observations: np.ndarray | None = None,
) -> tuple[float, float]:
    """Fit a PPO / A2C student's value head to the teacher's value (``TeacherOutput.value``: its
    V(s), or max Q / min Q(s, a*) for Q-learners and SAC / TD3) on ``observations`` (N, *obs_shape),
    by Adam on the mean squared error; only the critic's own parameters move. Returns the mean
    squared error on ``observations`` (before, after). ``student_observations``: the same
    observations as the student reads them (VecNormalize'd; default ``observations``)."""
    params = value_parameters(model)
    read = observations if student_observations is None else student_observations
    obs = torch.as_tensor(read, dtype=torch.float32, device=model.device)
    target = teacher(observations).value.to(model.device).float()  # type: ignore[union-attr]

    def error() -> float:
        with torch.no_grad():
            return float(((model.policy.predict_values(obs).flatten() - target) ** 2).mean())

    before, optimizer, rng = error(), torch.optim.Adam(params, lr=learning_rate), np.random.default_rng(seed)
    for _ in range(n_updates):
        rows = torch.as_tensor(rng.integers(len(obs), size=min(batch_size, len(obs))), device=model.device)
        loss = ((model.policy.predict_values(obs[rows]).flatten() - target[rows]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, error()
