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
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, episode_returns, mean_ci, teacher_baselines
from policykd.jobs.experiment import checked_baselines, experiment_folder, no_cache, run_logger, student_for
from policykd.jobs.run_folder import run_state


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
