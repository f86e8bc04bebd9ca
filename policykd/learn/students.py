"""Student networks: an MLP or a NatureCNN-shaped CNN with a head that matches the teacher.

A student is self-contained: it carries its own input normalisation (copied from the teacher's
VecNormalize statistics, or /255 for images), so it acts on raw env observations. It is saved as
``student.safetensors`` (its state dict: no pickle, and the same weights always give the same bytes,
so a file hash proves that two runs trained the same student) next to ``student.json`` (its config).
Folders written before safetensors hold ``student.pt``, a state dict read with ``weights_only=True``;
they still load.

The builders (``mlp``, ``nature_cnn``, ``make_head``, ``head_output``, ``head_fields``) are shared
with ``multitask.MultiTaskStudent``. Initial weights come from ``seed`` (``make_student(...,
seed=...)``) without touching the caller's global RNG; see :func:`seeded_weights`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from policykd.checks import check_probability
from policykd.data.actions import ActionMapper, factor_layout, factor_logits, masked_output
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path, write_json_atomic
from policykd.learn.targets import student_kind_for
from policykd.types import StudentKind, StudentOutput, TeacherKind

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE = "student.json", "student.safetensors", "student.pt"
# What a damaged or foreign student folder raises on load; each becomes one PolicyKDError.
LOAD_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RuntimeError,
    EOFError,
    pickle.UnpicklingError,
    SafetensorError,
    PolicyKDError,
)
ModuleT = TypeVar("ModuleT", bound=nn.Module)


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """What builds a Student (saved as ``student.json``): input shape, head and trunk sizes."""

    observation_shape: tuple[int, ...]
    head: StudentKind
    action_dim: int  # number of discrete actions, or Box dimensions; factorised: the head's outputs (see below)
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    squash: bool = False  # SAC-style: actions are tanh(gaussian sample), rescaled
    hidden_sizes: tuple[int, ...] = (64, 64)
    cnn_width: float = 1.0  # NatureCNN channel / unit multiplier, for image observations
    image: bool = False
    obs_clip: float | None = None  # normalised inputs are clipped to ±obs_clip (VecNormalize's clip_obs); None: no clip
    # MultiDiscrete: choices per factor, and action_dim = sum(nvec); MultiBinary(F): F twos, multi_binary, and
    # action_dim = F (one Bernoulli logit each). The head's logits are then (B, F, C) (actions.factor_logits).
    action_nvec: tuple[int, ...] = ()
    multi_binary: bool = False
    exploration_rate: float | None = None
    """How the student acts when not greedy (``act(deterministic=False)``): None samples its
    distribution; a rate acts epsilon-greedily on its argmax, as the DQN / QR-DQN teacher it learnt
    from does with its saved exploration rate (SB3's ``predict``; data/teachers.Teacher.act)."""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StudentConfig:
        """The config from its JSON form (``student.json``; lists become tuples)."""
        return cls(**json_tuples(raw))

    @property
    def action_space(self) -> gym.spaces.Space:
        if self.multi_binary:
            return gym.spaces.MultiBinary(len(self.action_nvec))
        if self.action_nvec:
            return gym.spaces.MultiDiscrete(list(self.action_nvec))
        return action_space_for(self.head, self.action_dim, self.action_low, self.action_high)


def json_tuples(raw: dict[str, Any]) -> dict[str, Any]:
    """A config read from JSON with its lists turned back into tuples."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()}


def action_space_for(
    head: StudentKind, action_dim: int, low: tuple[float, ...], high: tuple[float, ...]
) -> gym.spaces.Space:
    """The env action space a head acts in: ``Discrete(action_dim)`` or a Box with those bounds."""
    if head == "discrete":
        return gym.spaces.Discrete(action_dim)
    return gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32))


def head_fields(teacher_kind: TeacherKind, action_space: gym.spaces.Space, where: str = "") -> dict[str, Any]:
    """The config fields of a head that learns from a ``teacher_kind`` teacher acting in
    ``action_space``: ``head`` (``student_kind_for``), ``action_dim`` (A actions or D dimensions),
    the Box bounds ``action_low`` / ``action_high`` (D,) and ``squash`` (SAC). ``where`` prefixes
    the error, e.g. ``"task 'Pong': "``."""
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise PolicyKDError(f"{where}action space {action_space} is not supported (Discrete or Box)")
    discrete = isinstance(action_space, gym.spaces.Discrete)
    return {
        "head": student_kind_for(teacher_kind),
        "action_dim": int(action_space.n) if discrete else int(np.prod(action_space.shape)),
        "action_low": () if discrete else tuple(float(x) for x in action_space.low),
        "action_high": () if discrete else tuple(float(x) for x in action_space.high),
        "squash": teacher_kind == "squashed_gaussian",
    }


def factored_head_fields(teacher_kind: TeacherKind, action_space: gym.spaces.Space) -> dict[str, Any]:
    """:func:`head_fields` for a single-task Student, which also takes MultiDiscrete and MultiBinary
    actions: a discrete head with ``action_nvec`` (and ``multi_binary``) set."""
    nvec, binary = factor_layout(action_space)
    if not nvec:
        return head_fields(teacher_kind, action_space)
    if student_kind_for(teacher_kind) != "discrete":
        raise PolicyKDError(f"a {teacher_kind} teacher cannot act in {action_space}; expected logits per factor")
    n_out = len(nvec) if binary else sum(nvec)
    return {"head": "discrete", "action_dim": n_out, "action_nvec": nvec, "multi_binary": binary}


def mlp(sizes: list[int]) -> nn.Sequential:
    """``Linear -> ReLU`` per consecutive pair of ``sizes``: ``(B, sizes[0]) -> (B, sizes[-1])``
    (no layer, the identity, for a single size)."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


def nature_cnn(obs_shape: tuple[int, ...], width: float) -> tuple[nn.Module, int]:
    """SB3's NatureCNN with channels and units times ``width`` (1.0: 32-64-64 conv, 512 features):
    images ``(B, C, H, W)`` scaled to [0, 1] -> ``(B, n_features)``. Returns it and n_features."""
    c1, c2, c3, fc = (max(1, round(n * width)) for n in (32, 64, 64, 512))
    conv = nn.Sequential(
        nn.Conv2d(obs_shape[0], c1, 8, stride=4),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 4, stride=2),
        nn.ReLU(),
        nn.Conv2d(c2, c3, 3, stride=1),
        nn.ReLU(),
        nn.Flatten(),
    )
    with torch.no_grad():
        n_flat = conv(torch.zeros(1, *obs_shape)).shape[1]
    return nn.Sequential(conv, nn.Linear(n_flat, fc), nn.ReLU()), fc


def make_head(n_features: int, head: StudentKind, action_dim: int) -> nn.Linear:
    """The output layer: ``(B, n_features) -> (B, A)`` logits, ``(B, 2 D)`` Gaussian mean and
    log-std, or ``(B, D)`` pre-tanh deterministic action (read by :func:`head_output`)."""
    return nn.Linear(n_features, action_dim * (2 if head == "gaussian" else 1))


def head_output(
    head: StudentKind, out: torch.Tensor, nvec: tuple[int, ...] = (), multi_binary: bool = False
) -> StudentOutput:
    """A head's raw output ``(B, n_out)`` as a StudentOutput: logits ``(B, A)`` (factorised, with
    ``nvec``: ``(B, F, C)``); mean and log-std ``(B, D)``, the log-std clamped to [LOG_STD_MIN,
    LOG_STD_MAX]; or ``tanh`` action ``(B, D)``."""
    if head == "discrete":
        return StudentOutput("discrete", logits=factor_logits(out, nvec, multi_binary) if nvec else out)
    if head == "deterministic":
        return StudentOutput("deterministic", action=torch.tanh(out))
    mean, log_std = out.chunk(2, dim=-1)
    return StudentOutput("gaussian", mean=mean, log_std=log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))


@contextlib.contextmanager
def seeded_weights(seed: int | None) -> Iterator[None]:
    """Build initial weights from ``seed`` without touching the caller's RNG.

    Inside, torch's CPU generator starts from ``seed``: the weights are those of
    ``torch.manual_seed(seed)`` followed by the same construction. On exit the CPU generator is
    restored (``torch.random.fork_rng``) and no other device's generator was touched. ``None``:
    draw from the global generator as it stands (and advance it), as callers that seed it do."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        yield


class Student(nn.Module):
    """Input normalisation (or /255 for images) -> trunk (MLP or NatureCNN) -> head: raw
    observations ``(B, *obs_shape)`` -> StudentOutput (logits ``(B, A)``, Gaussian mean and log-std
    ``(B, D)``, or action ``(B, D)`` in [-1, 1]); ``act`` maps it to env actions."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        obs_dim = int(np.prod(config.observation_shape))
        # Input normalisation lives in the network so the saved student acts on raw observations.
        self.register_buffer("obs_mean", torch.zeros(config.observation_shape))
        self.register_buffer("obs_std", torch.ones(config.observation_shape))
        if config.image:
            self.trunk, n_features = nature_cnn(config.observation_shape, config.cnn_width)
        else:
            self.trunk = nn.Sequential(nn.Flatten(), mlp([obs_dim, *config.hidden_sizes]))
            n_features = config.hidden_sizes[-1] if config.hidden_sizes else obs_dim
        self.head = make_head(n_features, config.head, config.action_dim)
        self.mapper = ActionMapper(config.action_space, squash=config.squash)

    def set_input_normalization(self, mean: np.ndarray, std: np.ndarray, clip: float | None = None) -> None:
        """The teacher's VecNormalize statistics: inputs become ``clip((obs - mean) / std, ±clip)``,
        as the teacher sees them (``clip`` None: not clipped). The clip is kept in the config."""
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        self.config = dataclasses.replace(self.config, obs_clip=None if clip is None else float(clip))

    def normalize_input(self, observations: torch.Tensor) -> torch.Tensor:
        """What the network sees: uint8 images scaled to [0, 1], else the normalised (and clipped) input."""
        x = observations.float()
        if self.config.image:
            return x / 255.0
        x = (x - self.obs_mean) / self.obs_std
        return x if self.config.obs_clip is None else x.clamp(-self.config.obs_clip, self.config.obs_clip)

    def forward(self, observations: torch.Tensor) -> StudentOutput:
        """``(B, *obs_shape)`` raw observations (see ``normalize_input``)."""
        out = self.head(self.trunk(self.normalize_input(observations)))
        return head_output(self.config.head, out, self.config.action_nvec, self.config.multi_binary)

    @torch.no_grad()
    def act(
        self,
        observations: np.ndarray,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
        *,
        action_masks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Env actions for raw observations ``(B, *obs_shape)``; with the env's ``action_masks (B, A)``
        (True: allowed, as MaskablePPO's), only allowed actions. Not ``deterministic``: sampled from
        the student's distribution, or epsilon-greedy with ``config.exploration_rate`` where it is set."""
        # where the student is; a read-only array (an env's frozen observation) is copied, as torch needs
        obs = torch.as_tensor(np.require(observations, requirements="W"), device=self.obs_mean.device)
        epsilon = self.config.exploration_rate
        greedy = deterministic or epsilon is not None
        actions = self.mapper.from_student(masked_output(self(obs), action_masks), greedy, rng)
        if not deterministic and epsilon:
            actions = self.mapper.epsilon_greedy(actions, epsilon, rng if rng is not None else np.random.default_rng())
        return actions

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> None:
        config = dataclasses.asdict(self.config)
        save_without_pickle(self, Path(directory), config, WEIGHTS_FILE, CONFIG_FILE, LEGACY_WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> Student:
        return load_without_pickle(
            lambda raw: cls(StudentConfig.from_json(raw)),
            Path(directory),
            (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE),
            CONFIG_FILE,
            what="a policykd student",
            advice="distil one with `policykd distill`",
        )


def state_dict_bytes(state: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """``state`` as safetensors bytes: no pickle, and equal tensors always give equal bytes (the
    header lists tensors in a fixed order; keep ``metadata`` to one key, since its keys are not)."""
    return save_safetensors({name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}, metadata)


def save_without_pickle(
    module: nn.Module, directory: Path, config: dict[str, Any], weights: str, config_file: str, legacy: str = ""
) -> None:
    """The state dict as safetensors next to a JSON config, both atomic (serialised in memory first:
    a full disk is then an OSError); a ``legacy`` weights file (``.pt``) left by an older version
    is removed, so the folder holds one student."""
    data = state_dict_bytes(module.state_dict())
    with atomic_path(directory / weights) as tmp:
        tmp.write_bytes(data)
    write_json_atomic(directory / config_file, config)
    if legacy:
        (directory / legacy).unlink(missing_ok=True)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file (``.pt``) read with ``weights_only=True``."""
    if path.suffix == ".safetensors":
        return load_safetensors(path.read_bytes())
    return torch.load(path, weights_only=True)


def load_without_pickle(
    build: Callable[[Any], ModuleT],
    directory: Path,
    weights: tuple[str, ...],
    config_file: str,
    *,
    what: str,
    advice: str,
) -> ModuleT:
    """What :func:`save_without_pickle` wrote: ``build(config)`` from the JSON config, then the
    state dict from the first of ``weights`` that exists (safetensors, else an older folder's
    ``.pt``); returned in eval mode. Anything unreadable is one PolicyKDError: ``"<directory> is
    not <what> (<reason>); <advice>"``."""
    path = next((directory / name for name in weights if (directory / name).is_file()), directory / weights[0])
    try:
        module = build(json.loads((directory / config_file).read_text()))
        module.load_state_dict(read_state_dict(path))
    except LOAD_ERRORS as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split()).split(". ")[0][:200]  # torch's run to 1,000 chars
        raise PolicyKDError(f"{directory} is not {what} ({reason}); {advice}") from None
    return module.eval()


def is_student_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a saved Student (its ``student.json``)."""
    return (Path(path) / CONFIG_FILE).is_file()


def make_student(
    teacher_kind: TeacherKind,
    observation_space: gym.spaces.Space,
    action_space: gym.spaces.Space,
    *,
    hidden_sizes: tuple[int, ...] = (64, 64),
    cnn_width: float = 1.0,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
    obs_clip: float | None = None,
    seed: int | None = None,
    exploration_rate: float | None = None,
) -> Student:
    """A student whose head matches ``teacher_kind`` and whose input matches the env's raw
    observations ``(B, *obs_shape)``. ``seed`` fixes the initial weights without touching the
    global RNG (:func:`seeded_weights`); None draws them from the global RNG. ``exploration_rate``:
    sampled actions epsilon-greedy at this rate (StudentConfig.exploration_rate; discrete heads only)."""
    from stable_baselines3.common.preprocessing import is_image_space

    if not isinstance(observation_space, gym.spaces.Box):
        raise PolicyKDError(f"observation space {observation_space} is not supported (Box observations only)")
    if any(h <= 0 for h in hidden_sizes) or cnn_width <= 0:
        raise PolicyKDError(f"hidden sizes and cnn width must be positive, got {hidden_sizes} and {cnn_width}")
    config = StudentConfig(
        observation_shape=tuple(int(n) for n in observation_space.shape),
        **factored_head_fields(teacher_kind, action_space),
        hidden_sizes=tuple(int(h) for h in hidden_sizes),
        cnn_width=float(cnn_width),
        image=is_image_space(observation_space, check_channels=False),
        exploration_rate=None if exploration_rate is None else check_probability("exploration rate", exploration_rate),
    )
    if config.exploration_rate is not None and config.head != "discrete":
        raise PolicyKDError(f"an exploration rate needs discrete actions, not a {config.head} head; drop it")
    with seeded_weights(seed):
        student = Student(config)
    if obs_mean is not None and obs_std is not None and not config.image:
        student.set_input_normalization(obs_mean, obs_std, obs_clip)
    return student
