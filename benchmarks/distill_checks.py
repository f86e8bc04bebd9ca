"""Distil every shipped expert with the settings the README quotes, and write the result table.

    python benchmarks/distill_checks.py            # runs what is not cached yet, writes results/distill_checks.md
    python benchmarks/distill_checks.py --quick    # classic control only (no LunarLander, no MuJoCo): ~2 min
    python benchmarks/distill_checks.py --force    # reruns everything

Each row is one `policykd distill` run (its exact command is in the table) with 20 evaluation
episodes on seeds the collection never used. Experts missing from agents/ are skipped. --quick
runs a subset of the same commands (same seeds, same rows) and writes results/distill_checks-quick.md.
"""

from __future__ import annotations

import sys

from common import DEMO_CHECK, RESULTS_DIR, cached_run, parse_quick_args, provenance, publish, publish_demo

from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill
from policykd.zoo.presets import ZOO_DIR

# (name, CLI arguments) — each is run exactly as `policykd distill <args>` would run it.
CHECKS: list[tuple[str, dict]] = [
    ("cartpole-ppo-kl", {}),
    ("cartpole-ppo-nll", {"loss": "nll"}),
    ("cartpole-ppo-kl-tau2-both", {"temperature": 2.0, "temperature_on": "both"}),
    ("cartpole-dqn-mse", {"teacher": "agents/dqn/CartPole-v1_1", "loss": "mse", "hidden_sizes": (64, 64)}),
    ("cartpole-dqn-nll", {"teacher": "agents/dqn/CartPole-v1_1", "loss": "nll"}),
    ("cartpole-dqn-kl-tau0.01", {"teacher": "agents/dqn/CartPole-v1_1", "loss": "kl", "temperature": 0.01}),
    ("cartpole-qrdqn-mse", {"teacher": "agents/qrdqn/CartPole-v1_1", "loss": "mse", "hidden_sizes": (64, 64)}),
    ("acrobot-dqn-kl", {"teacher": "agents/dqn/Acrobot-v1_1", "loss": "kl", "temperature": 0.1}),
    ("pendulum-sac-kl", {"env_id": "Pendulum-v1"}),
    ("pendulum-td3-mse", {"teacher": "agents/td3/Pendulum-v1_1", "loss": "mse"}),
    ("lunarlander-ppo-kl", {"teacher": "agents/ppo/LunarLander-v3_1"}),
    ("lunarlander-dqn-kl", {"teacher": "agents/dqn/LunarLander-v3_1", "loss": "kl", "temperature": 0.1}),
    ("halfcheetah-ppo-kl", {"teacher": "agents/ppo/HalfCheetah-v5_1"}),
    ("hopper-td3-mse", {"teacher": "agents/td3/Hopper-v5_1", "loss": "mse"}),
    ("pong-ppo-kl", {"teacher": "agents/ppo/PongNoFrameskip-v4_1"}),
]
QUICK = ("cartpole", "acrobot", "pendulum")  # the checks --quick runs: a few seconds each
CLI_FLAGS = {
    "teacher": "--teacher",
    "env_id": "--env",
    "loss": "--loss",
    "temperature": "--temperature",
    "temperature_on": "--temperature-on",
    "hidden_sizes": "--hidden",
}


def cli_command(args: dict) -> str:
    parts = ["policykd distill"]
    for key, value in args.items():
        value = " ".join(map(str, value)) if isinstance(value, tuple) else value
        parts.append(f"{CLI_FLAGS[key]} {value}")
    return " ".join(parts)


def main() -> None:
    args = parse_quick_args(
        __doc__, "classic-control checks only", only_help="run only checks whose name has this", trace_code=True
    )
    cache = RESULTS_DIR / "distill_checks"  # --quick runs the same commands, so it shares the cache
    rows = []
    for name, overrides in CHECKS:
        teacher = overrides.get("teacher")
        if args.quick and not name.startswith(QUICK):
            continue
        cached = (cache / f"{name}.json").is_file()
        if (args.only not in name and not cached) or (
            teacher and not (ZOO_DIR.parent / teacher / "expert.json").is_file()
        ):
            continue  # --only reruns the selected checks and keeps the others' cached rows in the table
        config = DistillConfig(
            **overrides, out_dir=f"runs/benchmarks/distill_checks/{name}", overwrite=True, progress_bar=False
        )
        print(f"{name}: {cli_command(overrides)}", flush=True)
        # --force recomputes only the selected checks: the others keep their cached row
        s = cached_run(cache, name, lambda: distill(config), force=args.force and args.only in name, config=config)
        if name == DEMO_CHECK:
            publish_demo(s, quick=args.quick)  # the README's `make demo` block is this run's output
        rows.append(
            f"| {s['env_id']} | {s['teacher_algo']} | {s['loss']} | {s['temperature']:g} | "
            f"{s['teacher_return_mean']:.1f} ± {s['teacher_return_std']:.1f} | "
            f"{s['student_return_mean']:.1f} ± {s['student_return_std']:.1f} | "
            f"[{s['student_return_ci95'][0]:.1f}, {s['student_return_ci95'][1]:.1f}] | {s['pct_of_teacher']:.1f} | "
            f"{s['student_params']:,} / {s['teacher_params']:,} ({100 * s['param_fraction']:.0f} %) | "
            f"{s['n_teacher_transitions']:,} | {s['wall_time_s']:.0f} s | `{cli_command(overrides)}` |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| env | teacher | loss | τ | teacher return | student return | student 95 % CI | % of teacher | params student / teacher | teacher transitions | wall time | command |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    text = (
        "# Distillation checks\n\nGenerated by `benchmarks/distill_checks.py`; do not edit by hand.\n\n"
        + provenance("python benchmarks/distill_checks.py" + (" --quick" if args.quick else ""))
        + "\nReturns: mean ± std over 20 evaluation episodes (Pendulum, CartPole, LunarLander; 10 for HalfCheetah, Hopper and Pong),"
        " seeds 10000+. % of teacher = (student − random) / (teacher − random), a uniformly random policy on the"
        " same episodes being 0 %. Wall time: the whole job (teacher evaluation, collection, training, evaluation)"
        " on 1 torch thread, while other jobs shared the 2 cores.\n\n" + table + "\n"
    )
    publish("distill_checks", text, quick=args.quick, readme_marker="distill-checks", readme_text=table)


if __name__ == "__main__":
    sys.exit(main())
