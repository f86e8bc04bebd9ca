"""Build the vectorised environment an expert was trained in, from its recipe.

The recipe is what rl-baselines3-zoo records in ``<run>/<EnvId>/config.yml``: the ``env_wrapper``
list (e.g. AtariWrapper), ``frame_stack``, ``env_kwargs`` and whether VecNormalize was used.
The env built here stops *before* VecNormalize: a teacher normalises its own inputs with the
statistics it was trained with, so buffers keep raw observations and students stay free to
normalise however they like.

Recipes come from files (a zoo ``config.yml``, a student's ``recipe.json``, an ONNX file's
metadata, a buffer header), and ``env_wrapper`` names classes to import: a name from a file is
imported only from the allow-list in :func:`check_wrappers`, unless the recipe is
:meth:`EnvRecipe.trusting` (``--trust-pickles``). A wrapper class given in Python is used as is.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml

from policykd.data.safe_pickle import TRUST_HINT
from policykd.errors import PolicyKDError

# Where an env wrapper named by a recipe may come from, unless the recipe is trusted.
WRAPPER_MODULES = (
    "stable_baselines3.common.atari_wrappers",
    "gymnasium.wrappers",
    "rl_zoo3.wrappers",
    "sb3_contrib.common.wrappers",
)
# Wrappers in those modules that write files or open windows: never from a file.
REFUSED_WRAPPERS = frozenset({"RecordVideo", "HumanRendering"})


@dataclasses.dataclass(frozen=True)
class EnvRecipe:
    """How to rebuild an expert's environment, minus VecNormalize (the teacher applies it)."""

    env_id: str
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    env_wrapper: Any = None  # rl-zoo syntax: "module.Class", a list of them, or {"module.Class": kwargs}
    frame_stack: int | None = None
    normalize: bool = False  # the teacher expects VecNormalize'd observations
    trusted: bool = dataclasses.field(default=False, init=False, compare=False, repr=False)
    """Import whatever ``env_wrapper`` names. Set by :meth:`trusting` only: no file can set it."""

    def trusting(self) -> EnvRecipe:
        """This recipe with its wrappers imported whatever they name: for a file the user trusts."""
        recipe = dataclasses.replace(self)
        object.__setattr__(recipe, "trusted", True)  # a frozen dataclass; not an __init__ argument on purpose
        return recipe

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["trusted"]
        return data

    @classmethod
    def from_json(cls, data: Any, source: str) -> EnvRecipe:
        """The recipe ``source`` (a recipe.json, an ONNX file's metadata) records; refuses anything else."""
        names = {field.name for field in dataclasses.fields(cls) if field.init}
        if not isinstance(data, dict) or not isinstance(data.get("env_id"), str) or not set(data) <= names:
            raise PolicyKDError(
                f"{source} does not hold an env recipe (a mapping of {', '.join(sorted(names))}); "
                "restore it or pass --env"
            )
        return cls(**data)


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
    except yaml.constructor.ConstructorError as err:
        tag = err.problem.split("tag", 1)[-1].strip(" '") if err.problem else "a python object"
        raise PolicyKDError(
            f"cannot read {path}: it asks YAML to build {tag!r}, and policykd reads plain settings only "
            "(rl-zoo's OrderedDict and tuple tags); restore the zoo's file"
        ) from None
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


def _wrapper_names(env_wrapper: Any) -> list[Any]:
    """Each wrapper of rl-zoo's syntax: "module.Class", {"module.Class": kwargs}, or a list of them."""
    entries = env_wrapper if isinstance(env_wrapper, list) else [env_wrapper]
    return [next(iter(entry)) if isinstance(entry, dict) and len(entry) == 1 else entry for entry in entries]


def _allowed_wrapper(name: Any) -> bool:
    if isinstance(name, type):  # a class given in Python: already imported code
        return True
    if not isinstance(name, str) or "." not in name:
        return False
    module, class_name = name.rsplit(".", 1)
    modules_ok = any(module == root or module.startswith(root + ".") for root in WRAPPER_MODULES)
    parts_ok = all(part.isidentifier() and not part.startswith("__") for part in name.split("."))
    parts_ok = parts_ok and not class_name.startswith("_")  # no private class, no __main__ module
    return modules_ok and parts_ok and class_name not in REFUSED_WRAPPERS


def check_wrappers(env_wrapper: Any, source: str) -> None:
    """Refuse a wrapper that ``source`` names outside :data:`WRAPPER_MODULES` (SB3's Atari wrappers,
    gymnasium.wrappers, rl_zoo3.wrappers, sb3_contrib.common.wrappers) before anything is imported."""
    for name in _wrapper_names(env_wrapper) if env_wrapper else []:
        if not _allowed_wrapper(name):
            raise PolicyKDError(
                f"{source} names the env wrapper {name!r}, which is not on policykd's allow-list "
                f"({', '.join(WRAPPER_MODULES)}), so it is not imported; {TRUST_HINT}"
            )


def _wrapper_class(recipe: EnvRecipe) -> Any:
    if not recipe.env_wrapper:
        return None
    if not recipe.trusted:
        check_wrappers(recipe.env_wrapper, f"the env recipe of {recipe.env_id}")
    try:
        from rl_zoo3.utils import get_wrapper_class
    except ImportError:
        raise PolicyKDError(
            "this expert's recipe has env wrappers; install them with: pip install 'policykd[zoo]'"
        ) from None
    return get_wrapper_class({"env_wrapper": recipe.env_wrapper})


def make_vec_env(
    recipe: EnvRecipe, n_envs: int, seed: int, *, wrap_base: Callable[[gym.Env], gym.Env] | None = None
) -> Any:
    """An SB3 VecEnv of ``n_envs`` copies: Monitor (true episode returns) -> zoo wrappers ->
    frame stack -> channel-first images. Env i is seeded with ``seed + i``. Envs render
    ``rgb_array`` frames (SB3's default). ``wrap_base`` wraps each bare env first, under Monitor
    and the zoo wrappers (a video recorder sees whole episodes, not Atari lives)."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    check_env_id(recipe.env_id)
    env_id = recipe.env_id
    if wrap_base is not None:
        env_id = lambda **kwargs: wrap_base(gym.make(recipe.env_id, **{"render_mode": "rgb_array", **kwargs}))  # noqa: E731
    venv = sb3_make_vec_env(
        env_id,
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
    if isinstance(space, gym.spaces.Dict):  # MultiInputPolicy experts: see flat_dict_space
        venv = _VecFlattenDict(venv)
    return venv


def flat_dict_space(space: gym.spaces.Dict, source: str) -> gym.spaces.Box:
    """The Box that a dict of vector Boxes is stored, learnt and played as: each key flattened and the
    keys concatenated in the space's order, as SB3's CombinedExtractor (flatten per vector key, then
    concatenate) feeds its MLP. A teacher takes such rows apart again (``unflatten_dict_obs``) and
    sees its dict. Image keys and other sub-spaces are refused in one line."""
    from stable_baselines3.common.preprocessing import is_image_space

    for key, sub in space.spaces.items():
        if not isinstance(sub, gym.spaces.Box) or is_image_space(sub, check_channels=False):
            raise PolicyKDError(
                f"{source}: dict observation key {key!r} is {sub}; dict observations are supported with vector Box "
                "keys only (image keys need a CNN per key in the student, not supported yet)"
            )
    flat = gym.spaces.flatten_space(space)
    return gym.spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32), dtype=np.float32)


def flatten_dict_obs(space: gym.spaces.Dict, obs: dict[str, np.ndarray]) -> np.ndarray:
    """``{key: (n, *shape)}`` -> ``(n, sum of key sizes)`` float32 in the space's key order."""
    n = len(next(iter(obs.values())))
    return np.concatenate([np.asarray(obs[key], np.float32).reshape(n, -1) for key in space.spaces], axis=1)


def unflatten_dict_obs(space: gym.spaces.Dict, flat: np.ndarray) -> dict[str, np.ndarray]:
    """The inverse of :func:`flatten_dict_obs`: ``(n, D)`` -> ``{key: (n, *shape)}`` in each key's dtype."""
    out, start = {}, 0
    for key, sub in space.spaces.items():
        size = int(np.prod(sub.shape))
        out[key] = flat[:, start : start + size].reshape(len(flat), *sub.shape).astype(sub.dtype)
        start += size
    return out


def recipe_dict_space(recipe: EnvRecipe) -> gym.spaces.Dict | None:
    """The Dict observation space of ``recipe``'s env, whose observations :func:`make_vec_env` gives
    as :func:`flat_dict_space` rows (None for an env of another space). Makes the env once."""
    venv = make_vec_env(recipe, 1, 0)
    try:
        space = getattr(venv, "dict_space", None)  # VecFlattenDict's
    finally:
        venv.close()
    return space if isinstance(space, gym.spaces.Dict) else None


def _VecFlattenDict(venv: Any) -> Any:  # noqa: N802 - a class built lazily (SB3 is imported late)
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class VecFlattenDict(VecEnvWrapper):
        """Dict observations as :func:`flat_dict_space` rows (terminal observations too)."""

        def __init__(self, venv: Any) -> None:
            self.dict_space = venv.observation_space
            super().__init__(venv, observation_space=flat_dict_space(self.dict_space, "this env"))

        def reset(self) -> np.ndarray:
            return flatten_dict_obs(self.dict_space, self.venv.reset())

        def step_wait(self) -> Any:
            obs, rewards, dones, infos = self.venv.step_wait()
            for info in infos:
                if isinstance(info.get("terminal_observation"), dict):
                    one = {k: v[None] for k, v in info["terminal_observation"].items()}
                    info["terminal_observation"] = flatten_dict_obs(self.dict_space, one)[0]
            return flatten_dict_obs(self.dict_space, obs), rewards, dones, infos

    return VecFlattenDict(venv)


def env_action_masks(venv: Any) -> np.ndarray | None:
    """The actions each env allows now, ``(n_envs, A)`` bool, from its ``action_masks()`` method (the
    protocol of sb3-contrib's MaskablePPO); None when the env has no such method."""
    if not venv.has_attr("action_masks"):
        return None
    return np.stack(venv.env_method("action_masks")).astype(bool)
