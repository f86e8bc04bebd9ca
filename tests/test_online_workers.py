"""Online rounds split across workers (policykd/jobs/online_workers.py): worker 0 is the
single-worker run, each worker keeps its own envs and streams, the chunks are joined in worker
order, and a local Ray head (actors sent the student's weights each round) gives the same buffer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policykd.errors import PolicyKDError
from policykd.jobs.experiment import student_for
from policykd.jobs.online import OnlineConfig, train_online
from policykd.jobs.online_workers import RoundSplit, rebuilt_student, round_shares, student_weights
from policykd.learn.losses import KLLoss
from policykd.learn.schedules import ConstantBeta, LinearBeta
from tests.test_ray_backend import assert_same_buffer

N_ENVS = 2


def run(teacher, split: RoundSplit | None = None, *, rounds: int = 2, per_round: int = 100, schedule=None):
    config = OnlineConfig(n_rounds=rounds, n_transitions_per_round=per_round, n_updates_per_round=20,
                          capacity=1_000, n_envs=N_ENVS, batch_size=32, log_every=10, seed=5,
                          deterministic_drivers=False)  # fmt: skip
    student = student_for(teacher, (8,), seed=5)
    return train_online(teacher, student, KLLoss(), schedule or LinearBeta(2), config=config, split=split)


def test_round_shares_split_as_collection_does():
    assert round_shares(101, 2, 4) == [51, 50]
    assert round_shares(3, 1, 4) == [3]  # one worker rounds up to a vector step
    with pytest.raises(PolicyKDError, match="--workers 3"):
        round_shares(10, 3, 4)


def test_the_student_is_rebuilt_from_its_weights(cartpole_teacher):
    student = student_for(cartpole_teacher, (8,), seed=1)
    config, state = student_weights(student)
    assert all(isinstance(value, np.ndarray) for value in state.values())
    copy = rebuilt_student(config, state, None)
    obs = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    np.testing.assert_array_equal(copy(torch.as_tensor(obs)).logits.detach().numpy(),
                                  student(torch.as_tensor(obs)).logits.detach().numpy())  # fmt: skip
    assert rebuilt_student(config, state, copy) is copy


def test_two_local_workers_join_their_chunks_in_worker_order(cartpole_teacher):
    one = run(cartpole_teacher, rounds=1, per_round=50, schedule=ConstantBeta(0.0))
    two = run(cartpole_teacher, RoundSplit(workers=2), rounds=2, schedule=ConstantBeta(0.0))
    # round 0, worker 0: the single-worker run's first round with worker 0's share (same student, seed, envs)
    np.testing.assert_array_equal(two.buffer.column("observations")[:50], one.buffer.column("observations"))
    np.testing.assert_array_equal(two.buffer.column("actions")[:50], one.buffer.column("actions"))
    worker1 = two.buffer.column("observations")[50:100]
    assert not np.array_equal(worker1, one.buffer.column("observations"))  # its own envs (seed + n_envs)
    assert len(two.buffer) == 200 and two.rounds[-1].n_labels == 200


def test_a_worker_count_above_the_round_is_one_line(cartpole_teacher):
    with pytest.raises(PolicyKDError, match="--round-transitions"):
        run(cartpole_teacher, RoundSplit(workers=60))


@pytest.mark.expensive
def test_a_local_ray_head_gives_the_same_online_buffer_as_this_process(cartpole_teacher):
    ray = pytest.importorskip("ray")
    here = run(cartpole_teacher, RoundSplit(workers=2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run(cartpole_teacher, RoundSplit(workers=2, backend="ray"))
    finally:
        ray.shutdown()
    assert_same_buffer(on_ray.buffer, here.buffer)
    assert [r.n_teacher_steps for r in on_ray.rounds] == [r.n_teacher_steps for r in here.rounds]
    assert 0 < here.rounds[-1].n_teacher_steps < here.rounds[-1].n_labels  # teacher and student both drove


def test_compare_drivers_workers_split_each_round(cartpole_expert_dir, tmp_path):
    from policykd.jobs.drivers import DriversConfig, compare_drivers

    def drivers(workers: int, name: str) -> dict:
        config = DriversConfig(teacher=str(cartpole_expert_dir), drivers=("dagger",), n_seeds=1, n_rounds=2,
                               n_transitions_per_round=64, n_updates_per_round=10, n_envs=N_ENVS, n_eval_episodes=1,
                               hidden_sizes=(8,), batch_size=32, out_dir=str(tmp_path / name), teacher_check=False,
                               progress_bar=False, workers=workers)  # fmt: skip
        return compare_drivers(config)["runs"][0]["rounds"]

    one, two = drivers(1, "one"), drivers(2, "two")
    stored = [json.loads(p.read_text())["settings"] for p in (tmp_path / "one" / "cells").glob("dagger-*.json")]
    assert stored and "workers" not in stored[0]  # cells stored before --workers existed stay valid
    assert json.loads(next((tmp_path / "two" / "cells").glob("dagger-*.json")).read_text())["settings"]["workers"] == 2
    assert [r["n_labels"] for r in two] == [64, 128] == [r["n_labels"] for r in one]
    assert two[0]["n_teacher_steps"] == 64  # dagger's first round: beta 1
    assert two[1]["share_student"] > 0
    assert two != one  # worker 1's envs (seeded seed + n_envs) make other data, so other training
