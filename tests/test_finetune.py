"""``policykd finetune`` end to end on the shipped CartPole expert (tiny budgets), its refusals, and
rl-zoo hyperparameters read without eval (policykd.zoo.hyperparams)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from test_cli import assert_one_line_error, run_cli
from torch import nn

from policykd.errors import PolicyKDError
from policykd.fileio import read_json
from policykd.zoo.hyperparams import algorithm_kwargs, parse_policy_kwargs, zoo_hyperparams

TINY = ["--timesteps", "512", "--eval-episodes", "2", "--eval-every-steps", "256"]


def _tags(tb_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(tb_dir.rglob("events.out.tfevents.*")).parent))
    events.Reload()
    return set(events.Tags()["scalars"])


def _validation_return(student_dir: Path | None, teacher_dir: Path, n_episodes: int, seed: int = 0) -> float:
    """The distilled student of ``student_dir`` (None: the teacher) on finetune's validation episodes."""
    from policykd.data.teachers import load_teacher
    from policykd.jobs.evaluate import evaluate_policy
    from policykd.jobs.finetune_run import VALIDATION_SEED_OFFSET
    from policykd.jobs.load import load_student

    teacher = load_teacher(teacher_dir)
    policy = teacher if student_dir is None else load_student(student_dir)
    return evaluate_policy(policy, teacher.recipe, n_episodes, seed=seed + VALIDATION_SEED_OFFSET).mean


def test_finetune_cli_end_to_end(cartpole_expert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_cli(["finetune", "--teacher", str(cartpole_expert_dir), *TINY, "--out", str(out)], capsys)
    assert code == 0, err
    assert "PPO student from scratch" in stdout and "student" in stdout
    summary = read_json(out / "summary.json")
    assert summary["algo"] == "ppo" and summary["n_envs"] == 8  # rl-zoo's CartPole PPO: 8 envs
    assert summary["hyperparams_source"].endswith("CartPole-v1/config.yml")  # the expert's own hyperparameters
    assert [p[0] for p in summary["curve"]] == [0, 256, 512]  # on the validation episodes
    best, validation = summary["best"], [p[1] for p in summary["curve"]]
    assert best["validation_return"] == max(validation) and best["steps"] == 256 * validation.index(max(validation))
    if best["steps"] == 512:  # the last weights: the same held-out score
        assert best["student_return"] == summary["student_return"]
    assert summary["validation_seed"] == 20_000 and best["student_return"]["n_episodes"] == 2
    assert PPO.load(out / "best_model.zip", device="cpu").num_timesteps == best["steps"]
    assert sorted(p.name for p in out.glob("*.zip")) == ["best_model.zip", "model.zip"]  # no checkpoint left
    assert summary["teacher_return"]["mean"] == 500.0
    assert read_json(out / "state.json")["state"] == "done"
    model = PPO.load(out / "model.zip", device="cpu")  # plain SB3 reads the run's zip
    assert model.predict(np.zeros(4, np.float32), deterministic=True)[0] in (0, 1)
    assert {"distill/lambda", "distill/loss", "eval/student_return", "train/policy_gradient_loss"} <= _tags(out / "tb")


def test_an_ensemble_of_teachers_is_merged_in_the_term(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two CartPole teachers of different kinds (PPO logits, DQN Q-values) give the term one merged
    target; both play the evaluation episodes, and the student is compared with the better one."""
    from policykd.learn.merging import Merge

    out = tmp_path / "run"
    teachers = [str(REPO / "agents/ppo/CartPole-v1_1"), str(REPO / "agents/dqn/CartPole-v1_1")]
    argv = ["finetune", "--teacher", teachers[0], "--teacher", teachers[1], "--merge", "mean-logits",
            "--teacher-weights", "2", "1", "--timesteps", "256", "--eval-episodes", "2", "--out", str(out)]  # fmt: skip
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "ensemble of 2 teachers, merge mean-logits" in stdout
    summary = read_json(out / "summary.json")
    assert summary["algo"] == "ppo" and summary["merge"] == "mean-logits" and summary["teacher_weights"] == [2.0, 1.0]
    assert [t["source"] for t in summary["teachers"]] == teachers
    best = max(t["return"]["mean"] for t in summary["teachers"])
    assert summary["teacher_return"]["mean"] == best
    assert summary["return_ratio"] == pytest.approx(summary["student_return"]["mean"] / best)

    from policykd.jobs.finetune import FinetuneConfig, build_model, plan_model, resolve_ensemble

    config = FinetuneConfig(teachers=tuple(teachers), merge="most-confident", n_timesteps=64)
    ensemble, merge = resolve_ensemble(config)
    model = build_model(config, ensemble, "ppo", plan_model(config, ensemble[0], "ppo"), None, merge)
    assert len(model.distill_teachers) == 2 and isinstance(model.distill_merge, Merge)
    assert model.distill_merge.strategy == "most-confident"
    model.distill_lambda = 1.0
    term = model.distill_term(torch.zeros(4, 4))
    assert term.ndim == 0 and torch.isfinite(term) and term.requires_grad


def test_an_existing_run_folder_is_refused_unless_overwrite(
    cartpole_expert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    argv = [
        "finetune",
        "--teacher",
        str(cartpole_expert_dir),
        "--timesteps",
        "64",
        "--eval-episodes",
        "1",
        "--out",
        str(out),
    ]
    assert run_cli(argv, capsys)[0] == 0
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "finetune", "already holds an earlier run (done)")
    assert "--overwrite" in err
    assert run_cli([*argv, "--overwrite"], capsys)[0] == 0


def test_start_from_a_distilled_run_folder_plays_as_the_student(
    cartpole_distill_run: Any, cartpole_expert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The curve's first point (before any RL update) is the distilled student's own return on the
    same episodes (the validation episodes, 3): the weights were mapped exactly."""
    _, run_dir = cartpole_distill_run
    out = tmp_path / "ft"
    argv = ["finetune", "--teacher", str(cartpole_expert_dir), "--start", str(run_dir), "--timesteps", "256",
            "--eval-episodes", "3", "--value-init", "512", "--out", str(out)]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    summary = read_json(out / "summary.json")
    assert summary["curve"][0][1] == pytest.approx(_validation_return(run_dir, cartpole_expert_dir, 3))
    assert summary["start"] == str(run_dir)
    value = summary["value_init"]  # the critic starts near the teacher's value; the actor is untouched (above)
    assert value["n_observations"] == 512 and value["mse_after"] < 0.2 * value["mse_before"]


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--schedule", "constant:-1"], "must be a finite number >= 0"),
        (["--schedule", "cosine"], "cannot read the lambda schedule"),
        (["--start", "teacher", "--net-fraction", "0.5"], "--net-fraction sizes a student started from scratch"),
        (["--net-fraction", "2"], "--net-fraction must be in (0, 1]"),
        (["--algo", "dqn", "--teacher", "agents/sac/Pendulum-v1_1"], "DQN does not handle the action space Box"),
        (
            ["--algo", "sac", "--teacher", "agents/td3/Pendulum-v1_1"],
            "cannot be distilled from a deterministic teacher",
        ),
        (["--algo", "ddpg"], "unknown algorithm 'ddpg'"),
        (["--start", "no/such/run"], "is not a policykd student"),
        (["--start", "teacher", "--algo", "a2c"], "needs the teacher's algorithm"),
        (["--timesteps", "0"], "--timesteps must be an integer >= 1"),
        (["--merge", "mean-logits"], "--merge and --teacher-weights need several --teacher"),
        (
            ["--teacher", "agents/ppo/CartPole-v1_1", "--teacher", "agents/dqn/Acrobot-v1_1"],
            "is an expert for Acrobot-v1, not CartPole-v1",
        ),
        (
            ["--teacher", "agents/ppo/LunarLander-v3_1", "--teacher", "agents/ppo/LunarLander-v3_2", "--merge", "vote"],
            "unknown merge strategy 'vote'",
        ),
        (
            [
                "--teacher",
                "agents/ppo/LunarLander-v3_1",
                "--teacher",
                "agents/ppo/LunarLander-v3_2",
                "--teacher-weights",
                "1",
            ],
            "got 1 teacher weight(s) for 2 teacher(s)",
        ),
    ],
)
def test_bad_inputs_are_one_line(
    extra: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["finetune", "--timesteps", "64", "--eval-episodes", "1", "--out", str(tmp_path / "run"), *extra]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "finetune", fragment)
    assert not (tmp_path / "run" / "summary.json").exists()


# -- rl-zoo hyperparameters ------------------------------------------------------------------------


def test_policy_kwargs_are_read_from_an_allow_list() -> None:
    assert parse_policy_kwargs("dict(net_arch=[256, 256])") == {"net_arch": [256, 256]}
    parsed = parse_policy_kwargs(
        "dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))"
    )
    assert parsed == {
        "log_std_init": -2,
        "ortho_init": False,
        "activation_fn": nn.ReLU,
        "net_arch": {"pi": [64], "vf": [64]},
    }
    assert parse_policy_kwargs("dict(activation_fn=th.nn.Tanh)")["activation_fn"] is nn.Tanh
    for text in ("dict(optimizer_class=RMSpropTFLike)", "__import__('os').system('true')", "dict(x=open('f'))"):
        with pytest.raises(PolicyKDError, match="which policykd does not build"):
            parse_policy_kwargs(text)


def test_zoo_schedules_and_zoo_only_keys() -> None:
    kwargs, zoo = algorithm_kwargs({"learning_rate": "lin_0.001", "n_envs": 8, "normalize": True, "gamma": 0.98})
    assert kwargs["learning_rate"](1.0) == pytest.approx(0.001) and kwargs["learning_rate"](0.25) == pytest.approx(
        0.00025
    )
    assert kwargs["gamma"] == 0.98 and zoo == {"n_envs": 8, "normalize": True}


def test_zoo_hyperparams_come_from_the_teacher_folder_first(cartpole_expert_dir: Path) -> None:
    raw, source = zoo_hyperparams("ppo", "CartPole-v1", cartpole_expert_dir)
    assert source == str(cartpole_expert_dir / "CartPole-v1" / "config.yml") and raw["n_envs"] == 8
    raw, source = zoo_hyperparams("a2c", "CartPole-v1")
    assert source == "rl_zoo3/hyperparams/a2c.yml" and raw["n_envs"] == 8
    assert zoo_hyperparams("a2c", "NoSuchEnv-v0") == ({}, "SB3 defaults")


# -- the README ----------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_readme_kickstart_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fine-tuning section's Python block, with a smaller step budget."""
    import re

    section = (REPO / "README.md").read_text().split("## Fine-tuning with the environment's reward", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "model.learn(30_000)" in code
    code = code.replace('"agents/', f'"{REPO}/agents/').replace("model.learn(30_000)", "model.learn(1024)")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_kickstart"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    model = namespace["model"]
    assert (
        model.num_timesteps == 1024 and model.distill_values and model.distill_lambda > 0.9
    )  # linear: 1 -> 0 over 20k


def test_readme_quotes_the_kickstart_benchmark_as_recorded() -> None:
    """The README's measured block is benchmarks/kickstart.py's full-run results file, table for table."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- kickstart:start -->", 1)[1].split("<!-- kickstart:end -->", 1)[0]
    if block.strip().startswith("Withheld until rerun:"):  # stale cells: it quotes nothing (test_readme checks that)
        assert not [line for line in block.splitlines() if line.startswith("|")]
        return
    recorded = (REPO / "benchmarks/results/kickstart.md").read_text()
    rows = [line for line in block.splitlines() if line.startswith("|")]
    assert len(rows) >= 10 and all(row in recorded for row in rows)


def test_the_kickstart_benchmark_runs_its_halfcheetah_part_only_when_asked() -> None:
    """Part (d), HalfCheetah (hours on 2 cores), runs when --seeds names it or gives every part N;
    the published command (a=3,b=3,c=3) leaves it out, and the page says it was not measured."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import kickstart

    assert kickstart.seeds_per_part("a=3,b=3,c=3") == {"a": 3, "b": 3, "c": 3, "d": 0}
    assert kickstart.seeds_per_part("a=3,d=2") == {"a": 3, "b": 1, "c": 1, "d": 2}
    assert kickstart.seeds_per_part("2") == dict.fromkeys("abcd", 2)
    curve = [[25_000, 1_000.0], [50_000, 5_500.0], [75_000, 5_600.0]]
    cell = {"student_return": {"mean": 5_600.0, "ci95": [5_500.0, 5_700.0]}}
    runs = {"none": [{**cell, "curve": [[75_000, 900.0]]}], "constant": [{**cell, "curve": curve}]}
    lines = kickstart.cheetah_section(runs, 6_000.0, {"cheetah_steps": 300_000})
    assert "50,000 env steps in every seed" in "\n".join(lines) and "under 0.17" in "\n".join(lines)


def test_the_kickstart_benchmark_judges_the_best_checkpoints_apart_from_the_last_weights() -> None:
    """Part (a) gives a verdict for the last weights and another for the best checkpoints (each
    against the teacher on the same episodes, paired by seed), and says where the best ones were."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import kickstart

    def seeds(means: list[float], steps: list[int] | None = None) -> list[dict]:
        return [{"student_return": {"mean": m}, "teacher_return": {"mean": 50.0 + i}, "steps": (steps or [0] * 3)[i]}
                for i, m in enumerate(means)]  # fmt: skip

    runs = {
        "fine-tuned, no distillation": seeds([0.0, 10.0, -10.0]),
        "fine-tuned + QDagger term": seeds([60.0, 40.0, 55.0]),
        f"fine-tuned, no distillation, {kickstart.BEST}": seeds([20.0, 30.0, 25.0], [0, 10_000, 0]),
        f"fine-tuned + QDagger term, {kickstart.BEST}": seeds([240.0, 230.0, 250.0], [10_000, 10_000, 20_000]),
    }
    assert "(the last weights), above its teacher: **no**" in kickstart.verdict_a(runs)
    best = kickstart.verdict_a(runs, f", {kickstart.BEST}")
    assert best.startswith("Reached? With the QDagger term (the best checkpoints), above its teacher: **yes**")
    assert "above RL without the term: **yes**" in best
    assert kickstart.best_steps(runs) == (
        "Best checkpoints at env step (per seed): fine-tuned, no distillation: 0, 10,000, 0; "
        "fine-tuned + QDagger term: 10,000, 10,000, 20,000."
    )


@pytest.mark.parametrize(
    "teacher", ["agents/dqn/CartPole-v1_1", "agents/sac/Pendulum-v1_1", "agents/td3/Pendulum-v1_1"]
)
def test_start_from_the_teachers_weights_plays_as_the_teacher(teacher: str, tmp_path: Path) -> None:
    """Before any update the student is the teacher: the same return on the same episode."""
    from policykd.jobs.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(teacher=str(REPO / teacher), start="teacher", n_timesteps=64, n_eval_episodes=1,
                            out_dir=str(tmp_path / "run"), progress_bar=False)  # fmt: skip
    summary = finetune(config)
    assert summary["algo"] == teacher.split("/")[1]
    assert summary["curve"][0][1] == pytest.approx(_validation_return(None, REPO / teacher, 1))
    assert summary["warmup_with_policy"] is True
    if summary["algo"] == "dqn":  # rl-zoo's final epsilon from the first step, recorded
        assert summary["exploration"]["initial_eps"] == summary["exploration"]["final_eps"] == 0.04


def test_finetune_records_the_distillation_terms_options(cartpole_expert_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["finetune", "--teacher", str(cartpole_expert_dir), *TINY, "--out", str(out)]
    code, _, err = run_cli(
        [*argv, "--temperature", "2", "--kl-direction", "reverse", "--hard-label-weight", "0.5"], capsys
    )
    assert code == 0, err
    summary = read_json(out / "summary.json")
    assert summary["loss"] == "kl"
    options = summary["loss_options"]
    assert (options["temperature"], options["direction"], options["hard_label_weight"]) == (2.0, "reverse", 0.5)


def test_a_pretrained_q_student_explores_at_the_final_epsilon_and_acts_during_warm_up() -> None:
    """From the teacher's weights a DQN does not start at epsilon 1.0 (rl-zoo's schedule for random
    weights) and does not act at random during rl-zoo's learning_starts (1,000 steps for CartPole):
    it acts as the teacher. From scratch, rl-zoo's schedule; exploration_initial_eps overrides."""
    from policykd.jobs.finetune import FinetuneConfig, build_model, plan_model
    from policykd.jobs.resolve import resolve_teacher

    config = FinetuneConfig(teacher=str(REPO / "agents/dqn/CartPole-v1_1"), start="teacher")
    teacher = resolve_teacher(config.teacher, None)
    plan = plan_model(config, teacher, "dqn")
    assert (plan.exploration["initial_eps"], plan.exploration["final_eps"], plan.exploration["fraction"]) == (
        0.04,
        0.04,
        0.16,
    )
    assert plan.not_applied["exploration_initial_eps"].startswith("1, replaced by 0.04")  # the CLI prints it
    model = build_model(config, [teacher], "dqn", plan, None)
    assert model.exploration_schedule(1.0) == pytest.approx(0.04) and model.learning_starts == 1000
    model.exploration_rate = 0.0
    states = np.random.default_rng(0).normal(0, 0.5, (24, 4)).astype(np.float32)
    for state in states:  # num_timesteps 0 < learning_starts: SB3 alone would act uniformly at random
        model._last_obs = state[None]
        action = model._sample_action(model.learning_starts, None, 1)[0]
        assert int(action[0]) == int(teacher.policy.predict(state, deterministic=True)[0])
    scratch = plan_model(FinetuneConfig(teacher=config.teacher), teacher, "dqn")
    assert scratch.exploration["initial_eps"] == 1.0 and "exploration_initial_eps" not in scratch.not_applied
    given = plan_model(dataclasses.replace(config, exploration_initial_eps=0.3), teacher, "dqn")
    assert given.exploration["initial_eps"] == 0.3 and given.kwargs["exploration_initial_eps"] == 0.3


def test_exploration_initial_eps_out_of_range_is_one_line(tmp_path: Path) -> None:
    from policykd.jobs.finetune import FinetuneConfig, finetune

    with pytest.raises(PolicyKDError, match=r"exploration_initial_eps must be a probability in \[0, 1\]"):
        finetune(FinetuneConfig(teacher=str(REPO / "agents/dqn/CartPole-v1_1"), exploration_initial_eps=1.5))


def test_exploration_initial_eps_reaches_the_dqn_student_from_the_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    teacher = str(REPO / "agents/dqn/CartPole-v1_1")
    argv = ["finetune", "--teacher", teacher, "--start", "teacher", "--timesteps", "64", "--eval-episodes", "1"]
    code, _, err = run_cli([*argv, "--exploration-initial-eps", "0.3", "--out", str(out)], capsys)
    assert code == 0, err
    assert read_json(out / "summary.json")["exploration"]["initial_eps"] == 0.3


# -- a DQN starts from raw Q-values only --------------------------------------------------------------


@pytest.fixture(scope="module")
def dqn_students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Path]]:
    """``{name: (summary, run folder)}``: the shipped DQN CartPole expert distilled (tiny budgets, the
    hyperparameters' 256-256 layers) with kl, with mse on centred Q-values (distill's default) and
    with mse on raw Q-values (``center_q=False``, ``--no-q-center``)."""
    from policykd.jobs.config import DistillConfig
    from policykd.jobs.distill import distill

    root, runs = tmp_path_factory.mktemp("dqn_students"), {}
    for name, loss, center_q in (("kl", "kl", True), ("centred-mse", "mse", True), ("raw-mse", "mse", False)):
        config = DistillConfig(
            teacher=str(REPO / "agents/dqn/CartPole-v1_1"), loss=loss, center_q=center_q, hidden_sizes=(256, 256),
            n_transitions=256, n_updates=20, batch_size=32, n_eval_episodes=1, teacher_check=False,
            progress_bar=False, out_dir=str(root / name),
        )  # fmt: skip
        runs[name] = (distill(config), root / name)
    return runs


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("kl", "this student was distilled with --loss kl (log-probabilities, not Q-values)"),
        ("centred-mse", "this student was distilled with centred Q-values"),
    ],
)
def test_a_dqn_from_a_student_of_other_than_raw_q_values_is_refused_writing_nothing(
    dqn_students: dict, tmp_path: Path, capsys: pytest.CaptureFixture, name: str, fragment: str
) -> None:
    """Refused in one line that says what to do, before the run folder is created."""
    out = tmp_path / "ft"
    argv = ["finetune", "--teacher", str(REPO / "agents/dqn/CartPole-v1_1"), "--start", str(dqn_students[name][1]),
            "--timesteps", "64", "--eval-episodes", "1", "--out", str(out)]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "finetune", fragment)
    assert "--loss mse --no-q-center" in err and "--start teacher" in err
    assert not out.exists()


def test_a_dqn_starts_from_a_student_of_raw_q_values(dqn_students: dict, tmp_path: Path) -> None:
    """Accepted, and mapped exactly: before any update the DQN plays as the distilled student, the
    same return on the same evaluation episode."""
    from policykd.jobs.finetune import FinetuneConfig, finetune

    _, run_dir = dqn_students["raw-mse"]
    config = FinetuneConfig(teacher=str(REPO / "agents/dqn/CartPole-v1_1"), start=str(run_dir), n_timesteps=64,
                            n_eval_episodes=1, out_dir=str(tmp_path / "ft"), progress_bar=False)  # fmt: skip
    summary = finetune(config)
    validation = _validation_return(run_dir, REPO / "agents/dqn/CartPole-v1_1", 1)
    assert summary["algo"] == "dqn" and summary["curve"][0][1] == pytest.approx(validation)


def test_policy_gradient_starts_from_a_log_probability_student_are_unaffected(dqn_students: dict) -> None:
    """The kl student of the DQN expert still starts a PPO (its logits are a policy's)."""
    from policykd.jobs.finetune import FinetuneConfig, plan_model
    from policykd.jobs.resolve import resolve_teacher

    config = FinetuneConfig(
        teacher=str(REPO / "agents/dqn/CartPole-v1_1"), algo="ppo", start=str(dqn_students["kl"][1])
    )
    plan = plan_model(config, resolve_teacher(config.teacher, None), "ppo")
    assert (plan.student_loss, plan.student_center_q) == ("kl", True)
