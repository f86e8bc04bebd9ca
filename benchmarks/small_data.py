"""Distillation with very little data (issue 18): student return against teacher transitions, from
100 to 5,000 (from 20 on the tasks where 100 already suffice), for policykd's default, ``kl``, ``nll``,
soft targets mixed with hard ones, and imitation's BC on the same transitions.

    python benchmarks/small_data.py            # every task, SEEDS; resumes from results/small_data/
    python benchmarks/small_data.py --quick    # Acrobot and CartPole DQN, budgets 100 / 500 / 2,000, 1 seed
    python benchmarks/small_data.py --only Acrobot --seeds 0 1 2   # one task (others: from cache), these seeds

Per (task, seed, budget n): one buffer of n teacher-driven transitions collected as `policykd distill
--n-transitions n` collects them, with `policykd.data.collect.episode_covering_envs` choosing the envs
(fewer at small budgets, so that every env plays whole episodes). Methods, each on that buffer:
- `default`: what `policykd distill` picks with no loss option: `kl`, at τ = 1 for policy-gradient
  teachers and, for Q-value teachers, τ from the buffer's Q-values (learn/targets.confidence_temperature);
  for a PPO teacher it is the `kl` cell.
- `kl` at τ = 1 (soft) and `nll` (hard labels: the teacher's argmax action or Gaussian mean).
- the default's soft targets mixed with hard ones: `--hard-label-weight 1` (L = L_soft + L_hard)
  and, for discrete teachers, `--label-smoothing 0.1` (MIXES).
- `imitation`: imitation's `bc.BC` on the same n transitions (exported with their greedy labels),
  the same MLP, input normalisation, batch size (min(preset, n)), learning rate and gradient steps;
  its weights are ported into policykd's Student and evaluated like ours (benchmarks/vs_imitation.py).
- `default, 8 envs`: the default loss on the first n transitions of one 8-env buffer, as collection
  worked before issue 18 (n / 8 steps from the start of 8 episodes).
Every student trains for the same number of gradient steps at every budget and plays the same
evaluation episodes as the teacher and a uniformly random policy (100 % and 0 %).
Results: `results/small_data.md` and `.json` (`--quick`: `small_data-quick.*`), one cached JSON per
cell under `results/small_data[-quick]/<env>/<algo>/`; imitation's scratch files under `runs/benchmarks/`.
"""

from __future__ import annotations

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
)
from vs_imitation import SCRATCH, Plan, Task, ensure_imitation_venv, export_transitions, run_imitation_side, stats_json
from vs_imitation_report import reach

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import episode_covering_envs, max_episode_steps
from policykd.data.teachers import load_teacher
from policykd.fileio import write_json_atomic, write_text_atomic
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, evaluate_random, evaluate_teacher, mean_ci, pct_of
from policykd.learn.losses import make_loss
from policykd.learn.targets import confidence_temperature
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.zoo.layout import is_finished
from policykd.zoo.presets import Q_TARGET_CONFIDENCE, ZOO_DIR, load_preset

BUDGETS = (100, 200, 500, 1_000, 2_000, 5_000)
QUICK_BUDGETS = (100, 500, 2_000)
SEEDS = (0, 1, 2)
TARGET_PCT = 95.0
# (task name = "<env>/<algo>", the cache folder; zoo folder; gradient steps at every budget; in --quick)
TASKS: list[tuple[str, str, int, bool]] = [
    ("Acrobot-v1/dqn", "agents/dqn/Acrobot-v1_1", 3_000, True),
    ("CartPole-v1/dqn", "agents/dqn/CartPole-v1_1", 2_000, True),
    ("LunarLander-v3/ppo", "agents/ppo/LunarLander-v3_1", 5_000, False),
    ("HalfCheetah-v5/ppo", "agents/ppo/HalfCheetah-v5_1", 10_000, False),
    # continuous actions in Box2D; no preset: the student is DEFAULTS' 64x64, as for LunarLander
    ("LunarLanderContinuous-v3/ppo", "agents/ppo/LunarLanderContinuous-v3_1", 5_000, False),
]
LABEL = {
    "default": "default",
    "kl": "kl, τ = 1",
    "nll": "nll (hard)",
    "kl+hard": "default + hard labels (λ = 1)",
    "smoothed": "default, label smoothing ε = 0.1",
    "imitation": "imitation BC",
    "default-8envs": "default, first n of 8 envs (before)",
}
# Where every method already reaches 95 % at 100 transitions, smaller budgets too, so that the data
# each method needs can be told apart (a budget under one episode is that episode's start).
LOW_BUDGETS = {"Acrobot-v1/dqn": (20, 50), "CartPole-v1/dqn": (20, 50)}
Q_KINDS = ("q_values", "quantiles")
# The default's soft targets mixed with hard ones (issue 18's "soft targets that earn their keep"):
# `--hard-label-weight 1` (L = L_soft + L_hard) and, for discrete teachers, `--label-smoothing 0.1`.
MIXES: dict[str, dict[str, float]] = {"kl+hard": {"hard_label_weight": 1.0}, "smoothed": {"label_smoothing": 0.1}}


def methods_of(kind: str) -> tuple[str, ...]:
    """The methods run for a teacher of ``kind``: a PPO teacher's default is its kl cell."""
    own = ("default",) if kind in Q_KINDS else ()
    mixes = ("kl+hard", "smoothed") if kind in (*Q_KINDS, "categorical") else ("kl+hard",)
    return (*own, "kl", "nll", *mixes, "imitation", "default-8envs")


def default_loss(kind: str) -> str:
    return "default" if kind in Q_KINDS else "kl"


# -- cells ------------------------------------------------------------------------------------------


def collect(task: Task, n: int, seed: int, n_envs: int) -> LabelledBuffer:
    """``n`` teacher-driven transitions (whole vector steps) from ``n_envs`` envs seeded by ``seed``."""
    return collect_teacher_buffer(task.teacher, task.preset, n, seed, n_envs)


def covering_envs(task: Task, n: int) -> int:
    """The envs `policykd distill --n-transitions n` collects with."""
    return episode_covering_envs(n, int(task.preset["n_envs"]), max_episode_steps(task.key))


def train(task: Task, buffer: LabelledBuffer, method: str, seed: int) -> dict[str, Any]:
    """A fresh student trained on ``buffer`` by ``method`` (not imitation), evaluated."""
    loss_name = "nll" if method == "nll" else "kl"
    tau = 1.0
    if (method.startswith("default") or method in MIXES) and task.teacher.kind in Q_KINDS:
        tau = confidence_temperature(buffer.batch_at(np.arange(len(buffer))).teacher_outputs[0], Q_TARGET_CONFIDENCE)
    student = task.new_student(seed)
    config = TrainerConfig(
        n_updates=task.plan.n_updates,
        batch_size=min(int(task.preset["batch_size"]), len(buffer)),
        learning_rate=float(task.preset["learning_rate"]),
        seed=seed,
        progress_bar=False,
    )
    started = time.perf_counter()
    loss = make_loss(loss_name, task.teacher.kind, temperature=tau, **MIXES.get(method, {}))
    Trainer(student, loss, buffer, config=config).train()
    return {
        "return": stats_json(task.evaluate(student)),
        "temperature": tau,
        "train_time_s": time.perf_counter() - started,
    }


def imitation_cells(task: Task, python: Path, buffers: dict[int, LabelledBuffer], seed: int) -> dict[int, Any]:
    """imitation's BC on each budget's buffer, all in one process; returns the evaluated cells."""
    jobs = {}
    for n, buffer in buffers.items():
        data = SCRATCH / "small_data" / task.key / f"data-n{n}-seed{seed}.npz"
        export_transitions(task.teacher, buffer, covering_envs(task, n), data)
        jobs[f"n{n}"] = {
            **task.imitation_job(seed),
            "batch_size": min(int(task.preset["batch_size"]), len(buffer)),
            "kind": "bc",
            "data": str(data),
            "n_transitions": len(buffer),
            "n_updates": task.plan.n_updates,
            "out": str(data.with_name(f"bc-n{n}-seed{seed}.npz")),
        }
    results = run_imitation_side(python, jobs, f"small_data-{task.key}-seed{seed}")
    return {
        n: {
            "return": stats_json(task.evaluate(task.student_from_imitation(jobs[f"n{n}"]["out"]))),
            "train_time_s": results[f"n{n}"]["train_time_s"],
        }
        for n in buffers
    }


def run_seed(task: Task, budgets: tuple[int, ...], seed: int, cache: TaskCache, python: Path | None) -> dict[str, Any]:
    """Every cell of one seed: ``(method, n) -> cell``."""
    tag = lambda method, n: f"{method}-n{n}-seed{seed}-u{task.plan.n_updates}-e{task.n_eval}"  # noqa: E731
    methods = methods_of(task.teacher.kind)
    missing = cache.force or any(not is_cached(cache.cache_dir / f"{tag(m, n)}.json") for m in methods for n in budgets)
    buffers = {n: collect(task, n, seed, covering_envs(task, n)) for n in budgets} if missing else {}
    before = collect(task, max(budgets), seed, int(task.preset["n_envs"])) if missing else None
    theirs: dict[int, Any] = {}
    if (
        missing
        and python is not None
        and not all(is_cached(cache.cache_dir / f"{tag('imitation', n)}.json") for n in budgets)
    ):
        theirs = imitation_cells(task, python, buffers, seed)
    cells = {}
    for n in budgets:
        for method in methods:
            if method == "imitation" and python is None:
                continue

            def cell(method: str = method, n: int = n) -> dict[str, Any]:
                if method == "imitation":
                    return theirs[n]
                assert before is not None
                buffer = head_of(before, n) if method == "default-8envs" else buffers[n]
                return train(task, buffer, method, seed)

            cells[method, n] = cache(tag(method, n), cell)
            print(
                f"{task.key} seed {seed} n={n:,} {method}: return {cells[method, n]['return']['mean']:.1f}", flush=True
            )
    return cells


def make_task(source: str, n_updates: int, budgets: tuple[int, ...], quick: bool) -> Task:
    teacher = load_teacher(ZOO_DIR.parent / source)
    teacher.source = source  # repository-relative in the results
    preset = load_preset(teacher.recipe.env_id)
    n_eval = int(preset["n_eval_episodes"]) // (2 if quick else 1)
    return Task(source, source, teacher, Plan(budgets, n_updates, 0, 0, 0), preset, n_eval, EVAL_SEED_OFFSET, 1.0, 1)


def run_task(source: str, n_updates: int, cache_dir: Path, args: Any, python: Path | None) -> dict[str, Any]:
    """Every cell of one task for the seeds asked (each cached), then its summary (``cache_dir/summary.json``)."""
    name = next(name for name, task_source, *_ in TASKS if task_source == source)
    budgets = tuple(args.budgets or (QUICK_BUDGETS if args.quick else (*LOW_BUDGETS.get(name, ()), *BUDGETS)))
    task = make_task(source, n_updates, budgets, args.quick)
    cache = TaskCache(cache_dir, args.force)
    deterministic = bool(task.preset["deterministic_eval"])
    base = cache(
        f"baselines-e{task.n_eval}",
        lambda: {
            "teacher": stats_json(evaluate_teacher(task.teacher, task.n_eval, EVAL_SEED_OFFSET, deterministic)),
            "random": stats_json(evaluate_random(task.teacher, task.n_eval, EVAL_SEED_OFFSET)),
        },
    )
    seeds = tuple(args.seeds or ((0,) if args.quick else SEEDS))
    cells = {seed: run_seed(task, budgets, seed, cache, python) for seed in seeds}
    summary = summarise(task, budgets, seeds, base, cells)
    summary.update(cache.timing(cache_dir / "summary.json"))
    write_json_atomic(cache_dir / "summary.json", summary)
    return summary


def summarise(task: Task, budgets: tuple[int, ...], seeds: tuple[int, ...], base: dict, cells: dict) -> dict[str, Any]:
    """Per method: % of teacher per (budget, seed), its mean and Student-t 95 % CI over seeds, and
    the first budget whose seed mean reaches TARGET_PCT."""
    teacher_mean, random_mean = base["teacher"]["mean"], base["random"]["mean"]
    methods = {}
    for method in methods_of(task.teacher.kind):
        if not all((method, n) in cells[s] for s in seeds for n in budgets):
            continue
        pct = [
            [pct_of(cells[s][method, n]["return"]["mean"], teacher_mean, random_mean) for s in seeds] for n in budgets
        ]
        curve = [mean_ci(p) for p in pct]
        taus = [[cells[s][method, n].get("temperature") for s in seeds] for n in budgets]
        methods[method] = {"pct_per_seed": pct, "curve": curve, "temperatures": taus,
                           "to_target": reach(list(budgets), [c[0] for c in curve], TARGET_PCT)}  # fmt: skip
    return {
        "env_id": task.key,
        "teacher": task.source,
        "teacher_algo": task.teacher.algo,
        "teacher_kind": task.teacher.kind,
        "default": default_loss(task.teacher.kind),
        "budgets": list(budgets),
        "n_envs": [covering_envs(task, n) for n in budgets],
        "seeds": list(seeds),
        "n_updates": task.plan.n_updates,
        "n_eval_episodes": task.n_eval,
        "hidden_sizes": list(task.preset["hidden_sizes"]),
        "batch_size": int(task.preset["batch_size"]),
        "learning_rate": float(task.preset["learning_rate"]),
        "baselines": base,
        "methods": methods,
    }


# -- report -----------------------------------------------------------------------------------------


def verdicts(s: dict[str, Any]) -> list[str]:
    """The issue's two goals for this task, met or not, from the seed means."""
    methods, default = s["methods"], s["default"]
    if default not in methods or "imitation" not in methods:
        return ["- goals not checked: the default or imitation's BC was not run"]
    # Paired over seeds (same seed, same buffer for both): a gap whose 95 % CI reaches 0 is within noise.
    gaps = [
        (n, *mean_ci([d - i for d, i in zip(ours, theirs)]))
        for n, ours, theirs in zip(s["budgets"], methods[default]["pct_per_seed"], methods["imitation"]["pct_per_seed"])
    ]
    paired = len(s["seeds"]) > 1
    behind = [
        f"{n:,} ({gap:+.1f} points" + (f", paired 95 % CI [{lo:+.1f}, {hi:+.1f}])" if paired else ")")
        for n, gap, lo, hi in gaps
        if round(gap, 1) < 0  # behind as printed: -0.0 is a tie
    ]
    beyond_noise = [f"{n:,}" for n, gap, lo, hi in gaps if hi < 0] if paired else None
    ours, theirs = methods[default]["to_target"], methods["imitation"]["to_target"]
    ratio = "not computable" if ours is None or theirs is None else f"{ours / theirs:.2f}×"
    third = ours is not None and (theirs is None or 3 * ours <= theirs)
    return [
        "- default ≥ imitation's BC at every budget: "
        + ("yes" if not behind else f"no, behind at {', '.join(behind)}")
        + (
            ""
            if not behind
            else "; behind beyond the seeds' noise (paired CI below 0) at: " + (", ".join(beyond_noise) or "none")
            if paired
            else "; one seed, so no gap can be told from noise"
        ),
        f"- transitions to {TARGET_PCT:g} %: default {fmt_n(ours)}, imitation's BC {fmt_n(theirs)} (ratio {ratio}); "
        + ("at most a third: yes" if third else "at most a third: no"),
    ]


def fmt_n(n: int | None) -> str:
    return "not reached" if n is None else f"{n:,}"


def section(name: str, s: dict[str, Any]) -> str:
    base = s["baselines"]
    lines = [
        f"## {s['env_id']}, {s['teacher_algo']} teacher (`{s['teacher']}`, {s['teacher_kind']})",
        "",
        f"Teacher {base['teacher']['mean']:.1f}, uniform random {base['random']['mean']:.1f} on the "
        f"{s['n_eval_episodes']} evaluation episodes (100 % and 0 %). Student MLP "
        f"{'×'.join(map(str, s['hidden_sizes']))}, batch min({s['batch_size']}, n), Adam lr {s['learning_rate']:g}, "
        f"{s['n_updates']:,} gradient steps at every budget; seeds {s['seeds']}; envs per budget "
        + ", ".join(f"{n:,}: {e}" for n, e in zip(s["budgets"], s["n_envs"]))
        + f". The default is `{s['default']}`"
        + (" (τ from the buffer's Q-values)" if s["default"] == "default" else " at τ = 1")
        + f"; wall time {s['wall_time_s'] / 60:.1f} min in the invocation that computed it.",
        "",
        *verdicts(s),
        "",
        "| method | " + " | ".join(f"{n:,}" for n in s["budgets"]) + f" | transitions to {TARGET_PCT:g} % |",
        "|---|" + "---|" * (len(s["budgets"]) + 1),
    ]
    for method, m in s["methods"].items():
        cells = " | ".join("{:.1f} [{:.1f}, {:.1f}]".format(*c) if len(s["seeds"]) > 1 else f"{c[0]:.1f}"
                           for c in m["curve"])  # fmt: skip
        lines.append(f"| {LABEL[method]} | {cells} | {fmt_n(m['to_target'])} |")
    taus = s["methods"].get("default", {}).get("temperatures")
    if taus:
        lines += ["", "Default τ per budget (seed mean): " + ", ".join(
            f"{n:,}: {np.mean(t):.3g}" for n, t in zip(s["budgets"], taus))]  # fmt: skip
    return "\n".join(lines + [""])


NOTES = """\
% of teacher per cell: (student − random) / (teacher − random) × 100 on the same evaluation episodes;
the table gives the seed mean and, with several seeds, the Student-t 95 % interval over seeds.
"Transitions to 95 %" is the first budget whose seed mean reaches 95 %. Every budget is its own
buffer, collected as `policykd distill --n-transitions n` collects it (whole episodes: see the envs
per budget), except the last row, the first n transitions of an 8-env buffer as before issue 18.
Times on 1 torch thread, on 2 CPU cores shared with other jobs.
"""


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "Acrobot and CartPole DQN only, budgets 100 / 500 / 2,000, seed 0, half the evaluation episodes",
        only_help="run only tasks whose name contains this (others: from cache)",
        extra=[(("--seeds",), dict(type=int, nargs="+", help="seeds to run (default 0 1 2; --quick: 0)")),
               (("--no-imitation",), dict(action="store_true", help="skip imitation's BC (no venv built)")),
               (("--budgets",), dict(type=int, nargs="+", help="transition budgets (default 100 200 500 1000 2000 5000)"))],
        trace_code=True,
    )  # fmt: skip
    started, stem = time.perf_counter(), results_name("small_data", args.quick)
    python = None if args.no_imitation else ensure_imitation_venv()
    summaries, sections = {}, []
    for name, source, n_updates, in_quick in TASKS:
        cache_dir = RESULTS_DIR / stem / name
        if args.quick and not in_quick:
            continue
        if args.only in name and is_finished(ZOO_DIR.parent / source):
            summaries[name] = run_task(source, n_updates, cache_dir, args, python)
        elif (cache_dir / "summary.json").is_file():
            summaries[name] = read_summary(cache_dir)
        else:
            sections.append(f"## {name}\n\nNot run in this session (compute budget): no cached result.\n")
            continue
        sections.append(section(name, summaries[name]))
    command = "python benchmarks/small_data.py" + (" --quick" if args.quick else "")
    wall = time.perf_counter() - started
    text = (
        "# Distillation with very little data\n\nGenerated by `benchmarks/small_data.py`; do not edit by hand.\n\n"
        + provenance(command)
        + f"- wall time of this invocation: {wall / 60:.1f} min\n\n"
        + NOTES
        + "\n"
        + "\n".join(sections)
    )
    out = RESULTS_DIR / stem
    write_text_atomic(out.with_suffix(".md"), text + stale_note())
    write_json_atomic(out.with_suffix(".json"), {"command": command, "wall_time_s": wall, "tasks": summaries})
    if not args.quick:
        replace_between_markers(README, "small-data", readme_table(summaries))
    print(f"wrote {out}.md and .json in {wall:.0f} s")


def readme_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Per task and method: the first budget reaching 95 % of the teacher, and (in brackets) the % of
    teacher at the smallest budget (from results/small_data.json)."""
    order = ("default", "kl", "nll", "kl+hard", "smoothed", "imitation", "default-8envs")
    lines = [
        "| task (seeds) | " + " | ".join(LABEL[m] for m in order) + " |",
        "|---|" + "---|" * len(order),
    ]
    for name, s in summaries.items():
        methods = {**s["methods"], **({} if "default" in s["methods"] else {"default": s["methods"].get("kl")})}
        applies = {"default", *methods_of(s["teacher_kind"])}
        cells = [
            f"{fmt_n(methods[m]['to_target'])} ({methods[m]['curve'][0][0]:.0f} %)"
            if methods.get(m)
            else ("not run" if m in applies else "n/a")
            for m in order
        ]
        lines.append(f"| {name} ({len(s['seeds'])}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_summary(cache_dir: Path) -> dict[str, Any]:
    from policykd.fileio import read_json

    return read_json(cache_dir / "summary.json")


if __name__ == "__main__":
    sys.exit(main())
