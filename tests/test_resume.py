"""Resume after a crash (issue 16): a distill run stopped anywhere (collection, training,
evaluation, the summary; by an exception, SIGINT or SIGKILL) and resumed with ``--resume`` ends
with the student file an uninterrupted run writes, byte for byte; nothing finished is done again
and TensorBoard shows every step once. Same seed, same file hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from policykd.cli import main
from policykd.errors import PolicyKDError
from policykd.jobs import distill as distill_job
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import CHECKPOINT_FILE, distill
from policykd.jobs.run_folder import run_folder, run_state
from policykd.learn.trainer import Trainer, read_checkpoint

STUDENT_FILE = Path("student") / "student.safetensors"
N_UPDATES, EVAL_EVERY = 200, 100
TIMINGS = ("charts/SPS", "train/wall_time_s")


class Crash(Exception):
    """A crash that gives the run no chance to write anything (as SIGKILL)."""


def config(expert: Path, out: Path, **overrides) -> DistillConfig:
    fields = {
        "teacher": str(expert),
        "n_transitions": 400,
        "n_updates": N_UPDATES,
        "eval_every": EVAL_EVERY,
        "n_eval_episodes": 2,
        "hidden_sizes": (16,),
        "progress_bar": False,
        "checkpoint_every_s": 1e9,  # only the checkpoints around evaluations, at the end and on interrupt
        "out_dir": str(out),
        **overrides,
    }
    return DistillConfig(**fields)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scalar_steps(tb_dir: Path) -> dict[str, list[int]]:
    """Each scalar tag's steps as TensorBoard shows them (purged steps left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def reference(cartpole_expert_dir, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, distill(config(cartpole_expert_dir, out))


class Counts:
    """How often each expensive part ran (baselines, collections, updates, student evaluations),
    and one fault: a crash that writes nothing (as SIGKILL) or, at an update, SIGINT. ``at``
    counts the calls of the part it strikes since the Counts was made."""

    WHERE = {  # fault -> (the part it strikes, at which of its calls)
        "collection": ("collection", 1),
        "crash-in-update": ("update", 151),
        "sigint-in-update": ("update", 151),
        "evaluation": ("evaluation", 2),  # the last one
        "summary": ("summary", 1),
    }

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fault: str | None, at: int | None = None) -> None:
        self.calls: Counter[str] = Counter()
        self.arm(fault, at)
        self.count(monkeypatch, distill_job, "measure_baselines", "baselines")
        self.count(monkeypatch, distill_job, "collect", "collection")
        self.count(monkeypatch, distill_job, "_evaluate_task", "evaluation")
        self.count(monkeypatch, distill_job, "single_task_summary", "summary")
        self.count(monkeypatch, distill_job, "multitask_summary", "summary")
        self.count(monkeypatch, Trainer, "step", "update")

    def arm(self, fault: str | None, at: int | None = None) -> None:
        """The next fault (one per run)."""
        self.fault = fault
        self.where = None if fault is None else (self.WHERE[fault][0], at or self.WHERE[fault][1])

    def count(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str, what: str) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            self.calls[what] += 1
            if self.where == (what, self.calls[what]):
                fault = self.fault
                self.arm(None)
                if fault == "sigint-in-update":
                    os.kill(os.getpid(), signal.SIGINT)  # arrives mid-update: the update is finished first
                else:
                    raise Crash(fault)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        # what ran in the stopped run and the resumed one together (a crashed call counts)
        ("collection", {"baselines": 1, "collection": 2, "update": N_UPDATES, "evaluation": 2}),
        ("crash-in-update", {"baselines": 1, "collection": 1, "update": N_UPDATES + 51, "evaluation": 2}),
        ("sigint-in-update", {"baselines": 1, "collection": 1, "update": N_UPDATES, "evaluation": 2}),
        ("evaluation", {"baselines": 1, "collection": 1, "update": N_UPDATES, "evaluation": 3}),
        ("summary", {"baselines": 1, "collection": 1, "update": N_UPDATES, "evaluation": 2}),
    ],
)
def test_a_resumed_run_writes_the_uninterrupted_student(
    cartpole_expert_dir, reference, tmp_path, monkeypatch, fault, expected
):
    """SIGINT at update 151 finishes it, checkpoints and stops. A crash resumes from the last
    checkpoint: after the evaluation at update 100 for a crash at 151 (150 + 100 updates run, the
    crashed call counted), the one before the last evaluation for a crash in it, the end of
    training for a crash in the summary; a crash in collection collects again."""
    reference_out, reference_summary = reference
    out = tmp_path / "run"
    counts = Counts(monkeypatch, fault)
    with pytest.raises((Crash, KeyboardInterrupt)) as stopped:
        distill(config(cartpole_expert_dir, out))
    assert run_state(out)["state"] == "failed"
    if fault == "sigint-in-update":
        message = "interrupted at update 151 of 200 (checkpoint saved); resume with the same command plus --resume"
        assert str(stopped.value) == message
        assert read_checkpoint(out / CHECKPOINT_FILE).n_updates_done == 151

    summary = distill(config(cartpole_expert_dir, out, resume=True))
    assert run_state(out)["state"] == "done"
    assert sha256(out / STUDENT_FILE) == sha256(reference_out / STUDENT_FILE)
    assert {k: counts.calls[k] for k in expected} == expected  # nothing finished is done again
    for key in ("student_return_mean", "teacher_return_mean", "random_return_mean", "n_updates"):
        assert summary[key] == reference_summary[key], key
    timeless = [
        {k: v for k, v in s["final_train_metrics"].items() if k not in TIMINGS} for s in (summary, reference_summary)
    ]
    assert timeless[0] == timeless[1]
    assert scalar_steps(out / "tb") == scalar_steps(reference_out / "tb")  # no step twice, none missing


def test_the_same_seed_writes_the_same_student_file(cartpole_expert_dir, reference, tmp_path):
    reference_out, _ = reference
    distill(config(cartpole_expert_dir, tmp_path / "again"))
    distill(config(cartpole_expert_dir, tmp_path / "seed1", seed=1))
    assert sha256(tmp_path / "again" / STUDENT_FILE) == sha256(reference_out / STUDENT_FILE)
    assert sha256(tmp_path / "seed1" / STUDENT_FILE) != sha256(reference_out / STUDENT_FILE)


def test_resume_refuses_other_options_and_leaves_a_finished_run_as_it_is(cartpole_expert_dir, reference, tmp_path):
    reference_out, reference_summary = reference
    with pytest.raises(PolicyKDError, match="was run with temperature = None, this command gives 2.0"):
        distill(config(cartpole_expert_dir, reference_out, resume=True, temperature=2.0))
    before = {p: p.stat().st_mtime_ns for p in reference_out.rglob("*")}
    again = distill(config(cartpole_expert_dir, reference_out, resume=True, checkpoint_every_s=5.0, progress_bar=True))
    assert again == json.loads((reference_out / "summary.json").read_text())
    assert again["student_return_mean"] == reference_summary["student_return_mean"]
    assert {p: p.stat().st_mtime_ns for p in reference_out.rglob("*")} == before  # nothing written


def test_resume_options_are_checked_before_anything_runs(cartpole_expert_dir, tmp_path):
    with pytest.raises(PolicyKDError, match="--resume needs --out"):
        distill(dataclasses.replace(config(cartpole_expert_dir, tmp_path), out_dir=None, resume=True))
    with pytest.raises(PolicyKDError, match="pass one of them"):
        distill(config(cartpole_expert_dir, tmp_path / "run", resume=True, overwrite=True))
    with pytest.raises(PolicyKDError, match="--checkpoint-every must be >= 0"):
        distill(config(cartpole_expert_dir, tmp_path / "run", checkpoint_every_s=-1.0))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(PolicyKDError, match="holds no run"):
        distill(config(cartpole_expert_dir, tmp_path / "other", resume=True))
    with run_folder(tmp_path / "busy", dataclasses.asdict(config(cartpole_expert_dir, tmp_path / "busy"))):
        with pytest.raises(PolicyKDError, match=f"being written by process {os.getpid()}"):
            distill(config(cartpole_expert_dir, tmp_path / "busy", resume=True))


def test_a_failed_run_points_to_resume(cartpole_expert_dir, tmp_path, monkeypatch):
    Counts(monkeypatch, "summary")
    with pytest.raises(Crash):
        distill(config(cartpole_expert_dir, tmp_path / "run", n_updates=100, eval_every=0))
    with pytest.raises(PolicyKDError, match=r"already holds an earlier run \(failed\); pass another --out, --resume"):
        distill(config(cartpole_expert_dir, tmp_path / "run", n_updates=100, eval_every=0))


TASKS = (("CartPole-v1", "agents/ppo/CartPole-v1_1"), ("Acrobot-v1", "agents/dqn/Acrobot-v1_1"))


def test_a_multitask_run_resumes_too(cartpole_expert_dir, tmp_path, monkeypatch):
    """Crash while collecting the second task's buffer, then (resumed) at update 75: the first
    task's buffer, the evaluation at update 50 and the updates before it are kept."""
    monkeypatch.chdir(cartpole_expert_dir.parents[2])
    budget = {"tasks": TASKS, "n_transitions": 300, "n_updates": 100, "eval_every": 50, "n_eval_episodes": 1}
    budget.update(progress_bar=False, checkpoint_every_s=1e9)
    reference = distill(DistillConfig(out_dir=str(tmp_path / "reference"), **budget))
    counts = Counts(monkeypatch, "collection", at=2)
    stopped = DistillConfig(out_dir=str(tmp_path / "run"), **budget)
    with pytest.raises(Crash):
        distill(stopped)
    counts.arm("crash-in-update", at=75)
    with pytest.raises(Crash):
        distill(dataclasses.replace(stopped, resume=True))
    summary = distill(dataclasses.replace(stopped, resume=True))
    files = [Path(d) / "student" / "multitask.safetensors" for d in (summary["out_dir"], reference["out_dir"])]
    assert sha256(files[0]) == sha256(files[1])
    assert summary["tasks"] == reference["tasks"]
    # 3 collections (one crashed), 75 + 50 updates (one crashed), 2 evaluations of 2 tasks
    assert {k: counts.calls[k] for k in ("collection", "update", "evaluation")} == {
        "collection": 3,
        "update": 125,
        "evaluation": 4,
    }


@pytest.mark.expensive
def test_sigkill_then_resume_from_the_command_line(cartpole_expert_dir, reference, tmp_path, capsys):
    """A real ``kill -9`` of ``policykd distill`` during training (a checkpoint after every update
    here), then the same command plus ``--resume``: the student file is the uninterrupted run's
    (the checkpoint interval is not part of the result)."""
    reference_out, _ = reference
    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(cartpole_expert_dir), "--hidden", "16", "--n-transitions", "400"]
    argv += ["--n-updates", str(N_UPDATES), "--eval-every", str(EVAL_EVERY), "--eval-episodes", "2"]
    argv += ["--checkpoint-every", "0", "--no-progress", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "policykd.cli", *argv], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT_FILE).exists() and time.monotonic() < deadline:  # training has started
        time.sleep(0.01)
    process.kill()
    process.wait(timeout=60)
    assert run_state(out)["state"] == "running"  # what a killed run leaves; no process holds its lock
    assert 0 < read_checkpoint(out / CHECKPOINT_FILE).n_updates_done < N_UPDATES
    (out / ".checkpoint.safetensors.k1ll3d.tmp").write_bytes(b"half a file")  # as a kill mid-write leaves
    main([*argv, "--resume"])
    assert not list(out.rglob(".*.tmp*"))
    assert "run folder" in capsys.readouterr().out
    assert run_state(out)["state"] == "done"
    assert sha256(out / STUDENT_FILE) == sha256(reference_out / STUDENT_FILE)


def test_a_stopped_sweep_reruns_only_the_cells_it_had_not_finished(cartpole_expert_dir, tmp_path, monkeypatch):
    """`policykd sweep` resumes by running the same command again: its finished (tau, seed) cells
    are kept in out/cells/ with their settings; a cell of other settings is computed again."""
    from policykd.jobs import sweep as sweep_job
    from policykd.jobs.sweep import SweepConfig, run_sweep

    cells: list[str] = []
    original = sweep_job._distil_one

    def distil_one(teacher, buffer, tau, seed, *args):
        cells.append(f"tau{tau:g}-seed{seed}")
        if cells == ["tau0.5-seed0", "tau2-seed0"]:
            raise Crash("the second cell")
        return original(teacher, buffer, tau, seed, *args)

    monkeypatch.setattr(sweep_job, "_distil_one", distil_one)
    monkeypatch.setattr("policykd.jobs.plots.plot_sweep", lambda summary, path: None)  # seconds of matplotlib
    budget = {"temperatures": (0.5, 2.0), "n_seeds": 1, "n_transitions": 256, "n_envs": 4, "n_updates": 10}
    budget.update(batch_size=32, hidden_sizes=(8,), n_eval_episodes=1, n_metric_states=200)
    sweep = SweepConfig(teacher=str(cartpole_expert_dir), out_dir=str(tmp_path / "run"), **budget)
    with pytest.raises(Crash):
        run_sweep(sweep)
    resumed = run_sweep(sweep)
    assert cells == ["tau0.5-seed0", "tau2-seed0", "tau2-seed0"]
    reference = run_sweep(dataclasses.replace(sweep, out_dir=str(tmp_path / "reference")))
    timeless = [[{k: v for k, v in r.items() if k != "wall_time_s"} for r in s["runs"]] for s in (resumed, reference)]
    assert timeless[0] == timeless[1] and resumed["rows"] == reference["rows"]
    cells.clear()
    run_sweep(dataclasses.replace(sweep, temperatures=(2.0, 1.0)))  # other cells: kept and added
    assert cells == ["tau1-seed0"]
    run_sweep(dataclasses.replace(sweep, temperatures=(2.0,), n_updates=11))  # other settings: computed again
    assert cells == ["tau1-seed0", "tau2-seed0"]


def test_a_stopped_drivers_comparison_reruns_only_its_unfinished_cells(cartpole_expert_dir, tmp_path, monkeypatch):
    from policykd.jobs import drivers as drivers_job
    from policykd.jobs.drivers import DriversConfig, compare_drivers

    cells: list[str] = []
    original = drivers_job._drive_one

    def drive_one(teacher, driver, schedule, seed, *args):
        cells.append(f"{driver}-seed{seed}")
        if cells == ["teacher-seed0", "student-seed0"]:
            raise Crash("the second cell")
        return original(teacher, driver, schedule, seed, *args)

    monkeypatch.setattr(drivers_job, "_drive_one", drive_one)
    monkeypatch.setattr("policykd.jobs.plots.plot_drivers", lambda summary, path: None)
    config = DriversConfig(
        teacher=str(cartpole_expert_dir), drivers=("teacher", "student"), n_seeds=1, n_rounds=2,
        n_transitions_per_round=64, n_updates_per_round=10, n_envs=4, n_eval_episodes=1, hidden_sizes=(8,),
        batch_size=32, out_dir=str(tmp_path / "run"),
    )  # fmt: skip
    with pytest.raises(Crash):
        compare_drivers(config)
    resumed = compare_drivers(config)
    assert cells == ["teacher-seed0", "student-seed0", "student-seed0"]
    reference = compare_drivers(dataclasses.replace(config, out_dir=str(tmp_path / "reference")))
    assert resumed["curves"] == reference["curves"]
