"""Why an Atari student falls short of its teacher (issue 22): atari.py's students, one change at a time.

    python benchmarks/atari_ablations.py                          # every finished Atari expert, seeds 0 1 2
    python benchmarks/atari_ablations.py --only Breakout --seeds 0
    python benchmarks/atari_ablations.py --quick                  # atari.py --quick's Pong cell, 3 episodes

Ablations, each measured against atari.py's cell of the same expert, size and seed:

- **greedy evaluation**: the cell's trained student and its teacher both act greedily (the argmax
  action) on the cell's own evaluation episodes (env seeds S + 10,000 + i), where atari.py samples
  both, as rl-zoo scores Atari. The random policy is the cell's. If the student keeps a larger share
  of its teacher greedily than sampled, the gap lies in the tails of the action distribution (where
  sampling goes), not in the actions the teacher prefers.

The cells come from atari.py's cache (computed there when missing: same configs, same seeds). A cell
whose run folder is gone (a fresh clone keeps only the JSON) is trained again with its own config
(seeded: the same student) before it is played. Results: `results/atari_ablations.md` and `.json`
(`--quick`: `atari_ablations-quick.*`), one cached JSON per ablation cell under
`results/atari_ablations[-quick]/`. Each greedy cell plays 60 Atari games on one core: minutes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from atari import (
    N_EVAL,
    QUICK_EVAL,
    QUICK_EXPERTS,
    SEEDS,
    SIZES,
    atari_experts,
    cell_config,
    cell_name,
    run_seed,
    width_for,
)
from common import RESULTS_DIR, TaskCache, parse_quick_args, provenance, publish, results_name

from policykd.data.teachers import Teacher, load_teacher
from policykd.fileio import write_json_atomic
from policykd.jobs.distill import distill
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, evaluate_policy, evaluate_teacher, mean_ci, pct_of
from policykd.jobs.load import student_folder
from policykd.jobs.play import resolve_policy


def trained_student(config: Any) -> Path:
    """The run folder of the cell ``config`` describes, training it again when it is gone."""
    if student_folder(config.out_dir) is None:
        print(f"  {config.out_dir}: no student on disk, training the cell again", flush=True)
        distill(config)
    return Path(config.out_dir)


def greedy_cells(expert: str, folder: Path, seed: int, args: Any, cells: dict[float, dict], cache: TaskCache):
    """The teacher's greedy returns on seed ``seed``'s evaluation episodes, then each size's student's."""
    teacher = load_teacher(folder)
    n_eval, env_seed = (QUICK_EVAL if args.quick else N_EVAL), seed + EVAL_SEED_OFFSET
    asked = {"expert": expert, "seed": seed, "n_eval": n_eval, "greedy": True}
    teacher_greedy = cache(
        f"{expert.replace('/', '-')}-teacher-greedy-seed{seed}",
        lambda: {"returns": list(evaluate_teacher(teacher, n_eval, env_seed, deterministic=True).returns)},
        config=asked,
    )
    rows = {}
    for fraction, cell in cells.items():
        name = cell_name(expert, fraction, seed)
        config = cell_config(folder, cell["cnn_width"], seed, args, None, name)
        student = cache(
            f"{name}-greedy",
            lambda config=config: {
                "returns": greedy_student_returns(teacher, trained_student(config), n_eval, env_seed)
            },
            config={**asked, "cell": name, "cnn_width": cell["cnn_width"]},
        )
        rows[fraction] = greedy_row(cell, teacher_greedy["returns"], student["returns"])
        print(f"{name} greedy: student {rows[fraction]['student_greedy']:.1f}, teacher "
              f"{rows[fraction]['teacher_greedy']:.1f}, {rows[fraction]['pct_greedy']:.1f} % of teacher "
              f"(sampled: {cell['pct_of_teacher']:.1f} %)", flush=True)  # fmt: skip
    return rows


def greedy_student_returns(teacher: Teacher, run_dir: Path, n_eval: int, env_seed: int) -> list[float]:
    policy, _, _ = resolve_policy(str(run_dir), teacher.recipe.env_id)
    return list(evaluate_policy(policy, teacher.recipe, n_eval, seed=env_seed, deterministic=True).returns)


def greedy_row(cell: dict[str, Any], teacher_returns: list[float], student_returns: list[float]) -> dict[str, Any]:
    teacher, student, random = (
        float(np.mean(teacher_returns)),
        float(np.mean(student_returns)),
        cell["random_return_mean"],
    )
    return {
        "teacher_sampled": cell["teacher_return_mean"],
        "student_sampled": cell["student_return_mean"],
        "pct_sampled": cell["pct_of_teacher"],
        "teacher_greedy": teacher,
        "student_greedy": student,
        "random": random,
        "pct_greedy": pct_of(student, teacher, random),
    }


def run_expert(expert: str, folder: Path, seeds: tuple[int, ...], args: Any, caches: dict[str, TaskCache]):
    teacher = load_teacher(folder)
    widths = {fraction: width_for(teacher, fraction)[0] for fraction in SIZES}
    per_seed = []
    for seed in seeds:
        cells = run_seed(expert, folder, widths, seed, args, caches["atari"])
        for fraction, cell in cells.items():
            cell["cnn_width"] = widths[fraction]
        per_seed.append(greedy_cells(expert, folder, seed, args, cells, caches["ablations"]))
    return {"expert": expert, "seeds": list(seeds), "sizes": [
        {"target_fraction": fraction, **{key: [rows[fraction][key] for rows in per_seed] for key in per_seed[0][fraction]}}
        for fraction in SIZES
    ]}  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| expert | target | acting | teacher | student | random | % of teacher [95 % CI over seeds] |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for s in r["sizes"]:
            for acting in ("sampled", "greedy"):
                mean, low, high = mean_ci(s[f"pct_{acting}"])
                ci = f" [{low:.1f}, {high:.1f}]" if len(r["seeds"]) > 1 else ""
                lines.append(
                    f"| `{r['expert']}` | {100 * s['target_fraction']:g} % | {acting} | "
                    f"{np.mean(s[f'teacher_{acting}']):.1f} | {np.mean(s[f'student_{acting}']):.1f} | "
                    f"{np.mean(s['random']):.1f} | {mean:.1f}{ci} |"
                )
    return "\n".join(lines)


def body(rows: list[dict[str, Any]], quick: bool) -> str:
    if not rows:
        return "No finished Atari expert was selected."
    return (
        f"Seeds {rows[0]['seeds']}; {QUICK_EVAL if quick else N_EVAL} evaluation episodes per cell"
        f"{' (--quick: tiny budgets, not a measurement)' if quick else ''}. Each student is atari.py's cell "
        "(same expert, size and seed); `sampled` is that cell's own result, `greedy` replays the same env seeds "
        "with the student and the teacher acting greedily. % of teacher: (student − random) / (teacher − random) "
        "× 100 with the same acting for both, random from the cell; the CI is a Student-t interval over seeds.\n\n"
        + table(rows)
    )


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "atari.py --quick's Pong cell, seed 0, 3 evaluation episodes",
        extra=[(("--seeds",), dict(type=int, nargs="+", help="seeds (default 0 1 2; --quick: 0)")),
               (("--device",), dict(default="cpu", help="torch device of a cell trained again"))],
        only_help="run only experts whose folder contains this",
        trace_code=True,
    )  # fmt: skip
    started = time.perf_counter()
    seeds = tuple(args.seeds or ((0,) if args.quick else SEEDS))
    caches = {
        "atari": TaskCache(RESULTS_DIR / results_name("atari", args.quick), False),  # atari.py's cells: read back
        "ablations": TaskCache(RESULTS_DIR / results_name("atari_ablations", args.quick), args.force),
    }
    chosen = [(name, folder) for name, folder, reason in atari_experts()
              if not reason and args.only in name and (name in QUICK_EXPERTS or not args.quick)]  # fmt: skip
    rows = [run_expert(name, folder, seeds, args, caches) for name, folder in chosen]
    command = "python benchmarks/atari_ablations.py" + (" --quick" if args.quick else "")
    text = body(rows, args.quick)
    publish(
        "atari_ablations",
        "# Atari ablations: why a student falls short of its teacher\n\n"
        "Generated by `benchmarks/atari_ablations.py`; do not edit by hand.\n\n"
        + provenance(command)
        + f"- wall time of this invocation: {(time.perf_counter() - started) / 60:.1f} min\n\n"
        + text,
        quick=args.quick,
        readme_marker="atari-ablations",
        readme_text=text,
    )
    write_json_atomic(
        RESULTS_DIR / f"{results_name('atari_ablations', args.quick)}.json", {"command": command, "rows": rows}
    )


if __name__ == "__main__":
    main()
