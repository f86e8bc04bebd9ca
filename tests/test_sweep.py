"""The temperature sweep with tiny budgets: one buffer for every (tau, seed), its outputs, the
exploration measure, and the one-line errors of `policykd sweep` / `policykd compare-drivers`."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

import policykd.jobs.sweep as sweep_module
from policykd.cli import main
from policykd.errors import PolicyKDError
from policykd.jobs.experiment import read_config_file
from policykd.jobs.sweep import SweepConfig, grid_bounds, run_sweep, visitation_entropy

# -- the exploration measure ------------------------------------------------------------------------


def test_visitation_entropy_counts_occupied_cells():
    low, high = np.zeros(2), np.ones(2)
    one_cell = np.full((50, 2), 0.1)
    assert visitation_entropy(one_cell, low, high, 4) == 0.0
    centres = (np.arange(4) + 0.5) / 4
    grid = np.array([[x, y] for x in centres for y in centres])  # one state per cell of a 4 x 4 grid
    assert visitation_entropy(grid, low, high, 4) == pytest.approx(math.log(16))
    halves = np.array([[0.1, 0.1]] * 3 + [[0.9, 0.9]] * 3)
    assert visitation_entropy(halves, low, high, 4) == pytest.approx(math.log(2))
    outside = np.array([[-5.0, 0.1], [0.1, 0.1], [7.0, 0.1], [0.9, 0.1]])  # clipped into the edge bins
    assert visitation_entropy(outside, low, high, 4) == pytest.approx(math.log(2))


def test_grid_bounds_ignore_outliers_and_constant_dimensions():
    rng = np.random.default_rng(0)
    states = np.column_stack([rng.uniform(-1, 1, 10_000), np.full(10_000, 3.0)])
    states[0, 0] = 1e6
    low, high = grid_bounds(states)
    assert low[0] == pytest.approx(-1, abs=0.02) and high[0] == pytest.approx(1, abs=0.02)
    assert high[1] > low[1] == 3.0


# -- the sweep ----------------------------------------------------------------------------------------


@pytest.fixture
def counted_collect(monkeypatch):
    """Counts the calls of the sweep's collection step."""
    calls: list[int] = []
    original = sweep_module.collect

    def collect(config, teachers=None):
        calls.append(config.n_transitions)
        return original(config, teachers)

    monkeypatch.setattr(sweep_module, "collect", collect)
    return calls


def tiny(out_dir, **overrides) -> SweepConfig:
    return SweepConfig(
        **{
            "temperatures": (0.5, 2.0),
            "n_seeds": 2,
            "n_transitions": 256,
            "n_envs": 4,
            "n_updates": 10,
            "batch_size": 32,
            "hidden_sizes": (8,),
            "n_eval_episodes": 1,
            "n_metric_states": 200,
            "out_dir": str(out_dir),
            **overrides,
        }
    )


def test_one_buffer_serves_every_temperature_and_seed(cartpole_expert_dir, tmp_path, counted_collect):
    names: list[str] = []

    def cache(name, run):
        names.append(name)
        return run()

    out = tmp_path / "sweep"
    summary = run_sweep(tiny(out, teacher=str(cartpole_expert_dir)), cache=cache)
    assert counted_collect == [256], "collected once for 2 temperatures x 2 seeds"
    assert names == ["teacher", "tau0.5-seed0", "tau0.5-seed1", "tau2-seed0", "tau2-seed1"]
    for name in ("sweep.md", "sweep.csv", "runs.csv", "summary.json", "sweep.png", "buffer.npz"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "tb").iterdir()) == [
        "tau0.5-seed0",
        "tau0.5-seed1",
        "tau2-seed0",
        "tau2-seed1",
    ]
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(r["tau"]) for r in rows] == [0.5, 2.0] and all(r["n_seeds"] == "2" for r in rows)
    assert len(list(csv.DictReader((out / "runs.csv").open()))) == 4
    low, high = (row["target_entropy"][0] for row in summary["rows"])
    assert low < high <= math.log(2), "the target softens as tau grows (softmax of logits / tau)"
    assert summary["labels"]["exploration"].startswith("state-visitation entropy")  # CartPole: 4 dimensions
    per_run = list(csv.DictReader((out / "runs.csv").open()))
    for row in summary["rows"]:  # mean and Student-t CI over the 2 seeds: mean ± t(0.975, 1) std / sqrt(2)
        m, lo, hi = row["return_greedy"]
        returns = [float(r["return_greedy"]) for r in per_run if float(r["tau"]) == row["tau"]]
        half = 12.706204736174698 * np.std(returns, ddof=1) / np.sqrt(2)
        assert len(returns) == 2 and (m, lo, hi) == pytest.approx((np.mean(returns), m - half, m + half))
    table = (out / "sweep.md").read_text()
    assert "softmax(teacher scores / τ)" in table and "| 0.5 |" in table and "| 2 |" in table
    # a second sweep in the same folder reuses the buffer (an interrupted sweep resumes on the same data)
    run_sweep(tiny(out, teacher=str(cartpole_expert_dir), temperatures=(1.0,), n_seeds=1))
    assert counted_collect == [256]


def test_a_gaussian_teacher_is_swept_on_its_standard_deviation(sb3_expert, tmp_path, counted_collect):
    _, zip_path = sb3_expert("sac", "Pendulum-v1")
    out = tmp_path / "pendulum"
    # an untrained SAC plays worse than a random policy: the teacher check would refuse it
    config = tiny(out, teacher=str(zip_path), env_id="Pendulum-v1", n_seeds=1, max_grid_dims=2, teacher_check=False)
    summary = run_sweep(config)
    low, high = (row["target_entropy"][0] for row in summary["rows"])
    assert high - low == pytest.approx(math.log(2.0 / 0.5), rel=1e-4), "one action dimension: log(tau) per dim"
    assert summary["labels"]["agreement"] == "greedy action gap (L2)"
    assert summary["labels"]["exploration"] == "sampled return std"  # 3 dimensions > max_grid_dims = 2
    assert "standard deviation" in (out / "sweep.md").read_text()


def test_a_deterministic_teacher_is_refused(sb3_expert, tmp_path):
    _, zip_path = sb3_expert("td3", "Pendulum-v1")
    with pytest.raises(PolicyKDError, match="no temperature"):
        run_sweep(tiny(tmp_path / "td3", teacher=str(zip_path), env_id="Pendulum-v1"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"temperatures": ()}, "empty"),
        ({"temperatures": (1.0, 0.0)}, "> 0"),
        ({"temperatures": (-1.0,)}, "> 0"),
        ({"temperatures": (float("nan"),)}, "> 0"),
        ({"temperatures": (1.0, 1.0)}, "repeat"),
        ({"n_seeds": 0}, "--seeds"),
        ({"n_bins": 1}, "--bins"),
    ],
)
def test_bad_sweeps_are_refused_before_anything_runs(overrides, message, tmp_path, counted_collect):
    with pytest.raises(PolicyKDError, match=message):
        run_sweep(tiny(tmp_path / "bad", **overrides))
    assert not (tmp_path / "bad").exists() and counted_collect == []


def test_config_files_use_the_option_names(tmp_path):
    path = tmp_path / "sweep.yml"
    path.write_text("env: CartPole-v1\ntemperatures: [0.1, 1]\nseeds: 2\nn-updates: 50\nout: runs/x\n")
    values = read_config_file(path, SweepConfig, {"env": "env_id", "seeds": "n_seeds", "out": "out_dir"})
    assert values == {
        "env_id": "CartPole-v1",
        "temperatures": (0.1, 1),
        "n_seeds": 2,
        "n_updates": 50,
        "out_dir": "runs/x",
    }


# -- the command line ---------------------------------------------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sweep", "--temperatures"], "temperature list is empty"),
        (["sweep", "--temperatures", "0.1", "-1"], "> 0"),
        (["sweep", "--seeds", "0"], "--seeds"),
        (["sweep", "--config", "missing.yml"], "cannot read config file"),
        (["compare-drivers", "--dagger-schedule", "constant:1.5"], "[0, 1]"),
        (["compare-drivers", "--drivers", "teacher", "oracle"], "unknown or no drivers"),
        (["compare-drivers", "--seeds", "0"], "--seeds"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir()), "nothing is written"


@pytest.mark.parametrize("content", ["- 1\n- 2\n", "temperatures: [1]\nwho: me\n", "seeds: [\n"])
def test_bad_config_files_are_one_line_errors(content, capsys, tmp_path):
    path = tmp_path / "sweep.yml"
    path.write_text(content)
    code, _, err = run_cli(["sweep", "--config", str(path)], capsys)
    assert code == 2 and "config file" in err and err.count("\n") == 1, err


def test_sweep_from_a_config_file_with_command_line_overrides(cartpole_expert_dir, tmp_path, capsys):
    path = tmp_path / "sweep.yml"
    out = tmp_path / "out"
    path.write_text(
        f"teacher: {cartpole_expert_dir}\ntemperatures: [0.5, 5]\nseeds: 3\nn-transitions: 256\n"
        f"n-updates: 10\nhidden: [8]\neval-episodes: 1\nout: {out}\n"
    )
    code, stdout, _ = run_cli(["sweep", "--config", str(path), "--seeds", "1", "--n-envs", "4"], capsys)
    assert code == 0
    assert "| 0.5 |" in stdout and "| 5 |" in stdout and "over 1 seeds" in stdout
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["tau0.5-seed0", "tau5-seed0"]
