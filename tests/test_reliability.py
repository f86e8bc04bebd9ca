"""A run folder has one writer and a state; a diverged or interrupted run says so in one line; bad
numbers and paths are refused before anything runs (issue 16)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import run_cli  # the one in-process CLI runner of the tests

from policykd.errors import PolicyKDError
from policykd.fileio import write_json_atomic
from policykd.jobs.run_folder import check_finished, run_folder, run_state

TINY = ["--n-transitions", "300", "--n-updates", "20", "--eval-episodes", "1", "--no-progress"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_finished_run_is_never_overwritten_silently(cartpole_expert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(cartpole_expert_dir), *TINY, "--out", str(out)]
    assert run_cli(argv, capsys)[0] == 0
    assert run_state(out)["state"] == "done" and (out / "config.yml").is_file()
    before = (out / "student" / "student.safetensors").read_bytes()
    (out / "student" / "policy.onnx").write_text("an export of the first student")

    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--overwrite" in one_line(err)
    assert (out / "student" / "student.safetensors").read_bytes() == before  # nothing lost

    code, _, err = run_cli([*argv, "--overwrite", "--seed", "1"], capsys)
    assert code == 0, err
    assert not (out / "student" / "policy.onnx").exists()  # nothing stale from the first run
    assert json.loads((out / "summary.json").read_text())["seed"] == 1


def test_one_writer_at_a_time(tmp_path):
    with run_folder(tmp_path / "run", {"a": 1}):
        with pytest.raises(PolicyKDError, match=f"being written by process {os.getpid()}"):
            with run_folder(tmp_path / "run", {"a": 2}, overwrite=True):
                pass
    assert run_state(tmp_path / "run")["state"] == "done"


def test_a_failed_run_records_its_error_and_readers_refuse_it(tmp_path):
    with pytest.raises(RuntimeError):
        with run_folder(tmp_path / "run", {}):
            raise RuntimeError("the disk\nis full")
    state = run_state(tmp_path / "run")
    assert state["state"] == "failed" and state["error"] == "the disk is full"
    with pytest.raises(PolicyKDError, match="failed .the disk is full., not done"):
        check_finished(tmp_path / "run", "student run/student")


def test_a_diverged_run_stops_in_one_line(cartpole_expert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(cartpole_expert_dir), *TINY, "--lr", "1e20", "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    line = one_line(err)
    assert code == 2 and "training diverged" in line and "at update" in line
    assert not (out / "summary.json").exists()
    assert run_state(out)["state"] == "failed"


def test_json_files_are_always_valid_json(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), 1.5]})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=pytest.fail) == {"a": None, "b": [None, 1.5]}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--hidden", "200000", "200000"], "a distilled student is meant to be small"),
        (["--hidden", "64,abc"], "invalid int value"),
        (["--batch-size", "1000"], "more than the 300 transitions"),
        (["--out", "/proc/policykd-cannot-be-here"], "cannot create the run folder"),
    ],
)
def test_bad_numbers_and_paths_are_one_line(cartpole_expert_dir, args, fragment, capsys):
    code, _, err = run_cli(["distill", "--teacher", str(cartpole_expert_dir), *TINY, *args], capsys)
    assert code == 2 and fragment in one_line(err)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_so_and_is_marked_failed(cartpole_expert_dir, tmp_path, signum):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "policykd.cli", "distill", "--teacher", str(cartpole_expert_dir)]
    command += ["--n-transitions", "300", "--n-updates", "1000000", "--no-progress", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "tb").exists() and time.monotonic() < deadline:  # training has started
        time.sleep(0.2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted" in one_line(err) and "resume with the same command plus --resume" in err
    assert run_state(out)["state"] == "failed"
    assert Path(out / "config.yml").is_file()


def test_a_killed_run_is_shown_as_stopped_not_running(tmp_path):
    """A SIGKILLed process cannot mark its run failed: while nobody holds the lock its 'running'
    state is shown as stopped, and a live run (the lock held) as running."""
    from policykd.jobs.run_folder import check_reusable

    with run_folder(tmp_path / "run", {}):
        with pytest.raises(PolicyKDError, match=r"earlier run \(running\)"):
            check_reusable(tmp_path / "run", overwrite=False)
    state = run_state(tmp_path / "run")
    write_json_atomic(tmp_path / "run" / "state.json", {**state, "state": "running"})  # as a kill -9 leaves it
    with pytest.raises(PolicyKDError, match=r"stopped: its process is gone.*--resume"):
        check_reusable(tmp_path / "run", overwrite=False)
