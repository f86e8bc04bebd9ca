"""The module-free forward pass collection labels with (policykd/data/fast_forward.py): the same
outputs as SB3's own modules for every adapter it covers, the teacher itself for what it does
not cover, and the same buffer from the same seed as labelling through the teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from policykd.data import collect as collect_module
from policykd.data.collect import collect_rollouts
from policykd.data.envs import make_vec_env
from policykd.data.fast_forward import fast_labeller
from policykd.data.step_chunks import StepChunks
from policykd.data.teachers import load_teacher
from policykd.types import KIND_FIELDS
from tests.test_teachers import ADAPTER_IDS, ADAPTERS, _observations, _sb3_reference

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("algo", "env_id", "kwargs", "kind"), ADAPTERS, ids=ADAPTER_IDS)
def test_fast_labels_equal_sb3s(sb3_expert, algo, env_id, kwargs, kind):
    model, path = sb3_expert(algo, env_id, **kwargs)
    teacher = load_teacher(path, env_id=env_id)
    label = fast_labeller(teacher)
    assert (label is teacher) == bool(kwargs.get("use_sde")), "gSDE policies are left to the teacher"
    obs = _observations(env_id)
    out = label(obs)
    expected = _sb3_reference(model, obs, kind)
    assert out.kind == kind and set(expected) == set(KIND_FIELDS[kind])
    for field, tensor in expected.items():
        torch.testing.assert_close(getattr(out, field), tensor.detach(), rtol=1e-5, atol=1e-5)


def test_fast_labels_apply_the_vecnormalize_statistics():
    teacher = load_teacher(REPO / "agents/ppo/HalfCheetah-v5_1")
    assert teacher.normalizer is not None
    label = fast_labeller(teacher)
    assert label is not teacher
    obs = np.random.default_rng(0).normal(0, 5, (8, *teacher.observation_space.shape))  # float64, as MuJoCo gives
    expected, out = teacher(obs), label(obs)
    for field in ("mean", "log_std", "value"):
        torch.testing.assert_close(getattr(out, field), getattr(expected, field), rtol=1e-5, atol=1e-5)


def test_the_input_array_is_left_as_it_was(cartpole_teacher):
    obs = _observations("CartPole-v1")
    before = obs.copy()
    fast_labeller(cartpole_teacher)(obs)
    np.testing.assert_array_equal(obs, before)


@pytest.mark.parametrize("teacher_name", ["cartpole_teacher", "halfcheetah_teacher"])
def test_collection_gives_the_same_buffer_as_before(teacher_name, request, monkeypatch):
    """The fast path (numpy-free forward, chunked adds) against the old one: labels through the
    teacher's modules, one buffer add per vector step."""
    teacher = request.getfixturevalue(teacher_name)

    def collected():
        venv = make_vec_env(teacher.recipe, 4, seed=3)
        noise = {"epsilon": 0.1} if teacher.mapper.discrete else {"action_noise": 0.1}
        try:
            buffer, _ = collect_rollouts(venv, [teacher], 1_000, rng=np.random.default_rng(3), **noise)
        finally:
            venv.close()
        return buffer

    fast = collected()
    monkeypatch.setattr(collect_module, "fast_labeller", lambda teacher: teacher)
    monkeypatch.setattr(collect_module, "StepChunks", lambda buffer: StepChunks(buffer, steps=1))
    slow = collected()
    assert len(fast) == len(slow) == 1_000
    for column in ("observations", "actions", "rewards", "terminated", "truncated", "episode_starts", "drivers"):
        np.testing.assert_array_equal(fast.column(column), slow.column(column))
    for field in fast.layout()["teacher_field_shapes"]:  # the same kernels: equal bit for bit
        np.testing.assert_array_equal(fast.column(f"teacher_{field}"), slow.column(f"teacher_{field}"))


@pytest.fixture(scope="module")
def halfcheetah_teacher():
    return load_teacher(REPO / "agents/ppo/HalfCheetah-v5_1")
