"""rl-zoo's tuned hyperparameters as keyword arguments of an SB3 algorithm, without ``eval``.

Where they come from (:func:`zoo_hyperparams`): the teacher's own rl-zoo folder (``<EnvId>/config.yml``)
when the student uses the teacher's algorithm, else policykd's ``envs/hyperparams/<algo>.yml``, else
the file rl_zoo3 installs. rl-zoo writes ``policy_kwargs`` as Python text (``dict(net_arch=[64, 64],
activation_fn=nn.ReLU)``) and schedules as ``lin_0.001``; both are read here from an allow-list
(literals, ``dict(...)`` and torch activation names), so a file can name no code to run.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from policykd.data.envs import read_zoo_yaml
from policykd.data.vec_normalize import VEC_NORMALIZE_KEYS
from policykd.errors import PolicyKDError
from policykd.zoo.presets import hyperparams_path

# Keys of rl-zoo's files that are not algorithm arguments: the env recipe and the budget are set apart.
ZOO_ONLY_KEYS = frozenset(
    {"n_timesteps", "n_envs", "policy", "normalize", "normalize_kwargs", "env_wrapper", "frame_stack", "callback",
     "vec_env_wrapper", "monitor_kwargs", "env_kwargs", "eval_env_kwargs", "use_env_stats"}
)  # fmt: skip
ACTIVATIONS = {name: getattr(nn, name) for name in ("ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU", "Sigmoid")}


def zoo_hyperparams(algo: str, env_id: str, teacher_folder: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """The raw rl-zoo entry for ``algo`` on ``env_id`` and where it was found (``"SB3 defaults"`` when
    nowhere). ``teacher_folder``: an rl-zoo folder trained with ``algo`` (its config.yml comes first)."""
    if teacher_folder is not None:
        own = Path(teacher_folder) / env_id.replace("/", "-") / "config.yml"
        if own.is_file():
            return dict(read_zoo_yaml(own)), str(own)
    ours = hyperparams_path(algo)
    if ours.is_file():
        entry = (read_zoo_yaml(ours) or {}).get(env_id)  # type: ignore[arg-type]
        if entry is not None:
            return dict(entry), str(ours)
    theirs = resources.files("rl_zoo3") / "hyperparams" / f"{algo}.yml"
    if theirs.is_file():
        entry = (read_zoo_yaml(theirs) or {}).get(env_id)  # type: ignore[arg-type]
        if entry is not None:
            return dict(entry), f"rl_zoo3/hyperparams/{algo}.yml"
    return {}, "SB3 defaults"


def algorithm_kwargs(raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``raw`` (an rl-zoo entry) split into (the algorithm's keyword arguments, the zoo-only keys);
    ``lin_X`` becomes a linear schedule from X to 0 and ``policy_kwargs`` text a dict."""
    kwargs, zoo = {}, {}
    for key, value in raw.items():
        if key in ZOO_ONLY_KEYS:
            zoo[key] = value
        elif key == "policy_kwargs":
            kwargs[key] = parse_policy_kwargs(value)
        else:
            kwargs[key] = _schedule(value) if isinstance(value, str) and value.startswith("lin_") else value
    return kwargs, zoo


def parse_policy_kwargs(text: str | dict[str, Any]) -> dict[str, Any]:
    """``dict(net_arch=[64, 64], activation_fn=nn.ReLU)`` as a dict, from literals, nested ``dict(...)``
    and torch activation names only; anything else is refused in one line."""
    if isinstance(text, dict):
        return dict(text)
    try:
        return _value(ast.parse(str(text), mode="eval").body, str(text))
    except SyntaxError:
        raise PolicyKDError(f"cannot read policy_kwargs {text!r}; write it as dict(net_arch=[64, 64])") from None


def normalize_kwargs(value: Any, gamma: float | None = None) -> dict[str, Any] | None:
    """rl-zoo's ``normalize`` (true, a mapping, or text such as ``"dict(norm_obs=True, norm_reward=False)"``)
    as VecNormalize's keyword arguments, with the algorithm's ``gamma`` as rl-zoo passes it; None when false."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if isinstance(value, str):
        try:
            value = _value(ast.parse(value, mode="eval").body, value, "normalize")
        except SyntaxError:
            raise PolicyKDError(
                f"cannot read normalize {value!r}; write it as dict(norm_obs=True, norm_reward=False)"
            ) from None
    if not value:
        return None
    kwargs = dict(value) if isinstance(value, dict) else {}
    unknown = sorted(set(kwargs) - set(VEC_NORMALIZE_KEYS))
    if unknown:
        raise PolicyKDError(
            f"normalize sets {unknown[0]!r}, not a VecNormalize option ({', '.join(VEC_NORMALIZE_KEYS)})"
        )
    if gamma is not None:
        kwargs["gamma"] = float(gamma)
    return kwargs


def _value(node: ast.AST, text: str, what: str = "policy_kwargs") -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _value(kw.value, text, what) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_value(k, text, what): _value(v, text, what) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(item, text, what) for item in node.elts]
    if isinstance(node, ast.Attribute) and node.attr in ACTIVATIONS:
        return ACTIVATIONS[node.attr]  # nn.ReLU, th.nn.ReLU, torch.nn.ReLU
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise PolicyKDError(
            f"{what} {text!r} names {ast.unparse(node)!r}, which policykd does not build "
            f"(literals, dict(...) and nn.{'/'.join(ACTIVATIONS)} only); pass the algorithm's kwargs from Python"
        ) from None


def _schedule(text: str) -> Callable[[float], float]:
    """rl-zoo's ``lin_X``: X at the start of training, falling linearly to 0 at its end."""
    try:
        start = float(text[len("lin_") :])
    except ValueError:
        raise PolicyKDError(f"cannot read the schedule {text!r}; rl-zoo writes lin_0.001") from None
    return LinearSchedule(start)


class LinearSchedule:
    """``progress_remaining * start`` (SB3 calls it with 1 at the start, 0 at the end)."""

    def __init__(self, start: float) -> None:
        self.start = start

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.start

    def __repr__(self) -> str:
        return f"lin_{self.start:g}"


def sb3_default(algorithm: type, name: str) -> Any:
    """The default an SB3 (or sb3-contrib) ``algorithm`` class gives its keyword argument ``name``
    (``sb3_default(DQN, "exploration_final_eps")`` -> 0.05)."""
    import inspect

    for cls in algorithm.__mro__:
        parameter = inspect.signature(cls.__init__).parameters.get(name) if "__init__" in vars(cls) else None
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise KeyError(f"{algorithm.__name__} takes no keyword argument {name!r}")
