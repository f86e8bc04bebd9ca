"""Environment presets (``envs/<EnvId>.yml``): what the CLI needs to distil on an env by name.

A preset names the default zoo expert, the collection and training budgets that work for that
env, the number of evaluation episodes, and the rl-zoo reference scores of its experts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from policykd.errors import PolicyKDError

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESETS_DIR = REPO_ROOT / "envs"
ZOO_DIR = REPO_ROOT / "agents"
DEFAULT_ENV_ID = "CartPole-v1"

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


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yml"))


def load_preset(env_id: str) -> dict[str, Any]:
    """The preset for ``env_id`` merged over DEFAULTS; DEFAULTS alone for an env with no preset."""
    path = PRESETS_DIR / f"{env_id}.yml"
    preset = dict(DEFAULTS, env_id=env_id)
    if path.is_file():
        preset.update(yaml.safe_load(path.read_text()) or {})
    return preset


def default_expert(env_id: str) -> Path:
    preset = load_preset(env_id)
    if not preset.get("default_expert"):
        raise PolicyKDError(
            f"no default expert for {env_id} (presets exist for: {', '.join(available_presets())}); pass --teacher"
        )
    return REPO_ROOT / preset["default_expert"]


def resolve(env_id: str, config: Any, keys: Sequence[str]) -> dict[str, Any]:
    """For each of ``keys``, ``config``'s value where it sets one (not None), else the preset's for
    ``env_id`` (which falls back to DEFAULTS). ``config`` is a dataclass or a mapping; a key it
    lacks comes from the preset. One line in place of "the option, or else the preset's"."""
    preset = load_preset(env_id)
    given = config if isinstance(config, Mapping) else {k: getattr(config, k, None) for k in keys}
    return {key: preset[key] if given.get(key) is None else given[key] for key in keys}
