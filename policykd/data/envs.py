"""Build the vectorised environment an expert was trained in, from its recipe.

The recipe is what rl-baselines3-zoo records in ``<run>/<EnvId>/config.yml``: the ``env_wrapper``
list (e.g. AtariWrapper), ``frame_stack``, ``env_kwargs`` and whether VecNormalize was used.
The env built here stops *before* VecNormalize: a teacher normalises its own inputs with the
statistics it was trained with, so buffers keep raw observations and students stay free to
normalise however they like.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml

from policykd.errors import PolicyKDError


@dataclasses.dataclass(frozen=True)
class EnvRecipe:
    """How to rebuild an expert's environment, minus VecNormalize (the teacher applies it)."""

    env_id: str
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    env_wrapper: Any = None  # rl-zoo syntax: "module.Class", a list of them, or {"module.Class": kwargs}
    frame_stack: int | None = None
    normalize: bool = False  # the teacher expects VecNormalize'd observations

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _ZooConfigLoader(yaml.SafeLoader):
    """Safe YAML loader that also reads the OrderedDict tags rl_zoo3 writes into config.yml."""


def _ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    pairs = loader.construct_sequence(node.value[0], deep=True) if node.value else []  # type: ignore[index]
    return {key: value for key, value in pairs}


_ZooConfigLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
_ZooConfigLoader.add_constructor(  # yaml.dump writes tuples (e.g. in env_kwargs) with this tag
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node, deep=True))
)


def read_zoo_yaml(path: str | Path) -> dict[str, Any]:
    """Read an rl-zoo ``config.yml`` / ``args.yml`` without unsafe YAML."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_ZooConfigLoader)  # noqa: S506 - safe loader subclass
    except (OSError, yaml.YAMLError) as err:
        raise PolicyKDError(f"cannot read {path}: {err}") from None
    if isinstance(data, list):  # very old rl-zoo dumps: a list of [key, value] pairs
        try:
            data = dict(data)
        except (TypeError, ValueError):
            pass
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyKDError(
            f"{path} holds a {type(data).__name__}, not an rl-zoo mapping of settings; restore it from the zoo"
        )
    return data


def _parse_normalize(value: Any) -> bool:
    """Whether observations were normalised. rl-zoo takes ``normalize`` as a bool, a mapping of
    VecNormalize kwargs, or a string it evals: ``"dict(norm_obs=True, norm_reward=False)"``."""
    if isinstance(value, dict):
        return bool(value.get("norm_obs", True))
    if isinstance(value, str):
        return re.search(r"norm_obs['\"]?\s*[=:]\s*False", value) is None
    return bool(value)


def recipe_from_zoo_config(env_id: str, config: dict[str, Any], args: dict[str, Any] | None = None) -> EnvRecipe:
    env_kwargs = dict(config.get("env_kwargs") or {})
    env_kwargs.update((args or {}).get("env_kwargs") or {})
    return EnvRecipe(
        env_id=env_id,
        env_kwargs=env_kwargs,
        env_wrapper=config.get("env_wrapper"),
        frame_stack=config.get("frame_stack"),
        normalize=_parse_normalize(config.get("normalize", False)),
    )


def is_atari(env_id: str) -> bool:
    return "NoFrameskip" in env_id or env_id.startswith("ALE/")


def _register_optional_envs(env_id: str) -> None:
    if is_atari(env_id):
        try:
            import ale_py
        except ImportError:
            raise PolicyKDError(f"{env_id} needs ale-py: pip install 'policykd[atari]'") from None
        gym.register_envs(ale_py)


def check_env_id(env_id: str) -> None:
    _register_optional_envs(env_id)
    try:
        gym.spec(env_id)
    except gym.error.Error as err:
        raise PolicyKDError(
            f"unknown environment {env_id!r} ({err}); check the id with gymnasium.pprint_registry()"
        ) from None


def _wrapper_class(recipe: EnvRecipe) -> Any:
    if not recipe.env_wrapper:
        return None
    try:
        from rl_zoo3.utils import get_wrapper_class
    except ImportError:
        raise PolicyKDError(
            "this expert's recipe has env wrappers; install them with: pip install 'policykd[zoo]'"
        ) from None
    return get_wrapper_class({"env_wrapper": recipe.env_wrapper})


def make_vec_env(recipe: EnvRecipe, n_envs: int, seed: int) -> Any:
    """An SB3 VecEnv of ``n_envs`` copies: Monitor (true episode returns) -> zoo wrappers ->
    frame stack -> channel-first images. Env i is seeded with ``seed + i``."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    check_env_id(recipe.env_id)
    venv = sb3_make_vec_env(
        recipe.env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=recipe.env_kwargs,
        wrapper_class=_wrapper_class(recipe),
        vec_env_cls=DummyVecEnv,
    )
    if recipe.frame_stack:
        venv = VecFrameStack(venv, int(recipe.frame_stack))
    space = venv.observation_space
    if isinstance(space, gym.spaces.Box) and is_image_space(space) and not is_image_space_channels_first(space):
        venv = VecTransposeImage(venv)
    return venv
