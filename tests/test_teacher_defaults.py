"""Defaults derived from the teacher where no preset applies (``--preset none``), the student's
share of the teacher's parameters, the Q-value teachers' temperature, and collection that covers
whole episodes at small budgets (issue 18)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from policykd.data.collect import collect_rollouts, episode_covering_envs
from policykd.data.envs import make_vec_env
from policykd.data.teachers import load_teacher
from policykd.errors import PolicyKDError
from policykd.fileio import read_json
from policykd.jobs.config import CollectConfig, DistillConfig
from policykd.jobs.distill import distill, plan_tasks
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, ReturnStats
from policykd.jobs.resolve import (
    MAX_EVAL_EPISODES,
    episodes_for_variance,
    make_student_for,
    measure_teachers,
    resolve_budgets,
    run_loss,
    teacher_domain,
)
from policykd.learn.targets import confidence_temperature, soften
from policykd.types import TeacherOutput
from policykd.zoo.presets import ZOO_DIR

TINY = {"n_updates": 5, "n_eval_episodes": 1, "progress_bar": False, "teacher_check": False}


def zoo_teacher(name: str):
    path = ZOO_DIR / name
    if not path.is_dir():
        pytest.skip(f"the shipped expert {path} is missing")
    return load_teacher(path)


# -- whole episodes at small budgets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_transitions", "n_envs", "limit", "expected"),
    [
        (100, 8, 500, 1),  # less than one episode: one env plays it from its start
        (1_000, 8, 500, 2),
        (3_999, 8, 500, 7),
        (20_000, 8, 500, 8),  # never more than asked
        (1_000, 8, None, 8),  # no time limit: nothing known, the asked count
        (1_000, 8, 108_000, 8),  # Atari's frame limit says nothing of an episode's length
    ],
)
def test_small_budgets_use_fewer_envs(n_transitions, n_envs, limit, expected):
    assert episode_covering_envs(n_transitions, n_envs, limit) == expected


def test_a_small_budget_holds_whole_episodes(cartpole_teacher):
    budgets = resolve_budgets("CartPole-v1", CollectConfig(n_transitions=1_000), teacher=cartpole_teacher)
    assert budgets.n_envs == 2  # CartPole's time limit is 500 steps
    venv = make_vec_env(cartpole_teacher.recipe, budgets.n_envs, 0)
    buffer, stats = collect_rollouts(venv, [cartpole_teacher], 1_000, rng=np.random.default_rng(0))
    venv.close()
    assert stats.episode_lengths == [500, 500]  # each env played one whole episode to the limit
    again = make_vec_env(cartpole_teacher.recipe, budgets.n_envs, 0)
    same, _ = collect_rollouts(again, [cartpole_teacher], 1_000, rng=np.random.default_rng(0))
    again.close()
    assert np.array_equal(buffer.column("observations"), same.column("observations"))  # same seed, same buffer


def test_given_n_envs_is_kept(cartpole_teacher):
    budgets = resolve_budgets("CartPole-v1", CollectConfig(n_transitions=1_000, n_envs=8), teacher=cartpole_teacher)
    assert budgets.n_envs == 8


# -- the student's size and the budgets, from the teacher --------------------------------------------------


def test_preset_none_sizes_the_student_at_a_quarter_of_the_teacher(cartpole_teacher):
    with_preset = resolve_budgets("CartPole-v1", CollectConfig(), teacher=cartpole_teacher)
    assert with_preset.hidden_sizes == (24, 24) and with_preset.picked == ""  # the preset's, as before
    budgets = resolve_budgets("CartPole-v1", CollectConfig(preset="none"), teacher=cartpole_teacher)
    h = budgets.hidden_sizes[0]
    n_params = make_student_for(cartpole_teacher, cartpole_teacher.kind, (h, h)).n_params
    wider = make_student_for(cartpole_teacher, cartpole_teacher.kind, (h + 1, h + 1)).n_params
    assert n_params <= 0.25 * cartpole_teacher.n_params < wider  # the largest (h, h) student that fits
    assert budgets.n_transitions == 50_000 and budgets.n_updates == 10_000  # classic-control budgets
    assert budgets.learning_rate == pytest.approx(1e-3 * 64 / h)  # a narrower student takes larger steps
    assert "--preset none" in budgets.picked and "classic-control" in budgets.picked
    assert f"{n_params:,} params" in budgets.picked


def test_a_preset_student_too_large_for_the_teacher_is_replaced_by_a_quarter_of_it():
    """The LunarLander preset's 64x64 student suits the 256x256 DQN expert (7 %) but is the whole
    64x64 PPO expert: that teacher gets a 25 % student and the line says why; --hidden keeps the preset's."""
    ppo, dqn = zoo_teacher("ppo/LunarLander-v3_1"), zoo_teacher("dqn/LunarLander-v3_1")
    assert resolve_budgets("LunarLander-v3", DistillConfig(), teacher=dqn).hidden_sizes == (64, 64)
    budgets = resolve_budgets("LunarLander-v3", DistillConfig(), teacher=ppo)
    n_params = make_student_for(ppo, ppo.kind, budgets.hidden_sizes).n_params
    assert n_params <= 0.25 * ppo.n_params
    assert budgets.n_transitions == 100_000  # the preset's budgets stay
    assert "preset's 64×64 student would be 100 % of this teacher's 4,996 acting params" in budgets.picked
    assert "--hidden 64 64 keeps it" in budgets.picked
    kept = resolve_budgets("LunarLander-v3", DistillConfig(hidden_sizes=(64, 64)), teacher=ppo)
    assert kept.hidden_sizes == (64, 64) and kept.picked == ""


def test_student_fraction_overrides_the_preset_size(cartpole_teacher):
    budgets = resolve_budgets("CartPole-v1", DistillConfig(student_fraction=0.01), teacher=cartpole_teacher)
    n_params = make_student_for(cartpole_teacher, cartpole_teacher.kind, budgets.hidden_sizes).n_params
    assert n_params <= 0.01 * cartpole_teacher.n_params
    assert budgets.n_transitions == 20_000  # the preset's budgets stay
    assert budgets.hidden_sizes == (6,)  # a 3x3 student would fit; one layer of 6 is wider for the same budget
    assert budgets.learning_rate == pytest.approx(0.01)  # the preset's 1e-3 times 64 / 6, capped at 10x
    assert "student fraction 0.01" in budgets.picked and "--preset none" not in budgets.picked


def test_a_student_too_narrow_to_distil_reliably_is_flagged(cartpole_teacher):
    """--student-fraction small enough for a 1-3 unit student says so on the defaults line (such
    students of PPO experts failed in fidelity_compression); a 6-unit one does not."""
    tiny = resolve_budgets("CartPole-v1", DistillConfig(student_fraction=0.004), teacher=cartpole_teacher)
    assert max(tiny.hidden_sizes) < 4
    assert f"WARNING: a {tiny.hidden_sizes[0]}-unit student" in tiny.picked and "--student-fraction" in tiny.picked
    assert (
        "WARNING"
        not in resolve_budgets("CartPole-v1", DistillConfig(student_fraction=0.01), teacher=cartpole_teacher).picked
    )


@pytest.mark.parametrize(("fraction", "message"), [(1.5, "above 1"), (0.0, "> 0"), (float("nan"), "> 0")])
def test_bad_student_fractions_are_refused(cartpole_teacher, fraction, message):
    with pytest.raises(PolicyKDError, match=message):
        resolve_budgets("CartPole-v1", DistillConfig(student_fraction=fraction), teacher=cartpole_teacher)


def test_student_fraction_and_hidden_together_are_refused(cartpole_expert_dir):
    config = DistillConfig(teacher=str(cartpole_expert_dir), student_fraction=0.1, hidden_sizes=(8, 8))
    with pytest.raises(PolicyKDError, match="pass one of them"):
        plan_tasks(config)


def test_an_unknown_preset_choice_is_refused(cartpole_teacher):
    with pytest.raises(PolicyKDError, match="--preset 'off' is not one of auto, none"):
        resolve_budgets("CartPole-v1", CollectConfig(preset="off"), teacher=cartpole_teacher)


@pytest.mark.parametrize(
    ("expert", "domain", "noise"),
    [
        ("sac/Pendulum-v1_1", "classic-control", 0.1),
        ("dqn/Acrobot-v1_1", "classic-control", 0.0),
        ("ppo/HalfCheetah-v5_1", "continuous-control", 0.1),
    ],
)
def test_budgets_follow_the_teachers_domain(expert, domain, noise):
    teacher = zoo_teacher(expert)
    assert teacher_domain(teacher) == domain
    budgets = resolve_budgets(teacher.recipe.env_id, CollectConfig(preset="none"), teacher=teacher)
    assert budgets.action_noise == noise
    student = make_student_for(teacher, teacher.kind, budgets.hidden_sizes)
    assert student.n_params <= 0.25 * teacher.n_params


# -- a temperature for Q-value teachers ----------------------------------------------------------------


def test_confidence_temperature_gives_the_median_state_its_confidence():
    q = torch.tensor([[0.0, 1.0, 0.5], [2.0, 0.0, 1.8], [5.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # gaps 0.5, 0.2, 4, 0
    out = TeacherOutput("q_values", q_values=q)
    tau = confidence_temperature(out, 0.9)
    assert tau == pytest.approx(0.5 / math.log(9))  # median of the non-zero gaps 0.2, 0.5, 4
    probs = soften(out, tau).log_probs.exp()
    assert probs[0, 1] / (probs[0, 1] + probs[0, 2]) == pytest.approx(0.9)
    assert confidence_temperature(TeacherOutput("q_values", q_values=10 * q), 0.9) == pytest.approx(10 * tau)


def test_confidence_temperature_of_ties_and_bad_input():
    assert confidence_temperature(TeacherOutput("q_values", q_values=torch.ones(4, 3))) == 1.0
    with pytest.raises(PolicyKDError, match="discrete teacher"):
        confidence_temperature(TeacherOutput("gaussian", mean=torch.zeros(2, 1), log_std=torch.zeros(2, 1)))
    with pytest.raises(PolicyKDError, match="confidence"):
        confidence_temperature(TeacherOutput("q_values", q_values=torch.ones(4, 3)), 0.4)


def test_distill_with_no_preset_records_its_defaults(tmp_path):
    teacher = zoo_teacher("dqn/CartPole-v1_1")
    config = DistillConfig(
        teacher=teacher.source, preset="none", n_transitions=600, out_dir=str(tmp_path / "r"), **TINY
    )
    summary = distill(config)
    assert summary["defaults"].startswith("defaults from the teacher (--preset none): classic-control budgets")
    assert "n_envs 1" in summary["defaults"]  # 600 transitions: one env, a whole 500-step episode
    assert summary["param_fraction"] <= 0.25
    # tau from the buffer's Q-values (a DQN teacher under kl), recorded with the line that says so
    assert summary["temperature"] != 1.0 and f"tau {summary['temperature']:.3g}" in summary["defaults"]
    given = distill(DistillConfig(**{**config.__dict__, "temperature": 0.5, "out_dir": str(tmp_path / "g")}))
    assert given["temperature"] == 0.5 and "tau" not in given["defaults"]


def test_the_default_loss_of_a_deterministic_teacher_is_mse(tmp_path, capsys):
    """No --loss with the TD3 expert: mse on its actions, said on the printed defaults line and
    recorded in summary.json and config.yml; an explicit --loss kl is still refused in one line."""
    from test_cli import assert_one_line_error, run_cli

    teacher = zoo_teacher("td3/Pendulum-v1_1")
    out, tiny = tmp_path / "r", ["--n-transitions", "500", "--n-updates", "50", "--eval-episodes", "1"]
    tiny += ["--eval-every", "0", "--no-teacher-check", "--no-progress"]
    code, stdout, err = run_cli(["distill", "--teacher", teacher.source, *tiny, "--out", str(out)], capsys)
    assert code == 0, err
    summary = read_json(out / "summary.json")
    assert summary["loss"] == "mse" and "loss mse" in summary["defaults"] and summary["teacher_kind"] == "deterministic"
    assert summary["defaults"] in stdout and "loss mse, tau 1" in stdout
    assert yaml.safe_load((out / "config.yml").read_text())["loss"] == "mse"
    code, _, err = run_cli(
        ["distill", "--teacher", teacher.source, *tiny, "--loss", "kl", "--out", str(tmp_path / "k")], capsys
    )
    assert_one_line_error(code, err, "distill", "kl needs a stochastic teacher")
    assert run_loss(None, "categorical") == ("kl", "") and run_loss("nll", "categorical") == ("nll", "")


# -- evaluation episodes by return variance ---------------------------------------------------------------


def test_episodes_for_variance_follows_the_spread_of_the_teachers_returns():
    random = ReturnStats.of([-200.0, -200.0])
    steady = ReturnStats.of([100.0, 100.0, 100.0])
    noisy = ReturnStats.of([0.0, 200.0, 100.0, 100.0])  # std 81.6 over a gap of 300
    assert episodes_for_variance(steady, random) == 1
    assert episodes_for_variance(noisy, random) == math.ceil((1.96 * np.std(noisy.returns, ddof=1) / 7.5) ** 2)
    assert episodes_for_variance(noisy, random, precision=0.05) < episodes_for_variance(noisy, random)


def test_with_no_preset_evaluation_grows_until_the_teacher_is_measured_precisely():
    teacher = zoo_teacher("sac/Pendulum-v1_1")
    budgets = resolve_budgets(teacher.recipe.env_id, CollectConfig(preset="none"), teacher=teacher)
    assert budgets.n_eval_episodes == 20 and budgets.max_eval_episodes == MAX_EVAL_EPISODES
    (measured,), random = measure_teachers([teacher], budgets, EVAL_SEED_OFFSET, check=False)
    needed = episodes_for_variance(measured, random)
    assert measured.n_episodes == random.n_episodes >= 20
    assert needed <= measured.n_episodes or measured.n_episodes == MAX_EVAL_EPISODES
    given = resolve_budgets(teacher.recipe.env_id, DistillConfig(preset="none", n_eval_episodes=5), teacher=teacher)
    assert given.max_eval_episodes == 0  # --eval-episodes is kept as given
    with_preset = resolve_budgets(teacher.recipe.env_id, CollectConfig(), teacher=teacher)
    assert with_preset.max_eval_episodes == 0


def test_each_online_round_plays_whole_episodes():
    from policykd.jobs.drivers import DriversConfig, _online_config

    budgets = {"n_envs": 8, "batch_size": 64, "learning_rate": 1e-3}
    small = _online_config(DriversConfig(n_transitions_per_round=1_000), budgets, "CartPole-v1")
    assert small.n_envs == 2  # 500 consecutive steps per env and round: each round sees a whole episode
    given = DriversConfig(n_transitions_per_round=1_000, n_envs=8)
    assert _online_config(given, budgets, "CartPole-v1").n_envs == 8


def test_the_readme_shows_the_defaults_line_as_it_is():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    teacher = zoo_teacher("dqn/CartPole-v1_1")
    budgets = resolve_budgets("CartPole-v1", DistillConfig(preset="none"), teacher=teacher)
    assert f"$ policykd distill --teacher agents/dqn/CartPole-v1_1 --preset none\n{budgets.picked}; " in readme
