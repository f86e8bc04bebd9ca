"""Re-check every shipped expert and regenerate the zoo table in agents/README.md.

    python benchmarks/check_zoo.py             # re-evaluate each expert, compare with its recorded score
    python benchmarks/check_zoo.py --record    # (re)measure and record scores first (after training)
    python benchmarks/check_zoo.py --quick     # classic-control experts only; prints, README untouched

Each expert is played for its recorded number of episodes with the recorded seed, through
`load_teacher` on its zoo folder (so with its env recipe: wrappers, frame stack, VecNormalize).
A check passes when the new mean lies inside the recorded 95 % confidence interval. Exits
non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import sys

from common import CLASSIC_ENVS, replace_between_markers

from policykd.data.teachers import load_teacher
from policykd.fileio import read_json
from policykd.jobs.evaluate import evaluate_policy
from policykd.zoo.layout import RECORD_FILE
from policykd.zoo.presets import ZOO_DIR, load_preset
from policykd.zoo.scoring import measure_expert


def _fmt_score(score: dict) -> str:
    return f"{score['mean']:.1f} ± {score['std']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="measure and record scores, then check")
    parser.add_argument("--only", default="", help="only experts whose path contains this")
    parser.add_argument(
        "--quick", action="store_true", help="re-check classic-control experts only (not Box2D, MuJoCo, Atari)"
    )
    args = parser.parse_args()

    rows, failures = [], 0
    for record_path in sorted(ZOO_DIR.glob(f"*/*_*/{RECORD_FILE}")):
        run_dir = record_path.parent
        record = read_json(record_path)
        if record.get("status") != "finished":
            continue
        preset = load_preset(record["env_id"])
        if args.quick and not record["env_id"].startswith(CLASSIC_ENVS):
            continue
        if args.only in str(run_dir):  # measured / re-checked now; the others keep their row from the record
            if args.record or not record.get("score"):
                record["score"] = measure_expert(run_dir)
            score = record["score"]
            teacher = load_teacher(run_dir)
            stats = evaluate_policy(
                teacher, teacher.recipe, score["n_episodes"], seed=score["seed"], deterministic=score["deterministic"]
            )
            ok = score["ci95"][0] - 1e-6 <= stats.mean <= score["ci95"][1] + 1e-6
            failures += not ok
            recheck = f"{stats.mean:.1f} {'ok' if ok else 'FAIL'}"
        else:
            score, recheck = record["score"], "not re-run (--only)"
        reference = preset["references"].get(record["algo"])
        if reference is None:
            target = "-"
        else:  # target: at least 90 % of rl-zoo's reference, or within the expert's own std of it
            met = score["mean"] >= reference - max(0.1 * abs(reference), score["std"])
            target = "met" if met else "**below**"
        size_mb = (run_dir / f"{record['env_id']}.zip").stat().st_size / 1e6
        rows.append(
            f"| {record['algo']} | {record['env_id']} | {run_dir.name.rsplit('_', 1)[1]} ({record['seed']}) "
            f"| {_fmt_score(score)} (n={score['n_episodes']}) "
            f"| {'-' if reference is None else reference} | {target} | {record['n_timesteps']:,} "
            f"| {record['wall_time_s'] / 60:.0f} min | {size_mb:.2f} MB | {recheck} |"
        )
        print(rows[-1], flush=True)

    table = "\n".join(
        [
            "| algo | env | run (seed) | recorded score (mean ± std) | rl-zoo reference | target | timesteps | train time "
            "| size | re-check |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    if args.quick:  # a partial table: the README keeps the full one
        print(table)
    else:
        replace_between_markers(ZOO_DIR / "README.md", "zoo-table", table)
    print(f"\n{len(rows)} experts checked, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
