"""Resume after SIGKILL: kill `policykd distill` at 20 seeded random moments (and `policykd sweep` at
a few), resume each, and count the runs that end exactly as an uninterrupted one.

    python benchmarks/faults.py            # writes benchmarks/results/faults.md (+ .json)
    python benchmarks/faults.py --quick    # smaller CartPole budgets: results/faults-quick.md (+ .json)

Per job, one uninterrupted run of a small CartPole job is the reference. Then the same command
into a fresh folder, killed with SIGKILL at a moment drawn (seed 0) in its collection, training or
evaluation phase in turn (a third of the moments each): a delay after the start of that phase in
the run's own progress (its collection, a stretch of training, an evaluation), uniform over the
time the phase took in the reference, so the machine's load does not move the kill into another
phase. Then the command that resumes it: `distill ... --resume`; for the sweep, the same command
again (its finished cells are kept in its folder).

Each run is instrumented (a few lines wrapped around the job's functions, written unbuffered to a
file, so a kill loses none): what it was doing when killed, and the work the killed and the
resumed process did together beyond the uninterrupted run's: updates, transitions collected,
evaluations of the student and teacher baselines started again, and sweep cells started again (wall
times are kept in the .json only: on a shared machine they measure the load more than the work).
A distill trial passes when the resumed
run is `done`, its student file is byte-identical to the reference's and TensorBoard shows the
reference's steps; a sweep trial when its per-cell results (all but the wall time) and its table
are the reference's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS_DIR, parse_quick_args, provenance, publish, results_name

from policykd.fileio import read_json, write_json_atomic
from policykd.jobs.run_folder import run_state
from policykd.learn.trainer import read_checkpoint
from policykd.zoo.presets import ZOO_DIR

REPO = ZOO_DIR.parent
TEACHER = "agents/ppo/CartPole-v1_1"
SEED, CHECKPOINT_EVERY_S = 0, 1.0
# Runs a policykd command (argv[5:]) with each expensive part noted in argv[1] as "<seconds since
# argv[2]> <code> [<count>]": S start, B/b teacher baselines, C collection (c: transitions so far),
# K collected, X/x sweep cell, U update done, E/e student evaluation, D done. Lines go out
# unbuffered (os.write), so a kill loses none. argv[3:5] = "<code>:<n> <delay s>": the process
# SIGKILLs itself that long after its n-th note of that code (a timer thread: the moment follows
# the run's own progress, whatever the machine's load), or never for "-".
CHILD = r"""
import collections, os, signal, sys, threading, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
t0, seen = float(sys.argv[2]), collections.Counter()
kill_code, _, kill_n = sys.argv[3].partition(":")
def note(code, count=""):
    os.write(fd, f"{time.time() - t0:.4f} {code} {count}\n".encode())
    seen[code] += 1
    if code == kill_code and seen[code] == int(kill_n):
        threading.Timer(float(sys.argv[4]), os.kill, (os.getpid(), signal.SIGKILL)).start()
from policykd.data.buffers import LabelledBuffer
from policykd.jobs import distill, experiment, sweep
from policykd.learn.trainer import Trainer
def wrap(owner, name, before, after):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
        before(args)
        out = original(*args, **kwargs)
        after(args)
        return out
    setattr(owner, name, wrapped)
nothing = lambda args: None
for owner, name in ((distill, "measure_baselines"), (experiment, "teacher_baselines")):
    wrap(owner, name, lambda a: note("B"), lambda a: note("b"))
for owner, name in ((distill, "_evaluate_task"), (sweep, "_evaluate_student")):
    wrap(owner, name, lambda a: note("E"), lambda a: note("e"))
for owner in (distill, sweep):
    wrap(owner, "collect", lambda a: note("C"), lambda a: note("K"))
wrap(sweep, "_distil_one", lambda a: note("X"), lambda a: note("x"))
wrap(LabelledBuffer, "add", nothing, lambda a: note("c", len(a[0])))
wrap(Trainer, "step", nothing, lambda a: note("U", a[0].n_updates_done))
from policykd.cli import main
note("S")
main(sys.argv[5:])
note("D")
"""
PHASES = {"S": "start", "B": "teacher baselines", "b": "start", "C": "collection", "c": "collection"}
PHASES.update({"K": "training", "X": "training", "U": "training", "E": "evaluation", "e": "training"})
PHASES.update({"x": "after a cell", "D": "done (the kill came too late)"})
Notes = list[tuple[float, str, int]]


@dataclasses.dataclass(frozen=True)
class Job:
    """A command to kill and resume; ``argv(out)`` runs it into ``out``."""

    name: str
    argv: Callable[[Path], list[str]]
    resume: tuple[str, ...]  # what the resuming command adds
    n_kills: int
    budget: str  # its budget, in words
    training_starts: str  # the code a stretch of training starts with ("K" then "e", or "X" per sweep cell)


def distill_job(quick: bool) -> Job:
    n_transitions, n_updates, eval_every, n_eval = (2_000, 1_000, 250, 4) if quick else (10_000, 4_000, 1_000, 10)
    argv = [
        "distill", "--teacher", TEACHER, "--n-transitions", str(n_transitions), "--n-updates", str(n_updates),
        "--eval-every", str(eval_every), "--eval-episodes", str(n_eval), "--hidden", "32", "32",
        "--checkpoint-every", str(CHECKPOINT_EVERY_S), "--seed", str(SEED), "--no-progress",
    ]  # fmt: skip
    budget = (
        f"{n_transitions:,} transitions, {n_updates:,} updates, an evaluation of {n_eval} episodes every "
        f"{eval_every:,} updates, `--checkpoint-every {CHECKPOINT_EVERY_S:g}`"
    )
    return Job("distill", lambda out: [*argv, "--out", str(out)], ("--resume",), 20, budget, "K")


def sweep_job(quick: bool) -> Job:
    n_transitions, n_updates, taus = (1_000, 300, ("0.5", "2")) if quick else (5_000, 1_000, ("0.5", "1", "2"))
    argv = [
        "sweep", "--teacher", TEACHER, "--temperatures", *taus, "--seeds", "1", "--n-transitions", str(n_transitions),
        "--n-updates", str(n_updates), "--eval-episodes", "2", "--hidden", "32", "32", "--seed", str(SEED),
    ]  # fmt: skip
    budget = f"τ {', '.join(taus)}, one seed: {n_transitions:,} transitions, {n_updates:,} updates per cell"
    return Job("sweep", lambda out: [*argv, "--out", str(out)], (), 6, budget, "X")


def run(argv: list[str], notes: Path, kill: tuple[str, float] = ("-", 0.0)) -> float:
    """Run the instrumented command, killed as ``kill`` says (see CHILD). Returns the wall time."""
    notes.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    command = [sys.executable, "-c", CHILD, str(notes), repr(started), kill[0], str(kill[1]), *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    process = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if process.returncode not in (0, -signal.SIGKILL) or (kill[0] == "-" and process.returncode != 0):
        raise SystemExit(f"{' '.join(argv)} failed: {process.stderr.decode()[-2000:]}")
    return time.time() - started


def read_notes(path: Path) -> Notes:
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        t, code, *count = line.split()
        rows.append((float(t), code, int(count[0]) if count else 0))
    return rows


def work(notes: Notes) -> dict[str, int]:
    """What a process did: updates, transitions collected (per collection, its last count),
    student evaluations, teacher baselines and sweep cells started."""
    transitions, current = 0, 0
    for _, code, count in notes:
        if code == "C":
            transitions, current = transitions + current, 0
        elif code == "c":
            current = count
    started = {key: sum(code == c for _, c, _ in notes) for key, code in (("evaluations", "E"), ("baselines", "B"))}
    return {
        "updates": sum(code == "U" for _, code, _ in notes),
        "transitions": transitions + current,
        **started,
        "cells": sum(code == "X" for _, code, _ in notes),
    }


def phase_spans(notes: Notes, training_starts: str) -> dict[str, list[tuple[str, float]]]:
    """The reference's collection, training and evaluation (of the teachers and of the student) as
    ``(<code>:<n>, seconds)``: each span starts at the n-th note of that code and lasts that long.
    Training runs from a ``training_starts`` note (distill: ``K``, then after each evaluation ``e``;
    sweep: each cell's ``X``) to the next evaluation."""
    times = {code: [t for t, c, _ in notes if c == code] for code in "BbCKEeX"}

    def spans(code: str, begins: list[float], ends: list[float]) -> list[tuple[str, float]]:
        return [(f"{code}:{j + 1}", end - begin) for j, (begin, end) in enumerate(zip(begins, ends))]

    if training_starts == "K":
        training = [("K:1", times["E"][0] - times["K"][0])] + spans("e", times["e"], times["E"][1:])
    else:
        training = spans("X", times["X"], times["E"])
    return {
        "collection": spans("C", times["C"], times["K"]),
        "training": training,
        "evaluation": spans("B", times["B"], times["b"]) + spans("E", times["E"], times["e"]),
    }


def kill_moments(spans: dict[str, list[tuple[str, float]]], n: int, rng: np.random.Generator) -> list[tuple]:
    """``n`` moments ``(phase, code:n, delay)``: collection, training and evaluation in turn, each
    uniform over the reference's time in that phase."""
    moments = []
    for i in range(n):
        phase = ("collection", "training", "evaluation")[i % 3]
        lengths = np.array([length for _, length in spans[phase]])
        k = rng.choice(len(lengths), p=lengths / lengths.sum())
        moments.append((phase, spans[phase][k][0], float(rng.random() * lengths[k])))
    return moments


def tb_steps(tb_dir: Path) -> dict[str, list[int]]:
    """Each scalar tag's steps as TensorBoard shows them (what a resumed run purged left out), per run folder."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # each purge is announced as a warning
    steps = {}
    for folder in sorted({path.parent for path in tb_dir.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(folder))
        events.Reload()
        for tag in events.Tags()["scalars"]:
            steps[f"{folder.relative_to(tb_dir)}/{tag}"] = [e.step for e in events.Scalars(tag)]
    return steps


def outcome(job: Job, out: Path) -> dict[str, Any]:
    """What a trial must match: the student file's hash (distill) or the cell results and table
    (sweep), and TensorBoard's steps."""
    if job.name == "distill":
        state, student = run_state(out) or {}, out / "student" / "student.safetensors"
        result = hashlib.sha256(student.read_bytes()).hexdigest() if state.get("state") == "done" else "not done"
    else:
        summary = read_json(out / "summary.json") if (out / "summary.json").is_file() else {}
        runs = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in summary.get("runs", [])]
        result = hashlib.sha256(repr((runs, summary.get("rows"))).encode()).hexdigest()
    return {"result": result, "tb_steps": tb_steps(out / "tb")}


def trial(job: Job, folder: Path, moment: tuple, reference: dict[str, Any]) -> dict[str, Any]:
    """Kill a run at ``moment``, resume it; what it redid and whether it ends as the reference."""
    out = folder / "run"
    killed_wall = run(job.argv(out), folder / "killed.notes", moment[1:])
    killed = read_notes(folder / "killed.notes")
    checkpoint = out / "checkpoint.safetensors"
    if job.name == "distill":
        resumed_from = f"update {read_checkpoint(checkpoint).n_updates_done}" if checkpoint.is_file() else "—"
    else:
        resumed_from = f"{len([p for p in (out / 'cells').glob('*.json') if p.stem != 'teacher'])} kept"
    resumed_wall = run([*job.argv(out), *job.resume], folder / "resumed.notes")
    done = work(killed)
    for key, value in work(read_notes(folder / "resumed.notes")).items():
        done[key] += value
    result = outcome(job, out)
    return {
        "aimed_at": moment[0],
        "kill_after": f"{moment[1]} + {moment[2]:.3f} s",
        "kill_at_s": killed[-1][0] if killed else 0.0,
        "phase_hit": PHASES[killed[-1][1]] if killed else "start",
        "resumed_from": resumed_from,
        **{f"{key}_redone": done[key] - reference["work"][key] for key in done},
        "killed_wall_s": killed_wall,
        "resumed_wall_s": resumed_wall,
        "equal": result["result"] == reference["outcome"]["result"],
        "tb_steps_equal": result["tb_steps"] == reference["outcome"]["tb_steps"],
    }


def run_job(job: Job, root: Path) -> dict[str, Any]:
    """Two uninterrupted runs (the first warms the disk caches, the second is the reference: its
    timeline places the kills), then ``job.n_kills`` killed and resumed ones."""
    run(job.argv(root / "warm-up" / "run"), root / "warm-up" / "notes")
    wall = run(job.argv(root / "reference" / "run"), root / "reference" / "notes")
    notes = read_notes(root / "reference" / "notes")
    reference = {"wall_s": wall, "work": work(notes), "outcome": outcome(job, root / "reference" / "run")}
    reference["warm_up_equal"] = outcome(job, root / "warm-up" / "run") == reference["outcome"]
    moments = kill_moments(phase_spans(notes, job.training_starts), job.n_kills, np.random.default_rng(SEED))
    trials = []
    for i, moment in enumerate(moments):
        trials.append(trial(job, root / f"kill{i:02d}", moment, reference))
        print(f"{job.name} kill {i + 1}/{job.n_kills}: {trials[-1]}", flush=True)
    return {"budget": job.budget, "reference": reference, "trials": trials}


def section(job: Job, results: dict[str, Any]) -> str:
    trials, reference = results["trials"], results["reference"]
    passed = sum(t["equal"] and t["tb_steps_equal"] for t in trials)
    mean = {key: float(np.mean([t[key] for t in trials])) for key in trials[0] if key.endswith("_redone")}
    what = "student file, byte for byte," if job.name == "distill" else "per-cell results and table,"
    resume = " ".join(job.resume) or "the same command again"
    rows = [
        f"| {i + 1} | {t['aimed_at']} | {t['kill_after']} | {t['kill_at_s']:.1f} | {t['phase_hit']} | "
        f"{t['resumed_from']} | {t['updates_redone']} | {t['transitions_redone']} | {t['evaluations_redone']} | "
        f"{t['baselines_redone']} | {t['cells_redone']} | "
        f"{'yes' if t['equal'] else 'NO'} | {'yes' if t['tb_steps_equal'] else 'NO'} |"
        for i, t in enumerate(trials)
    ]
    return "\n".join(
        [
            f"## `policykd {job.name}`, resumed with {resume}",
            "",
            f"`{TEACHER}`: {job.budget}. Uninterrupted: {reference['wall_s']:.1f} s (interpreter start included), "
            f"{reference['work']['updates']:,} updates, {reference['work']['evaluations']} student evaluations; "
            "a first uninterrupted run (warming the disk caches) ended "
            + ("the same." if reference["warm_up_equal"] else "DIFFERENTLY."),
            "",
            f"**{passed}/{len(trials)}** killed runs ended with the uninterrupted run's {what} and its TensorBoard "
            f"steps. Work done twice, mean over the kills: {mean['updates_redone']:.0f} updates, "
            f"{mean['transitions_redone']:.0f} transitions, {mean['evaluations_redone']:.2f} student evaluations, "
            f"{mean['baselines_redone']:.2f} teacher baselines, {mean['cells_redone']:.2f} sweep cells.",
            "",
            "| # | aimed at | SIGKILL after | at (s) | doing when killed | resumed from | updates redone | "
            "transitions recollected | evaluations redone | baselines redone | cells redone | result equal | "
            "TB steps equal |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )


LEGEND = (
    "SIGKILL after `<code>:<n> + <delay>`: that long after the run's n-th `C` (collection start), `K` (collection "
    "end), `B` (teacher baselines start), `X` (sweep cell start), `E` / `e` (student evaluation start / end). At: "
    "seconds since the process started, at its last note before the kill (interpreter start included). Resumed "
    "from: the checkpoint the resumed distill started from (— none yet), or the number of sweep cells kept. "
    "Redone: the work of the killed and the resumed process together beyond the uninterrupted run's. Moments are "
    "drawn from the "
    "reference's phase durations; on a machine shared with other jobs a run may be faster or slower, so a kill "
    "can land in the next phase (doing when killed says where it landed)."
)


def main() -> None:
    args = parse_quick_args(__doc__, "smaller CartPole budgets (20 distill kills and 6 sweep kills still)")
    name = results_name("faults", args.quick)
    root = REPO / "runs" / "benchmarks" / name
    shutil.rmtree(root, ignore_errors=True)
    jobs = [distill_job(args.quick), sweep_job(args.quick)]
    results = {job.name: run_job(job, root / job.name) for job in jobs}
    write_json_atomic(RESULTS_DIR / f"{name}.json", results)
    command = "python benchmarks/faults.py" + (" --quick" if args.quick else "")
    text = (
        "# Resume after SIGKILL\n\nGenerated by `benchmarks/faults.py`; do not edit by hand.\n\n"
        + provenance(command)
        + "\n"
        + "\n\n".join(section(job, results[job.name]) for job in jobs)
        + "\n\n"
        + LEGEND
        + "\n"
    )
    publish("faults", text, quick=args.quick)
    print(text)


if __name__ == "__main__":
    main()
