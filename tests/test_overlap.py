"""Overlapped collection (policykd/data/overlap.py): env groups stepped in subprocesses give the
same buffer, bit for bit, as the same groups stepped in this process, in the one-vector-env layout."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

from policykd.data.buffers import LabelledBuffer
from policykd.data.envs import EnvRecipe
from policykd.data.overlap import GroupProcess, collect_overlapped, make_env_groups, split_envs
from policykd.errors import PolicyKDError
from tests.test_ray_backend import assert_same_buffer

N_ENVS = 5


def overlapped(teacher, subproc: bool, n: int = 300, **kwargs) -> tuple[LabelledBuffer, object]:
    venvs = make_env_groups(teacher.recipe, N_ENVS, 3, subproc=subproc)
    try:
        return collect_overlapped(venvs, [teacher], n, rng=np.random.default_rng(3), **kwargs)
    finally:
        for venv in venvs:
            venv.close()


def test_split_envs_covers_every_env_once():
    assert split_envs(5) == [(0, 3), (3, 2)]
    assert split_envs(1) == [(0, 1)]
    assert split_envs(8, 3) == [(0, 3), (3, 3), (6, 2)]


@pytest.mark.parametrize("kwargs", [{}, {"epsilon": 0.8, "deterministic": False}])
def test_subprocess_groups_give_the_in_process_groups_buffer(cartpole_teacher, kwargs):
    here, here_stats = overlapped(cartpole_teacher, subproc=False, **kwargs)
    there, there_stats = overlapped(cartpole_teacher, subproc=True, **kwargs)
    assert len(here) == 300 and here.n_envs == N_ENVS
    assert_same_buffer(here, there)
    assert here_stats.episode_returns == there_stats.episode_returns
    if kwargs:  # mostly random actions: episodes end within the 60 steps
        assert here_stats.episode_returns


def test_rows_are_each_envs_consecutive_steps_with_the_teachers_labels(cartpole_teacher):
    buffer, _ = overlapped(cartpole_teacher, subproc=False)
    obs = buffer.column("observations").reshape(-1, N_ENVS, 4)
    starts = buffer.column("episode_starts").reshape(-1, N_ENVS)
    dones = (buffer.column("terminated") | buffer.column("truncated")).reshape(-1, N_ENVS)
    np.testing.assert_array_equal(starts[1:], dones[:-1])  # env i's next row follows its last
    assert starts[0].all()
    # greedy teacher-driven CartPole: the stored action is the teacher's argmax at the stored obs
    logits = cartpole_teacher(buffer.column("observations")).logits.numpy()
    np.testing.assert_array_equal(buffer.column("actions"), logits.argmax(axis=1))
    assert not np.array_equal(obs[:, 0], obs[:, 3])  # envs seeded apart


def test_collect_vec_env_subproc_is_the_overlapped_collection(cartpole_expert_dir, cartpole_teacher):
    from policykd.jobs.collect import collect
    from policykd.jobs.config import CollectConfig

    config = CollectConfig(teacher=str(cartpole_expert_dir), n_transitions=300, n_envs=N_ENVS, seed=3,
                           teacher_check=False, progress_bar=False)  # fmt: skip
    plain, _, _ = collect(config)
    subproc, _, _ = collect(dataclasses.replace(config, vec_env="subproc"))
    here, _ = overlapped(cartpole_teacher, subproc=False)
    assert_same_buffer(subproc, here)
    assert subproc.meta["vec_env"] == "subproc" and "vec_env" not in plain.meta
    assert len(plain) == len(subproc)


def test_the_readme_quotes_the_overlap_measurements_as_recorded():
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        from overlap_timing import overlap_readme
    finally:
        sys.path.remove(str(root / "benchmarks"))
    results = json.loads((root / "benchmarks/results/throughput.json").read_text())
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- overlap:start -->\n")[1].split("<!-- overlap:end -->")[0]
    assert block.strip() == overlap_readme(results).strip()
    assert "CartPole 0." in block and len(results["overlap"]) == 6


class ExplodingWrapper(gym.Wrapper):
    """An env whose 5th step raises, as a broken simulator would inside a subprocess group."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.n_steps = 0

    def step(self, action):
        self.n_steps += 1
        if self.n_steps == 5:
            raise RuntimeError("the simulator crashed")
        return self.env.step(action)


@pytest.mark.parametrize(
    "recipe, said",
    [
        (
            EnvRecipe("CartPole-v1", env_wrapper="tests.test_overlap.ExplodingWrapper").trusting(),
            "an env of a --vec-env subproc group failed during step: RuntimeError: the simulator crashed; rerun",
        ),
        (EnvRecipe("PolicykdNoSuchEnv-v0"), "unknown environment 'PolicykdNoSuchEnv-v0'"),  # its own one line
    ],
)
def test_an_env_failing_in_a_subprocess_group_is_one_line(recipe, said):
    with pytest.raises(PolicyKDError) as raised:
        group = GroupProcess(recipe, 2, 0)
        try:
            group.reset()
            for _ in range(10):
                group.step_async(np.zeros(2, dtype=np.int64))
                group.step_wait()
        finally:
            group.close()
    assert said in str(raised.value) and "\n" not in str(raised.value)
