"""Runs you can compare in TensorBoard: each run's hyperparameters are an HParams session in its
own folder (no sub-run), so a sweep's runs line up in one HParams table; ensembles' tags name each
teacher; teacher transitions are a second x-axis; a distill run logs a few evaluation points."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import backend_context, metadata

from policykd.jobs.evaluate import evaluate_policy
from policykd.jobs.experiment import student_for
from policykd.jobs.online import OnlineConfig, train_online
from policykd.jobs.sweep import SweepConfig, run_sweep
from policykd.learn.logging import NOT_HPARAMS, TensorBoardLogger, hparam_value, hparams_of
from policykd.learn.losses import KLLoss
from policykd.learn.schedules import ConstantBeta


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


def session_hparams(run_dir: Path) -> dict[str, Any]:
    """The HParams plugin's session start info of ``run_dir``, as plain values."""
    content = events(run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.SESSION_START_INFO_TAG in content, f"no HParams session in {run_dir}"
    info = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in info.hparams.items()}


def test_hparams_merge_resolved_values_over_none_and_leave_out_run_settings():
    @dataclasses.dataclass
    class Config:
        n_updates: int | None = None
        temperature: float = 0.5
        out_dir: str = "runs/x"
        progress_bar: bool = True

    merged = hparams_of(Config(), {"n_updates": 2000, "temperature": None}, {"hidden_sizes": (64, 64)})
    assert merged == {"n_updates": 2000, "temperature": 0.5, "hidden_sizes": (64, 64)}
    assert not NOT_HPARAMS & set(merged)
    assert [hparam_value(v) for v in (True, 3, 0.5, "kl", (64, 64), [], None, {"a": 1})] == [
        "true",
        3.0,
        0.5,
        "kl",
        "[64, 64]",
        None,
        None,
        None,
    ]


def test_the_logger_writes_an_hparams_session_into_its_own_run(tmp_path):
    logger = TensorBoardLogger(tmp_path / "run")
    logger.log_hparams({"temperature": 2.0, "loss": "kl", "hidden_sizes": (8, 8), "tau2_scaling": False, "x": None})
    logger.log({"eval/student_return": 10.0}, 5)
    logger.close()
    assert [p.is_file() for p in (tmp_path / "run").iterdir()] == [True], "one event file, no sub-run folder"
    assert session_hparams(tmp_path / "run") == {
        "temperature": 2.0,
        "loss": "kl",
        "hidden_sizes": "[8, 8]",
        "tau2_scaling": "false",
    }
    assert events(tmp_path / "run").Tags()["tensors"] == ["hyperparameters/text_summary"]  # the table, as text


def test_a_distill_run_logs_hparams_a_second_x_axis_and_its_evaluations(cartpole_distill_run):
    summary, out_dir = cartpole_distill_run
    tb = out_dir / "tb"
    assert all(p.is_file() for p in tb.iterdir()), "the HParams session is in the run's folder, not a sub-run"
    hparams = session_hparams(tb)
    # the options given, the budgets resolved from the CartPole preset, and the trainer's settings
    assert hparams["n_transitions"] == 5000.0 and hparams["n_updates"] == 500.0
    assert hparams["hidden_sizes"] == "[24, 24]" and hparams["batch_size"] == 256.0
    assert hparams["loss"] == "kl" and hparams["temperature"] == 1.0 and hparams["eval_every"] == 250.0
    assert not NOT_HPARAMS & set(hparams)
    accumulator = events(tb)
    assert [e.step for e in accumulator.Scalars("eval/student_return")] == [250, 500]
    assert accumulator.Scalars("eval/student_return")[-1].value == pytest.approx(summary["student_return_mean"])
    assert {e.value for e in accumulator.Scalars("charts/teacher_transitions")} == {5000.0}


def test_a_sweep_compares_in_one_hparams_view(cartpole_expert_dir, tmp_path):
    out = tmp_path / "sweep"
    config = SweepConfig(
        teacher=str(cartpole_expert_dir),
        temperatures=(0.5, 2.0),
        n_seeds=1,
        n_transitions=256,
        n_envs=4,
        n_updates=10,
        batch_size=32,
        hidden_sizes=(8,),
        n_eval_episodes=1,
        n_metric_states=200,
        out_dir=str(out),
        progress_bar=False,
    )
    run_sweep(config)
    runs = sorted((out / "tb").iterdir())
    assert [run.name for run in runs] == ["tau0.5-seed0", "tau2-seed0"]
    assert all(p.is_file() for run in runs for p in run.iterdir()), "no sub-run per add_hparams call"
    sessions = {run.name: session_hparams(run) for run in runs}
    assert [s["temperature"] for s in sessions.values()] == [0.5, 2.0]
    assert {s["n_transitions"] for s in sessions.values()} == {256.0}
    # what TensorBoard's HParams dashboard computes over the runs: tau is the one hparam that differs
    contents = {run.name: events(run).PluginTagToContent(metadata.PLUGIN_NAME) for run in runs}
    context = backend_context.Context.__new__(backend_context.Context)
    infos = {info.name: info for info in context._compute_hparam_infos(contents)}
    assert {name for name, info in infos.items() if info.differs} == {"temperature"}
    assert (infos["temperature"].domain_interval.min_value, infos["temperature"].domain_interval.max_value) == (0.5, 2)
    for run in runs:  # the final metrics the table shows come from the run's own scalars
        assert {"eval/student_return", "losses/distill"} <= set(events(run).Tags()["scalars"])


def test_online_rounds_are_logged_against_teacher_labels_too(cartpole_teacher, tmp_path):
    config = OnlineConfig(n_rounds=2, n_transitions_per_round=64, n_updates_per_round=4, n_envs=2, batch_size=16)
    logger = TensorBoardLogger(tmp_path / "tb")
    rounds: list[int] = []

    def evaluate(student):
        return evaluate_policy(student, cartpole_teacher.recipe, 1, seed=0).mean

    result = train_online(
        cartpole_teacher,
        student_for(cartpole_teacher, (8,), seed=0),
        KLLoss(),
        ConstantBeta(1.0),
        config=config,
        logger=logger,
        evaluate=evaluate,
        on_round=lambda record: rounds.append(record.round),
    )
    logger.close()
    assert rounds == [0, 1]
    by_labels = events(tmp_path / "tb").Scalars("eval_vs_labels/student_return")
    assert [e.step for e in by_labels] == [r.n_labels for r in result.rounds] == [64, 128]
    np.testing.assert_allclose([e.value for e in by_labels], [r.student_return for r in result.rounds], rtol=1e-6)
