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
- **whose states**: how far the student is from its teacher (KL(teacher ‖ student) and greedy-action
  agreement, per state) on states of its training buffer, on fresh states the
  teacher visits (its own sampled play on the evaluation env seeds, not in the buffer) and on the
  states the student visits when it plays (sampled). A student much further from its teacher on its
  own states than on the teacher's errs where its mistakes led it (compounding error: DAgger's case);
  one as far on fresh teacher states as on its own generalises poorly from the buffer (more data or
  a better-fitting network's case). The teacher's distribution is the one the cell trained towards:
  softmax(logits) for a policy teacher (at τ 1), softmax(Q / τ) at the cell's τ for a Q-value or
  quantile teacher.
- **retrained**: a cell trained again on the same buffer with the same seed, one change at a
  time (RETRAINED), each for the teacher kinds it fits: the teacher's distribution sharpened to
  softmax(logits / 0.5), so that the student learns a policy closer to its teacher's greedy one
  (policy teachers); three times the updates, since the cell's training loss is still falling at its
  last update (any teacher); both (policy teachers); for Q-value and quantile teachers, MSE on the
  (centred) Q-values instead of the KL to softmax(Q / τ). Each is scored sampled on the cell's
  episodes and greedily as the first ablation; a training run per arm, size and seed (one to three
  times the cell's). `--arm-sizes` picks the sizes (default: the 25 % cell).

The cells come from atari.py's cache (computed there when missing: same configs, same seeds). A cell
whose run folder is gone (a fresh clone keeps only the JSON) is trained again with its own config
(seeded: the same student) before it is played. Results: `results/atari_ablations.md` and `.json`
(`--quick`: `atari_ablations-quick.*`), one cached JSON per ablation cell under
`results/atari_ablations[-quick]/`. Each greedy cell plays 60 Atari games on one core (minutes); each states cell
STATE_STEPS x 8 env steps per driver (a minute or two).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
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
from common import RESULTS_DIR, TaskCache, is_cached, parse_quick_args, provenance, publish, results_name

from policykd.data.buffers import LabelledBuffer
from policykd.data.envs import make_vec_env
from policykd.data.teachers import Teacher, load_teacher
from policykd.fileio import read_json, write_json_atomic
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, evaluate_policy, evaluate_teacher, mean_ci, pct_of
from policykd.jobs.load import open_student, student_folder
from policykd.jobs.play import resolve_policy
from policykd.learn.losses import categorical_kl
from policykd.learn.metrics import categorical_entropy, same_greedy_action
from policykd.learn.students import Student
from policykd.learn.targets import soften

# the "retrained" arms: DistillConfig changes to an atari.py cell (which trains 20,000 updates with kl at
# tau 1, or for a Q-value teacher at the tau its Q-values give), and the teacher kinds each applies to
POLICY_KINDS, Q_KINDS = ("categorical",), ("q_values", "quantiles")
RETRAINED = {
    "tau0.5": ("τ 0.5 (sharper targets)", {"temperature": 0.5}, POLICY_KINDS),
    "updates60000": ("60,000 updates", {"n_updates": 60_000}, POLICY_KINDS + Q_KINDS),
    "tau0.5-updates60000": ("τ 0.5 and 60,000 updates", {"temperature": 0.5, "n_updates": 60_000}, POLICY_KINDS),
    "mse": ("MSE on the Q-values", {"loss": "mse"}, Q_KINDS),
}
STATE_STEPS = 500  # steps per env (8 envs) of each driver in the "whose states" ablation
STATE_ENVS = 8


def trained_student(config: Any) -> Path:
    """The run folder of the cell ``config`` describes, training it again when it is gone."""
    if student_folder(config.out_dir) is None:
        print(f"  {config.out_dir}: no student on disk, training the cell again", flush=True)
        distill(config)
    return Path(config.out_dir)


def cell_configs(expert: str, folder: Path, seed: int, args: Any, cells: dict[float, dict]):
    """Each atari.py cell of one seed: its fraction, result, name and config (its own buffer, as it would
    collect it when trained again)."""
    for fraction, cell in cells.items():
        name = cell_name(expert, fraction, seed)
        yield fraction, cell, name, cell_config(folder, cell["cnn_width"], seed, args, None, name)


def n_eval_episodes(quick: bool) -> int:
    return QUICK_EVAL if quick else N_EVAL


def state_steps(quick: bool) -> int:
    """Steps per env of each driver in the "whose states" ablation."""
    return 20 if quick else STATE_STEPS


def greedy_cells(
    expert: str, folder: Path, teacher: Teacher, seed: int, args: Any, cells: dict[float, dict], cache: TaskCache
):
    """The teacher's greedy returns on seed ``seed``'s evaluation episodes, then each size's student's."""
    n_eval, env_seed = n_eval_episodes(args.quick), seed + EVAL_SEED_OFFSET
    asked = {"expert": expert, "seed": seed, "n_eval": n_eval, "greedy": True}
    teacher_greedy = cache(
        teacher_greedy_name(expert, seed),
        lambda: {"returns": list(evaluate_teacher(teacher, n_eval, env_seed, deterministic=True).returns)},
        config=asked,
    )
    rows = {}
    for fraction, cell, name, config in cell_configs(expert, folder, seed, args, cells):
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


def teacher_greedy_name(expert: str, seed: int) -> str:
    """The cache name of ``expert``'s greedy returns on seed ``seed``'s evaluation episodes."""
    return f"{expert.replace('/', '-')}-teacher-greedy-seed{seed}"


def greedy_student_returns(teacher: Teacher, run_dir: Path, n_eval: int, env_seed: int) -> list[float]:
    policy, _, _ = resolve_policy(str(run_dir), teacher.recipe.env_id)
    return list(evaluate_policy(policy, teacher.recipe, n_eval, seed=env_seed, deterministic=True).returns)


def states_cells(
    expert: str, folder: Path, teacher: Teacher, seed: int, args: Any, cells: dict[float, dict], cache: TaskCache
):
    """Each size's student against its teacher on its training buffer, fresh teacher states and its own states."""
    n_steps = state_steps(args.quick)
    rows = {}
    for fraction, cell, name, config in cell_configs(expert, folder, seed, args, cells):
        measured = cache(
            f"{name}-states",
            lambda config=config: gaps_by_driver(teacher, trained_student(config), n_steps, seed + EVAL_SEED_OFFSET),
            config={"expert": expert, "seed": seed, "cell": name, "cnn_width": cell["cnn_width"], "steps": n_steps},
        )
        rows[fraction] = measured
        print(f"{name} states: KL train {rows[fraction]['train_kl']:.3f}, teacher-driven {measured['teacher_kl']:.3f}, "
              f"student-driven {measured['student_kl']:.3f}", flush=True)  # fmt: skip
    return rows


def gaps_by_driver(teacher: Teacher, run_dir: Path, n_steps: int, env_seed: int) -> dict[str, float]:
    """KL(teacher ‖ student), greedy agreement and the teacher's entropy, averaged over the states
    of ``n_steps`` x STATE_ENVS steps where the teacher drives, then where the student drives (both sampled)."""
    student = open_student(run_dir).student
    tau = float(read_json(run_dir / "summary.json")["temperature"])  # the cell's: 1, or its Q-values' tau
    kl, agreement, entropy = buffer_gaps(student, training_buffer(run_dir), tau, n_steps * STATE_ENVS, env_seed)
    gaps = {"train_kl": kl, "train_agreement": agreement, "train_teacher_entropy": entropy}
    for driver in ("teacher", "student"):
        policy = teacher if driver == "teacher" else student
        kl, agreement, entropy = state_gaps(teacher, student, tau, policy, n_steps, env_seed)
        gaps.update({f"{driver}_kl": kl, f"{driver}_agreement": agreement, f"{driver}_teacher_entropy": entropy})
    return gaps


def training_buffer(run_dir: Path) -> Path:
    """The buffer the run trained on: the one its config names (atari.py's smaller cell reuses the
    larger one's), else its own."""
    named = (yaml.safe_load((run_dir / "config.yml").read_text()) or {}).get("buffer")
    return Path(named) if named else run_dir / "buffer.npz"


@torch.no_grad()
def buffer_gaps(student: Student, path: Path, tau: float, n: int, seed: int) -> tuple[float, ...]:
    """``log_gaps`` on ``n`` transitions drawn (seeded) from the buffer at ``path``, the teacher at ``tau``."""
    buffer = LabelledBuffer.load(path)
    drawn = np.random.default_rng(seed).choice(len(buffer), size=min(n, len(buffer)), replace=False)
    parts = []
    for indices in np.array_split(drawn, max(1, len(drawn) // 256)):
        batch = buffer.batch_at(indices)
        parts.append(log_gaps(soften(batch.teacher_outputs[0], tau).log_probs, student, batch.observations))
    return tuple(float(torch.cat(values).mean()) for values in zip(*parts))


def log_gaps(teacher_log_p: torch.Tensor, student: Student, obs: Any) -> tuple[torch.Tensor, ...]:
    """Per state: KL(teacher ‖ student), whether the greedy actions agree, the teacher's entropy."""
    obs = obs if isinstance(obs, torch.Tensor) else torch.as_tensor(np.array(obs))  # an env's may be read-only
    student_log_p = torch.log_softmax(student(obs).logits, dim=-1)
    return (
        categorical_kl(teacher_log_p, student_log_p),
        same_greedy_action(teacher_log_p, student_log_p).float(),
        categorical_entropy(teacher_log_p),
    )


@torch.no_grad()
def state_gaps(
    teacher: Teacher, student: Student, tau: float, driver: Any, n_steps: int, env_seed: int
) -> tuple[float, ...]:
    venv = make_vec_env(teacher.recipe, STATE_ENVS, env_seed)
    rng = np.random.default_rng(env_seed)
    parts = []
    obs = venv.reset()
    try:
        for _ in range(n_steps):
            parts.append(log_gaps(soften(teacher(obs), tau).log_probs, student, obs))
            obs, _, _, _ = venv.step(driver.act(obs, False, rng))
    finally:
        venv.close()
    return tuple(float(torch.cat(values).mean()) for values in zip(*parts))


def retrained_cells(
    expert: str, folder: Path, teacher: Teacher, seed: int, args: Any, cells: dict[float, dict], cache: TaskCache
):
    """Each cell of ``args.arm_sizes`` trained again on its buffer for each arm of RETRAINED asked (or
    cached): ``{fraction: {arm: sampled and greedy returns}}``."""
    n_eval, env_seed = n_eval_episodes(args.quick), seed + EVAL_SEED_OFFSET
    buffer = (
        Path(
            cell_config(
                folder, cells[SIZES[0]]["cnn_width"], seed, args, None, cell_name(expert, SIZES[0], seed)
            ).out_dir
        )
        / "buffer.npz"
    )  # every size trains on it
    rows: dict[float, dict[str, dict[str, float]]] = {}
    for fraction, cell, name, base in cell_configs(expert, folder, seed, args, cells):
        for arm in arms_for(teacher.kind, fraction, name, args, cache):
            changes = dict(RETRAINED[arm][1])
            if args.quick and "n_updates" in changes:  # --quick only checks that the arm runs
                changes["n_updates"] = 400
            config = dataclasses.replace(base, **changes, out_dir=f"{base.out_dir}-{arm}")
            asked = dataclasses.replace(config, device="cpu")  # the same buffer either way: collection is seeded

            def run(config: DistillConfig = config) -> dict[str, Any]:
                summary = distill(dataclasses.replace(config, buffer=str(buffer) if buffer.is_file() else None))
                greedy = greedy_student_returns(teacher, Path(config.out_dir), n_eval, env_seed)
                return {**summary, "student_greedy_returns": greedy}

            result = cache(f"{name}-{arm}", run, config=asked)
            row = {"student_sampled": result["student_return_mean"], "pct_sampled": result["pct_of_teacher"],
                   "student_greedy": float(np.mean(result["student_greedy_returns"]))}  # fmt: skip
            rows.setdefault(fraction, {})[arm] = row
            print(f"{name} {arm}: sampled {row['student_sampled']:.1f} ({row['pct_sampled']:.1f} %), "
                  f"greedy {row['student_greedy']:.1f}", flush=True)  # fmt: skip
    return rows


def arms_for(kind: str, fraction: float, name: str, args: Any, cache: TaskCache) -> list[str]:
    """The retrained arms of cell ``name`` to show: those that fit its teacher's ``kind`` and were asked
    for on its size (``--arms``, ``--arm-sizes``) or computed before."""
    asked = [arm for arm in args.arms if fraction in args.arm_sizes]
    return [arm for arm in RETRAINED if kind in RETRAINED[arm][2]
            and (arm in asked or is_cached(cache.cache_dir / f"{name}-{arm}.json"))]  # fmt: skip


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
    per_seed, retrained = [], []
    for seed in seeds:
        cells = run_seed(expert, folder, widths, seed, args, caches["atari"])
        for fraction, cell in cells.items():
            cell["cnn_width"] = widths[fraction]
        greedy = greedy_cells(expert, folder, teacher, seed, args, cells, caches["ablations"])
        states = states_cells(expert, folder, teacher, seed, args, cells, caches["ablations"])
        per_seed.append({fraction: {**greedy[fraction], **states.get(fraction, {})} for fraction in SIZES})
        retrained.append(retrained_cells(expert, folder, teacher, seed, args, cells, caches["ablations"]))
    arms = [(fraction, arm) for fraction in SIZES for arm in RETRAINED
            if any(arm in rows.get(fraction, {}) for rows in retrained)]  # fmt: skip
    sizes = [{"target_fraction": fraction, **{key: [rows[fraction][key] for rows in per_seed]
                                              for key in per_seed[0][fraction]}} for fraction in SIZES]  # fmt: skip
    return {"expert": expert, "seeds": list(seeds), "sizes": sizes,
            "retrained": [retrained_row(fraction, arm, seeds, retrained, per_seed)
                          for fraction, arm in arms]}  # fmt: skip


def retrained_row(
    fraction: float, arm: str, seeds: tuple[int, ...], retrained: list[dict], per_seed: list[dict]
) -> dict[str, Any]:
    """One retrained arm of one size over the seeds that ran it, with atari.py's cell on the same seeds."""
    ran = [i for i, rows in enumerate(retrained) if arm in rows.get(fraction, {})]
    row = {"target_fraction": fraction, "arm": arm, "seeds": [seeds[i] for i in ran]}
    row.update({key: [retrained[i][fraction][arm][key] for i in ran] for key in retrained[ran[0]][fraction][arm]})
    for key in ("pct_sampled", "teacher_sampled", "teacher_greedy"):
        row[f"cell_{key}"] = [per_seed[i][fraction][key] for i in ran]
    return row


def pct_with_ci(pcts: list[float]) -> str:
    """The mean over seeds, with its Student-t 95 % interval where there is more than one seed."""
    mean, low, high = mean_ci(pcts)
    return f"{mean:.1f}" + (f" [{low:.1f}, {high:.1f}]" if len(pcts) > 1 else "")


def seeds_text(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table of ``rows`` (cells already formatted) under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def table(rows: list[dict[str, Any]]) -> str:
    header = ["expert", "target", "seeds", "acting", "teacher", "student", "random",
              "% of teacher [95 % CI over seeds]"]  # fmt: skip
    return markdown(header, [
        [f"`{r['expert']}`", f"{100 * s['target_fraction']:g} %", seeds_text(r["seeds"]), acting,
         f"{np.mean(s[f'teacher_{acting}']):.1f}",
         f"{np.mean(s[f'student_{acting}']):.1f}", f"{np.mean(s['random']):.1f}", pct_with_ci(s[f"pct_{acting}"])]
        for r in rows for s in r["sizes"] for acting in ("sampled", "greedy")
    ])  # fmt: skip


def retrained_table(rows: list[dict[str, Any]]) -> str:
    header = ["expert", "target", "change", "seeds", "student sampled", "% of teacher sampled [95 % CI over seeds]",
              "atari.py's cell on the same seeds", "student greedy", "teacher sampled / greedy"]  # fmt: skip
    return markdown(header, [
        [f"`{r['expert']}`", f"{100 * s['target_fraction']:g} %", RETRAINED[s["arm"]][0],
         seeds_text(s["seeds"]),
         f"{np.mean(s['student_sampled']):.1f}", pct_with_ci(s["pct_sampled"]),
         f"{np.mean(s['cell_pct_sampled']):.1f} %",
         f"{np.mean(s['student_greedy']):.1f}",
         f"{np.mean(s['cell_teacher_sampled']):.1f} / {np.mean(s['cell_teacher_greedy']):.1f}"]
        for r in rows for s in r["retrained"]
    ])  # fmt: skip


STATE_SETS = (
    ("train", "its training buffer"),
    ("teacher", "fresh, teacher plays"),
    ("student", "the student's own play"),
)


def states_table(rows: list[dict[str, Any]]) -> str:
    header = ["expert", "target", "seeds", "states", "KL(teacher ‖ student) per state", "greedy action agreement",
              "teacher entropy (nats)"]  # fmt: skip
    return markdown(header, [
        [f"`{r['expert']}`", f"{100 * s['target_fraction']:g} %", seeds_text(r["seeds"]), words,
         f"{np.mean(s[f'{key}_kl']):.3f}",
         f"{np.mean(s[f'{key}_agreement']):.3f}", f"{np.mean(s[f'{key}_teacher_entropy']):.3f}"]
        for r in rows for s in r["sizes"] if "teacher_kl" in s for key, words in STATE_SETS
    ])  # fmt: skip


def body(rows: list[dict[str, Any]], quick: bool) -> str:
    if not rows:
        return "No finished Atari expert was selected."
    return (
        f"Seeds as each row names them; {n_eval_episodes(quick)} evaluation episodes per cell"
        f"{' (--quick: tiny budgets, not a measurement)' if quick else ''}. Each student is atari.py's cell "
        "(same expert, size and seed); `sampled` is that cell's own result, `greedy` replays the same env seeds "
        "with the student and the teacher acting greedily. % of teacher: (student − random) / (teacher − random) "
        "× 100 with the same acting for both, random from the cell; the CI is a Student-t interval over seeds.\n\n"
        + table(rows)
        + f"\n\nWhose states: means over seeds of per-state means over {state_steps(quick) * STATE_ENVS:,} "
        f"states each: drawn from the cell's training buffer, or {state_steps(quick)} steps of {STATE_ENVS} "
        "envs on the evaluation env seeds with the teacher or the student playing (both sampling). The teacher's "
        "distribution is the one the cell trained towards: softmax(logits) for a policy teacher, softmax(Q / τ) at "
        "the cell's τ for a Q-value teacher.\n\n"
        + states_table(rows)
        + "\n\nRetrained: a student trained again on its cell's buffer and seed with one change; "
        "% of teacher against the sampling teacher, as atari.py scores.\n\n"
        + retrained_table([r for r in rows if r["retrained"]])
    )


def cached_seeds(expert: str, quick: bool, caches: dict[str, TaskCache]) -> tuple[int, ...]:
    """The seeds of ``expert`` whose atari.py cells and greedy and states ablations are all cached, so
    that a run of other experts (``--only``) shows them too, read back and not computed."""

    def cached(seed: int) -> bool:
        names = [cell_name(expert, fraction, seed) for fraction in SIZES]
        ablations = [teacher_greedy_name(expert, seed)] + [
            f"{name}-{part}" for name in names for part in ("greedy", "states")
        ]
        files = [caches["atari"].cache_dir / f"{name}.json" for name in names] + [
            caches["ablations"].cache_dir / f"{name}.json" for name in ablations
        ]
        return all(is_cached(path) for path in files)

    return tuple(seed for seed in ((0,) if quick else SEEDS) if cached(seed))


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "atari.py --quick's Pong cell, seed 0, 3 evaluation episodes",
        extra=[(("--seeds",), dict(type=int, nargs="+", help="seeds (default 0 1 2; --quick: 0)")),
               (("--device",), dict(default="cpu", help="torch device of a cell trained again")),
               (("--arms",), dict(nargs="*", default=list(RETRAINED), choices=list(RETRAINED),
                                  help="retrained arms to run (default: all)")),
               (("--arm-sizes",), dict(type=float, nargs="+", default=[SIZES[0]], choices=SIZES,
                                       help="the sizes (target fractions) whose cells the arms retrain "
                                            f"(default: {SIZES[0]:g})"))],
        only_help="run only experts whose folder contains this",
        trace_code=True,
    )  # fmt: skip
    started = time.perf_counter()
    seeds = tuple(args.seeds or ((0,) if args.quick else SEEDS))
    caches = {
        "atari": TaskCache(RESULTS_DIR / results_name("atari", args.quick), False),  # atari.py's cells: read back
        "ablations": TaskCache(RESULTS_DIR / results_name("atari_ablations", args.quick), args.force),
    }
    finished = [(name, folder) for name, folder, reason in atari_experts()
                if not reason and (name in QUICK_EXPERTS or not args.quick)]  # fmt: skip
    rows = []
    for name, folder in finished:  # the experts and seeds asked for, and whatever earlier runs left cached
        if args.only in name:
            rows.append(run_expert(name, folder, seeds, args, caches))
        elif shown := cached_seeds(name, args.quick, caches):
            rows.append(run_expert(name, folder, shown, argparse.Namespace(**{**vars(args), "arms": []}), caches))
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
