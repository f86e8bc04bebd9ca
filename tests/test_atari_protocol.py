"""Atari's evaluation protocol reaches collection (issue 22): where a run scores its teacher and
student by sampling their policies (Atari, as rl-zoo trains and scores its experts), the teacher
that drives collection samples too, so the buffer holds the states the scored teacher visits;
where evaluation is greedy, collection stays greedy."""

from __future__ import annotations

import numpy as np
import pytest

from policykd.errors import PolicyKDError
from policykd.jobs.collect import collect
from policykd.jobs.config import CollectConfig
from policykd.zoo.presets import ZOO_DIR

PONG = ZOO_DIR / "ppo" / "PongNoFrameskip-v4_1"
CARTPOLE = ZOO_DIR / "ppo" / "CartPole-v1_1"


def _collected(source, n: int, seed: int = 0):
    config = CollectConfig(teacher=str(source), n_transitions=n, n_envs=2, epsilon=0.0, seed=seed,
                           teacher_check=False, progress_bar=False)  # fmt: skip
    buffer, _, _ = collect(config)
    greedy = buffer.column("teacher_logits")[:, 0].argmax(axis=1)
    return buffer, buffer.column("actions"), greedy


def test_atari_collection_samples_the_teacher_as_its_evaluation_does():
    pytest.importorskip("ale_py")
    if not (PONG / "expert.json").is_file():
        pytest.skip("the zoo's Pong expert is not shipped")
    buffer, actions, greedy = _collected(PONG, 64)
    assert buffer.meta["teacher_acts"] == "sampled"
    # Pong's PPO teacher has about 1 nat of entropy: sampled actions leave its argmax often
    assert (actions != greedy).mean() > 0.05
    _, again, _ = _collected(PONG, 64)
    np.testing.assert_array_equal(actions, again)  # the samples are seeded


def test_collection_stays_greedy_where_evaluation_is_greedy():
    buffer, actions, greedy = _collected(CARTPOLE, 256)
    assert buffer.meta["teacher_acts"] == "greedy"
    np.testing.assert_array_equal(actions, greedy)


DQN = ZOO_DIR / "dqn" / "CartPole-v1_1"


def test_a_q_teachers_student_samples_as_its_teacher_does(tmp_path, monkeypatch):
    """Where evaluation samples (Atari's protocol; forced here on CartPole, whose preset is greedy),
    the DQN expert acts epsilon-greedily at its saved exploration rate, and so does its student: from
    one random stream both replace the same steps by the same random actions and keep their argmax
    elsewhere. summary.json and the defaults line say so, the student folder keeps it (``policykd
    evaluate --stochastic`` acts so too); ``student_sampling="distribution"`` samples the softmax."""
    import policykd.jobs.resolve as resolve_module
    from policykd.data.teachers import load_teacher
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill
    from policykd.learn.students import Student

    if not (DQN / "expert.json").is_file():
        pytest.skip("the zoo's CartPole DQN expert is not shipped")
    preset = resolve_module.resolve
    monkeypatch.setattr(resolve_module, "resolve", lambda *a: {**preset(*a), "deterministic_eval": False})
    teacher, tiny = load_teacher(DQN), {"n_transitions": 500, "n_updates": 50, "n_eval_episodes": 1, "eval_every": 0}
    tiny.update(teacher=str(DQN), teacher_check=False, progress_bar=False)
    summary = distill(DistillConfig(out_dir=str(tmp_path / "eps"), **tiny))
    eps = {"rule": "epsilon-greedy", "epsilon": teacher.exploration_rate}
    assert summary["eval_actions"] == "sampled" and teacher.exploration_rate == 0.04
    assert summary["sampled_actions"] == {"teacher": eps, "student": eps}
    assert "the student acts epsilon-greedily at its DQN teacher's exploration rate 0.04" in summary["defaults"]
    student = Student.load(tmp_path / "eps" / "student")
    obs = np.random.default_rng(1).normal(size=(2_000, 4)).astype(np.float32)
    replaced = np.random.default_rng(0).random(len(obs)) < teacher.exploration_rate
    sampled = teacher.act(obs, False, np.random.default_rng(0)), student.act(obs, False, np.random.default_rng(0))
    assert replaced.sum() > 40 and (sampled[0][replaced] != teacher.act(obs)[replaced]).any()
    np.testing.assert_array_equal(sampled[1], np.where(replaced, sampled[0], student.act(obs)))

    summary = distill(DistillConfig(out_dir=str(tmp_path / "softmax"), student_sampling="distribution", **tiny))
    assert summary["sampled_actions"]["student"] == {"rule": "distribution"}
    assert "epsilon-greedily" not in (summary["defaults"] or "")
    assert Student.load(tmp_path / "softmax" / "student").config.exploration_rate is None


def test_a_policy_gradient_teachers_student_samples_its_distribution():
    from policykd.data.teachers import load_teacher
    from policykd.jobs.resolve import student_exploration_rate

    teacher = load_teacher(CARTPOLE)
    assert student_exploration_rate("teacher", teacher.kind, teacher) is None
    assert student_exploration_rate("teacher", "q_values", load_teacher(DQN)) == 0.04
    with pytest.raises(PolicyKDError, match="--student-sampling 'greedy': use one of teacher, distribution"):
        student_exploration_rate("greedy", teacher.kind, teacher)
