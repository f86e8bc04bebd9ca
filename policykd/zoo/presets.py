"""Environment presets (``envs/<EnvId>.yml``) and where the expert zoo lies.

A preset names the default zoo expert, the collection and training budgets that work for that
env, the number of evaluation episodes, and the rl-zoo reference scores of its experts.

The presets ship inside the package (the wheel maps the repository's ``envs/`` to the package
``policykd._presets``) and are read with importlib.resources, so they are found wherever policykd
is installed; run from a checkout without installing, they are read from its ``envs/``.

The expert zoo (``<algo>/<EnvId>_<n>/`` folders, as rl-zoo lays them out) does not ship in the
wheel. It is, in order: the folder passed as ``--zoo DIR`` (``zoo_dir``), the ``POLICYKD_ZOO``
environment variable, or the ``agents/`` of the policykd checkout that holds the current
directory or this package. A preset's ``default_expert: agents/ppo/CartPole-v1_1`` resolves
against that zoo; a ``--teacher`` path resolves from the current directory, as paths do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from policykd.errors import PolicyKDError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package was imported from (in an installed wheel: site-packages, no checkout)."""
PRESETS_DIR = REPO_ROOT / "envs"
ZOO_DIR = REPO_ROOT / "agents"
"""The checkout's zoo (tests and benchmarks run from the checkout); jobs use :func:`find_zoo`."""
ZOO_VARIABLE = "POLICYKD_ZOO"
DEFAULT_ENV_ID = "CartPole-v1"
HUB_EXAMPLE = "sb3/ppo-CartPole-v1"

# Used where a preset is silent.
DEFAULTS: dict[str, Any] = {
    "n_envs": 8,
    "n_eval_episodes": 20,
    "n_transitions": 20_000,
    "n_updates": 2_000,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "hidden_sizes": [64, 64],
    "cnn_width": 0.5,
    "epsilon": 0.0,
    "action_noise": 0.0,
    "deterministic_eval": True,
    "references": {},
}

NO_PRESET = "none"
"""``--preset none``: ignore the env's preset file; every default comes from the teacher (TEACHER_DEFAULTS)."""
PRESET_CHOICES = ("auto", NO_PRESET)
STUDENT_FRACTION = 0.25
"""Where no preset sets the student's size: its share of the teacher's acting parameters (Rusu et
al. 2016 kept 108 % of a DQN's score at 25 %; fidelity_compression.md measures ours)."""
Q_TARGET_CONFIDENCE = 0.9
"""Where no temperature is given for a Q-value or quantile teacher: the tau at which the median
state's softmax(Q / tau) gives the greedy action this probability against the runner-up
(learn/targets.py ``confidence_temperature``), so the targets are as sharp on CartPole (Q ~ 100,
gaps ~ 0.04) as on Acrobot (gaps ~ 1), where one fixed tau is uniform on one and one-hot on the other."""

# Budgets by domain where no preset applies (``--preset none``, or an env without envs/<EnvId>.yml),
# taken from the presets that work for the zoo's experts of that domain: Pong (image), HalfCheetah /
# Hopper (continuous control), CartPole / Acrobot / LunarLander / Pendulum (classic control).
TEACHER_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {
        "n_envs": 8,
        "n_eval_episodes": 10,
        "n_transitions": 100_000,
        "n_updates": 20_000,
        "batch_size": 64,
        "learning_rate": 2.5e-4,
        "epsilon": 0.01,
        "deterministic_eval": False,
    },
    "continuous-control": {
        "n_envs": 4,
        "n_eval_episodes": 10,
        "n_transitions": 200_000,
        "n_updates": 20_000,
        "action_noise": 0.1,
    },
    # 10,000 updates as LunarLander's preset: with 5,000 a 25 % student of its DQN reached 61.5 % of
    # it, with 10,000 91.2 % (seed 0; 100,000 transitions instead: 84.5 %, tau 0.1: 83.2 %)
    "classic-control": {"n_envs": 8, "n_eval_episodes": 20, "n_transitions": 50_000, "n_updates": 10_000},
}
"""Per domain, what replaces DEFAULTS; continuous classic control (Pendulum) adds CONTINUOUS_NOISE."""
CONTINUOUS_NOISE = {"action_noise": 0.1}


def presets_dir() -> Traversable:
    """The folder of preset files: the installed package's data, else the checkout's ``envs/``."""
    try:
        return resources.files("policykd._presets")
    except ModuleNotFoundError:  # imported from a checkout that was not installed (PYTHONPATH)
        return PRESETS_DIR


def available_presets() -> list[str]:
    return sorted(p.name.removesuffix(".yml") for p in presets_dir().iterdir() if p.name.endswith(".yml"))


def has_preset(env_id: str) -> bool:
    return (presets_dir() / f"{env_id}.yml").is_file()


def check_preset_choice(choice: str) -> str:
    """``--preset``: ``auto`` (the env's preset where it has one) or ``none``."""
    if choice not in PRESET_CHOICES:
        raise PolicyKDError(
            f"--preset {choice!r} is not one of {', '.join(PRESET_CHOICES)}: auto reads envs/<EnvId>.yml where it "
            "exists, none derives every default from the teacher"
        )
    return choice


def load_preset(env_id: str, use_file: bool = True) -> dict[str, Any]:
    """The preset for ``env_id`` merged over DEFAULTS; DEFAULTS alone for an env with no preset
    (or with ``use_file`` False: ``--preset none``)."""
    path = presets_dir() / f"{env_id}.yml"
    preset = dict(DEFAULTS, env_id=env_id)
    if use_file and path.is_file():
        preset.update(yaml.safe_load(path.read_text()) or {})
    return preset


def hyperparams_path(algo: str) -> Traversable:
    """Our rl-zoo hyperparameter file for ``algo`` (``envs/hyperparams/<algo>.yml``); it may not exist."""
    return presets_dir() / "hyperparams" / f"{algo}.yml"


def _in_zoo(source: str | Path) -> Path:
    """A zoo expert's path inside the zoo: ``agents/ppo/CartPole-v1_1`` (as presets and the README
    write it) is ``ppo/CartPole-v1_1``."""
    parts = Path(source).parts
    return Path(*parts[1:]) if len(parts) > 1 and parts[0] == "agents" else Path(source)


def _is_checkout(root: Path) -> bool:
    return all((root / name).exists() for name in ("agents", "envs", "pyproject.toml", "policykd/__init__.py"))


def find_zoo(zoo_dir: str | Path | None = None) -> Path | None:
    """The expert zoo: ``zoo_dir`` (``--zoo``), else ``$POLICYKD_ZOO``, else the ``agents/`` of the
    policykd checkout that holds the current directory or this package; None when there is none."""
    given = zoo_dir or os.environ.get(ZOO_VARIABLE)
    if given:
        return Path(given)
    cwd = Path.cwd()
    return next((root / "agents" for root in (cwd, *cwd.parents, REPO_ROOT) if _is_checkout(root)), None)


def zoo_source(zoo_dir: str | Path | None, zoo: Path | None) -> str:
    """Where :func:`find_zoo` found ``zoo`` (or looked for one), for messages."""
    if zoo_dir:
        return f"from --zoo {zoo_dir}"
    if os.environ.get(ZOO_VARIABLE):
        return f"from {ZOO_VARIABLE}={os.environ[ZOO_VARIABLE]}"
    if zoo is not None:
        return f"the agents/ of the checkout {zoo.parent}"
    return f"no --zoo, no {ZOO_VARIABLE}, and no policykd checkout around {Path.cwd()}"


def zoo_hint(teacher: bool = True) -> str:
    """What to pass when no expert (``teacher``) or no zoo is found."""
    zoo = (
        f"pass --zoo DIR or set {ZOO_VARIABLE}=DIR (an expert zoo laid out as <algo>/<EnvId>_<n>, such as a "
        "policykd clone's agents/)"
    )
    return f"{zoo}, or --teacher with an SB3 .zip, an rl-zoo folder or a hub id like {HUB_EXAMPLE}" if teacher else zoo


def default_expert(env_id: str, zoo_dir: str | Path | None = None) -> Path:
    """The preset's expert for ``env_id`` in the zoo (:func:`find_zoo`)."""
    source = load_preset(env_id).get("default_expert")
    if not source:
        raise PolicyKDError(
            f"no default expert for {env_id} (presets exist for: {', '.join(available_presets())}); pass --teacher"
        )
    relative, zoo = _in_zoo(source), find_zoo(zoo_dir)
    if zoo is None or not (zoo / relative).exists():
        where = f"{zoo / relative} does not exist" if zoo is not None else "no expert zoo was found"
        raise PolicyKDError(
            f"the {env_id} preset's expert {relative} is not found: {where} ({zoo_source(zoo_dir, zoo)}); " + zoo_hint()
        )
    return zoo / relative


def missing_teacher(source: str, zoo_dir: str | Path | None = None) -> PolicyKDError:
    """The error for a ``--teacher`` path that does not exist: where it was looked for, and the
    zoo's copy when the zoo holds one at that path (``agents/ppo/...`` run from elsewhere)."""
    looked = Path(source).absolute()
    message = (
        f"teacher {source} does not exist (looked for {looked}; relative paths are read from the current directory)"
    )
    relative, zoo = _in_zoo(source), find_zoo(zoo_dir)
    if zoo is not None and not Path(source).is_absolute() and (zoo / relative).exists():
        return PolicyKDError(f"{message}; the zoo holds it as {zoo / relative}: pass that path")
    return PolicyKDError(f"{message}; {zoo_hint()}")


def resolve(env_id: str, config: Any, keys: Sequence[str], use_file: bool = True) -> dict[str, Any]:
    """For each of ``keys``, ``config``'s value where it sets one (not None), else the preset's for
    ``env_id`` (which falls back to DEFAULTS; ``use_file`` False: DEFAULTS alone). ``config`` is a
    dataclass or a mapping; a key it lacks comes from the preset. One line in place of "the option,
    or else the preset's"."""
    preset = load_preset(env_id, use_file)
    given = config if isinstance(config, Mapping) else {k: getattr(config, k, None) for k in keys}
    return {key: preset[key] if given.get(key) is None else given[key] for key in keys}
