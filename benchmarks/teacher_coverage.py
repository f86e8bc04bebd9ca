"""Teacher coverage: one real rl-zoo expert per newly supported (algorithm, policy option) pair,
distilled with policykd's defaults into a student of at most ~25 % of its acting parameters.

    python benchmarks/teacher_coverage.py            # 5 rl-zoo experts (~25 CPU-min) + 4 toy experts (~10 CPU-min)
    python benchmarks/teacher_coverage.py --quick    # 2 cheap rl-zoo experts, 2 toy ones, short budgets: ~4 min

Each expert is trained with ``policykd.zoo.experts.train_expert`` (rl_zoo3's tuned hyperparameters
and budget) into ``runs/teacher_coverage[-quick]/zoo/`` (git-ignored; a killed training resumes
from its checkpoint), then distilled with the env preset's budgets (policykd's DEFAULTS where the
env has no preset) and the loss that suits the teacher kind (KL at tau 1; KL at tau 0.1 for scores
read as Q-values; action MSE for deterministic teachers). The student is a two-hidden-layer MLP
whose width puts it closest to 25 % of the teacher's acting parameters (ARS's linear policy has 8:
no MLP is that small, so its student is a one-layer MLP of 4 units; the table shows the fraction).
The pairs rl_zoo3 2.9.2 has no env or hyperparameters for (MaskablePPO, MultiDiscrete / MultiBinary
actions, dict observations) get a toy env of ``toy_envs.py`` and an expert trained with the library's
default hyperparameters (``TOY_CELLS``; the table marks them). % of teacher is normalised so that a
uniformly random policy (within the action masks, where there are) scores 0 %. Resumable: a finished
distillation is cached under results/teacher_coverage/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import toy_envs
from common import RESULTS_DIR, TaskCache, parse_quick_args, provenance, publish, results_name, train_benchmark_expert
from fidelity_compression import loss_for, width_for

from policykd.data.teachers import load_teacher
from policykd.fileio import write_json_atomic
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill

TARGET_PCT, TARGET_FRACTION = 90.0, 0.30
# (pair, rl-zoo algo, env id, --quick's timesteps or None: not in --quick); rl-zoo's hyperparameters as they are
CELLS: list[tuple[str, str, str, int | None]] = [
    ("SAC + gSDE (rl-zoo's use_sde: True)", "sac", "MountainCarContinuous-v0", None),
    ("TQC", "tqc", "Pendulum-v1", None),
    ("TRPO, Discrete", "trpo", "CartPole-v1", 30_000),
    ("TRPO + gSDE, Box", "trpo", "Pendulum-v1", None),
    ("ARS, LinearPolicy, Discrete", "ars", "CartPole-v1", 20_000),
]

# Pairs rl_zoo3 2.9.2 has no env or hyperparameters for (benchmarks/toy_envs.py): (pair, algo, env id,
# timesteps, --quick's timesteps), trained with SB3's / sb3-contrib's default hyperparameters.
TOY_CELLS: list[tuple[str, str, str, int, int | None]] = [
    ("MaskablePPO, Discrete + action masks", "ppo_mask", toy_envs.MASKED_ENV, 30_000, 8_192),
    ("PPO, MultiDiscrete", "ppo", toy_envs.FACTORED_ENV, 40_000, None),
    ("PPO, MultiBinary", "ppo", toy_envs.BINARY_ENV, 30_000, None),
    ("PPO, MultiInputPolicy (Dict obs)", "ppo", toy_envs.DICT_ENV, 60_000, 8_192),
]
LINEAR_NOTE = (
    "A linear teacher (ARS's LinearPolicy: 8 parameters on CartPole) cannot be compressed to 30 %: its student is "
    "linear too (logits = W·obs + b, 10 parameters), the smallest model that can represent it."
)
TOY_NOTE = (
    "Rows marked * use a toy env of `benchmarks/toy_envs.py` and an expert trained with SB3's / sb3-contrib's "
    "default hyperparameters for the timesteps shown: rl_zoo3 2.9.2 has no env or hyperparameters for "
    "action masks, MultiDiscrete / MultiBinary actions or dict observations."
)


def train_toy(algo: str, env_id: str, root: Path, n_timesteps: int) -> Path:
    """The expert's zip: the algorithm with its library's defaults, seed 0 (reused when saved)."""
    import sb3_contrib
    import stable_baselines3

    path = root / f"{algo}-{env_id}-{n_timesteps}.zip"
    if not path.is_file():
        print(f"training {algo} on {env_id} for {n_timesteps:,} steps (library defaults)", flush=True)
        cls = sb3_contrib.MaskablePPO if algo == "ppo_mask" else getattr(stable_baselines3, algo.upper())
        policy = "MultiInputPolicy" if env_id == toy_envs.DICT_ENV else "MlpPolicy"
        model = cls(policy, env_id, seed=0, device="cpu")
        model.learn(n_timesteps)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return path


def student_width(teacher, fraction: float = 0.25) -> tuple[int, ...]:
    obs_dim = int(np.prod(teacher.observation_space.shape))
    out_dim = int(getattr(teacher.action_space, "n", 0) or np.prod(teacher.action_space.shape))
    out_dim *= 2 if teacher.kind in ("gaussian", "squashed_gaussian") else 1
    if teacher.n_params < 100:  # a linear policy (ARS): a linear student can be exactly it (no student is 30 % of it)
        return ()
    width = width_for(fraction, teacher.n_params, obs_dim, out_dim)
    return (width, width)


def uses_sde(policy) -> bool:
    """Whether the expert explores with gSDE (actor-critics hold the flag, SAC / TQC their actor)."""
    return bool(getattr(policy, "use_sde", False) or getattr(getattr(policy, "actor", None), "use_sde", False))


def distill_expert(pair: str, algo: str, env_id: str, quick: bool, zoo: Path, cache: TaskCache, steps) -> dict:
    """Train (or reuse) the expert, distil it (a cached cell of its own) and return the table's cell.
    ``steps``: a toy cell's timesteps (then trained with the library's defaults), else --quick's or None."""
    toy = any(env_id == cell[2] for cell in TOY_CELLS)
    source = (
        train_toy(algo, env_id, zoo.parent / "toy", steps)
        if toy
        else train_benchmark_expert(algo, env_id, zoo, steps if quick else None)
    )
    teacher = load_teacher(source, env_id=env_id if toy else None)
    hidden = student_width(teacher)
    config = DistillConfig(
        teacher=str(source),
        env_id=env_id if toy else None,
        hidden_sizes=hidden,
        seed=0,
        out_dir=f"{zoo.parent}/distill/{algo}-{env_id}",
        overwrite=True,
        progress_bar=False,
        **({"n_updates": 1_000, "n_transitions": 10_000, "n_eval_episodes": 10} if quick else {}),
        **loss_for(teacher.kind),
    )
    print(f"distilling {algo} on {env_id} into {hidden}", flush=True)
    summary = cache(f"{algo}-{env_id}", lambda: distill(config), config=config)
    keys = ("teacher_return_mean", "student_return_mean", "random_return_mean", "pct_of_teacher")
    cell = {k: summary[k] for k in keys} | {"student_params": summary["student_params"]}
    cell |= {"teacher_params": summary["teacher_params"], "param_fraction": summary["param_fraction"]}
    cell |= {"pair": pair, "algo": algo, "env_id": env_id, "kind": teacher.kind, "hidden_sizes": list(hidden)}
    cell |= {"loss": summary["loss"], "temperature": summary["temperature"], "use_sde": uses_sde(teacher.policy)}
    return cell | ({"toy_timesteps": steps} if toy else {})


def run_cell(pair: str, algo: str, env_id: str, quick: bool, zoo: Path, cache: TaskCache, steps) -> dict:
    """The cell, cached whole: a checkout without the experts under runs/ (git-ignored) reads it
    without training them again (``--force`` recomputes)."""
    toy = any(env_id == cell[2] for cell in TOY_CELLS)
    question = {"pair": pair, "algo": algo, "env_id": env_id, "timesteps": steps if quick or toy else None}
    return cache(
        f"cell-{algo}-{env_id}", lambda: distill_expert(pair, algo, env_id, quick, zoo, cache, steps), question
    )


def table(cells: list[dict]) -> str:
    rows = []
    for c in cells:
        met = c["pct_of_teacher"] >= TARGET_PCT and c["param_fraction"] <= TARGET_FRACTION
        pair = f"{c['pair']} * ({c['toy_timesteps']:,} steps)" if "toy_timesteps" in c else c["pair"]
        rows.append(
            f"| {pair} | {c['env_id']} | {c['kind']} | {c['teacher_return_mean']:.1f} | "
            f"{c['random_return_mean']:.1f} | {c['student_return_mean']:.1f} | {c['pct_of_teacher']:.1f} | "
            f"{c['student_params']:,} / {c['teacher_params']:,} ({100 * c['param_fraction']:.1f} %) | "
            f"{c['loss']} τ={c['temperature']:g} | {'yes' if met else 'no'} |"
        )
    return "\n".join(
        [
            f"Target: ≥ {TARGET_PCT:.0f} % of teacher at ≤ {100 * TARGET_FRACTION:.0f} % of its acting parameters.",
            "",
            "| pair | env | teacher kind | teacher return | random | student | % of teacher | params student / "
            "teacher | loss | target met |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            *(["", TOY_NOTE] if any("toy_timesteps" in c for c in cells) else []),
            *(["", LINEAR_NOTE] if any(c["teacher_params"] < 100 for c in cells) else []),
        ]
    )


def main() -> None:
    args = parse_quick_args(__doc__, only_help="run only the cells whose algo or env id contains this", trace_code=True)
    stem = results_name("teacher_coverage", args.quick)
    zoo = Path("runs") / stem / "zoo"
    cache_dir = RESULTS_DIR / "teacher_coverage" / ("quick" if args.quick else "full")
    cache, forced = TaskCache(cache_dir), TaskCache(cache_dir, force=True)

    def through(algo: str, env_id: str) -> TaskCache | None:
        """--only's cells run (--force: recomputed); the others keep their cached row, or are left out."""
        if args.only in f"{algo} {env_id}":
            return forced if args.force else cache
        return cache if (cache_dir / f"cell-{algo}-{env_id}.json").is_file() else None

    picked = [(pair, algo, env_id, steps) for pair, algo, env_id, steps in CELLS if steps is not None or not args.quick]
    picked += [
        (pair, algo, env_id, quick_steps if args.quick else steps)
        for pair, algo, env_id, steps, quick_steps in TOY_CELLS
        if quick_steps is not None or not args.quick
    ]
    cells = [
        run_cell(pair, algo, env_id, args.quick, zoo, chosen, steps)
        for pair, algo, env_id, steps in picked
        if (chosen := through(algo, env_id)) is not None
    ]
    text = table(cells)
    write_json_atomic(RESULTS_DIR / f"{stem}.json", {"cells": cells})
    command = "python benchmarks/teacher_coverage.py" + (" --quick" if args.quick else "")
    publish(
        "teacher_coverage",
        "# Teacher coverage\n\nGenerated by `benchmarks/teacher_coverage.py`; do not edit by hand.\n\n"
        + provenance(command)
        + "\n"
        + text
        + "\n",
        quick=args.quick,
    )
    print(text)


if __name__ == "__main__":
    main()
