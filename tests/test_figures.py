"""Figures that cannot mislead (issue 16): a return's 95 % CI is a seeded percentile bootstrap that
stays inside the observed returns, the raw ratio student / teacher is dropped where returns can be
negative, and ``policykd evaluate`` replays distill's evaluation episodes unless told otherwise,
saying which env seeds each printed number used."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import stats as scipy_stats

from policykd.cli import main
from policykd.errors import PolicyKDError
from policykd.jobs.evaluate import (
    BOOTSTRAP_SEED,
    EVAL_SEED_OFFSET,
    ReturnStats,
    bootstrap_ci,
    choose_episodes,
    mean_ci,
    pct_of,
    raw_pct_of,
)

CARTPOLE_CAPPED = [500.0] * 8 + [150.0, 210.0]  # the cap at 500 is what pushed a t-interval past it


# -- the CI of a mean return ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "returns",
    [
        CARTPOLE_CAPPED,
        [500.0, 500.0, 100.0],
        [-1_500.0, -150.0, -140.0, -160.0, -900.0],  # Pendulum-like, skewed
        list(np.random.default_rng(3).exponential(50.0, size=40)),
        [10.0, 12.0],
    ],
)
def test_the_ci_stays_inside_the_observed_returns_and_holds_the_mean(returns):
    stats = ReturnStats.of(returns)
    low, high = stats.ci95
    assert min(returns) <= low <= stats.mean <= high <= max(returns)
    assert low < high


def test_a_student_t_interval_leaves_the_range_the_bootstrap_keeps():
    """The issue's failure: with CartPole's cap at 500, a t-interval reached past 500."""
    _, _, t_high = mean_ci([500.0, 500.0, 100.0])  # the t-interval, kept for means over seeds
    assert t_high > 500.0
    assert ReturnStats.of([500.0, 500.0, 100.0]).ci95[1] <= 500.0


def test_the_ci_is_scipys_percentile_bootstrap_with_a_fixed_seed():
    returns = np.array(CARTPOLE_CAPPED)
    expected = scipy_stats.bootstrap(
        (returns,), np.mean, method="percentile", random_state=np.random.default_rng(BOOTSTRAP_SEED)
    ).confidence_interval
    assert bootstrap_ci(returns) == (pytest.approx(expected.low), pytest.approx(expected.high))
    # same returns, same interval, call after call (no global RNG involved)
    np.random.seed(123)
    assert ReturnStats.of(CARTPOLE_CAPPED).ci95 == ReturnStats.of(list(CARTPOLE_CAPPED)).ci95


@pytest.mark.parametrize("returns", [[500.0] * 20, [-200.0] * 5, [42.5]])
def test_all_equal_returns_give_a_point(returns):
    stats = ReturnStats.of(returns)
    assert stats.ci95 == (returns[0], returns[0])
    assert stats.to_json()["ci95"] == [returns[0], returns[0]]


@pytest.mark.parametrize("returns", [[], [1.0, float("nan")], [float("inf")]])
def test_no_or_non_finite_returns_are_refused(returns):
    with pytest.raises(PolicyKDError):
        ReturnStats.of(returns)


def test_mean_ci_over_seeds_stays_a_student_t_interval():
    mean, low, high = mean_ci([1.0, 2.0, 3.0])
    half = scipy_stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_ci([7.0]) == (7.0, 7.0, 7.0)


# -- % of teacher -----------------------------------------------------------------------------------


def test_the_raw_ratio_is_dropped_where_returns_are_negative():
    """The issue's Pendulum student, five times worse than its teacher, read 526.7 %."""
    teacher, student = ReturnStats.of([-150.0, -140.0, -160.0]), ReturnStats.of([-790.0, -780.0, -800.0])
    random = ReturnStats.of([-1_200.0, -1_300.0, -1_100.0])
    assert pct_of(student.mean, teacher.mean) == pytest.approx(526.7, abs=0.1)  # what was printed
    assert raw_pct_of(student, teacher, random) is None
    assert pct_of(student.mean, teacher.mean, random.mean) == pytest.approx(100 * 410 / 1050)  # 39 %: honest


def test_the_raw_ratio_is_dropped_when_any_policy_seen_scores_below_zero():
    teacher, student = ReturnStats.of([250.0, 240.0]), ReturnStats.of([200.0, 210.0])  # LunarLander
    assert raw_pct_of(student, teacher) == pytest.approx(100 * 205 / 245)
    assert raw_pct_of(student, teacher, ReturnStats.of([-180.0, 20.0])) is None  # the random policy's crash


def test_distill_prints_no_raw_ratio_when_the_summary_has_none(monkeypatch, capsys, tmp_path):
    import policykd.jobs.distill as distill_job

    summary = {
        "env_id": "Pendulum-v1", "teacher_algo": "sac", "teachers": [{}], "loss": "kl", "temperature": 1.0,
        "n_teacher_transitions": 100, "n_updates": 10, "n_eval_episodes": 3, "seed": 2,
        "teacher_return_mean": -150.0, "teacher_return_std": 10.0, "teacher_return_ci95": [-160.0, -140.0],
        "student_return_mean": -790.0, "student_return_std": 10.0, "student_return_ci95": [-800.0, -780.0],
        "pct_of_teacher": 39.0, "pct_of_teacher_raw": None, "random_return_mean": -1200.0,
        "teacher_params": 1000, "student_params": 100, "param_fraction": 0.1, "teacher_latency_ms": 0.1,
        "student_latency_ms": 0.01, "out_dir": str(tmp_path / "run"), "wall_time_s": 1.0,
    }  # fmt: skip
    monkeypatch.setattr(distill_job, "distill", lambda config: summary)
    main(["distill", "--env", "Pendulum-v1"])
    out = capsys.readouterr().out
    assert "raw student / teacher" not in out
    assert f"env seeds from {2 + EVAL_SEED_OFFSET}" in out and "bootstrap" in out
    monkeypatch.setitem(summary, "pct_of_teacher_raw", 80.0)
    main(["distill", "--env", "Pendulum-v1"])
    assert "raw student / teacher 80.0 %" in capsys.readouterr().out


# -- which episodes evaluate plays ------------------------------------------------------------------


def test_evaluate_defaults_to_distills_evaluation_episodes():
    episodes = choose_episodes("agents/ppo/CartPole-v1_1", "CartPole-v1")
    assert (episodes.env_seed, episodes.n_episodes, episodes.deterministic) == (EVAL_SEED_OFFSET, 20, True)
    assert "distill --seed 0's evaluation episodes" in episodes.describe()
    assert choose_episodes("x.zip", "CartPole-v1", seed=3).env_seed == 3 + EVAL_SEED_OFFSET
    pong = choose_episodes("x.zip", "PongNoFrameskip-v4")
    assert (pong.n_episodes, pong.deterministic) == (10, False)  # as distill and the zoo evaluate Atari
    assert choose_episodes("x.zip", "PongNoFrameskip-v4", deterministic=True).deterministic
    assert choose_episodes("student/policy.onnx", "PongNoFrameskip-v4").deterministic  # ONNX acts greedily only


def test_the_zoo_protocol_and_exact_seeds_stay_reachable():
    zoo = choose_episodes("agents/ppo/CartPole-v1_1", "CartPole-v1", zoo=(0, 30))
    assert (zoo.env_seed, zoo.n_episodes) == (0, 30) and "the zoo's scoring episodes" in zoo.describe()
    exact = choose_episodes("x.zip", "CartPole-v1", episode_seed=7, n_episodes=4)
    assert (exact.env_seed, exact.n_episodes) == (7, 4) and "--episode-seed 7" in exact.describe()
    assert choose_episodes("x.zip", "CartPole-v1", episode_seed=7, zoo=(0, 30)).env_seed == 7


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"seed": 1, "episode_seed": 5}, "give one of them"),
        ({"seed": 1, "zoo": (0, 30)}, "--record"),
        ({"seed": -1}, "--seed must be an integer >= 0"),
        ({"episode_seed": -2}, "--episode-seed must be an integer >= 0"),
        ({"n_episodes": 0}, "--episodes must be an integer >= 1"),
    ],
)
def test_contradicting_or_bad_episode_options_are_refused(kwargs, fragment):
    with pytest.raises(PolicyKDError, match=fragment):
        choose_episodes("x.zip", "CartPole-v1", **kwargs)


def test_a_student_of_a_run_replays_its_runs_episodes(tmp_path):
    run = tmp_path / "run"
    (run / "student").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"env_id": "CartPole-v1", "seed": 4, "n_eval_episodes": 3}))
    for source in (run / "student", run / "student" / "policy.onnx"):
        episodes = choose_episodes(str(source), "CartPole-v1")
        assert (episodes.env_seed, episodes.n_episodes) == (4 + EVAL_SEED_OFFSET, 3)
        assert "as in its run's summary.json" in episodes.describe()
    assert choose_episodes(str(run / "student"), "Acrobot-v1").env_seed == EVAL_SEED_OFFSET  # another env's run
    assert choose_episodes(str(run / "student"), "CartPole-v1", seed=1).env_seed == 1 + EVAL_SEED_OFFSET


def _printed(out: str) -> tuple[float, str]:
    what, rest = out.split(": return ", 1)
    return float(rest.split(" ±")[0]), rest


def test_evaluate_and_distill_give_one_number_for_the_teacher(cartpole_distill_run, capsys):
    """The shipped expert, evaluated with distill's defaults, is the summary's teacher figure."""
    summary, _ = cartpole_distill_run
    main(["evaluate", summary["teacher"], "--episodes", str(summary["n_eval_episodes"])])
    mean, rest = _printed(capsys.readouterr().out)
    assert mean == pytest.approx(summary["teacher_return_mean"], abs=0.01)
    assert f"env seeds from {EVAL_SEED_OFFSET}: distill --seed 0's evaluation episodes" in rest


def test_record_scores_on_the_zoos_episodes(cartpole_expert_dir, tmp_path, capsys):
    copy = tmp_path / "ppo" / "CartPole-v1_1"
    shutil.copytree(cartpole_expert_dir, copy, ignore=shutil.ignore_patterns("train_logs", "resume"))
    main(["evaluate", str(copy), "--record", "--episodes", "2"])
    out = capsys.readouterr().out
    assert "env seeds from 0: the zoo's scoring episodes" in out and "recorded in" in out
    score = json.loads((copy / "expert.json").read_text())["score"]
    assert (score["seed"], score["n_episodes"], score["deterministic"]) == (0, 2, True)
    main(["evaluate", str(copy), "--record", "--episodes", "2", "--episode-seed", "9"])
    assert json.loads((copy / "expert.json").read_text())["score"]["seed"] == 9
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(copy), "--record", "--seed", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "give one of them" in err[0], err


def test_stochastic_and_deterministic_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "agents/ppo/CartPole-v1_1", "--stochastic", "--deterministic"])
    assert exit_.value.code == 2
    assert "contradict" in capsys.readouterr().err
