"""The tables of `vs_imitation.py`, made from its cells (plain dicts, as cached); nothing is run here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import provenance, replace_between_markers, stale_note

from policykd.fileio import write_json_atomic, write_text_atomic
from policykd.jobs.evaluate import ReturnStats, mean_ci, pct_of

METHODS = ("imitation", "nll", "kl")
LABEL = {"imitation": "imitation", "nll": "policykd nll", "kl": "policykd kl"}
RATIO_HEADER = [
    "| task | policykd loss | BC return | training samples/s | BC transitions to 95 % | DAgger return "
    "| DAgger labels to 95 % |",
    "|---|---|---|---|---|---|---|",
]


def pooled(cells: list[dict[str, Any]]) -> ReturnStats:
    """Every evaluation episode of ``cells`` (one per seed) as one sample."""
    return ReturnStats.of([x for c in cells for x in c["return"]["returns"]])


def reach(xs: list[float], returns: list[float], threshold: float) -> float | None:
    """The first x whose return is >= ``threshold``; None if none is."""
    return next((x for x, r in zip(xs, returns) if r >= threshold), None)


def fmt_n(n: float | None) -> str:
    return "not reached" if n is None else f"{n:,.0f}"


def fmt_ret(s: dict[str, Any]) -> str:
    return f"{s['mean']:.1f} ± {(s['ci95'][1] - s['ci95'][0]) / 2:.1f}"


def ratio(ours: float | None, theirs: float | None, digits: int = 2) -> str:
    return "n/a" if ours is None or theirs is None or theirs == 0 else f"{ours / theirs:.{digits}f}"


def summarise(t: dict[str, Any]) -> dict[str, Any]:
    """Per method: final return, samples/s, transitions (BC) and labels (DAgger) to reach 95 % of the
    teacher on the scale where a uniformly random policy is 0 %: return >= random + 0.95 (teacher - random)."""
    teacher, random = t["baselines"]["teacher"]["mean"], t["baselines"]["random"]["mean"]
    threshold = random + 0.95 * (teacher - random)
    budgets, seeds = t["plan"]["budgets"], t["seeds"]
    methods = {}
    for m in METHODS:
        bc = {(n, s): t["bc"][f"bc-{m}-n{n}-seed{s}"]["return"] for n in budgets for s in seeds}
        curve = [mean_ci([bc[n, s]["mean"] for s in seeds]) for n in budgets]  # Student t over seeds
        final = pooled([t["bc"][f"bc-{m}-n{budgets[-1]}-seed{s}"] for s in seeds])
        runs = [t["dagger"]["runs"][f"dagger-{m}-seed{s}"]["rounds"] for s in seeds]
        labels = [float(np.mean([r[i]["n_labels"] for r in runs])) for i in range(len(runs[0]))]
        d_curve = [float(np.mean([r[i]["return"]["mean"] for r in runs])) for i in range(len(runs[0]))]
        d_final = pooled([r[-1] for r in runs])
        methods[m] = {
            "bc_curve": curve,
            "bc_final": final.to_json(),
            "bc_final_pct_of_teacher": pct_of(final.mean, teacher, random),
            "bc_to_95": reach(budgets, [c[0] for c in curve], threshold),
            "bc_to_95_per_seed": [reach(budgets, [bc[n, s]["mean"] for n in budgets], threshold) for s in seeds],
            "samples_per_s": t["throughput"][m],
            "dagger_labels": labels,
            "dagger_curve": d_curve,
            "dagger_final": d_final.to_json(),
            "dagger_final_pct_of_teacher": pct_of(d_final.mean, teacher, random),
            "dagger_to_95": reach(labels, d_curve, threshold),
            "dagger_to_95_per_seed": [
                reach([x["n_labels"] for x in r], [x["return"]["mean"] for x in r], threshold) for r in runs
            ],
        }
    return {"teacher": teacher, "random": random, "threshold": threshold, "methods": methods}


def ratio_rows(t: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """policykd / imitation; returns as (return - random), so 1.00 is a tie on negative-return tasks too."""
    m, imit = s["methods"], s["methods"]["imitation"]
    norm = lambda x: x - s["random"]  # noqa: E731
    return [
        f"| {t['env_id']} | {k} | {ratio(norm(m[k]['bc_final']['mean']), norm(imit['bc_final']['mean']))} | "
        f"{ratio(m[k]['samples_per_s'], imit['samples_per_s'], 1)} | {ratio(m[k]['bc_to_95'], imit['bc_to_95'])} | "
        f"{ratio(norm(m[k]['dagger_final']['mean']), norm(imit['dagger_final']['mean']))} | "
        f"{ratio(m[k]['dagger_to_95'], imit['dagger_to_95'])} |"
        for k in ("nll", "kl")
    ]


def task_markdown(t: dict[str, Any], s: dict[str, Any]) -> list[str]:
    m, p = s["methods"], t["plan"]
    n_episodes = len(t["seeds"]) * t["n_eval_episodes"]
    lines = [
        f"### {t['name']}: {t['env_id']}, {t['teacher_algo']} teacher `{t['teacher']}`",
        "",
        f"Teacher {s['teacher']:.1f}, uniform random {s['random']:.1f} on the {t['n_eval_episodes']} evaluation "
        f"episodes; 95 % of the teacher (random = 0 %) is a return ≥ {s['threshold']:.1f}. Student: MLP "
        f"{'×'.join(map(str, t['hidden_sizes']))}, ReLU; batch {t['batch_size']}, Adam lr {t['learning_rate']:g}, "
        f"{p['n_updates']:,} gradient steps at every budget; kl at τ = {t['kl_temperature']:g}; "
        f"seeds {t['seeds']}.",
        "",
        f"BC: return at {p['budgets'][-1]:,} transitions (mean ± 95 % CI over the {n_episodes} evaluation episodes "
        "of all seeds), transitions needed to reach 95 % and training samples/s:",
        "",
        "| method | return | % of teacher | transitions to 95 % (seed mean; per seed) | samples/s |",
        "|---|---|---|---|---|",
    ]
    for k in METHODS:
        x = m[k]
        per_seed = ", ".join(fmt_n(n) for n in x["bc_to_95_per_seed"])
        lines.append(
            f"| {LABEL[k]} | {fmt_ret(x['bc_final'])} | {x['bc_final_pct_of_teacher']:.1f} | "
            f"{fmt_n(x['bc_to_95'])}; {per_seed} | {x['samples_per_s']:,.0f} |"
        )
    lines += [
        "",
        "BC learning curve: return after training on the first n transitions, mean [95 % CI] over seeds:",
        "",
        "| transitions | " + " | ".join(LABEL[k] for k in METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for i, n in enumerate(p["budgets"]):
        cells = ["{:.1f} [{:.1f}, {:.1f}]".format(*m[k]["bc_curve"][i]) for k in METHODS]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    rounds = t["dagger"]["runs"]
    first_rounds = [rounds[f"dagger-imitation-seed{seed}"]["rounds"][0] for seed in t["seeds"]]
    expert_there = np.mean([r["driver_return"] for r in first_rounds])
    lines += [
        "",
        f"DAgger: {p['dagger_rounds']} rounds, β from 1 to 0 over {t['dagger']['rampdown_rounds']} rounds "
        f"(linear), ≥ {p['dagger_round_labels']:,} labels and {p['dagger_round_updates']:,} gradient steps per "
        "round. "
        f"imitation: 1 env in {t['imitation_env_id']}, whole episodes per round (its expert, loaded in imitation's "
        f"venv, scored {expert_there:.1f} there in round 0); policykd: {t['n_envs']} envs in {t['env_id']}, episodes "
        "run on across rounds. Return after each round, mean over seeds (labels too):",
        "",
        "| round | " + " | ".join(f"{LABEL[k]}: labels | return" for k in METHODS) + " |",
        "|---|" + "---|---|" * len(METHODS),
    ]
    for i in range(p["dagger_rounds"]):
        cells = [f"{m[k]['dagger_labels'][i]:,.0f} | {m[k]['dagger_curve'][i]:.1f}" for k in METHODS]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | DAgger labels to 95 % (seed mean; per seed) | final return | % of teacher |",
        "|---|---|---|---|",
    ]
    for k in METHODS:
        x = m[k]
        per_seed = ", ".join(fmt_n(n) for n in x["dagger_to_95_per_seed"])
        lines.append(
            f"| {LABEL[k]} | {fmt_n(x['dagger_to_95'])}; {per_seed} | {fmt_ret(x['dagger_final'])} | "
            f"{x['dagger_final_pct_of_teacher']:.1f} |"
        )
    return lines + [""]


def time_rows(t: dict[str, Any]) -> str:
    th = t["throughput"]
    share = lambda part, whole: f"{part:.1f} s ({100 * part / whole:.0f} %)"  # noqa: E731
    return (
        f"| {t['env_id']} | {th['n_updates']:,} × {t['batch_size']} | {th['imitation_train_time_s']:.1f} | "
        f"{share(th['imitation_loader_time_s'], th['imitation_train_time_s'])} | {th['nll_train_time_s']:.1f} | "
        f"{share(th['policykd_sample_time_s'], th['nll_train_time_s'])} |"
    )


NOTES = [
    "## How the two sides are made the same",
    "",
    "- Same expert, same data: per seed, one buffer of teacher-driven transitions collected by policykd's "
    "`collect_rollouts` (with the env preset's exploration), exported as `obs, acts, next_obs, dones` and read by "
    "imitation as `Transitions`. A budget of n transitions is the first n rows for both (n / n_envs steps of each "
    "env). Labels: the teacher's greedy action (argmax of logits / Q-values, or the Gaussian mean), which is what "
    "policykd's `nll` fits; `kl` fits the teacher's whole distribution.",
    "- Same student: MLP trunk with the same hidden sizes and ReLU, the same input normalisation (the teacher's "
    "VecNormalize mean and std, or none). imitation's `ActorCriticPolicy` keeps SB3's orthogonal initialisation, a "
    "state-independent log-std for Box actions and a one-layer value head that it computes in every step but BC never "
    "trains. Each tool keeps its own loss details: imitation's BC adds its default entropy bonus (1e-3) and does not "
    "clip gradients; policykd clips the gradient norm at 10.",
    "- Same optimisation: Adam with the same learning rate, batch size and number of gradient steps (imitation walks "
    "shuffled epochs; policykd samples with replacement).",
    "- Same evaluation: imitation's trained weights are exported as a plain `.npz`, loaded into policykd's `Student` "
    "(checked against the policy's own outputs on 256 observations) and played greedily by `policykd.jobs.evaluate` on "
    "the same episodes (seeds 10000+) as every other policy.",
    "- Samples/s: gradient steps × batch size over the wall time of the training call alone (`BC.train`, "
    "`Trainer.train`); the table values are medians over the throughput repeats (previous section). Neither side "
    "logs anywhere during the timed call.",
    "- DAgger: imitation's `SimpleDAggerTrainer` rounds run one by one (as its `train` does) so that the policy can be "
    "exported after each; BC's rollout statistics are switched off (`log_rollouts_venv=None`) as policykd's loop "
    "evaluates nothing in between either. Labels count every state the expert was asked about, whoever drove "
    "(imitation: at the expert's `predict`; policykd: `collect_rollouts`).",
    "",
]


def write_report(
    tasks: dict[str, Any], out: Path, command: str, wall_time: float, imitation_versions: str, readme: Path | None
) -> None:
    """``out``.md and .json; the ratio table also goes between the ``vs-imitation`` markers of ``readme``
    when it has them."""
    done = {name: t for name, t in tasks.items() if isinstance(t, dict)}
    summaries = {name: summarise(t) for name, t in done.items()}
    ratio_table = RATIO_HEADER + [row for name, t in done.items() for row in ratio_rows(t, summaries[name])]
    text = [
        "# policykd vs the imitation library (BC and DAgger)",
        "",
        "Generated by `benchmarks/vs_imitation.py`; do not edit by hand.",
        "",
        provenance(command).rstrip(),
        f"- imitation's venv (`benchmarks/.venv-imitation`): {imitation_versions}",
        f"- wall time of this invocation: {wall_time / 60:.1f} min (cells cached by an earlier invocation are read, "
        "not rerun); 1 torch thread on each side, on 2 cores shared with expert trainings and other jobs",
        "",
        "## Ratios (policykd / imitation)",
        "",
        "Returns enter as return − (uniform random policy's return), so 1.00 is a tie on negative-return tasks too. "
        "Above 1 is better for policykd for return and samples/s; below 1 is better for the transitions and labels "
        "needed to reach 95 % of the teacher (n/a: one side never reached it).",
        "",
        *ratio_table,
        "",
        "## Where the training time goes",
        "",
        "Medians over back-to-back repeats on the same ≤ 20,000 transitions (imitation's between policykd's; 3 per "
        'side, 1 with `--quick`). "Batches alone" draws as many batches without training: imitation iterates BC\'s '
        "`DataLoader`, which indexes `Transitions` one sample at a time and collates the samples; policykd calls "
        "`LabelledBuffer.sample`, one vectorised gather.",
        "",
        "| task | gradient steps × batch | imitation BC s | its batches alone | policykd nll s | its batches alone |",
        "|---|---|---|---|---|---|",
        *(time_rows(t) for t in done.values()),
        "",
    ]
    for name, t in tasks.items():
        text += task_markdown(t, summaries[name]) if isinstance(t, dict) else [f"### {name}", "", t, ""]
    write_text_atomic(out.with_suffix(".md"), "\n".join(text + NOTES) + stale_note())
    write_json_atomic(
        out.with_suffix(".json"), {"command": command, "wall_time_s": wall_time, "summaries": summaries, "tasks": tasks}
    )
    if readme is not None and readme.is_file() and "<!-- vs-imitation:start -->" in readme.read_text():
        replace_between_markers(readme, "vs-imitation", "\n".join(ratio_table))
