"""Collection split across workers (policykd/jobs/ray_backend.py): worker w is the in-process
collection seeded ``seed + w * n_envs``, the chunks are concatenated in worker order, and a local
Ray head gives the same buffer as the same split run in this process."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from policykd.data.buffers import LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.jobs.collect import collect
from policykd.jobs.config import CollectConfig
from tests.test_cli import assert_one_line_error, run_cli

COLUMNS = (
    "observations",
    "actions",
    "rewards",
    "terminated",
    "truncated",
    "episode_starts",
    "drivers",
    "teacher_logits",
)


def assert_same_buffer(a: LabelledBuffer, b: LabelledBuffer) -> None:
    assert len(a) == len(b)
    for column in COLUMNS:
        np.testing.assert_array_equal(a.column(column), b.column(column))


@pytest.fixture
def small(cartpole_expert_dir) -> CollectConfig:
    return CollectConfig(
        teacher=str(cartpole_expert_dir), n_transitions=402, n_envs=4, seed=7, teacher_check=False, progress_bar=False
    )


def test_worker_w_is_the_collection_seeded_seed_plus_w_times_n_envs(small):
    split, stats, _ = collect(dataclasses.replace(small, workers=2))
    first, first_stats, _ = collect(dataclasses.replace(small, n_transitions=201))
    second, second_stats, _ = collect(dataclasses.replace(small, n_transitions=201, seed=7 + 4))
    joined = LabelledBuffer(len(first) + len(second), **first.layout())
    joined.extend(first)
    joined.extend(second)
    assert_same_buffer(split, joined)
    assert split.meta["worker_seeds"] == [7, 11] and split.meta["seed"] == 7
    assert stats.n_transitions == len(split) == 2 * 204  # each share rounded up to whole vector steps
    assert stats.episode_returns == first_stats.episode_returns + second_stats.episode_returns


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--workers", "0"], "--workers must be an integer >= 1"),
        (["--ray-address", "auto"], "--ray-address joins a Ray cluster; add --backend ray"),
        (["--workers", "200"], "fewer than its 4 envs take in one step"),
    ],
)
def test_bad_worker_options_are_one_line_errors(cartpole_expert_dir, tmp_path, capsys, options, fragment):
    out = tmp_path / "buffer.npz"
    argv = ["collect", "--teacher", str(cartpole_expert_dir), "--n-transitions", "400", "--n-envs", "4"]
    code, _, err = run_cli([*argv, "--no-teacher-check", "--no-progress", *options, "--out", str(out)], capsys)
    assert_one_line_error(code, err, "collect", fragment)
    assert not out.exists()


@pytest.mark.expensive
def test_a_local_ray_head_collects_the_same_buffer_as_this_process(cartpole_expert_dir, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    argv = ["collect", "--teacher", str(cartpole_expert_dir), "--n-transitions", "400", "--n-envs", "4", "--seed", "3"]
    argv += ["--workers", "3", "--no-teacher-check", "--no-progress"]  # more workers than Ray's 2 CPUs: they queue
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        code, _, err = run_cli([*argv, "--backend", "ray", "--out", str(tmp_path / "ray.npz")], capsys)
    finally:
        ray.shutdown()
    assert code == 0, err
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "local.npz")], capsys)
    assert code == 0, err
    on_ray, here = LabelledBuffer.load(tmp_path / "ray.npz"), LabelledBuffer.load(tmp_path / "local.npz")
    assert_same_buffer(on_ray, here)
    assert on_ray.meta["worker_seeds"] == [3, 7, 11]


def test_ray_missing_is_a_one_line_error(small, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(PolicyKDError, match=r"--backend ray needs Ray: pip install 'policykd\[ray\]'"):
        collect(dataclasses.replace(small, backend="ray"))


@pytest.mark.expensive
def test_sweep_cells_on_a_local_ray_head_give_the_same_runs(cartpole_expert_dir, tmp_path):
    ray = pytest.importorskip("ray")
    from policykd.jobs.sweep import SweepConfig, run_sweep

    config = SweepConfig(
        teacher=str(cartpole_expert_dir), temperatures=(0.5, 2.0), n_seeds=1, n_transitions=400, n_envs=4,
        n_updates=20, batch_size=64, n_eval_episodes=1, n_metric_states=100, progress_bar=False,
    )  # fmt: skip
    here = run_sweep(dataclasses.replace(config, out_dir=str(tmp_path / "here")))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_sweep(dataclasses.replace(config, out_dir=str(tmp_path / "ray"), backend="ray"))
    finally:
        ray.shutdown()
    assert [r["tau"] for r in on_ray["runs"]] == [0.5, 2.0]
    for a, b in zip(here["runs"], on_ray["runs"]):
        assert {k: v for k, v in a.items() if k != "wall_time_s"} == {k: v for k, v in b.items() if k != "wall_time_s"}
    assert {"tau0.5-seed0.json", "tau2-seed0.json"} <= {p.name for p in (tmp_path / "ray" / "cells").iterdir()}
