"""What the experiment jobs share: CSV writing, the mean and CI over seeds, the teacher's baselines
(the same episodes as a fresh generator seeded like them), the teacher check behind the run cache,
one TensorBoard run per setting, and seeded students."""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch
import yaml

from policykd.errors import PolicyKDError
from policykd.fileio import write_csv
from policykd.jobs.drivers import DriversConfig
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, episode_returns, mean_ci, teacher_baselines
from policykd.jobs.experiment import (
    checked_baselines,
    experiment_budgets,
    experiment_folder,
    no_cache,
    run_logger,
    student_budgets,
    student_for,
)
from policykd.jobs.run_folder import run_state
from policykd.jobs.sweep import SweepConfig


def test_write_csv_keeps_the_key_order(tmp_path):
    path = tmp_path / "sub" / "rows.csv"
    write_csv(path, [{"b": 1, "a": 0.5}, {"b": 2, "a": None}])
    assert path.read_text().splitlines()[0] == "b,a"
    assert list(csv.DictReader(path.open())) == [{"b": "1", "a": "0.5"}, {"b": "2", "a": ""}]
    write_csv(path, [])
    assert path.read_text() == "\n"


def test_mean_ci_is_a_student_t_interval():
    assert mean_ci([3.0]) == (3.0, 3.0, 3.0)
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 dof) * std 1 / sqrt(n)
    assert (m, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))


def test_teacher_baselines_play_the_episodes_of_a_fresh_seeded_generator(cartpole_teacher):
    seed, n = 3, 2
    baselines = teacher_baselines(cartpole_teacher, n, seed)

    def returns(act) -> list[float]:
        rng = np.random.default_rng(seed)
        return episode_returns(lambda o: act(o, rng), cartpole_teacher.recipe, n, seed=seed).tolist()

    greedy = returns(lambda o, rng: cartpole_teacher.act(o, True, rng))
    assert baselines["teacher_greedy_returns"] == greedy
    assert baselines["teacher_greedy"] == pytest.approx(np.mean(greedy))
    assert baselines["teacher_sampled"] == pytest.approx(
        np.mean(returns(lambda o, rng: cartpole_teacher.act(o, False, rng)))
    )
    assert baselines["random"] == pytest.approx(
        np.mean(returns(lambda o, rng: cartpole_teacher.mapper.random(len(o), rng)))
    )


def test_checked_baselines_go_through_the_cache_and_check_the_teacher(cartpole_teacher):
    calls = []
    weak = {"teacher_greedy": 11.0, "teacher_sampled": 11.0, "random": 20.0, "teacher_greedy_returns": [10.0, 12.0]}

    def cache(name, run):
        calls.append((name, run.args[1:]))
        return weak

    assert cartpole_teacher.score, "the shipped expert records its score"
    with pytest.raises(PolicyKDError, match="recorded score"):
        checked_baselines(cartpole_teacher, 4, 7, cache=cache)
    assert checked_baselines(cartpole_teacher, 4, 7, cache=cache, teacher_check=False) is weak
    assert calls == [("teacher", (4, 7 + EVAL_SEED_OFFSET))] * 2
    assert no_cache("teacher", lambda: weak) is weak


def test_run_logger_replaces_an_earlier_run(tmp_path):
    stale = tmp_path / "tb" / "tau1-seed0" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    with run_logger(tmp_path, "tau1-seed0", {"temperature": 1.0}) as logger:
        logger.log({"eval/student_return": 1.0}, 1)
    files = [p.name for p in stale.parent.iterdir()]
    assert "stale.txt" not in files and any(name.startswith("events.out.tfevents") for name in files)


def test_student_for_fixes_the_initial_weights_by_seed(cartpole_teacher):
    a, b, c = (student_for(cartpole_teacher, (8,), seed) for seed in (0, 0, 1))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def zoo_teacher(name: str):
    from policykd.data.teachers import load_teacher
    from policykd.zoo.presets import ZOO_DIR

    if not (ZOO_DIR / name).is_dir():
        pytest.skip(f"the shipped expert {name} is missing")
    return load_teacher(ZOO_DIR / name)


def test_sweep_and_compare_drivers_train_the_student_distill_would():
    """The LunarLander preset's 64x64 student is the whole 64x64 PPO expert: sweep and
    compare-drivers, as distill, give it a quarter-size student (with its Adam step) and say why;
    --hidden keeps the preset's."""
    ppo = zoo_teacher("ppo/LunarLander-v3_1")
    for config in (SweepConfig(), DriversConfig()):
        budgets = experiment_budgets(ppo, config, ("batch_size",))
        student = student_for(ppo, budgets["hidden_sizes"], 0, budgets["cnn_width"])
        assert student.n_params <= 0.25 * ppo.n_params and budgets["batch_size"] == 256
        assert budgets["learning_rate"] > 1e-3  # a narrower student takes larger steps, as in distill
        assert "preset's 64×64 student would be 100 %" in budgets["defaults"]
        kept, why = student_budgets(ppo, dataclasses.replace(config, hidden_sizes=(64, 64)))
        assert kept["hidden_sizes"] == (64, 64) and kept["learning_rate"] == 1e-3 and why == ""


def test_an_experiment_without_a_preset_derives_the_student_and_names_only_it(cartpole_teacher):
    from types import SimpleNamespace

    student, why = student_budgets(cartpole_teacher, SimpleNamespace(preset="none"))
    assert make_student_n_params(cartpole_teacher, student) <= 0.25 * cartpole_teacher.n_params
    assert why.startswith("defaults from the teacher (--preset none): student ")
    assert "budgets" not in why and "{budget}" not in why  # distill's budgets are not the experiment's


def make_student_n_params(teacher, budgets) -> int:
    return student_for(teacher, budgets["hidden_sizes"], 0, budgets["cnn_width"]).n_params


def test_an_atari_experiment_student_has_the_presets_cnn_width():
    """compare-drivers and sweep once built Atari students at the teacher's full CNN width."""
    pong = zoo_teacher("ppo/PongNoFrameskip-v4_1")
    budgets, why = student_budgets(pong, SweepConfig())
    assert budgets["cnn_width"] == 0.5 and why == ""
    assert 0.2 < make_student_n_params(pong, budgets) / pong.n_params < 0.3  # the preset's quarter-size CNN


@dataclasses.dataclass
class _Experiment:
    out_dir: str
    temperatures: tuple = (1.0,)


def test_an_experiment_folder_resumes_itself_and_refuses_other_runs_and_a_live_writer(tmp_path):
    out = tmp_path / "sweep"
    with experiment_folder(_Experiment(str(out)), "sweep"):
        assert run_state(out)["state"] == "running"
        with pytest.raises(PolicyKDError, match="is being written by process"):
            with experiment_folder(_Experiment(str(out), (2.0,)), "sweep"):
                pass
    assert run_state(out)["state"] == "done"
    (out / "cells").mkdir()
    (out / "cells" / "tau1-seed0.json").write_text("{}")
    with experiment_folder(_Experiment(str(out), (1.0, 2.0)), "sweep"):  # same experiment, more cells: resumes
        pass
    assert (out / "cells" / "tau1-seed0.json").is_file()
    assert yaml.safe_load((out / "config.yml").read_text())["temperatures"] == [1.0, 2.0]
    other = tmp_path / "distill-run"
    other.mkdir()
    (other / "config.yml").write_text("teacher: x\nloss: kl\n")
    with pytest.raises(PolicyKDError, match="already holds files of another command's run"):
        with experiment_folder(_Experiment(str(other)), "sweep"):
            pass
    assert sorted(p.name for p in other.iterdir()) == ["config.yml"]
