"""Who should drive while the teacher labels? Student return against teacher labels used for the
teacher / student (on-policy) / DAgger drivers, 3 seeds each, written to
results/compare_drivers.md (+ one PNG and CSV per task).

    python benchmarks/compare_drivers.py                      # every task whose expert is finished; resumes
    python benchmarks/compare_drivers.py --only LunarLander   # tasks whose name has this (others: from cache)
    python benchmarks/compare_drivers.py --force              # rerun everything
    python benchmarks/compare_drivers.py --quick              # CartPole and Pendulum, 1 seed: ~1.5 min

Each task is exactly one `policykd compare-drivers` command (printed in the results). Each
(driver, seed) run is cached as JSON under results/compare_drivers[-quick]/<env>/, so an interrupted run
resumes where it stopped; TensorBoard runs go to runs/benchmarks/compare_drivers/<env>/.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from common import BACKEND_OPTION, TaskCache, cli_flags, parse_quick_args, provenance, publish, sweep_sections

from policykd.fileio import read_json, write_json_atomic
from policykd.jobs.drivers import DriversConfig, compare_drivers, drivers_markdown

# (name, teacher, budgets): each task is `policykd compare-drivers --teacher <teacher> <budgets> --seeds 3`;
# the name is the env id, with a suffix for a second budget on the same env. The LunarLander PPO
# tasks keep the preset's 64x64 student (--hidden 64 64), the size these comparisons were first run
# at: compare-drivers, as distill, would otherwise give this 64x64 teacher a 28x28 student (25 %).
TASKS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "LunarLander-v3",
        "agents/ppo/LunarLander-v3_1",
        {"n_rounds": 10, "n_transitions_per_round": 5_000, "n_updates_per_round": 500, "hidden_sizes": (64, 64)},
    ),
    (
        "LunarLander-v3-fine",
        "agents/ppo/LunarLander-v3_1",
        {"n_rounds": 10, "n_transitions_per_round": 1_000, "n_updates_per_round": 300, "hidden_sizes": (64, 64)},
    ),
    (
        "HalfCheetah-v5",
        "agents/ppo/HalfCheetah-v5_1",
        {"n_rounds": 10, "n_transitions_per_round": 10_000, "n_updates_per_round": 1_000},
    ),
    (
        "CartPole-v1",
        "agents/ppo/CartPole-v1_1",
        {"n_rounds": 10, "n_transitions_per_round": 1_000, "n_updates_per_round": 200},
    ),
    (
        "Pendulum-v1",
        "agents/sac/Pendulum-v1_1",
        {"n_rounds": 10, "n_transitions_per_round": 2_000, "n_updates_per_round": 500},
    ),
]
CLI_FLAGS = {
    "n_rounds": "--rounds",
    "n_transitions_per_round": "--round-transitions",
    "n_updates_per_round": "--round-updates",
    "hidden_sizes": "--hidden",
}
N_SEEDS, N_EVAL_EPISODES = 3, 10


def run_task(
    name: str,
    teacher: str,
    budgets: dict[str, Any],
    cache_dir: Path,
    force: bool,
    n_seeds: int,
    backend: str = "local",
) -> dict[str, Any]:
    """Run (or resume) one task; its summary gains ``command``, ``wall_time_s`` and ``resumed``."""
    out_dir = f"runs/benchmarks/{cache_dir.parent.name}/{name}"
    flags = cli_flags(budgets, CLI_FLAGS)
    command = (
        f"policykd compare-drivers --teacher {teacher} {flags} --seeds {n_seeds} "
        f"--eval-episodes {N_EVAL_EPISODES} --out {out_dir}"
    )
    print(f"{name}: {command}", flush=True)
    previous = cache_dir / "summary.json"
    if previous.is_file() and read_json(previous)["command"] != command and not force:
        sys.exit(f"{name}: the cached runs in {cache_dir} were made by another command; rerun with --force")
    config = DriversConfig(
        backend=backend, teacher=teacher, n_seeds=n_seeds, n_eval_episodes=N_EVAL_EPISODES, out_dir=out_dir, **budgets
    )
    task_cache = TaskCache(cache_dir, force, traced=backend == "local")  # Ray tasks run elsewhere: untraced

    def cache(name: str, run: Any) -> dict[str, Any]:
        started = time.perf_counter()
        result = task_cache(name, run)
        print(f"  {name}: {time.perf_counter() - started:.0f} s", flush=True)
        return result

    summary = compare_drivers(config, cache=cache)
    summary.update(command=command, **task_cache.timing(previous))
    print(f"{name}: {summary['wall_time_s']:.0f} s{' (resumed)' if task_cache.resumed else ''}", flush=True)
    shutil.copyfile(f"{out_dir}/drivers.png", cache_dir.parent / f"{name}.png")
    shutil.copyfile(f"{out_dir}/drivers.csv", cache_dir.parent / f"{name}.csv")
    write_json_atomic(cache_dir / "summary.json", {k: v for k, v in summary.items() if k != "runs"})
    return summary


def section(name: str, summary: dict[str, Any], stem: str) -> str:
    when = "resumed from cached runs; last invocation" if summary["resumed"] else "wall time"
    return (
        f"## {name}\n\n`{summary['command']}`\n\n{when}: {summary['wall_time_s']:.0f} s.\n\n"
        f"{drivers_markdown(summary)}\n![{name} drivers]({stem}/{name}.png)\n"
    )


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "CartPole and Pendulum, 1 seed",
        only_help="run only tasks whose name contains this (others: from cache)",
        extra=[BACKEND_OPTION],
        trace_code=True,
    )
    sections = sweep_sections(args, "compare_drivers", TASKS, N_SEEDS, run_task, section)
    text = (
        "# Drivers comparison: teacher labels needed\n\nGenerated by `benchmarks/compare_drivers.py`; do not edit by "
        "hand.\n\n"
        + provenance("python benchmarks/compare_drivers.py" + (" --quick" if args.quick else ""))
        + "\nEach round collects the same number of teacher-labelled transitions, whoever drives (teacher: β = 1; "
        "student: β = 0, the teacher only labels; dagger: the teacher acts with probability β per step, β falling "
        "linearly from 1 to 0 over the first half of the rounds), then trains the same student (forward KL at τ = 1, "
        "Adam, optimizer state kept across rounds) on every label so far, then evaluates it greedily on the same "
        "episodes for every driver and seed. Drivers act greedily. Times on 1 torch thread while other jobs shared "
        "the 2 cores.\n\n" + "\n".join(sections)
    )
    publish("compare_drivers", text, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
