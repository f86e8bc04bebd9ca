"""A teacher check that cannot be skipped by accident (issue 16): an expert with no recorded score
is still played against a uniformly random policy on the same episodes, and an rl-zoo folder is
held to the recipe it claims (config.yml present; VecNormalize statistics where it names them).
Each refusal is one line that says what is probably wrong and how to skip (--no-teacher-check)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from policykd.cli import main
from policykd.data.teachers import load_teacher
from policykd.errors import PolicyKDError
from policykd.jobs.evaluate import ReturnStats, evaluate_random, evaluate_teacher
from policykd.jobs.experiment import checked_baselines
from policykd.jobs.resolve import check_teacher_score, measure_teachers, resolve_budgets

NOT_RANDOM = "not clearly better than a uniformly random policy"
SMALL = ["--n-transitions", "400", "--n-updates", "10", "--eval-episodes", "5", "--no-progress"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``(exit code, stderr)`` of ``policykd argv``; stderr must be at most one line."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    return code, err.strip()


@pytest.fixture
def shipped_copy(cartpole_expert_dir: Path, tmp_path: Path) -> Path:
    """A copy of the shipped ``agents/ppo/CartPole-v1_1`` that a test may doctor."""
    copy = tmp_path / "ppo" / "CartPole-v1_1"
    shutil.copytree(cartpole_expert_dir, copy, ignore=shutil.ignore_patterns("train_logs", "resume"))
    return copy


@pytest.fixture
def untrained_folder(sb3_expert, zoo_run_dir, tmp_path: Path) -> Path:
    """An rl-zoo folder (config.yml, no expert.json: no recorded score) holding an untrained PPO."""
    _, zip_path = sb3_expert("ppo", "CartPole-v1")
    return zoo_run_dir(tmp_path / "untrained", "ppo", "CartPole-v1", zip_path)


def _teacher(score: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(source="agents/x/Env_1", score=score)


# -- against a random policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("teacher", "random"),
    [
        ([-200.0] * 5, [-200.0] * 5),  # a MountainCar teacher that never reaches the flag ties random
        ([20.0, 25.0, 30.0], [15.0, 22.0, 28.0]),  # intervals overlap: not clearly better
        ([9.0, 9.0, 10.0], [22.0, 15.0, 30.0]),  # worse than random
    ],
)
def test_a_teacher_not_clearly_better_than_random_is_refused(teacher, random):
    with pytest.raises(PolicyKDError, match=NOT_RANDOM) as excinfo:
        check_teacher_score(_teacher(), ReturnStats.of(teacher), ReturnStats.of(random))
    message = str(excinfo.value)
    assert "\n" not in message and "--no-teacher-check" in message and "vecnormalize.pkl" in message


@pytest.mark.parametrize(
    ("teacher", "random"),
    [
        ([-150.0, -140.0, -160.0], [-1_200.0, -1_300.0, -1_100.0]),  # Pendulum: negative returns
        ([500.0] * 3, [22.0, 15.0, 30.0]),
        ([-20.0], [-21.0]),  # one episode: points
    ],
)
def test_a_teacher_clearly_better_than_random_passes(teacher, random):
    check_teacher_score(_teacher(), ReturnStats.of(teacher), ReturnStats.of(random))


def test_a_recorded_score_is_checked_first_and_names_the_way_to_skip():
    recorded = _teacher({"mean": 500.0, "std": 0.0})
    with pytest.raises(PolicyKDError, match="recorded score is 500.0.*--no-teacher-check"):
        check_teacher_score(recorded, ReturnStats.of([100.0, 110.0]), ReturnStats.of([20.0, 25.0]))


def test_the_shipped_expert_passes_without_its_expert_json(shipped_copy):
    (shipped_copy / "expert.json").unlink()
    teacher = load_teacher(shipped_copy)
    assert teacher.score is None
    check_teacher_score(teacher, evaluate_teacher(teacher, 2, 10_000), evaluate_random(teacher, 2, 10_000))


def test_an_untrained_expert_with_no_score_is_refused_by_distill(untrained_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_cli(["distill", "--teacher", str(untrained_folder), *SMALL, "--out", str(out)], capsys)
    assert code == 2 and NOT_RANDOM in err and "--no-teacher-check" in err, err
    assert err.startswith("policykd distill: error: teacher ")
    assert not out.exists()
    code, err = run_cli(["distill", "--teacher", str(untrained_folder), *SMALL, "--out", str(out), "--no-teacher-check"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["teacher_return_mean"] < 100


def test_an_untrained_expert_is_refused_by_collect(untrained_folder, tmp_path, capsys):
    out = tmp_path / "buffer.npz"
    argv = ["collect", "--teacher", str(untrained_folder), "--n-transitions", "200", "--out", str(out)]
    code, err = run_cli(argv, capsys)
    assert code == 2 and NOT_RANDOM in err, err
    assert not out.exists()
    code, err = run_cli([*argv, "--no-teacher-check"], capsys)
    assert code == 0 and out.is_file(), err


def test_an_ensemble_names_the_teacher_that_fails(cartpole_teacher, untrained_folder):
    untrained = load_teacher(untrained_folder)
    budgets = resolve_budgets("CartPole-v1", SimpleNamespace(n_eval_episodes=3))
    with pytest.raises(PolicyKDError, match=f"teacher {untrained_folder} scored .*{NOT_RANDOM}"):
        measure_teachers([cartpole_teacher, untrained], budgets, 10_000, check=True)
    each, random = measure_teachers([cartpole_teacher, untrained], budgets, 10_000, check=False)
    assert [s.n_episodes for s in each] == [3, 3] and random.n_episodes == 3
    assert each[0].mean == 500.0 and each[1].mean < random.mean


def test_sweeps_and_driver_comparisons_check_against_random_too():
    """checked_baselines: the random returns measured with the teacher's; a result cached before
    they were kept holds the random mean only, which then counts as a point."""
    stored = {"teacher_greedy": 11.0, "teacher_sampled": 11.0, "random": 20.0, "teacher_greedy_returns": [10.0, 12.0]}

    def cache(name, run):
        return stored

    for baselines in (stored, {**stored, "random_returns": [18.0, 22.0]}):
        stored = baselines
        with pytest.raises(PolicyKDError, match=NOT_RANDOM):
            checked_baselines(_teacher(), 2, 0, cache=cache)
        assert checked_baselines(_teacher(), 2, 0, cache=cache, teacher_check=False) is stored


# -- against the recipe it claims -------------------------------------------------------------------


def test_an_rl_zoo_folder_without_config_yml_is_refused(shipped_copy, tmp_path, capsys):
    (shipped_copy / "CartPole-v1" / "config.yml").unlink()
    with pytest.raises(PolicyKDError, match="without .*config.yml") as excinfo:
        load_teacher(shipped_copy)
    assert "\n" not in str(excinfo.value) and "--env" in str(excinfo.value)
    out = tmp_path / "run"
    code, err = run_cli(["distill", "--teacher", str(shipped_copy), *SMALL, "--out", str(out)], capsys)
    assert code == 2 and "config.yml" in err and not out.exists()
    # the way out the message names: the zip alone, played in the env preset's recipe
    assert load_teacher(shipped_copy / "CartPole-v1.zip", env_id="CartPole-v1").kind == "categorical"


def test_a_folder_with_no_params_dir_at_all_is_refused(shipped_copy):
    shutil.rmtree(shipped_copy / "CartPole-v1")
    with pytest.raises(PolicyKDError, match="config.yml"):
        load_teacher(shipped_copy)


def _set_normalize(folder: Path, value: object) -> None:
    from policykd.data.envs import read_zoo_yaml

    config_path = folder / "CartPole-v1" / "config.yml"
    config = dict(read_zoo_yaml(config_path), normalize=value)
    config_path.write_text(yaml.safe_dump(config))


@pytest.mark.parametrize(
    "normalize",
    [True, {"norm_obs": True, "norm_reward": False}, {"norm_reward": True}, "dict(norm_obs=True, norm_reward=False)"],
)
def test_a_config_naming_normalisation_without_statistics_is_refused(shipped_copy, normalize):
    _set_normalize(shipped_copy, normalize)
    with pytest.raises(PolicyKDError, match="config.yml says .*VecNormalize.*vecnormalize.pkl is missing") as excinfo:
        load_teacher(shipped_copy)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("normalize", [False, {"norm_obs": False, "norm_reward": True}, "{'norm_obs': False}"])
def test_a_config_normalising_no_observations_needs_no_statistics(shipped_copy, normalize):
    _set_normalize(shipped_copy, normalize)
    teacher = load_teacher(shipped_copy)
    assert teacher.normalizer is None and not teacher.recipe.normalize
