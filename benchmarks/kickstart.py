"""RL fine-tuning with a distillation term (`policykd finetune`): beyond the teacher, faster than
from scratch, and the lambda schedules compared.

    python benchmarks/kickstart.py               # 1 seed per arm, budgets cut to ~15 CPU-min on 2 shared cores
    python benchmarks/kickstart.py --seeds a=5,b=3,c=3,d=1    # seeds per part, as published
    python benchmarks/kickstart.py --seeds a=3,b=3,c=3,d=3    # and HalfCheetah (d: ~20 CPU-min per cell)
    python benchmarks/kickstart.py --quick       # tiny budgets, 1 seed: ~3 min, kickstart-quick.* only

(a) Beyond the teacher: the weak DQN LunarLander expert (zoo score ~146 ± 142) is distilled into a
    student of its size (Q-value mse, the no-preset defaults' 50,000 transitions and 10,000 updates),
    which is then fine-tuned by SB3's DQN with rl-zoo's hyperparameters for 30,000 env steps, with
    the distillation term (QDagger's tau-KL, performance-based lambda) and without it (lambda = 0).
    Fine-tuning a pre-trained Q-network starts at rl-zoo's final epsilon (finetune's choice for a
    pre-trained start), not at 1.0. The teacher and every arm play the same 30 evaluation episodes
    per seed (its return varies a lot); the verdict is the t-interval over the paired seeds of the
    difference to the teacher, and to the arm without the term.
(b) Faster than from scratch: SB3's PPO with rl-zoo's LunarLander hyperparameters from random
    weights, kickstarted (constant lambda = 1) and not (lambda = 0); env steps until the student's
    evaluation return first reaches 90 % of the teacher's. Learning curves into kickstart.png.
(c) Schedules: constant, linear, exponential and performance-based lambda, and none, on CartPole
    PPO from scratch.
(d) Faster than from scratch on MuJoCo: (b) on HalfCheetah PPO, rl-zoo's hyperparameters; in both
    arms VecNormalize starts from the teacher's observation statistics, as `policykd finetune` does.
    Run only when ``--seeds`` names it (``d=N``, or a plain N for every part): two arms of 300,000
    env steps per seed.

Every cell is one `finetune` run, cached under results/kickstart/<full|quick>/, so an interrupted
run resumes. Atari was not measured (budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np
from common import (
    CACHE_STAMP,
    CODE_TRACE,
    REFRESH_OPTION,
    RESULTS_DIR,
    TaskCache,
    cached_run,
    config_fingerprint,
    is_cached,
    page,
    publish,
    results_name,
    set_refresh_stale,
)

from policykd.fileio import read_json, write_json_atomic
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill
from policykd.jobs.evaluate import mean_ci
from policykd.jobs.finetune import FinetuneConfig, finetune
from policykd.zoo.presets import ZOO_DIR

DQN_TEACHER, PPO_TEACHER, CARTPOLE_TEACHER, CHEETAH_TEACHER = (
    "agents/dqn/LunarLander-v3_1",
    "agents/ppo/LunarLander-v3_1",
    "agents/ppo/CartPole-v1_1",
    "agents/ppo/HalfCheetah-v5_1",
)
THRESHOLD = 0.9  # of the teacher's return
# (a): the DQN student's distillation budget (transitions, updates: the no-preset defaults') and its fine-tuning steps
DQN_STUDENT, DQN_STEPS = (50_000, 10_000), 30_000
RUNS = {False: "runs/benchmarks/kickstart", True: "runs/benchmarks/kickstart-quick"}  # run folders, by --quick
SCHEDULES = {
    "none (λ = 0, plain PPO)": "constant:0",
    "constant λ = 1": "constant:1",
    "performance-based λ": "performance",
}


def budgets(quick: bool) -> dict[str, int]:
    if quick:
        return dict(distill_transitions=5_000, distill_updates=500, dqn_steps=2_000, dqn_eval_episodes=3,
                    ppo_steps=16_384, ppo_eval_every=8_192, cartpole_steps=4_000, cartpole_eval_every=1_000,
                    cheetah_steps=4_096, cheetah_eval_every=2_048, eval_episodes=3)  # fmt: skip
    return dict(distill_transitions=DQN_STUDENT[0], distill_updates=DQN_STUDENT[1], dqn_steps=DQN_STEPS,
                dqn_eval_episodes=30, ppo_steps=98_304, ppo_eval_every=16_384, cartpole_steps=20_000,
                cartpole_eval_every=2_048, cheetah_steps=300_000, cheetah_eval_every=25_000, eval_episodes=10)  # fmt: skip


def parse_args() -> argparse.Namespace:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, 1 seed")
    parser.add_argument("--seeds", default="1", help="seeds per arm: N, or per part as a=3,b=2,c=3 (default 1)")
    parser.add_argument("--force", action="store_true", help="recompute cached cells")
    parser.add_argument(*REFRESH_OPTION[0], **REFRESH_OPTION[1])
    args = parser.parse_args()
    set_refresh_stale(args.refresh_stale)
    torch.set_num_threads(1)
    os.chdir(ZOO_DIR.parent)
    return args


def run_cell(cache: TaskCache, name: str, config: FinetuneConfig) -> dict:
    out_dir = f"{RUNS[cache.cache_dir.name == 'quick']}/{name}"
    config = dataclasses.replace(config, out_dir=out_dir, overwrite=True, progress_bar=False)
    print(name, flush=True)
    return cache(name, lambda: finetune(config), config=config)


def beyond_teacher(cache: TaskCache, b: dict[str, int], seed: int) -> dict[str, dict]:
    """(a): the distilled DQN student fine-tuned with and without the distillation term; the teacher
    and every arm on the same evaluation episodes of the seed."""
    config = DistillConfig(
        teacher=DQN_TEACHER, loss="mse", center_q=False, hidden_sizes=(256, 256), seed=seed,
        n_transitions=b["distill_transitions"], n_updates=b["distill_updates"], n_eval_episodes=b["dqn_eval_episodes"],
        out_dir=f"{RUNS[cache.cache_dir.name == 'quick']}/dqn-student-seed{seed}", overwrite=True, progress_bar=False,
        teacher_check=False,  # the weak expert (146 ± 142) is not always clear of random on a few episodes
    )  # fmt: skip
    student = cache(f"dqn-student-seed{seed}", lambda: distill(config), config=config)
    cells = {
        arm: (f"dqn-{schedule.replace(':', '')}-seed{seed}", FinetuneConfig(
            teacher=DQN_TEACHER, algo="dqn", start=str(config.out_dir), schedule=schedule, n_timesteps=b["dqn_steps"],
            seed=seed, n_eval_episodes=b["dqn_eval_episodes"], eval_every_steps=b["dqn_steps"] // 3,
        ))
        for arm, schedule in (("fine-tuned, no distillation", "constant:0"), ("fine-tuned + QDagger term", "performance"))
    }  # fmt: skip
    if not Path(str(config.out_dir)).is_dir() and not all(_answered(cache, *cell) for cell in cells.values()):
        # a cached student whose run folder is gone (another checkout), needed to start a fine-tuning cell
        student = cached_run(cache.cache_dir, f"dqn-student-seed{seed}", lambda: distill(config), True, config)
    arms = {arm: run_cell(cache, name, ft) for arm, (name, ft) in cells.items()}
    last = arms["fine-tuned + QDagger term"]
    distilled = {"mean": student["student_return_mean"], "ci95": student["student_return_ci95"]}
    best = {f"{arm}, {BEST}": {"student_return": s["best"]["student_return"], "steps": s["best"]["steps"],
                               "curve": [], "teacher_return": s["teacher_return"]}
            for arm, s in arms.items() if "best" in s}  # fmt: skip
    return {
        "teacher (same episodes)": {"student_return": last["teacher_return"], "curve": [], "teacher_return": last["teacher_return"]},
        "distilled student": {"student_return": distilled, "curve": [], "teacher_return": last["teacher_return"]},
        **arms,
        **best,
    }  # fmt: skip


def _answered(cache: TaskCache, name: str, config: FinetuneConfig) -> bool:
    """Whether the cache would read cell ``name`` back for ``config`` rather than compute it."""
    path = cache.cache_dir / f"{name}.json"
    recorded = read_json(path).get(CACHE_STAMP, {}).get("config") if path.is_file() else None
    return not cache.force and recorded == config_fingerprint(config) and is_cached(path)


def faster(cache: TaskCache, b: dict[str, int], seed: int, teacher: str, steps: str, every: str) -> dict[str, dict]:
    """(b) and (c): from scratch, with each lambda schedule."""
    schedules = dict(SCHEDULES)
    if teacher == CARTPOLE_TEACHER:
        schedules[f"linear λ 1 → 0 over {b[steps] // 2:,} steps"] = f"linear:{b[steps] // 2}"
        schedules[f"exponential λ, half-life {b[steps] // 8:,} steps"] = f"exponential:{b[steps] // 8}"
    else:
        schedules.pop("performance-based λ")
    env = teacher.split("/")[-1].split("_")[0]
    return {
        arm: run_cell(
            cache,
            f"{env}-ppo-{schedule.replace(':', '')}-seed{seed}",
            FinetuneConfig(
                teacher=teacher,
                algo="ppo",
                schedule=schedule,
                n_timesteps=b[steps],
                seed=seed,
                n_eval_episodes=b["eval_episodes"],
                eval_every_steps=b[every],
            ),  # fmt: skip
        )
        for arm, schedule in schedules.items()
    }


def steps_to(curve: list[list[float]], target: float) -> int | None:
    """Env steps of the first evaluation from which every evaluation reaches ``target`` (None:
    not by the end). "Reaches and holds": a student that starts above it (a lucky random network on
    CartPole) and is then unlearned by RL does not count as having reached it at step 0."""
    for i, point in enumerate(curve):
        if all(later[1] >= target for later in curve[i:]):
            return int(point[0])
    return None


def table(runs: dict[str, list[dict]], teacher_return: float, budget: int) -> list[str]:
    rows = ["| arm | return | 95 % CI (seeds; 1 seed: episodes) | env steps to reach and hold 90 % of teacher (per seed) | ratio to teacher |",
            "|---|---|---|---|---|"]  # fmt: skip
    for arm, seeds in runs.items():
        mean, low, high = mean_ci([s["student_return"]["mean"] for s in seeds])
        if len(seeds) == 1:  # one seed: the bootstrap CI over its evaluation episodes
            low, high = seeds[0]["student_return"]["ci95"]
        reached = [steps_to(s["curve"], THRESHOLD * teacher_return) for s in seeds]
        shown = (
            ", ".join(f"{r:,}" if r is not None else f"not within {budget:,}" for r in reached)
            if seeds[0]["curve"]
            else "-"
        )
        rows.append(f"| {arm} | {mean:.1f} | [{low:.1f}, {high:.1f}] | {shown} | {mean / teacher_return:.2f} |")
    return rows


def plot(parts: dict[str, dict[str, list[dict]]], teachers: dict[str, float], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.8))
    for ax, (title, runs) in zip(np.atleast_1d(axes), parts.items()):
        for arm, seeds in runs.items():
            if not seeds[0]["curve"]:
                continue
            steps = [p[0] for p in seeds[0]["curve"]]
            values = np.array([[p[1] for p in s["curve"]] for s in seeds])
            if len(seeds) > 1:
                stats = [mean_ci(values[:, i]) for i in range(values.shape[1])]
            else:  # one seed: the bootstrap CI of the mean over evaluation episodes
                stats = [(p[1], p[2], p[3]) for p in seeds[0]["curve"]]
            ax.plot(steps, [s[0] for s in stats], label=arm)
            ax.fill_between(steps, [s[1] for s in stats], [s[2] for s in stats], alpha=0.2)
        ax.axhline(THRESHOLD * teachers[title], color="k", ls="--", lw=0.8, label="90 % of teacher")
        ax.set(title=title, xlabel="env steps", ylabel="evaluation return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    CODE_TRACE.start()
    b = budgets(args.quick)
    n_seeds = dict.fromkeys(PARTS, 1) if args.quick else seeds_per_part(args.seeds)
    cache = TaskCache(RESULTS_DIR / "kickstart" / ("quick" if args.quick else "full"), force=args.force)
    parts: dict[str, dict[str, list[dict]]] = {key: {} for key in PARTS if n_seeds[key]}
    for seed in range(max(n_seeds.values())):  # seed-major: a stopped run has every arm of the first seeds
        for key, run in (  # cheapest first
            ("c", lambda: faster(cache, b, seed, CARTPOLE_TEACHER, "cartpole_steps", "cartpole_eval_every")),
            ("b", lambda: faster(cache, b, seed, PPO_TEACHER, "ppo_steps", "ppo_eval_every")),
            ("a", lambda: beyond_teacher(cache, b, seed)),
            ("d", lambda: faster(cache, b, seed, CHEETAH_TEACHER, "cheetah_steps", "cheetah_eval_every")),
        ):
            if seed < n_seeds[key]:
                for arm, summary in run().items():
                    parts[key].setdefault(arm, []).append(summary)
    report(args, b, n_seeds, parts)


# (a)'s rows of finetune's best_model.zip: chosen on validation episodes, scored on held-out ones
BEST = "best checkpoint"


def verdict_a(runs: dict[str, list[dict]], suffix: str = "") -> str:
    """Whether the fine-tuned student ends above its teacher, and above RL without the term: the
    t-interval over seeds of the per-seed difference (both measured on that seed's same episodes;
    the arms share the seed's distilled student), and whether the arms' own intervals separate.
    ``suffix``: ", best checkpoint" to judge the two arms' best checkpoints instead of their last weights."""
    with_term, without = (runs[arm + suffix] for arm in ("fine-tuned + QDagger term", "fine-tuned, no distillation"))
    mine = [s["student_return"]["mean"] for s in with_term]
    teacher = [s["teacher_return"]["mean"] for s in with_term]
    other = [s["student_return"]["mean"] for s in without]
    if len(mine) < 2:
        return "Reached? Not decided: the verdict is an interval over paired seeds, and this run has one."
    lines = []
    for what, base in (("its teacher", teacher), ("RL without the term", other)):
        diff, low, high = mean_ci(np.subtract(mine, base))
        separate = mean_ci(mine)[1] > mean_ci(base)[2]
        lines.append(f"above {what}: **{'yes' if low > 0 else 'no'}** (difference {diff:+.1f}, 95 % CI "
                     f"[{low:+.1f}, {high:+.1f}] over {len(mine)} paired seeds; the two rows' CIs "
                     f"{'separate' if separate else 'overlap'})")  # fmt: skip
    which = f"the {BEST}s" if suffix else "the last weights"
    return f"Reached? With the QDagger term ({which}), " + "; ".join(lines) + "."


def best_steps(runs: dict[str, list[dict]]) -> str:
    """Where (a)'s best checkpoints were, per seed."""
    shown = []
    for arm, seeds in runs.items():
        if arm.endswith(BEST):
            shown.append(f"{arm.removesuffix(', ' + BEST)}: " + ", ".join(f"{s['steps']:,}" for s in seeds))
    return "Best checkpoints at env step (per seed): " + "; ".join(shown) + "." if shown else ""


def verdict_b(runs: dict[str, list[dict]], teacher: float, budget: int) -> str:
    """Kickstarted steps to 90 % of the teacher against from scratch's (a lower bound when it never got there)."""
    scratch, kicked = (runs[arm] for arm in runs)
    reached = [steps_to(s["curve"], THRESHOLD * teacher) for s in kicked]
    never = all(steps_to(s["curve"], THRESHOLD * teacher) is None for s in scratch)
    if None in reached or not never:
        return "Reached? See the table: the speed-up is not a clean bound on this budget."
    worst = max(reached)  # type: ignore[type-var]
    return (f"Reached? Kickstarted: 90 % of the teacher by {worst:,} env steps in every seed; from scratch: not within "
            f"{budget:,}, so kickstarting took **under {worst / budget:.2f}** of scratch's steps (goal: 1/3).")  # fmt: skip


def _exploration(runs: dict[str, list[dict]]) -> str:
    """How the fine-tuned DQN explored (finetune's choice for a pre-trained start, from its summary)."""
    summary = runs["fine-tuned + QDagger term"][0]
    e = summary.get("exploration")
    if not e:
        return "epsilon-greedy as rl-zoo's schedule says"
    return (f"epsilon {e['initial_eps']:g} → {e['final_eps']:g} ({e['initial_eps_from']}; rl-zoo's schedule starts at "
            f"1.0 for random weights), warm-up transitions from the student's policy: "
            f"{'yes' if summary.get('warmup_with_policy') else 'no'}")  # fmt: skip


def _seeds(runs: dict[str, list[dict]]) -> str:
    n = len(next(iter(runs.values())))
    return f"{n} seed{'s' if n > 1 else ''} per arm"


PARTS = "abcd"
OPT_IN_PARTS = "d"  # run only when --seeds names them (or gives every part N seeds): hours on 2 cores


def seeds_per_part(spec: str) -> dict[str, int]:
    """``3`` -> 3 seeds for every part; ``a=3,b=2,c=3`` -> per part (a part left out: 1, an opt-in
    part left out: 0)."""
    if "=" not in spec:
        return dict.fromkeys(PARTS, int(spec))
    given = {key.strip(): int(n) for key, _, n in (item.partition("=") for item in spec.split(","))}
    return {key: given.get(key, 0 if key in OPT_IN_PARTS else 1) for key in PARTS}


def cheetah_section(runs: dict[str, list[dict]], teacher: float, b: dict[str, int]) -> list[str]:
    """Part (d)'s lines: (b) on HalfCheetah."""
    return [
        f"**(d) Faster than from scratch on MuJoCo**: PPO HalfCheetah, teacher `{CHEETAH_TEACHER}` returns "
        f"{teacher:.1f}; rl-zoo's hyperparameters (VecNormalize starting from the teacher's observation statistics in both arms), "
        f"{b['cheetah_steps']:,} env steps, random initial weights; {_seeds(runs)}.",
        "",
        *table(runs, teacher, b["cheetah_steps"]),
        "",
        verdict_b(runs, teacher, b["cheetah_steps"]),
        "",
    ]


def report(args: argparse.Namespace, b: dict[str, int], seeds: dict[str, int], parts: dict) -> None:
    teacher = {key: np.mean([s["teacher_return"]["mean"] for s in runs[list(runs)[-1]]]) for key, runs in parts.items()}
    stem = results_name("kickstart", args.quick)
    zoo = read_json(ZOO_DIR.parent / DQN_TEACHER / "expert.json")["score"]
    titles = {
        "a": "LunarLander DQN: fine-tuning its distilled student",
        "b": "LunarLander PPO: kickstarted vs scratch",
        "c": "CartPole PPO: lambda schedules",
        "d": "HalfCheetah PPO: kickstarted vs scratch",
    }
    shown = [k for k in titles if k in parts]
    where_best = best_steps(parts["a"])
    plot({titles[k]: parts[k] for k in shown}, {titles[k]: teacher[k] for k in shown}, str(RESULTS_DIR / f"{stem}.png"))
    lines = [
        f"Evaluation: {b['eval_episodes']} greedy episodes on held-out evaluation seeds (seed + 10,000 + i, as "
        "distill's), the teacher on the same episodes. The learning curves, the env steps to reach 90 % and finetune's "
        f"choice of its {BEST} (`best_model.zip`) use other episodes, validation ones (seed + 20,000 + i); a "
        f"{BEST} row scores that choice on the held-out episodes. The CI is a Student-t interval over seeds, or with "
        "one seed the bootstrap CI of the mean over its evaluation episodes (as in the PNG's curves).",
        "",
        f"**(a) Beyond the teacher**: DQN LunarLander, teacher `{DQN_TEACHER}` (zoo score {zoo['mean']:.0f} ± "
        f"{zoo['std']:.0f} over {zoo['n_episodes']} episodes), measured with every arm on the same "
        f"{b['dqn_eval_episodes']} evaluation episodes of each seed; its student (Q-value mse, 256-256, "
        f"{b['distill_transitions']:,} transitions, {b['distill_updates']:,} updates) is fine-tuned by DQN with "
        f"rl-zoo's hyperparameters for {b['dqn_steps']:,} env steps, {_exploration(parts['a'])}; the QDagger arm "
        f"adds the tau-KL term with the performance-based λ = max(0, 1 − G_student / G_teacher); {_seeds(parts['a'])}.",
        "",
        *table(parts["a"], teacher["a"], b["dqn_steps"]),
        "",
        verdict_a(parts["a"]),
        "",
        *([where_best, "", verdict_a(parts["a"], f", {BEST}"), ""] if where_best else []),
        f"**(b) Faster than from scratch**: PPO LunarLander, teacher `{PPO_TEACHER}` returns {teacher['b']:.1f}; "
        f"rl-zoo's hyperparameters (16 envs), {b['ppo_steps']:,} env steps, random initial weights; {_seeds(parts['b'])}.",
        "",
        *table(parts["b"], teacher["b"], b["ppo_steps"]),
        "",
        verdict_b(parts["b"], teacher["b"], b["ppo_steps"]),
        "",
        f"**(c) Schedules**: PPO CartPole from scratch, teacher `{CARTPOLE_TEACHER}` ({teacher['c']:.1f}), "
        f"{b['cartpole_steps']:,} env steps; {_seeds(parts['c'])}.",
        "",
        *table(parts["c"], teacher["c"], b["cartpole_steps"]),
        "",
        *(cheetah_section(parts["d"], teacher["d"], b) if "d" in parts else []),
        "Not measured (budget): "
        + ("" if "d" in parts else "HalfCheetah (part d: `--seeds ...,d=3`) and ")
        + "Atari"
        + "".join(f"; 3 seeds for ({key}), which has {n}" for key, n in seeds.items() if 0 < n < 3)
        + ".",
        "",
        f"![learning curves]({stem}.png)",
    ]
    text = "\n".join(lines)
    write_json_atomic(RESULTS_DIR / f"{stem}.json", {"seeds": seeds, "budgets": b, "teacher_returns": teacher, "parts": {
        key: {arm: [s["student_return"]["mean"] for s in runs] for arm, runs in part.items()} for key, part in parts.items()
    }})  # fmt: skip
    command = "python benchmarks/kickstart.py" + (" --quick" if args.quick else f" --seeds {args.seeds}")
    readme = text.replace(f"]({stem}.png)", f"](benchmarks/results/{stem}.png)") + f"\n\n`{command}`"
    publish(
        "kickstart",
        page("RL fine-tuning with a distillation term", command, text),
        quick=args.quick,
        readme_marker="kickstart",
        readme_text=readme,
    )  # fmt: skip
    print(text)


if __name__ == "__main__":
    main()
