"""RL with a distillation term (policykd.learn.kickstart): lambda = 0 is SB3 bit for bit, lambda > 0
pulls the student toward the teacher, the lambda schedules, the start points and the refusals."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import QRDQN
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3

from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.data.teachers import load_teacher
from policykd.errors import PolicyKDError
from policykd.learn import kickstart as ks
from policykd.learn.kickstart_start import (
    copy_student_weights,
    copy_teacher_weights,
    scaled_net_arch,
    student_policy_kwargs,
    teacher_hidden_sizes,
    teacher_policy_kwargs,
)
from policykd.learn.losses import categorical_kl
from policykd.learn.schedules import (
    ConstantLambda,
    ExponentialLambda,
    LinearLambda,
    PerformanceLambda,
    parse_lambda_schedule,
)
from policykd.learn.students import Student

# (Kickstart class, SB3 class, expert algo, env, the algorithm's tiny-budget kwargs, env steps)
ON_POLICY = dict(n_steps=32, batch_size=32, n_epochs=2)
OFF_POLICY = dict(buffer_size=1_000, learning_starts=64, batch_size=32, train_freq=8, gradient_steps=2)
CASES = {
    "ppo-discrete": (ks.KickstartPPO, PPO, "ppo", "CartPole-v1", ON_POLICY, 128),
    "a2c-discrete": (ks.KickstartA2C, A2C, "ppo", "CartPole-v1", dict(n_steps=8), 64),
    "dqn": (ks.KickstartDQN, DQN, "dqn", "CartPole-v1", dict(OFF_POLICY, learning_starts=64), 160),
    "qrdqn": (ks.KickstartQRDQN, QRDQN, "qrdqn", "CartPole-v1", OFF_POLICY, 160),
    "sac": (ks.KickstartSAC, SAC, "sac", "Pendulum-v1", OFF_POLICY, 160),
    "td3": (ks.KickstartTD3, TD3, "td3", "Pendulum-v1", dict(OFF_POLICY, policy_delay=1), 160),
    "ppo-continuous": (ks.KickstartPPO, PPO, "ppo", "Pendulum-v1", ON_POLICY, 128),
    "a2c-continuous": (ks.KickstartA2C, A2C, "ppo", "Pendulum-v1", dict(n_steps=8), 64),
}


@pytest.fixture(scope="module")
def teachers(sb3_expert: Any) -> dict[tuple[str, str], Any]:
    """An untrained (jittered) SB3 expert per (algo, env), loaded as a Teacher; bare zips."""
    pairs = {(case[2], case[3]) for case in CASES.values()}
    return {(a, e): load_teacher(sb3_expert(a, e)[1], env_id=e) for a, e in sorted(pairs)}


def _train(cls: type, env_id: str, kwargs: dict, steps: int, **extra: Any) -> Any:
    model = cls("MlpPolicy", make_vec_env(EnvRecipe(env_id), 2, 0), seed=3, device="cpu", **kwargs, **extra)
    model.learn(steps)
    return model


def _params(model: Any) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


@pytest.mark.parametrize("case", list(CASES))
def test_lambda_zero_trains_as_sb3_bit_for_bit(case: str, teachers: dict) -> None:
    """lambda = 0: the distillation term is computed and back-propagated, and adds exactly nothing."""
    kick, plain, algo, env_id, kwargs, steps = CASES[case]
    teacher = teachers[(algo, env_id)]
    reference = _params(_train(plain, env_id, kwargs, steps))
    kicked = _train(kick, env_id, kwargs, steps, teacher=teacher, schedule=0.0)
    assert kicked.distill_values, "the distillation term was never computed"
    assert torch.equal(_params(kicked), reference)
    # and with lambda > 0 the same run differs: the term does reach the gradient
    pulled = _train(kick, env_id, kwargs, steps, teacher=teacher, schedule=1.0)
    assert not torch.equal(_params(pulled), reference)


def _kl_to_teacher(model: Any, teacher: Any, observations: np.ndarray) -> float:
    with torch.no_grad():
        student = model.student_output(torch.as_tensor(observations))
        t = teacher(observations)
        t_logp = torch.log_softmax(t.logits if t.logits is not None else t.q_values, dim=-1)
        return float(categorical_kl(t_logp, torch.log_softmax(student.logits, dim=-1)).mean())


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (ks.KickstartPPO, dict(ON_POLICY, n_epochs=10, learning_rate=1e-3)),
        (ks.KickstartDQN, dict(OFF_POLICY, gradient_steps=8, learning_rate=1e-3)),
    ],
)
def test_positive_lambda_moves_the_student_toward_the_teacher(cls: type, kwargs: dict, cartpole_teacher: Any) -> None:
    """On the shipped CartPole expert: KL(teacher || student) on fixed states falls with lambda = 5
    and ends well below the same run with lambda = 0 (measured: PPO 0.68 -> 0.36 against 0.67)."""
    observations = np.random.default_rng(0).uniform(-0.5, 0.5, (256, 4)).astype(np.float32)
    plain = _train(cls, "CartPole-v1", kwargs, 512, teacher=cartpole_teacher, schedule=0.0)
    pulled = _train(cls, "CartPole-v1", kwargs, 512, teacher=cartpole_teacher, schedule=5.0)
    fresh = cls("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 2, 0), seed=3, teacher=cartpole_teacher, **kwargs)
    before, after = (
        _kl_to_teacher(fresh, cartpole_teacher, observations),
        _kl_to_teacher(pulled, cartpole_teacher, observations),
    )
    assert after < 0.6 * before
    assert after < 0.6 * _kl_to_teacher(plain, cartpole_teacher, observations)


def test_entropy_bonus_raises_the_students_entropy(cartpole_teacher: Any) -> None:
    """Pulled toward a confident teacher the student's entropy falls; the bonus holds it up."""
    observations = torch.as_tensor(np.random.default_rng(1).uniform(-0.5, 0.5, (256, 4)).astype(np.float32))
    kwargs = dict(ON_POLICY, n_epochs=10, learning_rate=1e-3)

    def entropy(model: Any) -> float:
        with torch.no_grad():
            return float(ks._entropy(model.student_output(observations)).mean())

    low = _train(ks.KickstartPPO, "CartPole-v1", kwargs, 512, teacher=cartpole_teacher, schedule=5.0)
    high = _train(ks.KickstartPPO, "CartPole-v1", kwargs, 512, teacher=cartpole_teacher, schedule=5.0, entropy_coef=2.0)
    assert entropy(high) > entropy(low) + 0.05


def test_logs_lambda_distill_loss_and_return_ratio(cartpole_teacher: Any, tmp_path: Path) -> None:
    from stable_baselines3.common.logger import configure

    model = ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 2, 0), seed=0,
                            teacher=cartpole_teacher, schedule="performance", **ON_POLICY)  # fmt: skip
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(512)
    import csv

    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    last = rows[-1]
    ratio = float(last["distill/return_ratio"])  # the student's recent return / the expert's recorded 500
    assert 0 < ratio < 1
    assert float(last["distill/lambda"]) == pytest.approx(1 - ratio, rel=1e-6)  # QDagger's lambda, same episodes
    assert float(last["distill/loss"]) > 0
    assert "train/policy_gradient_loss" in last  # SB3's own tags stay


def test_saved_zip_loads_with_plain_sb3(cartpole_teacher: Any, tmp_path: Path) -> None:
    model = _train(ks.KickstartPPO, "CartPole-v1", ON_POLICY, 64, teacher=cartpole_teacher)
    model.save(tmp_path / "m.zip")
    loaded = PPO.load(tmp_path / "m.zip", device="cpu")
    obs = np.zeros((3, 4), np.float32)
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


# -- schedules ------------------------------------------------------------------------------------


def test_schedule_values() -> None:
    assert ConstantLambda(0.3)(10**6) == 0.3
    linear = LinearLambda(1000, start=2.0, end=0.5)
    assert [linear(s) for s in (0, 500, 1000, 5000)] == [2.0, 1.25, 0.5, 0.5]
    exp = ExponentialLambda(100)
    assert [exp(s) for s in (0, 100, 200)] == [1.0, 0.5, 0.25]
    perf = PerformanceLambda(start=0.8)
    assert perf(0, None) == 0.8  # no episode yet
    assert perf(0, 0.25) == pytest.approx(0.2)  # student at 75 % of the teacher: 0.8 * 0.25
    assert perf(0, -0.5) == 0.0 and perf(0, 3.0) == 0.8  # beyond the teacher; far below it


def test_parse_lambda_schedule() -> None:
    assert parse_lambda_schedule("0.5") == ConstantLambda(0.5)
    assert parse_lambda_schedule("constant:2") == ConstantLambda(2.0)
    assert parse_lambda_schedule("linear:5e4") == LinearLambda(50_000)
    assert parse_lambda_schedule("linear:100:3") == LinearLambda(100, 3.0)
    assert parse_lambda_schedule("exponential:200") == ExponentialLambda(200)
    assert parse_lambda_schedule("performance:0.5") == PerformanceLambda(0.5)


@pytest.mark.parametrize(
    "spec,fragment",
    [
        ("constant:-1", "must be a finite number >= 0"),
        ("nan", "must be a finite number >= 0"),
        ("linear:0", "n_steps must be an integer >= 1"),
        ("linear:10.5", "cannot read the lambda schedule"),
        ("exponential:100:inf", "must be a finite number >= 0"),
        ("cosine:5", "cannot read the lambda schedule"),
    ],
)
def test_schedule_out_of_range_is_one_line(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyKDError, match=fragment) as info:
        parse_lambda_schedule(spec)
    assert "\n" not in str(info.value)


# -- refusals ------------------------------------------------------------------------------------


def test_algorithm_that_does_not_fit_the_action_space(teachers: dict) -> None:
    with pytest.raises(PolicyKDError, match="DQN does not handle the action space Box"):
        ks.KickstartDQN(
            "MlpPolicy", make_vec_env(EnvRecipe("Pendulum-v1"), 1, 0), teacher=teachers[("sac", "Pendulum-v1")]
        )
    with pytest.raises(PolicyKDError, match="a SAC student cannot be distilled from a gaussian teacher"):
        ks.KickstartSAC(
            "MlpPolicy", make_vec_env(EnvRecipe("Pendulum-v1"), 1, 0), teacher=teachers[("ppo", "Pendulum-v1")]
        )


def test_student_and_teacher_of_different_spaces(cartpole_teacher: Any) -> None:
    with pytest.raises(PolicyKDError, match="the student's env has observations"):
        ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("Acrobot-v1"), 1, 0), teacher=cartpole_teacher)


def test_performance_schedule_needs_a_teacher_return(teachers: dict) -> None:
    teacher = teachers[("ppo", "CartPole-v1")]  # a bare zip: no recorded score
    env = make_vec_env(EnvRecipe("CartPole-v1"), 1, 0)
    with pytest.raises(PolicyKDError, match="needs the teacher's return"):
        ks.KickstartPPO("MlpPolicy", env, teacher=teacher, schedule="performance")
    model = ks.KickstartPPO("MlpPolicy", env, teacher=teacher, schedule="performance", teacher_return=200.0)
    assert model.distill_teacher_return == 200.0


def test_mse_on_a_policy_student_is_refused(cartpole_teacher: Any) -> None:
    with pytest.raises(PolicyKDError, match="mse fits Q-values"):
        ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 1, 0), teacher=cartpole_teacher, loss="mse")


# -- start points ----------------------------------------------------------------------------------


def test_net_fraction_scales_the_teachers_layers(cartpole_teacher: Any, teachers: dict) -> None:
    assert teacher_hidden_sizes(cartpole_teacher) == (64, 64)
    assert scaled_net_arch(cartpole_teacher, 0.25) == [16, 16]
    assert teacher_hidden_sizes(teachers[("td3", "Pendulum-v1")]) == (400, 300)
    with pytest.raises(PolicyKDError, match="--net-fraction must be in"):
        scaled_net_arch(cartpole_teacher, 1.5)


def test_start_from_the_teachers_weights_acts_as_the_teacher(cartpole_teacher: Any) -> None:
    kwargs = teacher_policy_kwargs(cartpole_teacher, "ppo")
    model = ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 1, 0), teacher=cartpole_teacher,
                            policy_kwargs=kwargs)  # fmt: skip
    copy_teacher_weights(model, cartpole_teacher)
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 4)).astype(np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], cartpole_teacher.act(obs))
    with pytest.raises(PolicyKDError, match="needs the teacher's algorithm"):
        teacher_policy_kwargs(cartpole_teacher, "a2c")


def test_start_from_a_distilled_student_acts_as_the_student(cartpole_distill_run: Any, cartpole_teacher: Any) -> None:
    _, run_dir = cartpole_distill_run
    student = Student.load(run_dir / "student")
    model = ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 1, 0), teacher=cartpole_teacher,
                            policy_kwargs=student_policy_kwargs(student, "ppo"))  # fmt: skip
    copy_student_weights(model, student, "ppo")
    obs = np.random.default_rng(0).uniform(-1, 1, (64, 4)).astype(np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], student.act(obs))
    with pytest.raises(PolicyKDError, match="cannot be mapped"):
        student_policy_kwargs(student, "ppo", {"net_arch": [32]})
    with pytest.raises(PolicyKDError, match="distilled with --loss kl"):
        copy_student_weights(model, student, "dqn", loss="kl")


@pytest.mark.parametrize(
    "algo, loss, center_q, fragment",
    [
        ("dqn", "kl", True, "distilled with --loss kl (log-probabilities, not Q-values)"),
        ("dqn", "nll", False, "distilled with --loss nll"),
        ("dqn", "mse", True, "distilled with centred Q-values"),
        ("dqn", "mse", None, "does not record its loss and Q centring"),
        ("dqn", None, None, "does not record its loss and Q centring"),
        ("qrdqn", "kl", False, "a QRDQN starts from the teacher's raw Q-values"),
        ("dqn", "mse", False, None),
        ("qrdqn", "mse", False, None),
        ("ppo", "kl", True, None),
        ("a2c", "nll", True, None),
        ("sac", "kl", None, None),
        ("td3", "mse", True, None),
    ],
)
def test_a_q_learner_starts_only_from_a_student_of_raw_q_values(
    algo: str, loss: str | None, center_q: bool | None, fragment: str | None
) -> None:
    from policykd.learn.kickstart_start import check_q_value_student

    if fragment is None:
        check_q_value_student(algo, loss, center_q)
        return
    with pytest.raises(PolicyKDError, match=re.escape(fragment)) as err:
        check_q_value_student(algo, loss, center_q)
    assert "\n" not in str(err.value) and "--loss mse --no-q-center" in str(err.value)


def test_start_from_a_student_of_another_env_is_refused(cartpole_distill_run: Any, teachers: dict) -> None:
    student = Student.load(cartpole_distill_run[1] / "student")
    teacher = teachers[("ppo", "Pendulum-v1")]
    model = ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("Pendulum-v1"), 1, 0), teacher=teacher)
    with pytest.raises(PolicyKDError, match="the distilled student reads observations of shape"):
        copy_student_weights(model, student, "ppo")
    assert math.isfinite(float(_params(model).sum()))
    assert isinstance(model.action_space, gym.spaces.Box)


def test_value_init_fits_the_critic_and_leaves_the_actor(cartpole_teacher: Any) -> None:
    from policykd.learn.kickstart_start import distill_value

    model = ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 1, 0), teacher=cartpole_teacher, seed=0)
    obs = np.random.default_rng(0).uniform(-0.3, 0.3, (512, 4)).astype(np.float32)
    logits = model.student_output(torch.as_tensor(obs)).logits.detach().clone()
    before, after = distill_value(model, cartpole_teacher, obs, n_updates=500)
    assert after < 0.1 * before  # measured: 2480 -> 126
    assert torch.equal(model.student_output(torch.as_tensor(obs)).logits, logits)  # the actor did not move
    dqn = ks.KickstartDQN("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 1, 0), teacher=cartpole_teacher)
    with pytest.raises(PolicyKDError, match="no state-value head"):
        distill_value(dqn, cartpole_teacher, obs)


@pytest.mark.parametrize("value", [0.0, float("nan")])
def test_a_teacher_return_the_ratio_cannot_divide_by_is_refused(value: float, cartpole_teacher: Any) -> None:
    with pytest.raises(PolicyKDError, match="must be a finite number other than 0"):
        ks.KickstartPPO("MlpPolicy", make_vec_env(EnvRecipe("CartPole-v1"), 1, 0), teacher=cartpole_teacher,
                        teacher_return=value)  # fmt: skip
