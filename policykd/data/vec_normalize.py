"""VecNormalize for a student trained with RL on the teacher's env (``jobs/finetune.py``).

The teacher normalises its own inputs (``teachers.ObsNormalizer``); a student trained by SB3 in
an env whose expert was trained with VecNormalize (or whose rl-zoo hyperparameters say
``normalize``) gets SB3's own VecNormalize around the env, its observation statistics started
from the teacher's (mean, variance, count, ``clip_obs``, epsilon), so at the start both read the
same normalised observations. Its statistics are saved as JSON (:func:`vec_normalize_state`),
never as SB3's ``vecnormalize.pkl``; :func:`load_vec_normalize` wraps an env with them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from policykd.errors import PolicyKDError
from policykd.fileio import read_json

# VecNormalize's keyword arguments rl-zoo's ``normalize`` may set
VEC_NORMALIZE_KEYS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")


def wrap_vec_normalize(venv: Any, kwargs: dict[str, Any], obs_stats: Any = None) -> Any:
    """``venv`` in SB3's VecNormalize (``training=True``) with ``kwargs``; ``obs_stats`` (an
    ObsNormalizer: ``mean``, ``var``, ``count``) starts its observation statistics."""
    from stable_baselines3.common.vec_env import VecNormalize

    wrapped = VecNormalize(venv, training=True, **kwargs)
    if obs_stats is not None and wrapped.norm_obs:
        wrapped.obs_rms.mean = np.asarray(obs_stats.mean, dtype=np.float64).copy()
        wrapped.obs_rms.var = np.asarray(obs_stats.var, dtype=np.float64).copy()
        if obs_stats.count is not None:
            wrapped.obs_rms.count = float(obs_stats.count)
    return wrapped


def vec_normalize_state(venv: Any) -> dict[str, Any]:
    """The settings and running statistics of a VecNormalize, as JSON-ready values (floats keep
    every bit: JSON writes them with ``repr``)."""
    return {
        **{key: _plain(getattr(venv, key)) for key in VEC_NORMALIZE_KEYS},
        "obs_mean": venv.obs_rms.mean.tolist(),
        "obs_var": venv.obs_rms.var.tolist(),
        "obs_count": float(venv.obs_rms.count),
        "ret_mean": np.asarray(venv.ret_rms.mean).tolist(),
        "ret_var": np.asarray(venv.ret_rms.var).tolist(),
        "ret_count": float(venv.ret_rms.count),
    }


def set_vec_normalize_state(venv: Any, state: dict[str, Any]) -> None:
    """Put a :func:`vec_normalize_state` back into ``venv`` (a VecNormalize of the same env)."""
    venv.obs_rms.mean = np.asarray(state["obs_mean"], dtype=np.float64).reshape(venv.obs_rms.mean.shape)
    venv.obs_rms.var = np.asarray(state["obs_var"], dtype=np.float64).reshape(venv.obs_rms.var.shape)
    venv.obs_rms.count = float(state["obs_count"])
    venv.ret_rms.mean = np.asarray(state["ret_mean"], dtype=np.float64).reshape(np.shape(venv.ret_rms.mean))
    venv.ret_rms.var = np.asarray(state["ret_var"], dtype=np.float64).reshape(np.shape(venv.ret_rms.var))
    venv.ret_rms.count = float(state["ret_count"])


def load_vec_normalize(path: str | Path, venv: Any, *, training: bool = False) -> Any:
    """``venv`` wrapped in the VecNormalize a fine-tuned student was trained with (its run folder's
    ``vecnormalize.json``); ``training=False`` freezes the statistics and reports raw rewards, for
    playing the student (``model.predict`` on the wrapped env's observations)."""
    state = read_json(Path(path))
    if not isinstance(state, dict) or not set(VEC_NORMALIZE_KEYS) <= set(state):
        raise PolicyKDError(f"{path} does not hold VecNormalize statistics; restore the run folder's vecnormalize.json")
    wrapped = wrap_vec_normalize(venv, {key: state[key] for key in VEC_NORMALIZE_KEYS})
    set_vec_normalize_state(wrapped, state)
    wrapped.training = training
    if not training:
        wrapped.norm_reward = False
    return wrapped


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
