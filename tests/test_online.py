"""Online distillation with the shipped CartPole teacher and tiny budgets: beta schedules, who
drives, targets that stay the teacher's whoever drives, a ring that keeps the most recent
transitions, episodes that run on across rounds, and the drivers comparison's outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from policykd.data.buffers import DRIVER_STUDENT, DRIVER_TEACHER
from policykd.errors import PolicyKDError
from policykd.jobs.drivers import DriversConfig, compare_drivers, labels_to_reach
from policykd.jobs.experiment import student_for
from policykd.jobs.online import OnlineConfig, train_online
from policykd.learn.losses import KLLoss
from policykd.learn.schedules import ConstantBeta, ExponentialBeta, LinearBeta, check_beta, parse_schedule
from policykd.learn.trainer import with_entropy_gap

N_ENVS = 4


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def log_hparams(self, hparams: dict) -> None:
        pass

    def close(self) -> None:
        pass

    def values(self, tag: str) -> list[tuple[int, float]]:
        return [(step, m[tag]) for step, m in self.records if tag in m]


def always_left_student(teacher):
    """A student whose logits favour action 0 by 40 nats: it keeps pushing left however it trains
    with a tiny learning rate, so its actions differ from the teacher's on about half the states."""
    student = student_for(teacher, (8,), seed=0)
    with torch.no_grad():
        student.head.weight.zero_()
        student.head.bias.copy_(torch.tensor([20.0, -20.0]))
    return student


def online(teacher, schedule, student=None, *, lr: float = 1e-3, **overrides):
    config = OnlineConfig(
        **{
            "n_rounds": 3,
            "n_transitions_per_round": 128,
            "n_updates_per_round": 20,
            "capacity": 1_024,
            "n_envs": N_ENVS,
            "batch_size": 32,
            "learning_rate": lr,
            "log_every": 10,
            **overrides,
        }
    )
    student = student or student_for(teacher, (8,), seed=0)
    logger = RecordingLogger()
    result = train_online(teacher, student, KLLoss(), schedule, config=config, logger=logger)
    return result, logger


# -- schedules ----------------------------------------------------------------------------------


def test_schedules_follow_their_formulas():
    assert [ConstantBeta(0.3)(r) for r in (0, 5)] == [0.3, 0.3]
    assert [LinearBeta(4)(r) for r in range(6)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    assert [LinearBeta(2, start=0.8, end=0.2)(r) for r in range(4)] == pytest.approx([0.8, 0.5, 0.2, 0.2])
    assert [ExponentialBeta(0.5)(r) for r in range(4)] == pytest.approx([1.0, 0.5, 0.25, 0.125])
    assert parse_schedule("teacher")(7) == 1.0 and parse_schedule("student")(0) == 0.0
    assert parse_schedule("linear:4") == LinearBeta(4) and parse_schedule("exponential:0.7") == ExponentialBeta(0.7)
    assert parse_schedule("constant:0.25") == ConstantBeta(0.25)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ConstantBeta(1.5),
        lambda: ConstantBeta(-0.1),
        lambda: ConstantBeta(math.nan),
        lambda: LinearBeta(3, start=2.0),
        lambda: LinearBeta(0),
        lambda: ExponentialBeta(1.2),
        lambda: parse_schedule("constant:7"),
        lambda: parse_schedule("linear:x"),
        lambda: parse_schedule("cosine"),
        lambda: check_beta("a"),
    ],
)
def test_bad_schedules_get_a_one_line_error(make):
    with pytest.raises(PolicyKDError) as err:
        make()
    assert "\n" not in str(err.value)


def test_a_schedule_leaving_the_unit_interval_is_refused_at_its_round(cartpole_teacher):
    with pytest.raises(PolicyKDError, match="round 1"):
        online(cartpole_teacher, lambda r: 1.0 - 2.0 * r, n_rounds=2)


def test_bad_online_budgets_are_refused():
    with pytest.raises(PolicyKDError, match="capacity"):
        OnlineConfig(capacity=0)


# -- the online loop ------------------------------------------------------------------------------


def test_student_driven_targets_are_always_the_teachers(cartpole_teacher):
    result, _ = online(cartpole_teacher, ConstantBeta(0.0), always_left_student(cartpole_teacher), lr=1e-9)
    buffer = result.buffer
    assert (buffer.column("drivers") == DRIVER_STUDENT).all()
    actions = buffer.column("actions")
    assert (actions == 0).all(), "the student drove: the env got its actions"
    batch = buffer.batch_at(np.arange(len(buffer)))
    stored = batch.teacher_outputs[0]
    torch.testing.assert_close(stored.logits, cartpole_teacher(batch.observations.numpy()).logits)
    teacher_choice = stored.logits.argmax(dim=1).numpy()
    disagree = teacher_choice != actions
    assert disagree.mean() > 0.3, "the test needs states where the student and the teacher disagree"
    assert (teacher_choice[disagree] == 1).all(), "where they disagree the target is the teacher's action"
    assert [r.n_teacher_steps for r in result.rounds] == [0, 0, 0]


def test_driver_shares_and_label_counts_follow_the_schedule(cartpole_teacher):
    result, logger = online(cartpole_teacher, LinearBeta(2), n_rounds=3)
    rounds = result.rounds
    assert [r.beta for r in rounds] == [1.0, 0.5, 0.0]
    assert [r.n_labels for r in rounds] == [128, 256, 384]
    assert rounds[0].share_teacher == 1.0 and rounds[0].n_teacher_steps == 128
    assert rounds[1].share_teacher == pytest.approx(0.75, abs=0.1)  # 128 teacher + about 64 of the next 128
    assert rounds[2].n_teacher_steps == rounds[1].n_teacher_steps
    drivers = result.buffer.column("drivers")
    assert rounds[2].share_teacher == pytest.approx((drivers == DRIVER_TEACHER).mean())
    assert rounds[2].share_student + rounds[2].share_teacher == pytest.approx(1.0)
    # the trainer logs the shares, the entropies and their gap at the global update count
    assert [step for step, _ in logger.values("buffer/share_teacher")] == [10, 20, 30, 40, 50, 60]
    assert logger.values("buffer/share_teacher")[0][1] == 1.0
    gaps = [m for _, m in logger.records if "distill/entropy_gap" in m]
    assert gaps and all(
        m["distill/entropy_gap"] == pytest.approx(m["student/entropy"] - m["teacher/entropy"]) for m in gaps
    )
    assert [v for _, v in logger.values("online/beta")] == [1.0, 0.5, 0.0]


def test_the_ring_keeps_the_most_recent_transitions(cartpole_teacher):
    result, _ = online(
        cartpole_teacher,
        lambda r: 1.0 if r < 2 else 0.0,
        always_left_student(cartpole_teacher),
        lr=1e-9,
        n_rounds=4,
        capacity=256,
    )
    rounds = result.rounds
    assert [r.buffer_size for r in rounds] == [128, 256, 256, 256]
    assert [r.n_labels for r in rounds] == [128, 256, 384, 512]
    assert [r.share_student for r in rounds] == [0.0, 0.0, 0.5, 1.0], "the teacher's rounds were pushed out"
    assert (result.buffer.column("actions") == 0).all()


def test_episodes_run_on_across_rounds(cartpole_teacher):
    result, _ = online(cartpole_teacher, ConstantBeta(1.0), n_rounds=3, n_transitions_per_round=64)
    buffer = result.buffer
    starts = buffer.column("episode_starts")[buffer.chronological_indices()].reshape(-1, N_ENVS)
    assert starts[0].all() and not starts[1:].any(), "the teacher balances 500 steps: no reset between rounds"


def test_evaluation_runs_after_every_round(cartpole_teacher):
    calls: list[bool] = []

    def evaluate(student) -> float:
        calls.append(student.training)
        return float(len(calls))

    config = OnlineConfig(n_rounds=2, n_transitions_per_round=64, n_updates_per_round=5, n_envs=N_ENVS, batch_size=16)
    result = train_online(
        cartpole_teacher,
        student_for(cartpole_teacher, (8,), 0),
        KLLoss(),
        ConstantBeta(0.5),
        config=config,
        evaluate=evaluate,
    )
    assert [r.student_return for r in result.rounds] == [1.0, 2.0] and calls == [False, False]


def test_entropy_gap_is_student_minus_teacher():
    assert with_entropy_gap({"student/entropy": 0.5, "teacher/entropy": 0.2})["distill/entropy_gap"] == pytest.approx(
        0.3
    )
    assert "distill/entropy_gap" not in with_entropy_gap({"distill/action_agreement": 0.1})


# -- the drivers comparison -----------------------------------------------------------------------


def test_labels_to_reach():
    assert labels_to_reach([100, 200, 300], [10.0, 50.0, 40.0], 45.0) == 200
    assert labels_to_reach([100, 200], [10.0, 20.0], 45.0) is None


def test_compare_drivers_writes_its_outputs(cartpole_expert_dir, tmp_path):
    names: list[str] = []

    def cache(name, run):
        names.append(name)
        return json.loads(json.dumps(run()))  # results must survive a JSON round trip (cached_run)

    config = DriversConfig(
        teacher=str(cartpole_expert_dir),
        n_seeds=1,
        n_rounds=2,
        n_transitions_per_round=64,
        n_updates_per_round=10,
        n_envs=N_ENVS,
        n_eval_episodes=1,
        hidden_sizes=(8,),
        batch_size=32,  # the first round holds 64 labels: a larger batch is refused
        out_dir=str(tmp_path / "drivers"),
    )
    summary = compare_drivers(config, cache=cache)
    assert names == ["teacher", "teacher-seed0", "student-seed0", "dagger-seed0"]
    out = tmp_path / "drivers"
    for name in ("drivers.md", "drivers.csv", "drivers.png", "summary.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["dagger-seed0", "student-seed0", "teacher-seed0"]
    assert summary["curves"]["teacher"]["n_labels"] == [64, 128]
    assert summary["schedules"]["dagger"] == "LinearBeta(n_rounds=1, start=1.0, end=0.0)"
    assert summary["threshold"] == pytest.approx(
        summary["random"] + 0.95 * (summary["teacher_return"] - summary["random"])
    )
    assert len((out / "drivers.csv").read_text().splitlines()) == 1 + 3 * 2
    assert "labels to 95 %" in (out / "drivers.md").read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drivers": ("bob",)}, "drivers"),
        ({"drivers": ()}, "drivers"),
        ({"n_seeds": 0}, "--seeds"),
        ({"dagger_schedule": "linear:0"}, "n_rounds"),
        ({"n_rounds": 0}, "--rounds"),
    ],
)
def test_compare_drivers_refuses_bad_input_before_running(kwargs, message, tmp_path):
    with pytest.raises(PolicyKDError, match=message):
        compare_drivers(DriversConfig(out_dir=str(tmp_path / "x"), **kwargs))
    assert not (tmp_path / "x").exists()
