"""One distill job for one task and for several: options that cannot apply to several tasks are
refused in one line, several tasks get the teacher check and a fresh default run folder too."""

from __future__ import annotations

import json
import shutil

import pytest

from policykd.errors import PolicyKDError
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill, plan_tasks

TASKS = (("CartPole-v1", "agents/ppo/CartPole-v1_1"), ("Acrobot-v1", "agents/dqn/Acrobot-v1_1"))
TINY = {"n_transitions": 200, "n_updates": 5, "n_eval_episodes": 1, "progress_bar": False}


@pytest.fixture
def in_repo(cartpole_expert_dir, monkeypatch):
    monkeypatch.chdir(cartpole_expert_dir.parents[2])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"buffer": "x.npz"}, "drop buffer"),
        ({"merge": "mean-probs"}, "drop merge"),
        ({"teacher": "agents/ppo/CartPole-v1_1"}, "drop teacher"),
        ({"teacher_weights": (1.0, 2.0)}, "drop teacher_weights"),
        ({"teacher_drive": "random"}, "drop teacher_drive"),
    ],
)
def test_single_task_options_are_refused_with_several_tasks(in_repo, overrides, message):
    with pytest.raises(PolicyKDError, match=message):
        plan_tasks(DistillConfig(tasks=TASKS, **overrides))


@pytest.mark.parametrize("overrides", [{"task_weights": (1.0, 1.0)}, {"input_width": 32}])
def test_multitask_options_are_refused_with_one_task(in_repo, overrides):
    with pytest.raises(PolicyKDError, match="need several --task"):
        plan_tasks(DistillConfig(**overrides))


def test_every_loss_option_reaches_each_task(in_repo):
    plans = plan_tasks(DistillConfig(tasks=TASKS, temperature=2.0, kl_direction="reverse", tau2_scaling=True))
    for plan in plans:
        assert plan.loss_fn.temperature == 2.0
        assert plan.loss_fn.direction == "reverse"
        assert plan.loss_fn.tau2_scaling is True


def test_several_tasks_never_reuse_a_default_run_folder(in_repo, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree("agents/ppo/CartPole-v1_1", repo / "agents/ppo/CartPole-v1_1")
    shutil.copytree("agents/dqn/Acrobot-v1_1", repo / "agents/dqn/Acrobot-v1_1")
    monkeypatch.chdir(repo)
    first = distill(DistillConfig(tasks=TASKS, **TINY))
    second = distill(DistillConfig(tasks=TASKS, **TINY))
    assert first["out_dir"] == "runs/multitask/CartPole+Acrobot-seed0"
    assert second["out_dir"] == "runs/multitask/CartPole+Acrobot-seed0-2"
    assert json.loads((repo / first["out_dir"] / "summary.json").read_text())["tasks"].keys() == {
        "CartPole-v1",
        "Acrobot-v1",
    }


def test_several_tasks_get_the_teacher_check(in_repo, tmp_path):
    doctored = tmp_path / "dqn" / "Acrobot-v1_1"
    shutil.copytree("agents/dqn/Acrobot-v1_1", doctored)
    record = json.loads((doctored / "expert.json").read_text())
    record["score"] = {**record["score"], "mean": 1_000.0, "std": 1.0}  # Acrobot returns are <= 0
    (doctored / "expert.json").write_text(json.dumps(record))
    tasks = (TASKS[0], ("Acrobot-v1", str(doctored)))
    with pytest.raises(PolicyKDError, match="recorded score"):
        distill(DistillConfig(tasks=tasks, out_dir=str(tmp_path / "run"), **TINY))
    assert not (tmp_path / "run").exists()
