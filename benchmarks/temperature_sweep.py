"""Temperature sweeps on CartPole-v1, LunarLander-v3 and Pendulum-v1: one buffer per task, one
student per (tau, seed), written to results/temperature_sweep.md (+ one PNG and CSV per task).

    python benchmarks/temperature_sweep.py                  # every task whose expert is finished; resumes
    python benchmarks/temperature_sweep.py --only Pendulum  # one task
    python benchmarks/temperature_sweep.py --force          # rerun everything
    python benchmarks/temperature_sweep.py --quick          # CartPole and Pendulum, 1 seed: ~1.5 min

Each task is exactly one `policykd sweep` command (printed in the results); the budgets are sized
so a task finishes in under 15 minutes on the 2-core CPU box. Each (tau, seed) result is cached
as JSON under results/temperature_sweep[-quick]/<env>/, so an interrupted run resumes where it stopped on
the same buffer (kept under runs/benchmarks/temperature_sweep/<env>/ with the TensorBoard runs).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    BACKEND_OPTION,
    RESULTS_DIR,
    TaskCache,
    cli_flags,
    parse_quick_args,
    provenance,
    publish,
    sweep_sections,
)

from policykd.fileio import read_json, write_json_atomic
from policykd.jobs.sweep import SweepConfig, run_sweep, sweep_markdown

TEMPERATURES = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0)
# (env id, teacher, budgets): each task is `policykd sweep --teacher <teacher> <budgets>`.
TASKS: list[tuple[str, str, dict[str, Any]]] = [
    ("CartPole-v1", "agents/ppo/CartPole-v1_1", {"n_transitions": 20_000, "n_updates": 2_000}),
    # the preset's 64x64 student, the size this sweep was first run at (sweep, as distill, would
    # otherwise give this 64x64 teacher a 28x28 student: 25 % of its parameters)
    (
        "LunarLander-v3",
        "agents/ppo/LunarLander-v3_1",
        {"n_transitions": 50_000, "n_updates": 3_000, "hidden_sizes": (64, 64)},
    ),  # fmt: skip
    ("Pendulum-v1", "agents/sac/Pendulum-v1_1", {"n_transitions": 30_000, "n_updates": 3_000}),
]
CLI_FLAGS = {"n_transitions": "--n-transitions", "n_updates": "--n-updates", "n_eval_episodes": "--eval-episodes",
             "hidden_sizes": "--hidden"}  # fmt: skip
N_SEEDS, N_EVAL_EPISODES = 3, 10


def cli_command(teacher: str, budgets: dict[str, Any], out_dir: str, n_seeds: int) -> str:
    flags = cli_flags(budgets, CLI_FLAGS)
    taus = " ".join(f"{t:g}" for t in TEMPERATURES)
    return (
        f"policykd sweep --teacher {teacher} --temperatures {taus} --seeds {n_seeds} {flags} "
        f"--eval-episodes {N_EVAL_EPISODES} --out {out_dir}"
    )


def run_task(
    env_id: str,
    teacher: str,
    budgets: dict[str, Any],
    cache_dir: Path,
    force: bool,
    n_seeds: int,
    backend: str = "local",
) -> dict[str, Any]:
    """Run (or resume) one task's sweep; its summary gains ``command``, ``wall_time_s`` and ``resumed``."""
    out_dir = f"runs/benchmarks/{cache_dir.parent.name}/{env_id}"
    command = cli_command(teacher, budgets, out_dir, n_seeds)
    print(f"{env_id}: {command}", flush=True)
    previous = cache_dir / "summary.json"
    if previous.is_file() and read_json(previous)["command"] != command and not force:
        sys.exit(f"{env_id}: the cached runs in {cache_dir} were made by another command; rerun with --force")
    config = SweepConfig(
        backend=backend,
        teacher=teacher,
        temperatures=TEMPERATURES,
        n_seeds=n_seeds,
        n_eval_episodes=N_EVAL_EPISODES,
        out_dir=out_dir,
        **budgets,
    )
    cache = TaskCache(cache_dir, force, traced=backend == "local")  # Ray tasks run elsewhere: untraced
    summary = run_sweep(config, cache=cache)
    summary.update(command=command, **cache.timing(previous))
    print(f"{env_id}: {summary['wall_time_s']:.0f} s{' (resumed)' if cache.resumed else ''}", flush=True)
    shutil.copyfile(f"{out_dir}/sweep.png", cache_dir.parent / f"{env_id}.png")
    shutil.copyfile(f"{out_dir}/sweep.csv", cache_dir.parent / f"{env_id}.csv")
    write_json_atomic(cache_dir / "summary.json", summary)
    return summary


def section(env_id: str, summary: dict[str, Any], stem: str) -> str:
    run_time = sum(r["wall_time_s"] for r in summary["runs"])
    if summary["resumed"]:
        timing = (
            f"resumed from cached runs ({summary['wall_time_s']:.0f} s in the last invocation); the "
            f"{len(summary['runs'])} students' training and evaluation took {run_time:.0f} s in all"
        )
    else:
        timing = (
            f"wall time {summary['wall_time_s']:.0f} s for the whole command (baselines, collection, "
            f"{len(summary['runs'])} students; the students alone {run_time:.0f} s)"
        )
    return (
        f"## {env_id}\n\n`{summary['command']}`\n\n{timing}.\n\n{sweep_markdown(summary)}\n"
        f"![{env_id} sweep]({stem}/{env_id}.png)\n"
    )


README_TAUS = (0.01, 1, 5)  # the temperatures the README's table shows


def readme_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The README's temperature table (markers ``temperature-sweep``): per task, the means over
    seeds at README_TAUS, then what each sweep's students took and CartPole's argmax agreement."""
    lines = [
        "| task (teacher greedy / sampled return) | τ | greedy return | sampled return | student entropy | exploration |",
        "|---|---|---|---|---|---|",
    ]
    for env_id, s in summaries.items():
        rows = {r["tau"]: r for r in s["rows"]}

        def means(key: str, fmt: str, rows: dict = rows) -> str:
            return " · ".join(format(float(np.mean(rows[t][key])), fmt) for t in README_TAUS)

        visitation = s["labels"]["exploration"].startswith("state-visitation")
        exploration = (f"visitation entropy {means('exploration', '.2f')} nats" if visitation
                       else f"return std {means('exploration', '.1f')}")  # fmt: skip
        lines.append(
            f"| {env_id}, {s['teacher_algo'].upper()} ({s['teacher_greedy']:.0f} / {s['teacher_sampled']:.0f}) | "
            f"{' · '.join(f'{t:g}' for t in README_TAUS)} | {means('return_greedy', '.0f')} | "
            f"{means('return_sampled', '.0f')} | {means('student_entropy', '.2f')} nats | {exploration} |"
        )
    took = ", ".join(f"{sum(r['wall_time_s'] for r in s['runs']):.0f} s on {env_id}" for env_id, s in summaries.items())
    text = "\n".join(lines) + f"\n\nThe students of each sweep (18) took {took} to train and evaluate."
    if "CartPole-v1" in summaries:
        rows = {r["tau"]: r for r in summaries["CartPole-v1"]["rows"]}
        low, high = (100 * float(np.mean(rows[t]["agreement"])) for t in (0.01, 5))
        text += f" On CartPole the student agrees with the teacher's argmax on {low:.0f} % of states at τ = 0.01, {high:.0f} % at τ = 5."
    return text


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "CartPole and Pendulum, 1 seed",
        only_help="run only tasks whose env id contains this (others: from cache)",
        extra=[BACKEND_OPTION],
        trace_code=True,
    )
    sections = sweep_sections(args, "temperature_sweep", TASKS, N_SEEDS, run_task, section)
    text = (
        "# Temperature sweeps\n\nGenerated by `benchmarks/temperature_sweep.py`; do not edit by hand.\n\n"
        + provenance("python benchmarks/temperature_sweep.py" + (" --quick" if args.quick else ""))
        + "\nOne teacher-driven buffer per task; every (τ, seed) student learns from that same buffer with the "
        "forward KL at temperature τ on the teacher side (the student acts at τ = 1). Seeds change the student's "
        "initial weights and minibatches, not the buffer. Times on 1 torch thread while other jobs (expert "
        "training, other benchmarks) shared the 2 cores.\n\n" + "\n".join(sections)
    )
    readme = ""
    if not args.quick:  # a quick run leaves the README quoting the full run
        summaries = {env_id: read_json(path) for env_id, _, _ in TASKS
                     if (path := RESULTS_DIR / "temperature_sweep" / env_id / "summary.json").is_file()}  # fmt: skip
        readme = readme_table(summaries)
    publish("temperature_sweep", text, quick=args.quick, readme_marker="temperature-sweep", readme_text=readme)


if __name__ == "__main__":
    sys.exit(main())
