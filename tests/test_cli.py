"""The ``policykd`` command line: user errors are one line on stderr with a non-zero exit and no
traceback, and nothing is written; evaluate, collect and zoo print what they should."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from policykd.cli import main
from policykd.data.buffers import LabelledBuffer

# Budgets small enough that a case which wrongly succeeds still fails fast.
SMALL = ["--n-transitions", "400", "--n-updates", "10", "--eval-episodes", "1", "--no-progress"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``policykd argv`` run in this process."""
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, command: str, fragment: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    assert lines[0].startswith(f"policykd {command}: error: "), lines[0]
    assert fragment in lines[0], lines[0]


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    corrupt_zip = tmp_path / "corrupt.zip"
    corrupt_zip.write_bytes(b"PK\x03\x04 this is not an SB3 model")
    corrupt_buffer = tmp_path / "corrupt.npz"
    corrupt_buffer.write_bytes(b"PK\x03\x04 this is not a policykd buffer")
    return {"missing": tmp_path / "missing.zip", "corrupt_zip": corrupt_zip, "corrupt_buffer": corrupt_buffer}


DISTILL_ERRORS = {
    "missing teacher": (["--teacher", "{missing}", "--env", "CartPole-v1"], "does not exist"),
    "corrupt teacher": (["--teacher", "{corrupt_zip}", "--env", "CartPole-v1"], "not a readable SB3 model"),
    "zoo folder, other env": (["--teacher", "{expert}", "--env", "Pendulum-v1"], "not Pendulum-v1"),
    "bare zip on Acrobot": (["--teacher", "{expert_zip}", "--env", "Acrobot-v1"], "observation space"),
    "bare zip on MountainCar": (["--teacher", "{expert_zip}", "--env", "MountainCar-v0"], "observation space"),
    "temperature 0": (["--temperature", "0"], "temperature must be > 0"),
    "temperature -1": (["--temperature", "-1"], "temperature must be > 0"),
    "unknown loss": (["--loss", "foo"], "unknown loss 'foo'"),
    "negative nll floor": (["--loss", "nll", "--nll-min-std", "-1"], "minimum std must be a finite number >= 0"),
    "mse on a categorical teacher": (["--loss", "mse"], "mse needs Q-values"),
    "corrupt buffer": (["--buffer", "{corrupt_buffer}"], "not a policykd buffer"),
    "zero eval episodes": (["--eval-episodes", "0"], "--eval-episodes"),
    "zero updates": (["--n-updates", "0"], "n_updates"),
    "zero batch": (["--batch-size", "0"], "batch_size"),
    "zero transitions": (["--n-transitions", "0"], "--n-transitions"),
}


@pytest.mark.parametrize("case", list(DISTILL_ERRORS))
def test_distill_user_errors_are_one_line_and_write_nothing(case, bad_files, cartpole_expert_dir, tmp_path, capsys):
    args, fragment = DISTILL_ERRORS[case]
    paths = {**bad_files, "expert": cartpole_expert_dir, "expert_zip": cartpole_expert_dir / "CartPole-v1.zip"}
    out_dir = tmp_path / "out"
    argv = ["distill", *SMALL, "--out", str(out_dir), *(a.format(**paths) for a in args)]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, "distill", fragment)
    assert not out_dir.exists()


def test_evaluate_and_collect_user_errors(bad_files, cartpole_expert_dir, tmp_path, capsys):
    cases = [
        (["evaluate", str(bad_files["missing"]), "--env", "CartPole-v1"], "evaluate", "does not exist"),
        (["evaluate", str(cartpole_expert_dir / "CartPole-v1.zip"), "--env", "MountainCar-v0"], "evaluate", "space"),
        (["evaluate", str(cartpole_expert_dir), "--episodes", "0"], "evaluate", "episodes"),
        (
            ["evaluate", str(cartpole_expert_dir / "CartPole-v1.zip"), "--env", "CartPole-v1", "--record"],
            "evaluate",
            "--record needs a zoo folder",
        ),
    ]
    out = tmp_path / "buffer.npz"
    cases.append(
        (
            ["collect", "--teacher", str(bad_files["corrupt_zip"]), "--env", "CartPole-v1", "--out", str(out)],
            "collect",
            "not a readable SB3 model",
        )
    )
    for argv, command, fragment in cases:
        code, _, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, command, fragment)
    assert not out.exists()


def test_console_script_error_is_one_line(tmp_path):
    script = Path(sys.executable).with_name("policykd")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out_dir = tmp_path / "out"
    result = subprocess.run(
        [
            str(script),
            "distill",
            "--teacher",
            str(tmp_path / "missing.zip"),
            "--env",
            "CartPole-v1",
            "--out",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert_one_line_error(result.returncode, result.stderr, "distill", "does not exist")
    assert result.stdout == ""
    assert not out_dir.exists()


def _printed_return(stdout: str) -> float:
    match = re.search(r"return (-?\d+\.\d+) ±", stdout)
    assert match, stdout
    return float(match.group(1))


def test_evaluate_the_shipped_teacher(cartpole_expert_dir, capsys):
    code, out, err = run_cli(["evaluate", str(cartpole_expert_dir), "--episodes", "3"], capsys)
    assert code == 0, err
    assert "over 3 episodes" in out
    assert _printed_return(out) > 400


def test_evaluate_a_student_folder(cartpole_distill_run, capsys):
    summary, out_dir = cartpole_distill_run
    # by default evaluate replays its run's evaluation episodes (seed 0 + 10_000, 3 episodes): the same mean
    code, out, err = run_cli(["evaluate", str(out_dir / "student")], capsys)
    assert code == 0, err
    assert out.startswith("student (")
    assert "over 3 episodes (greedy, env seeds from 10000: distill --seed 0's evaluation episodes" in out
    assert _printed_return(out) == pytest.approx(summary["student_return_mean"], abs=0.01)


def test_collect_then_distill_from_the_buffer(cartpole_expert_dir, tmp_path, capsys):
    out = tmp_path / "buffer.npz"
    code, stdout, err = run_cli(
        [
            "collect",
            "--teacher",
            str(cartpole_expert_dir),
            "--n-transitions",
            "400",
            "--n-envs",
            "4",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    buffer = LabelledBuffer.load(out)
    assert len(buffer) == 400 and buffer.teacher_kinds == ("categorical",)
    assert buffer.meta["env_id"] == "CartPole-v1"
    assert f"wrote {out}" in stdout

    run_dir = tmp_path / "run"
    # the buffer's header names its teacher, but a header is data: the user confirms the teacher
    code, _, err = run_cli(["distill", "--buffer", str(out), "--out", str(run_dir)], capsys)
    assert_one_line_error(code, err, "distill", f"--teacher {cartpole_expert_dir}")
    assert not run_dir.exists()
    code, stdout, err = run_cli(
        [
            "distill",
            "--buffer",
            str(out),
            "--teacher",
            str(cartpole_expert_dir),
            "--n-updates",
            "50",
            "--eval-episodes",
            "2",
            "--no-progress",
            "--out",
            str(run_dir),
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_teacher_transitions"] == 400 and summary["n_updates"] == 50
    assert summary["teacher"] == str(cartpole_expert_dir)
    assert "400 teacher transitions" in stdout and f"run folder: {run_dir}" in stdout


def test_zoo_lists_the_shipped_ppo_cartpole(capsys):
    code, out, err = run_cli(["zoo"], capsys)
    assert code == 0, err
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()[2:]]
    assert any(row[0] == "ppo" and row[1] == "CartPole-v1" for row in rows), out
    # the last column is what --teacher takes: a path to the zoo folder, from the current directory
    cartpole = next(row for row in rows if row[0] == "ppo" and row[1] == "CartPole-v1")
    assert Path(cartpole[-1]).resolve() == (Path(__file__).parents[1] / "agents/ppo/CartPole-v1_1").resolve()
