"""Student networks: an MLP or a NatureCNN-shaped CNN with a head that matches the teacher.

A student is self-contained: it carries its own input normalisation (copied from the teacher's
VecNormalize statistics, or /255 for images), so it acts on raw env observations. It is saved as
``student.pt`` (a state dict, loaded with ``weights_only=True``) next to ``student.json`` (its
config): no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.data.actions import ActionMapper
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path, write_json_atomic
from policykd.learn.targets import student_kind_for
from policykd.types import StudentOutput

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
CONFIG_FILE, WEIGHTS_FILE = "student.json", "student.pt"


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    observation_shape: tuple[int, ...]
    head: str  # "discrete" | "gaussian" | "deterministic"
    action_dim: int  # number of discrete actions, or Box dimensions
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    squash: bool = False  # SAC-style: actions are tanh(gaussian sample), rescaled
    hidden_sizes: tuple[int, ...] = (64, 64)
    cnn_width: float = 1.0  # NatureCNN channel / unit multiplier, for image observations
    image: bool = False
    obs_clip: float | None = None  # normalised inputs are clipped to ±obs_clip (VecNormalize's clip_obs); None: no clip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StudentConfig:
        """The config from its JSON form (``student.json``; lists become tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    @property
    def action_space(self) -> gym.spaces.Space:
        if self.head == "discrete":
            return gym.spaces.Discrete(self.action_dim)
        return gym.spaces.Box(np.array(self.action_low, np.float32), np.array(self.action_high, np.float32))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


def _nature_cnn(n_channels: int, width: float, obs_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    c1, c2, c3, fc = (max(1, round(n * width)) for n in (32, 64, 64, 512))
    conv = nn.Sequential(
        nn.Conv2d(n_channels, c1, 8, stride=4),
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


class Student(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        obs_dim = int(np.prod(config.observation_shape))
        # Input normalisation lives in the network so the saved student acts on raw observations.
        self.register_buffer("obs_mean", torch.zeros(config.observation_shape))
        self.register_buffer("obs_std", torch.ones(config.observation_shape))
        if config.image:
            self.trunk, n_features = _nature_cnn(
                config.observation_shape[0], config.cnn_width, config.observation_shape
            )
        else:
            self.trunk = nn.Sequential(nn.Flatten(), _mlp([obs_dim, *config.hidden_sizes]))
            n_features = config.hidden_sizes[-1] if config.hidden_sizes else obs_dim
        n_out = config.action_dim * (2 if config.head == "gaussian" else 1)
        self.head = nn.Linear(n_features, n_out)
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
        if self.config.head == "discrete":
            return StudentOutput("discrete", logits=out)
        if self.config.head == "deterministic":
            return StudentOutput("deterministic", action=torch.tanh(out))
        mean, log_std = out.chunk(2, dim=-1)
        return StudentOutput("gaussian", mean=mean, log_std=log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))

    @torch.no_grad()
    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Env actions for raw observations ``(B, *obs_shape)``."""
        return self.mapper.from_student(self(torch.as_tensor(np.asarray(observations))), deterministic, rng)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> None:
        save_without_pickle(self, Path(directory), dataclasses.asdict(self.config), WEIGHTS_FILE, CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> Student:
        directory = Path(directory)
        try:
            student = cls(StudentConfig.from_json(json.loads((directory / CONFIG_FILE).read_text())))
            student.load_state_dict(torch.load(directory / WEIGHTS_FILE, weights_only=True))
        except (
            OSError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            RuntimeError,
            EOFError,
            pickle.UnpicklingError,
        ) as err:
            reason = " ".join(f"{type(err).__name__}: {err}".split())  # torch's messages span several lines
            raise PolicyKDError(
                f"{directory} is not a policykd student ({reason}); distil one with `policykd distill`"
            ) from None
        return student.eval()


def save_without_pickle(
    module: nn.Module, directory: Path, config: dict[str, Any], weights: str, config_file: str
) -> None:
    """A state dict (read back with ``weights_only=True``) next to a JSON config, both atomic."""
    with atomic_path(directory / weights) as tmp:
        torch.save(module.state_dict(), tmp)
    write_json_atomic(directory / config_file, config)


def is_student_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def make_student(
    teacher_kind: str,
    observation_space: gym.spaces.Space,
    action_space: gym.spaces.Space,
    *,
    hidden_sizes: tuple[int, ...] = (64, 64),
    cnn_width: float = 1.0,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
    obs_clip: float | None = None,
) -> Student:
    """A student whose head matches ``teacher_kind`` and whose input matches the env's raw observations."""
    from stable_baselines3.common.preprocessing import is_image_space

    if not isinstance(observation_space, gym.spaces.Box):
        raise PolicyKDError(f"observation space {observation_space} is not supported (Box observations only)")
    if any(h <= 0 for h in hidden_sizes) or cnn_width <= 0:
        raise PolicyKDError(f"hidden sizes and cnn width must be positive, got {hidden_sizes} and {cnn_width}")
    head = student_kind_for(teacher_kind)
    discrete = isinstance(action_space, gym.spaces.Discrete)
    config = StudentConfig(
        observation_shape=tuple(int(n) for n in observation_space.shape),
        head=head,
        action_dim=int(action_space.n) if discrete else int(np.prod(action_space.shape)),
        action_low=() if discrete else tuple(float(x) for x in action_space.low),
        action_high=() if discrete else tuple(float(x) for x in action_space.high),
        squash=teacher_kind == "squashed_gaussian",
        hidden_sizes=tuple(int(h) for h in hidden_sizes),
        cnn_width=float(cnn_width),
        image=is_image_space(observation_space, check_channels=False),
    )
    student = Student(config)
    if obs_mean is not None and obs_std is not None and not config.image:
        student.set_input_normalization(obs_mean, obs_std, obs_clip)
    return student
