"""Soft vs hard targets (issue 7 item 2): how many teacher transitions each distillation loss needs to
reach 95 % of the teacher's return, as a learning curve against the data budget.

    python benchmarks/soft_vs_hard.py            # every task, 3 seeds; resumes from results/soft_vs_hard/
    python benchmarks/soft_vs_hard.py --quick    # CartPole PPO and DQN, Pendulum SAC: every other budget,
                                                 # half the gradient steps and evaluation episodes (~5 min)
    python benchmarks/soft_vs_hard.py --only Pendulum   # run one task; the others come from their cache
    python benchmarks/soft_vs_hard.py --force    # recompute cached cells

Losses compared, per teacher kind (`policykd.learn.losses.make_loss`):
- categorical (PPO on CartPole, LunarLander): `kl`, the forward KL to softmax(logits) at τ = 1
  (soft), against `nll`, cross-entropy to the teacher's argmax action (hard).
- q_values (DQN on CartPole): `kl` to softmax(Q / 0.1), `nll` to argmax Q, and `mse` on the
  mean-centred Q-values (the student's logits read as Q).
- squashed_gaussian (SAC on Pendulum): `kl`, the KL between the pre-tanh Gaussians; `mse`, squared
  error between the student's and the teacher's pre-tanh means (the greedy actions before tanh);
  `nll`, the student Gaussian's negative log-likelihood of the teacher's greedy action.
- gaussian (PPO on HalfCheetah, with the teacher's VecNormalize statistics as the student's input
  normalisation): `kl` against `mse` on the mean; full mode only.

Per (task, seed): one buffer of `max(budgets)` teacher-driven transitions from `collect_rollouts`
(the preset's n_envs, epsilon and action noise; env and noise seeded by the seed). For each budget
n, each loss trains the same student (the preset's MLP, batch size and learning rate; the same
number of gradient steps at every budget; initial weights and minibatches seeded by the seed) on
the first n transitions of that buffer, so every loss sees exactly the same data. Each student plays
the same evaluation episodes (seeds from `policykd.jobs.distill.EVAL_SEED_OFFSET`) as the teacher and a
uniformly random policy, which define 100 % and 0 %.
Results: `results/soft_vs_hard.md` and `.json` (`--quick`: `soft_vs_hard-quick.md` and `.json`),
one PNG per task, and one cached JSON per cell under `results/soft_vs_hard[-quick]/<env>/<algo>/`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    README,
    RESULTS_DIR,
    TaskCache,
    collect_teacher_buffer,
    head_of,
    is_cached,
    parse_quick_args,
    provenance,
    replace_between_markers,
    results_name,
    stale_note,
    task_sections,
)
from vs_imitation_report import reach

from policykd.data.buffers import LabelledBuffer
from policykd.data.teachers import Teacher, load_teacher
from policykd.fileio import write_json_atomic, write_text_atomic
from policykd.jobs.evaluate import (
    EVAL_SEED_OFFSET,
    ReturnStats,
    episode_returns,
    evaluate_random,
    evaluate_teacher,
    mean_ci,
    pct_of,
)
from policykd.jobs.experiment import student_for
from policykd.jobs.plots import plot_curves
from policykd.jobs.resolve import check_teacher_score
from policykd.learn.losses import make_loss
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.zoo.presets import ZOO_DIR, load_preset

SEEDS = (0, 1, 2)
TARGET_PCT = 95.0
LABEL = {"kl": "kl (soft)", "nll": "nll (hard)", "mse": "mse"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """One task's losses and budgets; ``n_updates`` is the same at every data budget."""

    losses: tuple[str, ...]
    budgets: tuple[int, ...]
    n_updates: int
    kl_temperature: float = 1.0
    in_quick: bool = False

    def reduced(self) -> Plan:
        """--quick: every other budget, half the gradient steps."""
        return dataclasses.replace(self, budgets=self.budgets[::2], n_updates=self.n_updates // 2)

    def temperature(self, loss: str) -> float:
        return self.kl_temperature if loss == "kl" else 1.0


# (task name = "<env>/<algo>", the cache folder under results/soft_vs_hard/; zoo folder; plan)
TASKS: list[tuple[str, str, Plan]] = [
    # A CartPole PPO student reaches 500 from 50 transitions (the first 6 steps of 8 episodes): start lower.
    (
        "CartPole-v1/ppo",
        "agents/ppo/CartPole-v1_1",
        Plan(("kl", "nll"), (10, 20, 50, 100, 200, 500, 1_000, 2_000), 2_000, in_quick=True),
    ),
    (
        "CartPole-v1/dqn",
        "agents/dqn/CartPole-v1_1",
        Plan(("kl", "nll", "mse"), (10, 20, 50, 100, 200, 500, 1_000, 2_000), 2_000, kl_temperature=0.1, in_quick=True),
    ),
    # 8 envs x 200 steps: the first full episode per env ends at 1,600 transitions.
    (
        "Pendulum-v1/sac",
        "agents/sac/Pendulum-v1_1",
        Plan(("kl", "nll", "mse"), (100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000), 4_000, in_quick=True),
    ),
    (
        "LunarLander-v3/ppo",
        "agents/ppo/LunarLander-v3_1",
        Plan(("kl", "nll"), (100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000), 5_000),
    ),
    (
        "HalfCheetah-v5/ppo",
        "agents/ppo/HalfCheetah-v5_1",
        Plan(("kl", "mse"), (1_000, 2_000, 5_000, 10_000, 20_000, 50_000), 10_000),
    ),
]


# -- cells --------------------------------------------------------------------------------------------


def collect_buffer(teacher: Teacher, preset: dict[str, Any], n: int, seed: int) -> LabelledBuffer:
    """``n`` teacher-driven transitions (rounded up to whole vector steps), seeded by ``seed``."""
    return collect_teacher_buffer(teacher, preset, n, seed, int(preset["n_envs"]))


def train_and_evaluate(
    teacher: Teacher, preset: dict[str, Any], plan: Plan, buffer: LabelledBuffer, loss: str, seed: int, n_eval: int
) -> dict[str, Any]:
    """One cell: a fresh student trained with ``loss`` on ``buffer``, then its evaluation returns."""
    student = student_for(teacher, preset["hidden_sizes"], seed)
    loss_fn = make_loss(loss, teacher.kind, temperature=plan.temperature(loss))
    config = TrainerConfig(
        n_updates=plan.n_updates,
        batch_size=int(preset["batch_size"]),
        learning_rate=float(preset["learning_rate"]),
        seed=seed,
        progress_bar=False,
    )
    metrics = Trainer(student, loss_fn, buffer, config=config).train()
    rng, deterministic = np.random.default_rng(EVAL_SEED_OFFSET), bool(preset["deterministic_eval"])
    returns = episode_returns(
        lambda obs: student.act(obs, deterministic, rng), teacher.recipe, n_eval, seed=EVAL_SEED_OFFSET
    )
    stats = ReturnStats.of(returns)
    return {
        "loss": loss,
        "n_transitions": len(buffer),
        "seed": seed,
        "return": {**stats.to_json(), "returns": list(stats.returns)},
        "train_metrics": metrics,
    }


def run_task(name: str, source: str, plan: Plan, cache: Path, *, quick: bool, force: bool) -> dict[str, Any]:
    """Every cell of one task (each cached on its own), then its summary (also ``cache/summary.json``)
    and its plot."""
    teacher = load_teacher(ZOO_DIR.parent / source)
    preset = load_preset(teacher.recipe.env_id)
    plan = plan.reduced() if quick else plan
    n_eval = int(preset["n_eval_episodes"]) // (2 if quick else 1)
    deterministic = bool(preset["deterministic_eval"])

    def baselines() -> dict[str, Any]:
        measured = evaluate_teacher(teacher, n_eval, EVAL_SEED_OFFSET, deterministic)
        random = evaluate_random(teacher, n_eval, EVAL_SEED_OFFSET)
        check_teacher_score(teacher, measured, random)  # refuses a teacher whose env recipe is wrong
        return {"teacher": measured.to_json(), "random": random.to_json()}

    cache_cell = TaskCache(cache, force)
    base = cache_cell(f"baselines-e{n_eval}", baselines)
    # A cell's file name carries the settings it depends on, so a changed plan never reads a stale cell.
    tag = lambda loss, n, seed: (
        f"{loss}{plan.temperature(loss):g}-n{n}-seed{seed}"  # noqa: E731
        f"-u{plan.n_updates}-e{n_eval}"
    )
    cells: dict[tuple[str, int, int], dict[str, Any]] = {}
    for seed in SEEDS:
        keys = [(loss, n, seed) for n in plan.budgets for loss in plan.losses]
        missing = force or any(not is_cached(cache / f"{tag(*k)}.json") for k in keys)
        buffer = collect_buffer(teacher, preset, max(plan.budgets), seed) if missing else None
        for loss, n, _ in keys:

            def cell(loss: str = loss, n: int = n, seed: int = seed) -> dict[str, Any]:
                assert buffer is not None  # collected above whenever a cell of this seed is missing
                return train_and_evaluate(teacher, preset, plan, head_of(buffer, n), loss, seed, n_eval)

            cells[loss, n, seed] = cache_cell(tag(loss, n, seed), cell)
            print(f"{name} seed {seed} {loss} n={n:,}: return {cells[loss, n, seed]['return']['mean']:.1f}", flush=True)
    summary = summarise(name, source, teacher, preset, plan, n_eval, base, cells)
    summary["wall_time_s"] = cache_cell.timing(cache / "summary.json")["wall_time_s"]
    write_json_atomic(cache / "summary.json", summary)
    plot_task(summary, png_path(cache))
    return summary


# -- summary, tables and plots ----------------------------------------------------------------------


def png_path(cache: Path) -> Path:
    """Task ``<env>/<algo>``'s plot: ``<results>/<env>-<algo>.png`` beside the ``<env>/`` cache folder."""
    return cache.parent.parent / f"{cache.parent.name}-{cache.name}.png"


def transitions_to(budgets: list[int], pcts: list[float], target: float = TARGET_PCT) -> int | None:
    """The first budget whose % of teacher is >= ``target``; None when none is."""
    return reach(budgets, pcts, target)


def stays_from(budgets: list[int], pcts: list[float], target: float = TARGET_PCT) -> int | None:
    """The smallest budget from which every larger budget is >= ``target`` too; None when the largest is not."""
    return next((b for i, b in enumerate(budgets) if all(p >= target for p in pcts[i:])), None)


def summarise(
    name: str,
    source: str,
    teacher: Teacher,
    preset: dict[str, Any],
    plan: Plan,
    n_eval: int,
    base: dict[str, Any],
    cells: dict[tuple[str, int, int], dict[str, Any]],
) -> dict[str, Any]:
    """Per loss: % of teacher per (budget, seed) with random = 0 %, its mean and Student-t 95 % CI
    over seeds per budget, and the transitions needed to reach 95 % (seed mean and per seed)."""
    teacher_mean, random_mean = base["teacher"]["mean"], base["random"]["mean"]
    budgets = list(plan.budgets)
    losses = {}
    for loss in plan.losses:
        pct = [[pct_of(cells[loss, n, s]["return"]["mean"], teacher_mean, random_mean) for s in SEEDS] for n in budgets]
        curve = [mean_ci(p) for p in pct]
        returns = [[cells[loss, n, s]["return"]["mean"] for s in SEEDS] for n in budgets]
        losses[loss] = {
            "temperature": plan.temperature(loss),
            "pct_per_seed": pct,
            "return_per_seed": returns,
            "curve": curve,
            "to_target": transitions_to(budgets, [c[0] for c in curve]),
            "stays_from": stays_from(budgets, [c[0] for c in curve]),
            "to_target_per_seed": [transitions_to(budgets, [p[i] for p in pct]) for i in range(len(SEEDS))],
        }
    return {
        "name": name,
        "env_id": teacher.recipe.env_id,
        "teacher": source,
        "teacher_algo": teacher.algo,
        "teacher_kind": teacher.kind,
        "budgets": budgets,
        "n_updates": plan.n_updates,
        "seeds": list(SEEDS),
        "n_eval_episodes": n_eval,
        "hidden_sizes": list(preset["hidden_sizes"]),
        "batch_size": int(preset["batch_size"]),
        "learning_rate": float(preset["learning_rate"]),
        "n_envs": int(preset["n_envs"]),
        "epsilon": float(preset["epsilon"]),
        "action_noise": float(preset["action_noise"]),
        "baselines": base,
        "losses": losses,
    }


def plot_task(s: dict[str, Any], path: Path) -> None:
    curves = {
        f"{LABEL[loss]}, τ = {x['temperature']:g}" if loss == "kl" else LABEL[loss]: (s["budgets"], x["curve"])
        for loss, x in s["losses"].items()
    }
    plot_curves(
        curves,
        path,
        xlabel="teacher transitions (first n of one buffer per seed)",
        ylabel="% of teacher return (random = 0 %)",
        log_x=True,
        title=f"{s['env_id']} {s['teacher_algo']} teacher: {len(s['seeds'])} seeds, Student-t 95 % CI",
        hlines=[(100.0, "teacher", "--"), (TARGET_PCT, f"{TARGET_PCT:g} % of teacher", ":")],
    )


def fmt_reach(n: int | None, budgets: list[int], short: bool = False) -> str:
    if n is not None:
        return f"{n:,}"
    return f"> {budgets[-1]:,}" if short else f"not reached at {budgets[-1]:,}"


def section(name: str, s: dict[str, Any], results_name: str) -> str:
    base, budgets = s["baselines"], s["budgets"]
    kl_tau = s["losses"].get("kl", {}).get("temperature", 1.0)
    lines = [
        f"## {s['env_id']}, {s['teacher_algo']} teacher (`{s['teacher']}`, {s['teacher_kind']})",
        "",
        f"Teacher {base['teacher']['mean']:.1f}, uniform random {base['random']['mean']:.1f} on the "
        f"{s['n_eval_episodes']} evaluation episodes (100 % and 0 %). Student MLP "
        f"{'×'.join(map(str, s['hidden_sizes']))}, batch {s['batch_size']}, Adam lr {s['learning_rate']:g}, "
        f"{s['n_updates']:,} gradient steps at every budget; kl at τ = {kl_tau:g}. Data: per seed one buffer from "
        f"{s['n_envs']} envs (epsilon {s['epsilon']:g}, action noise {s['action_noise']:g}); seeds {s['seeds']}; "
        f"wall time {s['wall_time_s'] / 60:.1f} min in the invocation that wrote it (cached cells are read, not rerun).",
        "",
        "| loss | transitions to 95 % of teacher (seed mean; per seed) | ≥ 95 % at every larger budget from | "
        f"% of teacher at {budgets[-1]:,} [95 % CI] |",
        "|---|---|---|---|",
    ]
    for loss, x in s["losses"].items():
        per_seed = ", ".join(fmt_reach(n, budgets, short=True) for n in x["to_target_per_seed"])
        lines.append(
            f"| {LABEL[loss]} | {fmt_reach(x['to_target'], budgets)}; {per_seed} | "
            f"{fmt_reach(x['stays_from'], budgets)} | "
            "{:.1f} [{:.1f}, {:.1f}] |".format(*x["curve"][-1])
        )
    lines += [
        "",
        "| loss | transitions | % of teacher, mean [95 % CI] over seeds | return, mean over seeds |",
        "|---|---|---|---|",
    ]
    for loss, x in s["losses"].items():
        for i, n in enumerate(budgets):
            lines.append(
                f"| {LABEL[loss]} | {n:,} | "
                + "{:.1f} [{:.1f}, {:.1f}]".format(*x["curve"][i])
                + f" | {np.mean(x['return_per_seed'][i]):.1f} |"
            )
    png = png_path(RESULTS_DIR / results_name / name).name
    return "\n".join(lines + ["", f"![{name}]({results_name}/{png})", ""])


def readme_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The README's table: per task and loss, the budget from which the seed mean stays at ≥ 95 %."""
    lines = ["| teacher | " + " | ".join(LABEL.values()) + " |", "|---|" + "---|" * len(LABEL)]
    for s in summaries.values():
        budgets, cells = s["budgets"], []
        for loss in LABEL:
            x = s["losses"].get(loss)
            if x is None:
                cells.append("-")
            elif x["stays_from"] is not None:
                cells.append(f"{x['stays_from']:,}")
            else:
                cells.append(f"not at {budgets[-1]:,} ({x['curve'][-1][0]:.1f} %)")
        lines.append(f"| {s['env_id'].split('-')[0]} {s['teacher_algo'].upper()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


NOTES = """\
One buffer of teacher-driven transitions per (task, seed); a budget of n is its first n
transitions, for every loss. % of teacher: (student − random) / (teacher − random) × 100, each the
mean return on the same evaluation episodes. The CI is the Student-t 95 % interval of the mean over
the seeds' % of teacher (3 seeds: t = 4.30, so intervals are wide); a seed changes the buffer, the
student's initial weights and its minibatches. "Transitions to 95 %" is the first budget whose seed
mean reaches 95 % (per seed: the first budget that seed reaches it at; "> N": never up to N); curves
are not monotone, so the next column gives the budget from which the seed mean stays at or above 95 %.
Times on 1 torch thread, on 2 CPU cores shared with expert trainings and other jobs.
"""


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "CartPole PPO/DQN and Pendulum SAC only; every other budget, half the gradient steps and evaluation episodes",
        only_help="run only tasks whose name contains this (others: from cache)",
        trace_code=True,
    )
    started = time.perf_counter()
    stem = results_name("soft_vs_hard", args.quick)
    tasks = [(name, source, plan) for name, source, plan in TASKS if plan.in_quick or not args.quick]
    summaries: dict[str, dict[str, Any]] = {}

    def run(name: str, source: str, plan: Plan, cache: Path) -> dict[str, Any]:
        return run_task(name, source, plan, cache, quick=args.quick, force=args.force)

    def task_section(name: str, summary: dict[str, Any]) -> str:
        summaries[name] = summary
        return section(name, summary, stem)

    sections = task_sections(tasks, stem, args.only, run, task_section)
    left_out = [name for name, _, plan in TASKS if args.quick and not plan.in_quick]
    command = "python benchmarks/soft_vs_hard.py" + (" --quick" if args.quick else "")
    wall = time.perf_counter() - started
    text = (
        "# Soft vs hard targets\n\nGenerated by `benchmarks/soft_vs_hard.py`; do not edit by hand.\n\n"
        + provenance(command)
        + f"- wall time of this invocation: {wall / 60:.1f} min\n\n"
        + NOTES
        + (f"\nLeft out of `--quick`: {', '.join(left_out)} (see the full run).\n" if left_out else "")
        + "\n"
        + "\n".join(sections)
    )
    out = RESULTS_DIR / stem
    write_text_atomic(out.with_suffix(".md"), text + stale_note())
    write_json_atomic(out.with_suffix(".json"), {"command": command, "wall_time_s": wall, "tasks": summaries})
    if not args.quick:  # the README quotes the full run, every task
        if not args.only:
            replace_between_markers(README, "soft-vs-hard", readme_table(summaries) + f"\n\n`{command}`")
    print(f"wrote {out}.md and .json in {wall:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
