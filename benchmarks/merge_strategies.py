"""Merge strategies for an ensemble of experts of different algorithms on one task.

    python benchmarks/merge_strategies.py              # LunarLander-v3, two PPO seeds + DQN (+ QR-DQN once trained), 3 seeds
    python benchmarks/merge_strategies.py --quick      # 1 seed, a third of the budgets: ~3 min

For each strategy (and each teacher alone, as the baseline) one student per seed is distilled
from the same budgets; the table reports student return (mean over seeds with a 95 % CI of the
per-seed means), % of the best single teacher, the merged target's entropy and each teacher's KL to
the student, all as measured. Resumes: finished runs are cached under results/merge_strategies/.
"""

from __future__ import annotations

import numpy as np
from common import RESULTS_DIR, cached_run, parse_quick_args, provenance, publish

from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill
from policykd.jobs.evaluate import mean_ci, pct_of
from policykd.zoo.layout import is_finished
from policykd.zoo.presets import ZOO_DIR

# those whose training has finished take part
TEACHERS = (
    "agents/ppo/LunarLander-v3_1",
    "agents/ppo/LunarLander-v3_2",
    "agents/dqn/LunarLander-v3_1",
    "agents/qrdqn/LunarLander-v3_1",
)
STRATEGIES = ("mean-probs", "mean-logits", "entropy-weighted", "most-confident")
TEMPERATURE = 0.1  # Q-value teachers are near-uniform at tau = 1; 0.1 makes all three comparably sharp


def label(teacher: str) -> str:
    """``agents/ppo/LunarLander-v3_2`` -> ``ppo_2``: the algo and the zoo run."""
    return f"{teacher.split('/')[1]}_{teacher.rsplit('_', 1)[1]}"


def per_teacher_kl_keys(metrics: dict) -> list[str]:
    """The ``teachers/<name>/kl`` metrics (each teacher's KL to the student), in the teachers' order."""
    return [key for key in metrics if key.startswith("teachers/") and key.endswith("/kl")]


def main() -> None:
    args = parse_quick_args(__doc__, trace_code=True)
    teachers = tuple(t for t in TEACHERS if is_finished(ZOO_DIR.parent / t))
    seeds = (0,) if args.quick else (0, 1, 2)
    budget = dict(
        n_transitions=20_000 if args.quick else 60_000,
        n_updates=2_000 if args.quick else 6_000,
        n_eval_episodes=10 if args.quick else 20,
        temperature=TEMPERATURE,
        progress_bar=False,
    )
    cache = RESULTS_DIR / "merge_strategies" / ("quick" if args.quick else "full")
    runs: dict[str, list[dict]] = {}
    for name in [*(f"alone:{label(t)}" for t in teachers), *STRATEGIES]:
        for seed in seeds:
            if name.startswith("alone:"):
                config = DistillConfig(teacher=next(t for t in teachers if label(t) == name[6:]), seed=seed, **budget)
            else:
                config = DistillConfig(teachers=teachers, merge=name, seed=seed, **budget)
            config = DistillConfig(
                **{**config.__dict__, "out_dir": f"runs/benchmarks/merge/{name}-seed{seed}", "overwrite": True}
            )
            print(f"{name} seed {seed}", flush=True)
            runs.setdefault(name, []).append(
                cached_run(cache, f"{name.replace(':', '-')}-seed{seed}", lambda: distill(config), config=config)
            )

    best_teacher = max((t for s in runs[STRATEGIES[0]] for t in s["teachers"]), key=lambda t: t["mean"])
    rows, verdicts = [], {"yes": [], "no": []}
    for name, summaries in runs.items():
        mean, low, high = mean_ci([s["student_return_mean"] for s in summaries])  # Student t over seeds
        random_mean = float(np.mean([s["random_return_mean"] for s in summaries]))
        metrics = [s["final_train_metrics"] for s in summaries]
        kls = (
            " / ".join(f"{np.mean([m[key] for m in metrics]):.2f}" for key in per_teacher_kl_keys(metrics[0]))
            if not name.startswith("alone:")
            else "-"
        )
        # the bar: the ensemble student reaches the best single teacher, within its CI over seeds
        reaches = "yes" if high >= best_teacher["mean"] else "no"
        pct = pct_of(mean, best_teacher["mean"], random_mean)
        if not name.startswith("alone:"):
            verdicts[reaches].append(f"`{name}` ({pct:.1f} %)")
        rows.append(
            f"| {name} | {mean:.1f} | [{low:.1f}, {high:.1f}] | "
            f"{pct:.1f} | {reaches} | "
            f"{np.mean([m['teacher/entropy'] for m in metrics]):.3f} | {kls} |"
        )
    scores = runs[STRATEGIES[0]][0]["teachers"]  # in the order of ``teachers``
    teacher_line = ", ".join(f"{label(t)} {s['mean']:.1f} ± {s['std']:.1f}" for t, s in zip(teachers, scores))
    table = "\n".join(
        [
            f"Teachers (return on the evaluation episodes): {teacher_line}. τ = {TEMPERATURE}, seeds {list(seeds)}, "
            f"{budget['n_transitions']:,} transitions, {budget['n_updates']:,} updates, {budget['n_eval_episodes']} episodes.",
            "",
            f"| strategy | student return | 95 % CI (over seeds) | % of best teacher | reaches best teacher | "
            f"merged-target entropy | KL per teacher ({' / '.join(label(t) for t in teachers)}) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Merges that reach the best teacher: {', '.join(verdicts['yes']) or 'none'}. "
            f"Fall short: {', '.join(verdicts['no']) or 'none'} (% of the best teacher).",
        ]
    )
    command = "python benchmarks/merge_strategies.py" + (" --quick" if args.quick else "")
    publish(
        "merge_strategies",
        "# Merge strategies\n\nGenerated by `benchmarks/merge_strategies.py`; do not edit by "
        "hand.\n\n" + provenance(command) + "\n" + table + "\n",
        quick=args.quick,
        readme_marker="merge-strategies",
        readme_text=table + f"\n\n`{command}`",
    )
    print(table)


if __name__ == "__main__":
    main()
