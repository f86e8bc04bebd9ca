"""Every shipped expert distilled with presets switched off (issue 18): `policykd distill --preset none`,
so the budgets, the student's size (25 % of the teacher's acting parameters) and, for Q-value
teachers, the temperature all come from the teacher.

    python benchmarks/no_preset.py                    # every finished expert but SKIPPED_ENVS, SEEDS
    python benchmarks/no_preset.py --all              # SKIPPED_ENVS too (MuJoCo and Atari: hours on 2 cores)
    python benchmarks/no_preset.py --seeds 0          # fewer seeds
    python benchmarks/no_preset.py --quick            # CartPole PPO and Acrobot DQN, seed 0, half the budgets

Beside the shipped experts, two experts of envs that have no preset, trained by this script with
rl_zoo3's hyperparameters under `runs/benchmarks/no_preset/zoo/` (NEW_EXPERTS; a few minutes the
first time): a Q-value teacher (DQN MountainCar-v0) and one with VecNormalize statistics (PPO
MountainCarContinuous-v0, rl-zoo's `normalize: true`).

The only option given is the loss for a deterministic (TD3) teacher, `mse`, since `kl` needs a
stochastic one. Goal: every expert >= 90 % of its teacher (random policy = 0 %) at <= 30 % of its
parameters. Results: `results/no_preset.md` and `.json` (`--quick`: `no_preset-quick.*`), one
cached JSON per run under `results/no_preset[-quick]/`; full mode also writes the README's table.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS_DIR, cached_run, parse_quick_args, provenance, publish, results_name, train_benchmark_expert

from policykd.data.teachers import load_teacher
from policykd.fileio import read_json, write_json_atomic
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill
from policykd.jobs.evaluate import mean_ci
from policykd.zoo.layout import is_finished
from policykd.zoo.presets import ZOO_DIR

SEEDS = (0, 1, 2)
QUICK_EXPERTS = ("ppo/CartPole-v1_1", "dqn/Acrobot-v1_1")
SKIPPED_ENVS = ("HalfCheetah", "Hopper", "NoFrameskip")  # 200k-transition MuJoCo and Atari runs: --all
GOAL_PCT, GOAL_FRACTION = 90.0, 0.30
# envs with no preset, their experts trained here (a stranger's experts): (algo, env id)
NEW_EXPERTS = (("dqn", "MountainCar-v0"), ("ppo", "MountainCarContinuous-v0"))
NEW_ZOO = Path("runs/benchmarks/no_preset/zoo")  # under the repository root, where the benchmarks run
QUICK_BUDGETS = {"n_transitions": 5_000, "n_updates": 500, "n_eval_episodes": 10}  # a tenth of classic control's


def experts(quick: bool, everything: bool) -> tuple[list[str], list[str]]:
    """The zoo folders to distil (``algo/EnvId_n``), and those left out."""
    found = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in ZOO_DIR.glob("*/*_*/expert.json"))
    found = [e for e in found if is_finished(ZOO_DIR / e)]
    if not quick:
        found += [f"{algo}/{env_id}_1" for algo, env_id in NEW_EXPERTS]
    if quick:
        return [e for e in found if e in QUICK_EXPERTS], []
    skipped = [e for e in found if not everything and any(env in e for env in SKIPPED_ENVS)]
    return [e for e in found if e not in skipped], skipped


def folder_of(expert: str) -> Path:
    """Where ``expert`` (``algo/EnvId_n``) lies: the shipped zoo, or NEW_ZOO (trained here first)."""
    algo, run = expert.split("/")
    new = (algo, run.rsplit("_", 1)[0])
    return train_benchmark_expert(*new, NEW_ZOO, None) if new in NEW_EXPERTS else ZOO_DIR / expert


def run_expert(expert: str, seeds: tuple[int, ...], quick: bool, cache: Any, force: bool) -> dict[str, Any]:
    folder = folder_of(expert)
    teacher = load_teacher(folder)
    loss = "mse" if teacher.kind == "deterministic" else "kl"
    runs = []
    for seed in seeds:
        name = f"{expert.replace('/', '-')}-seed{seed}"
        config = DistillConfig(
            teacher=str(folder.relative_to(ZOO_DIR.parent) if folder.is_absolute() else folder),
            preset="none",
            loss=loss,
            seed=seed,
            out_dir=f"runs/benchmarks/no_preset/{name}",
            overwrite=True,
            progress_bar=False,
            **(QUICK_BUDGETS if quick else {}),
        )
        print(name, flush=True)
        runs.append(cached_run(cache, name, lambda config=config: distill(config), force=force, config=config))
    pcts = [r["pct_of_teacher"] for r in runs]
    first = runs[0]
    return {
        "expert": expert,
        "env_id": first["env_id"],
        "algo": first["teacher_algo"],
        "kind": first["teacher_kind"],
        "loss": loss,
        "seeds": list(seeds),
        "pct_of_teacher": pcts,
        "pct_mean_ci": mean_ci(pcts),
        "teacher_params": first["teacher_params"],
        "student_params": first["student_params"],
        "param_fraction": first["param_fraction"],
        "hidden_sizes": first["hidden_sizes"],
        "n_transitions": first["n_teacher_transitions"],
        "n_updates": first["n_updates"],
        "temperatures": [r["temperature"] for r in runs],
        "defaults": first["defaults"],
        "teacher_return": first["teacher_return_mean"],
        "student_returns": [r["student_return_mean"] for r in runs],
        "wall_time_s": sum(r["wall_time_s"] for r in runs),
    }


def cached_rows(quick: bool) -> list[dict[str, Any]]:
    """The rows the last invocation wrote (an ``--only`` run keeps the other experts' rows)."""
    path = RESULTS_DIR / f"{results_name('no_preset', quick)}.json"
    return read_json(path)["rows"] if path.is_file() else []


def usual_seeds(rows: list[dict[str, Any]]) -> list[int]:
    """The seeds most rows ran (the table's header names them; a row with others names its own)."""
    counts = Counter(tuple(r["seeds"]) for r in rows)
    return list(counts.most_common(1)[0][0]) if counts else []


def table(rows: list[dict[str, Any]], skipped: list[str]) -> str:
    usual = usual_seeds(rows)
    lines = [
        "| expert | student | params student / teacher | transitions, updates | τ | % of teacher [95 % CI] | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mean, low, high = r["pct_mean_ci"]
        ci = f" [{low:.1f}, {high:.1f}]" if len(r["seeds"]) > 1 else ""
        if r["seeds"] != usual:
            ci += f" (seed{'s' if len(r['seeds']) > 1 else ''} {', '.join(map(str, r['seeds']))})"
        met = mean >= GOAL_PCT and r["param_fraction"] <= GOAL_FRACTION
        tau = "–" if r["loss"] == "mse" else f"{np.mean(r['temperatures']):.3g}"
        lines.append(
            f"| `{r['expert']}` ({r['kind']}) | {'×'.join(map(str, r['hidden_sizes']))} | "
            f"{r['student_params']:,} / {r['teacher_params']:,} ({100 * r['param_fraction']:.1f} %) | "
            f"{r['n_transitions']:,}, {r['n_updates']:,} | {r['loss']} {tau} | {mean:.1f}{ci} | "
            f"{'yes' if met else 'no'}{'' if len(r['seeds']) >= len(usual) else ' (so far)'} |"
        )
    lines += [f"| `{e}` | not run (compute budget; `--all` or `--only` runs it) | | | | | |" for e in skipped]
    return "\n".join(lines)


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "CartPole PPO and Acrobot DQN, seed 0, 5,000 transitions and 500 updates",
        extra=[(("--seeds",), dict(type=int, nargs="+", help="seeds (default 0 1 2; --quick: 0)")),
               (("--all",), dict(action="store_true", help="also the MuJoCo and Atari experts"))],
        only_help="run only experts whose folder contains this (others: from the last results)",
        trace_code=True,
    )  # fmt: skip
    started = time.perf_counter()
    seeds = tuple(args.seeds or ((0,) if args.quick else SEEDS))
    cache = RESULTS_DIR / results_name("no_preset", args.quick)
    chosen, skipped = experts(args.quick, args.all or bool(args.only))  # --only may name a skipped expert
    rows = [run_expert(expert, seeds, args.quick, cache, args.force) for expert in chosen if args.only in expert]
    rows += [row for row in cached_rows(args.quick) if args.only not in row["expert"] and row["expert"] in chosen]
    rows.sort(key=lambda row: row["expert"])
    skipped += [e for e in chosen if e not in {row["expert"] for row in rows}]
    text = table(rows, skipped)
    met = sum(r["pct_mean_ci"][0] >= GOAL_PCT and r["param_fraction"] <= GOAL_FRACTION for r in rows)
    command = "python benchmarks/no_preset.py" + (" --quick" if args.quick else "")
    body = (
        f"Seeds {usual_seeds(rows)} unless a row names its own; `policykd distill --preset none` (TD3: `--loss mse`), "
        "nothing else given. "
        f"% of teacher: random policy = 0 %, on the run's evaluation episodes. Goal ≥ {GOAL_PCT:g} % at ≤ "
        f"{100 * GOAL_FRACTION:g} % of the teacher's parameters: met by {met} of {len(rows)} experts run.\n\n" + text
    )
    publish(
        "no_preset",
        "# Distillation with presets switched off\n\nGenerated by `benchmarks/no_preset.py`; do not edit by hand.\n\n"
        + provenance(command)
        + f"- wall time of this invocation: {(time.perf_counter() - started) / 60:.1f} min\n\n"
        + body
        + "\n\nThe defaults line of each expert's first run:\n\n"
        + "\n".join(f"- `{r['expert']}`: {r['defaults']}" for r in rows)
        + "\n",
        quick=args.quick,
        readme_marker="no-preset",
        readme_text=body,
    )
    write_json_atomic(RESULTS_DIR / f"{results_name('no_preset', args.quick)}.json", {"command": command, "rows": rows})


if __name__ == "__main__":
    main()
