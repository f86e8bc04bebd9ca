"""The ``policykd`` command line: user errors are one line on stderr with a non-zero exit and no
traceback, and nothing is written; evaluate, collect and zoo print what they should."""

from __future__ import annotations

import dataclasses
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


# -- every command takes --config, --no-progress, -q and -v (issue 17) ---------------------------------


TINY = ["--n-transitions", "1000", "--n-updates", "100", "--eval-episodes", "2", "--hidden", "8", "--batch-size", "64"]
# what may differ between two runs of one config: timings and where they were written
UNSTABLE = {"wall_time_s", "out_dir", "teacher_latency_ms", "student_latency_ms", "final_train_metrics"}


def _stable(summary: dict) -> dict:
    train = {k: v for k, v in summary["final_train_metrics"].items() if k not in ("charts/SPS", "train/wall_time_s")}
    return {**{k: v for k, v in summary.items() if k not in UNSTABLE}, "train": train}


def test_a_run_folders_config_yml_reruns_the_run(cartpole_expert_dir, tmp_path, capsys, monkeypatch):
    """``distill --config runs/.../config.yml --out NEW`` gives the same summary; the default
    evaluation points (a quarter of the updates) leave the final numbers as they are."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["distill", "--teacher", str(cartpole_expert_dir), *TINY, "--out", "first"], capsys)
    assert code == 0, err
    config = tmp_path / "first" / "config.yml"
    first = json.loads((tmp_path / "first" / "summary.json").read_text())
    code, _, err = run_cli(["distill", "--config", str(config)], capsys)  # its --out holds that run
    assert_one_line_error(code, err, "distill", "--out first already holds an earlier run")
    for out, extra in (("again", []), ("end-only", ["--eval-every", "0"])):
        code, _, err = run_cli(["distill", "--config", str(config), "--out", out, *extra], capsys)
        assert code == 0, err
        assert _stable(json.loads((tmp_path / out / "summary.json").read_text())) == _stable(first), out
    import yaml

    assert yaml.safe_load((tmp_path / "again" / "config.yml").read_text()) == {
        **yaml.safe_load(config.read_text()),
        "out_dir": "again",
    }


def test_every_command_reads_its_options_from_a_config_file(cartpole_expert_dir, tmp_path, capsys):
    from policykd.cli import parse_args

    def config(text: str) -> str:
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.yml"
        path.write_text(text)
        return str(path)

    args = parse_args(
        ["evaluate", "src", "--config", config("episodes: 4\nseed: 3\nenv: Acrobot-v1\nno-progress: true\n")]
    )
    assert (args.episodes, args.seed, args.env_id, args.progress_bar) == (4, 3, "Acrobot-v1", True)  # flag, not value
    args = parse_args(["evaluate", "src", "--seed", "5", "--config", config("seed: 3\nprogress_bar: false\n")])
    assert (args.seed, args.progress_bar, args.episodes) == (5, False, None), "the command line wins; defaults remain"
    args = parse_args(["train-expert", "--config", config("algo: ppo\nenv: CartPole-v1\nzoo-dir: z\n")])
    assert (args.algo, args.env_id, args.zoo_dir, args.seed) == ("ppo", "CartPole-v1", "z", 0)
    args = parse_args(["zoo", "--config", config(f"zoo: {cartpole_expert_dir.parents[1]}\nquiet: true\n")])
    assert args.zoo_dir == str(cartpole_expert_dir.parents[1]) and args.quiet and args.progress_bar is False
    args = parse_args(["export", "student", "--config", config("out: s.onnx\n")])
    assert args.out == "s.onnx"
    out = tmp_path / "b.npz"
    path = config(f"teacher: {cartpole_expert_dir}\nn-transitions: 200\nn_envs: 2\nout: {out}\n")
    code, stdout, err = run_cli(["collect", "--config", path], capsys)  # --out, required, comes from the file
    assert code == 0, err
    assert len(LabelledBuffer.load(out)) == 200 and f"wrote {out}" in stdout
    for argv, fragment in (
        (["evaluate", "src", "--config", config("episode: 3\n")], "unknown key 'episode'"),
        (["collect", "--config", config("n-transitions: 10\n")], "--out is required"),
        (["zoo", "--config", config("config: other.yml\n")], "unknown key 'config'"),
        (["zoo", "-q", "-v"], "contradict"),
    ):
        code, _, err = run_cli(argv, capsys)
        assert_one_line_error(code, err, argv[0], fragment)


def test_verbose_prints_each_step_and_quiet_prints_the_result_only(cartpole_expert_dir, tmp_path, capsys):
    argv = ["collect", "--teacher", str(cartpole_expert_dir), "--n-transitions", "200", "--n-envs", "2"]
    code, out, err = run_cli([*argv, "--out", str(tmp_path / "a.npz"), "-v"], capsys)
    assert code == 0 and "wrote" in out
    assert re.search(r"^policykd: collect: 200 transitions in \d+\.\d s$", err, re.M), err
    code, out, err = run_cli([*argv, "--out", str(tmp_path / "b.npz"), "-q"], capsys)
    assert code == 0 and "wrote" in out and err == ""
    code, out, err = run_cli([*argv, "--out", str(tmp_path / "c.npz"), "-v", "--no-progress"], capsys)
    assert code == 0 and "policykd: collect" not in err  # no bar, no step line


def test_progress_bars_show_on_a_terminal_and_never_in_a_pipe(cartpole_expert_dir, tmp_path, capsys, monkeypatch):
    import fcntl
    import pty
    import struct
    import termios
    import threading

    argv = ["collect", "--teacher", str(cartpole_expert_dir), "--n-transitions", "3000", "--n-envs", "2", "--out"]
    code, out, err = run_cli([*argv, str(tmp_path / "a.npz")], capsys)
    assert code == 0 and "wrote" in out and err == "", err  # stderr is no terminal: no bar, no carriage returns
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    chunks: list[bytes] = []

    def read() -> None:  # while the command runs: Linux drops what is unread when the terminal closes
        while chunk := _read_or_empty(primary):
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with open(secondary, "w", buffering=1) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        code, _, _ = run_cli([*argv, str(tmp_path / "b.npz")], capsys)
        monkeypatch.undo()
    reader.join(10)
    os.close(primary)
    shown = b"".join(chunks).decode(errors="replace")
    assert code == 0
    assert "collect:" in shown and "/3000 [" in shown, shown  # the bar ...
    # ... with its ETA slot (a number once tqdm has refreshed; "?" if collection ended before the first refresh)
    assert re.search(r"\d\d:\d\d<(\d\d:\d\d|\?), ([\d.]+|\?) transitions/s", shown), shown


def _read_or_empty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal closed
        return b""


def test_zoo_takes_zoo_dir_and_lists_the_presets(cartpole_expert_dir, tmp_path, capsys, monkeypatch):
    zoo = tmp_path / "zoo"
    (zoo / "ppo").mkdir(parents=True)
    (zoo / "ppo" / "CartPole-v1_1").symlink_to(cartpole_expert_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)  # outside the checkout
    for argv, env in ((["zoo", "--zoo", str(zoo)], None), (["zoo"], str(zoo))):
        if env:
            monkeypatch.setenv("POLICYKD_ZOO", env)
        code, out, err = run_cli(argv, capsys)
        assert code == 0, err
        rows = [line for line in out.splitlines() if line.startswith("| ppo ")]
        assert len(rows) == 1 and "CartPole-v1" in rows[0]
        assert os.path.abspath(rows[0].strip("| ").split("|")[-1].strip()) == str(zoo / "ppo" / "CartPole-v1_1")
        assert re.search(r"^env presets \(--env\): Acrobot-v1, .*CartPole-v1, .*Pendulum-v1", out, re.M), out
    code, _, err = run_cli(["zoo", "--zoo", str(tmp_path / "none")], capsys)
    assert_one_line_error(code, err, "zoo", f"no expert zoo at {tmp_path / 'none'}")


def test_experts_resolve_from_the_zoo_and_missing_ones_say_where_they_were_looked_for(
    cartpole_expert_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # outside the checkout: relative paths are read from here
    argv = ["distill", *SMALL, "--out", str(tmp_path / "out")]
    code, _, err = run_cli([*argv, "--teacher", "agents/ppo/CartPole-v1_1"], capsys)
    assert_one_line_error(code, err, "distill", f"looked for {tmp_path / 'agents/ppo/CartPole-v1_1'}")
    assert f"the zoo holds it as {cartpole_expert_dir}: pass that path" in err
    monkeypatch.setenv("POLICYKD_ZOO", str(tmp_path / "empty-zoo"))
    code, _, err = run_cli(argv, capsys)  # the preset's expert, in a zoo that lacks it
    assert_one_line_error(code, err, "distill", f"{tmp_path / 'empty-zoo/ppo/CartPole-v1_1'} does not exist")
    assert "POLICYKD_ZOO=" in err and "--zoo DIR" in err and "sb3/ppo-CartPole-v1" in err
    code, _, err = run_cli([*argv, "--zoo", str(cartpole_expert_dir.parents[1]), "--temperature", "0"], capsys)
    assert_one_line_error(code, err, "distill", "temperature must be > 0")  # the expert was found, then the check
    assert not (tmp_path / "out").exists()


def test_a_multitask_config_yml_gives_the_same_tasks(tmp_path, capsys, monkeypatch):
    """A run folder's config.yml holds ``tasks`` as [env, teacher] pairs: they come back as tuples."""
    import yaml

    import policykd.jobs.distill as distill_module
    from policykd.jobs.config import DistillConfig

    tasks = (("CartPole-v1", None), ("Acrobot-v1", "agents/dqn/Acrobot-v1_1"))
    written = DistillConfig(tasks=tasks, task_weights=(2.0, 1.0), hidden_sizes=(32, 32), out_dir="first")
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(written))), sort_keys=False))
    seen = []
    monkeypatch.setattr(distill_module, "distill", lambda config: seen.append(config) or {"tasks": {}, "out_dir": ""})
    monkeypatch.setattr("policykd.cli._print_tasks_summary", lambda s: None)
    code, _, err = run_cli(["distill", "--config", str(path), "--out", "again"], capsys)
    assert code == 0, err
    assert seen == [dataclasses.replace(written, out_dir="again")]


@pytest.mark.parametrize(
    "argv, threads",
    [
        (["zoo"], 1),
        (["--threads", "3", "zoo"], 3),
        (["zoo", "--threads", "2"], 2),
        (["--threads", "3", "zoo", "--threads", "2"], 2),
    ],
)
def test_threads_goes_before_or_after_the_command(argv, threads, monkeypatch, capsys):
    import torch

    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    main(argv)
    assert set_to == [threads]
