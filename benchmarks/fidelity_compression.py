"""Fidelity vs compression: students at ~25 %, 7 % and 4 % of each zoo expert's acting parameters, and at
~1 % and 0.5 % of the classic-control experts' (CLASSIC_ENVS: a CartPole student of under 60 parameters
can reach 500).

    python benchmarks/fidelity_compression.py            # every finished MLP expert (not Atari, not Hopper), 3 seeds
    python benchmarks/fidelity_compression.py --all      # Hopper too (9 runs of 200k TD3 transitions: ~1.5 h on 2 cores)
    python benchmarks/fidelity_compression.py --quick    # 4 classic experts (one per env, each teacher kind
                                                         # but TD3), 1 seed, half the budgets: ~3.5 min

The anchor is Rusu et al. 2016 (KL students at 25 / 7 / 4 % of a DQN kept 108.3 / 101.7 / 83.9 %
of its score). Each student is a two-hidden-layer MLP whose width is chosen so that its parameter
count is closest to the fraction, trained with the loss that suits the teacher kind (KL at τ = 1 for
policy-gradient teachers, KL at τ = 0.1 for Q-value teachers, action MSE for TD3). Reports the mean %
of teacher (random = 0 %) with a bootstrap 95 % CI over seeds, and the interquartile mean (IQM)
across tasks with a bootstrap CI over (task, seed) runs, as rliable computes it. Resumable.
The 1 % and 0.5 % students are sized by `--student-fraction` (policykd's own rule: the largest that
fits, one hidden layer below 8 units, Adam's step scaled by 64 / width up to 10x), not closest-width.
"""

from __future__ import annotations

import numpy as np
from common import RESULTS_DIR, cached_run, parse_quick_args, provenance, publish, results_name

from policykd.data.teachers import load_teacher
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill
from policykd.zoo.layout import is_finished
from policykd.zoo.presets import ZOO_DIR, load_preset

FRACTIONS = (0.25, 0.07, 0.04, 0.01, 0.005)
TINY_FRACTIONS = (0.01, 0.005)  # classic control only: a 1 % MuJoCo student is a 4x4 MLP, nothing to learn from it
CLASSIC_ENVS = ("CartPole", "Acrobot", "Pendulum", "LunarLander", "MountainCar")
# --quick: one expert per classic env, covering categorical, Q-value and Gaussian teachers
QUICK_EXPERTS = ("ppo/CartPole-v1_1", "dqn/Acrobot-v1_1", "ppo/LunarLander-v3_1", "sac/Pendulum-v1_1")
IMAGE_ENVS = ("NoFrameskip",)  # CNN teachers: an (h, h) MLP student does not apply
SKIPPED_ENVS = ("Hopper",)  # compute budget: --all runs it


def loss_for(kind: str) -> dict:
    if kind == "deterministic":
        return {"loss": "mse"}
    if kind in ("q_values", "quantiles"):
        return {"loss": "kl", "temperature": 0.1}
    return {"loss": "kl"}


def width_for(fraction: float, teacher_params: int, obs_dim: int, out_dim: int) -> int:
    """Width h of an (h, h) MLP whose parameter count is closest to ``fraction`` of the teacher's."""
    target = fraction * teacher_params
    counts = {h: obs_dim * h + h + h * h + h + h * out_dim + out_dim for h in range(2, 1025)}
    return min(counts, key=lambda h: abs(counts[h] - target))


def s0_fraction(summaries: list[dict]) -> float:
    return float(summaries[0]["param_fraction"])


def plot(curves: dict[str, list[tuple[float, float]]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for label, points in curves.items():
        xs, ys = zip(*sorted(points))
        ax.plot([100 * x for x in xs], ys, marker="o", label=label)
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("student params, % of teacher's")
    ax.set_ylabel("% of teacher return (random = 0)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: the lines fill the axes
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def iqm(values: np.ndarray) -> float:
    v = np.sort(values)
    n = len(v)
    return float(v[n // 4 : n - n // 4].mean()) if n >= 4 else float(v.mean())


def bootstrap_ci(values: np.ndarray, stat, rng: np.random.Generator, n: int = 2000) -> tuple[float, float]:
    samples = [stat(rng.choice(values, size=len(values), replace=True)) for _ in range(n)]
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def main() -> None:
    args = parse_quick_args(
        __doc__,
        extra=[(("--all",), dict(action="store_true", help="also " + ", ".join(SKIPPED_ENVS)))],
        trace_code=True,
    )
    seeds = (0,) if args.quick else (0, 1, 2)
    experts = sorted(
        p.parent
        for p in ZOO_DIR.glob("*/*_*/expert.json")
        if is_finished(p.parent)
        and (f"{p.parent.parent.name}/{p.parent.name}" in QUICK_EXPERTS or not args.quick)
        and not any(e in p.parent.name for e in IMAGE_ENVS)
    )
    skipped = [e for e in experts if not args.all and any(s in e.name for s in SKIPPED_ENVS)]
    experts = [e for e in experts if e not in skipped]
    cache = RESULTS_DIR / "fidelity_compression" / ("quick" if args.quick else "full")
    rows, curves, per_fraction = [], {}, {f: [] for f in FRACTIONS}
    for run_dir in experts:
        teacher = load_teacher(run_dir)
        run = run_dir.name.rsplit("_", 1)[1]
        name_of_teacher = teacher.algo + ("" if run == "1" else f" (run {run})")
        preset = load_preset(teacher.recipe.env_id)
        obs_dim = int(np.prod(teacher.observation_space.shape))
        out_dim = int(getattr(teacher.action_space, "n", 0) or np.prod(teacher.action_space.shape))
        out_dim *= 2 if teacher.kind in ("gaussian", "squashed_gaussian") else 1
        budget = {
            "n_transitions": preset["n_transitions"] // (2 if args.quick else 1),
            "n_updates": preset["n_updates"] // (2 if args.quick else 1),
            "n_eval_episodes": 10 if args.quick else 20,
        }
        classic = any(teacher.recipe.env_id.startswith(env) for env in CLASSIC_ENVS)
        for fraction in [f for f in FRACTIONS if classic or f not in TINY_FRACTIONS]:
            width = width_for(fraction, teacher.n_params, obs_dim, out_dim)
            summaries = []
            for seed in seeds:
                name = f"{run_dir.parent.name}-{run_dir.name}-f{fraction}-seed{seed}"
                config = DistillConfig(
                    teacher=str(run_dir.relative_to(ZOO_DIR.parent)),
                    # the 1 % and 0.5 % students: sized by policykd itself (resolve.student_size: one hidden
                    # layer below 8 units, Adam's step scaled up for narrow students)
                    **(
                        {"student_fraction": fraction}
                        if fraction in TINY_FRACTIONS
                        else {"hidden_sizes": (width, width)}
                    ),
                    seed=seed,
                    out_dir=f"runs/benchmarks/fidelity/{name}",
                    overwrite=True,
                    progress_bar=False,
                    **loss_for(teacher.kind),
                    **budget,
                )
                print(name, flush=True)
                summaries.append(cached_run(cache, name, lambda config=config: distill(config), config=config))
            pcts = np.array([s["pct_of_teacher"] for s in summaries])
            per_fraction[fraction] += list(pcts)
            curves.setdefault(f"{teacher.recipe.env_id} {name_of_teacher}", []).append(
                (s0_fraction(summaries), pcts.mean())
            )
            low, high = bootstrap_ci(pcts, np.mean, np.random.default_rng(0)) if len(pcts) > 1 else (pcts[0], pcts[0])
            s0 = summaries[0]
            rows.append(
                f"| {teacher.recipe.env_id} | {name_of_teacher} | {100 * fraction:g}% | {'×'.join(map(str, s0['hidden_sizes']))} | "
                f"{s0['student_params']:,} / {s0['teacher_params']:,} ({100 * s0['param_fraction']:.1f} %) | "
                f"{s0['loss']} τ={s0['temperature']:g} | {pcts.mean():.1f} [{low:.1f}, {high:.1f}] |"
            )
    rng = np.random.default_rng(0)
    iqm_rows = []
    for fraction, values in per_fraction.items():
        if not values:
            continue
        v = np.array(values)
        low, high = bootstrap_ci(v, iqm, rng)
        iqm_rows.append(f"| {100 * fraction:g}% | {iqm(v):.1f} | [{low:.1f}, {high:.1f}] | {len(v)} |")
    table = "\n".join(
        [
            f"Seeds {list(seeds)}; % of teacher with a uniformly random policy at 0 %, on 10000+ evaluation seeds.",
            "",
            "| env | teacher | target size | student MLP | params student / teacher | loss | % of teacher, mean [bootstrap 95 % CI over seeds] |",
            "|---|---|---|---|---|---|---|",
            *rows,
            *(
                f"| {e.name.rsplit('_', 1)[0]} | {e.parent.name} | not run (compute budget; `--all` runs it) | | | | |"
                for e in skipped
            ),
            "",
            "IQM across tasks (Rusu et al. 2016, geometric mean over 10 Atari games: 108.3 / 101.7 / 83.9 % at 25 / 7 / 4 %;"
            " the 1 % and 0.5 % rows are classic-control experts only):",
            "",
            "| target size | IQM % of teacher | bootstrap 95 % CI | runs |",
            "|---|---|---|---|",
            *iqm_rows,
        ]
    )
    png = f"{results_name('fidelity_compression', args.quick)}.png"
    plot(curves, RESULTS_DIR / png)
    table += f"\n\n![fidelity vs compression]({png})"
    command = "python benchmarks/fidelity_compression.py" + (" --quick" if args.quick else "")
    publish(
        "fidelity_compression",
        "# Fidelity vs compression\n\nGenerated by `benchmarks/fidelity_compression.py`; "
        "do not edit by hand.\n\n" + provenance(command) + "\n" + table + "\n",
        quick=args.quick,
    )
    print(table)


if __name__ == "__main__":
    main()
