"""Overlapped collection (``--vec-env subproc``, policykd/data/overlap.py) against the in-process
path and raw env stepping: the rows throughput.py adds for it. Imported by throughput.py; never
run on its own.

Each case is timed three ways, back to back, from envs already built and reset (the subprocesses'
start-up is reported on its own):
- random-action stepping of one in-process vector env (the limit the issue names);
- collection on that in-process vector env (the default, ``--vec-env dummy``);
- overlapped collection on two env groups in subprocesses.
Both wall clock and CPU time: the overlapped path's CPU time adds its subprocesses' (read from
/proc while they live), since the point of the subprocesses is to run at once with this one. The
machine's 1-minute load average is recorded beside each case: on 2 cores shared with other jobs,
wall clock is only what this machine gave at that moment.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from policykd.data.collect import RolloutCursor, collect_rollouts
from policykd.data.envs import make_vec_env
from policykd.data.overlap import collect_overlapped, make_env_groups
from policykd.data.teachers import Teacher

_TICKS = os.sysconf("SC_CLK_TCK")


def _children_cpu_s(venvs: list[Any]) -> float:
    """CPU seconds so far of the subprocesses of ``venvs`` (overlap.GroupProcess)."""
    total = 0.0
    for venv in venvs:
        with open(f"/proc/{venv.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    return total


def _clock(run: Any, venvs: list[Any] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and the subprocesses of ``venvs``) of ``run()``."""
    wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu_s(venvs or [])
    run()
    children = _children_cpu_s(venvs or []) - children
    return time.perf_counter() - wall, time.process_time() - cpu + children


def _random_steps(teacher: Teacher, n_envs: int, n_steps: int) -> tuple[float, float]:
    venv = make_vec_env(teacher.recipe, n_envs, seed=0)
    venv.action_space.seed(0)
    actions = np.array([[venv.action_space.sample() for _ in range(n_envs)] for _ in range(n_steps)])
    venv.reset()
    try:
        return _clock(lambda: [venv.step(a) for a in actions])
    finally:
        venv.close()


def _in_process(teacher: Teacher, n_envs: int, n_steps: int) -> tuple[float, float]:
    venv = make_vec_env(teacher.recipe, n_envs, seed=0)
    cursor = RolloutCursor(venv.reset(), np.ones(n_envs, dtype=bool))
    rng = np.random.default_rng(0)
    try:
        return _clock(lambda: collect_rollouts(venv, [teacher], n_steps * n_envs, rng=rng, cursor=cursor))
    finally:
        venv.close()


def _overlapped(teacher: Teacher, n_envs: int, n_steps: int) -> tuple[float, float, float]:
    """(wall, CPU, start-up wall seconds) of overlapped collection on two subprocess groups."""
    start = time.perf_counter()
    venvs = make_env_groups(teacher.recipe, n_envs, 0, subproc=True)
    startup = time.perf_counter() - start
    rng = np.random.default_rng(0)
    try:
        wall, cpu = _clock(lambda: collect_overlapped(venvs, [teacher], n_steps * n_envs, rng=rng), venvs)
    finally:
        for venv in venvs:
            venv.close()
    return wall, cpu, startup


def overlap_vs_in_process(teacher: Teacher, n_envs: int, n_steps: int, repeats: int = 3) -> dict[str, float]:
    """Steps/s of each side (wall and CPU), medians of ``repeats`` rounds of the three back to back."""
    times: dict[str, list[float]] = {key: [] for key in ("rw", "rc", "dw", "dc", "sw", "sc", "startup")}
    for _ in range(repeats):
        for (wall, cpu), key in (
            (_random_steps(teacher, n_envs, n_steps), "r"),
            (_in_process(teacher, n_envs, n_steps), "d"),
        ):
            times[f"{key}w"].append(wall)
            times[f"{key}c"].append(cpu)
        wall, cpu, startup = _overlapped(teacher, n_envs, n_steps)
        times["sw"].append(wall)
        times["sc"].append(cpu)
        times["startup"].append(startup)
    median = {key: float(np.median(value)) for key, value in times.items()}
    steps = n_steps * n_envs
    return {
        "random_wall": steps / median["rw"],
        "random_cpu": steps / median["rc"],
        "dummy_wall": steps / median["dw"],
        "dummy_cpu": steps / median["dc"],
        "subproc_wall": steps / median["sw"],
        "subproc_cpu": steps / median["sc"],
        "ratio_dummy_wall": median["rw"] / median["dw"],
        "ratio_subproc_wall": median["rw"] / median["sw"],
        "ratio_dummy_cpu": median["rc"] / median["dc"],
        "ratio_subproc_cpu": median["rc"] / median["sc"],
        "startup_s": median["startup"],
        "load_average": os.getloadavg()[0],
        "repeats": repeats,
    }


def overlap_rows(results: dict[str, Any]) -> list[tuple[str, str, float, str]]:
    """throughput.md's rows for the overlapped cases (ratio: overlapped ÷ random-action stepping, wall clock)."""
    rows = []
    for case in results.get("overlap", []):
        rows.append(
            (
                f"overlapped collection (--vec-env subproc, 2 groups) ÷ random-action env steps, wall clock "
                f"({case['label']}, {case['n_envs']} envs)",
                f"{case['subproc_wall']:,.0f} / {case['random_wall']:,.0f} steps/s; in-process collection "
                f"{case['dummy_wall']:,.0f} (ratio {case['ratio_dummy_wall']:.2f}); CPU time: overlapped "
                f"{case['ratio_subproc_cpu']:.2f}, in-process {case['ratio_dummy_cpu']:.2f} of random stepping; "
                f"subprocess start-up {case['startup_s']:.1f} s; load average {case['load_average']:.1f} on 2 cores; "
                f"median of {case['repeats']}",
                case["ratio_subproc_wall"],
                "≥ 0.8",
            )
        )
    return rows


def _short(label: str) -> str:
    return label.split("-v")[0].replace("NoFrameskip", "")


def overlap_readme(results: dict[str, Any]) -> str:
    """The README's lines on overlapped collection (markers ``overlap``), from throughput.json."""
    cases = [c for c in results.get("overlap", []) if not (c["label"].startswith("CartPole") and c["n_envs"] == 64)]
    if not cases:
        return "- **Overlapped collection** (`--vec-env subproc`): not measured yet.\n"
    overlapped = ", ".join(f"{_short(c['label'])} {c['ratio_subproc_wall']:.2f}" for c in cases)
    in_process = ", ".join(f"{c['ratio_dummy_wall']:.2f}" for c in cases)
    loads = [c["load_average"] for c in results["overlap"]]
    return (
        "- **Overlapped collection** (`--vec-env subproc`: the envs in two groups, each stepped in one\n"
        "  subprocess while the other group is labelled) does not help on this machine. In wall clock, at\n"
        f"  each env's preset env count, it reaches {overlapped}\n"
        "  of random-action stepping; in-process collection, measured beside it, reaches\n"
        f"  {in_process} (load average {min(loads):.0f}–{max(loads):.0f} on 2 cores).\n"
        "  With no idle core for the groups to step on, the subprocesses only add a pipe round trip per\n"
        "  group and step, with the observations pickled (8 stacked Pong frames are 225 KB a step). It is\n"
        "  for a machine with a core to spare per group and envs whose step costs more than that trip;\n"
        "  check there with `python benchmarks/throughput.py --only overlap`. The same seed gives the same\n"
        "  buffer with the groups in subprocesses or in this process (`policykd/data/overlap.py`), but\n"
        "  not the buffer of the default `--vec-env dummy`, which draws each step's randomness for all\n"
        "  envs at once."
    )
