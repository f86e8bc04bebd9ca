"""Why a student falls short of its teacher: the student's own errors, or a fragile teacher (issue 18).

    python benchmarks/teacher_fragility.py            # EXPERTS, N_EPISODES episodes per setting
    python benchmarks/teacher_fragility.py --quick    # Pendulum SAC, 3 episodes per setting

Each expert's no-preset student (`policykd distill --preset none`, seed 0, as benchmarks/no_preset.py
runs it) and the teacher play the same N_EPISODES episodes (episode i in an env seeded 10,000 + i)
in these settings:

- the teacher alone, greedy;
- the teacher with small errors in its first HANDOVER steps (Gaussian noise of NOISE times half the
  action range; for discrete actions a uniformly random action with probability NOISE), then clean;
- the teacher with COLLECTION_NOISE throughout: how it acts while it labels a no-preset buffer
  (the continuous-control defaults' action noise; ε for discrete actions);
- the student alone, greedy;
- the student for the first HANDOVER steps, then the teacher for the rest of the episode.

An episode fails when its return is below half-way from the random policy's mean return to the
greedy teacher's median. If "student, then teacher" fails about as often as the student alone, the
student's errors early in an episode put it where the teacher itself does not recover: the
teacher is fragile there, so more data from later in episodes does not help, and a student that
imitates the first steps more closely, or a sturdier teacher, does.

One cached JSON per expert under results/teacher_fragility[-quick]/ (every return played), run
folders under runs/benchmarks/teacher_fragility/. Minutes per MuJoCo expert on one core.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS_DIR, TaskCache, page, parse_quick_args, publish, results_name

from policykd.data.envs import make_vec_env
from policykd.data.teachers import load_teacher
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill import distill
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, evaluate_random, pct_of
from policykd.jobs.load import load_student
from policykd.zoo.presets import ZOO_DIR

# the no-preset misses and a sturdy control of each action type
EXPERTS = ("ppo/HalfCheetah-v5_1", "td3/Hopper-v5_1", "dqn/LunarLander-v3_1", "ppo/LunarLanderContinuous-v3_1")
QUICK_EXPERTS = ("sac/Pendulum-v1_1",)
N_EPISODES, QUICK_EPISODES = 30, 3
HANDOVER = 15  # env steps the student (or the noise) acts at the start of an episode
NOISE = 0.03
COLLECTION_NOISE = 0.1  # TEACHER_DEFAULTS' action noise for continuous control
QUICK_BUDGETS = {"n_transitions": 2_000, "n_updates": 200}
RUNS = Path("runs/benchmarks/teacher_fragility")


@dataclasses.dataclass(frozen=True)
class Setting:
    """Who acts first (for ``first_steps`` env steps), who acts after, and the action noise added
    in the first ``noise_steps`` steps."""

    label: str
    first: str = "teacher"  # teacher | student
    first_steps: int = 0
    noise: float = 0.0
    noise_steps: int = 0


SETTINGS = (
    Setting("teacher"),
    Setting(f"teacher, noise {NOISE:g} in its first {HANDOVER} steps", noise=NOISE, noise_steps=HANDOVER),
    Setting(
        f"teacher, noise {COLLECTION_NOISE:g} throughout (as it labels)",
        noise=COLLECTION_NOISE,
        noise_steps=sys.maxsize,
    ),  # fmt: skip
    Setting("student", first="student", first_steps=sys.maxsize),
    Setting(f"student for {HANDOVER} steps, then teacher", first="student", first_steps=HANDOVER),
)


def perturb(actions: np.ndarray, space: Any, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``actions`` with Gaussian noise of ``noise`` x half the Box's range (clipped to it), or with
    probability ``noise`` a uniformly random action of a Discrete space."""
    if hasattr(space, "n"):
        random = rng.integers(space.n, size=actions.shape)
        return np.where(rng.random(actions.shape) < noise, random, actions)
    half = (space.high - space.low) / 2
    return np.clip(actions + noise * half * rng.standard_normal(actions.shape), space.low, space.high)


def play(setting: Setting, teacher: Any, student: Any, n_episodes: int, seed: int) -> list[float]:
    """The setting's return on episodes i < ``n_episodes``, each in an env seeded ``seed + i``."""
    rng = np.random.default_rng(seed)
    first = student if setting.first == "student" else teacher
    returns = []
    for i in range(n_episodes):
        venv = make_vec_env(teacher.recipe, 1, seed + i)
        obs, step, done = venv.reset(), 0, False
        while not done:
            actions = (first if step < setting.first_steps else teacher).act(obs, deterministic=True)
            if step < setting.noise_steps:
                actions = perturb(np.asarray(actions), teacher.action_space, setting.noise, rng)
            obs, _, dones, infos = venv.step(actions)
            step, done = step + 1, bool(dones[0])
        returns.append(float(infos[0]["episode"]["r"]))
        venv.close()
    return returns


def run_expert(expert: str, quick: bool) -> dict[str, Any]:
    folder = ZOO_DIR / expert
    teacher = load_teacher(folder)
    config = DistillConfig(
        teacher=str(folder.relative_to(ZOO_DIR.parent)), preset="none", seed=0,
        loss="mse" if teacher.kind == "deterministic" else None,
        out_dir=str(RUNS / ("quick" if quick else "full") / expert.replace("/", "-")), overwrite=True,
        progress_bar=False, **(QUICK_BUDGETS if quick else {}),
    )  # fmt: skip
    summary = distill(config)
    student = load_student(config.out_dir)
    n, seed = QUICK_EPISODES if quick else N_EPISODES, EVAL_SEED_OFFSET
    played = {}
    for setting in SETTINGS:
        played[setting.label] = play(setting, teacher, student, n, seed)
        print(f"  {setting.label}: {np.mean(played[setting.label]):.1f}", flush=True)
    return {
        "expert": expert,
        "returns": played,
        "random_mean": evaluate_random(teacher, n, seed).mean,
        "student_params": summary["student_params"],
        "teacher_params": summary["teacher_params"],
        "no_preset_pct_of_teacher": summary["pct_of_teacher"],
    }


def threshold(cell: dict[str, Any]) -> float:
    """The return below which an episode fails: half-way from random to the greedy teacher's median."""
    return (cell["random_mean"] + float(np.median(cell["returns"]["teacher"]))) / 2


def row(cell: dict[str, Any]) -> str:
    fail_below = threshold(cell)
    shown = []
    for setting in SETTINGS:
        returns = np.asarray(cell["returns"][setting.label])
        shown.append(f"{returns.mean():.1f} ({int((returns < fail_below).sum())}/{len(returns)})")
    returns = cell["returns"]
    pct = pct_of(float(np.mean(returns["student"])), float(np.mean(returns["teacher"])), cell["random_mean"])
    return f"| `{cell['expert']}` | {fail_below:.1f} | " + " | ".join(shown) + f" | {pct:.1f} |"


def main() -> None:
    args = parse_quick_args(__doc__, "Pendulum SAC, 3 episodes per setting, tiny distillation budgets",
                            only_help="experts whose folder contains this (others: read from the cache)",
                            trace_code=True)  # fmt: skip
    stem = results_name("teacher_fragility", args.quick)
    cache = TaskCache(RESULTS_DIR / stem, force=args.force)
    experts = [e for e in (QUICK_EXPERTS if args.quick else EXPERTS) if (ZOO_DIR / e / "expert.json").is_file()]
    cells = []
    for expert in experts:
        path = cache.cache_dir / f"{expert.replace('/', '-')}.json"
        if args.only not in expert and not path.is_file():
            continue
        print(expert, flush=True)
        cells.append(cache(expert.replace("/", "-"), lambda expert=expert: run_expert(expert, args.quick)))
    n = QUICK_EPISODES if args.quick else N_EPISODES
    header = "| expert | fails below | " + " | ".join(s.label for s in SETTINGS) + " | student, % of teacher |"
    table = "\n".join([header, "|---" * (len(SETTINGS) + 3) + "|", *map(row, cells)])
    text = (
        f"Mean return over {n} episodes (env seeds 10,000 + i) and, in brackets, the episodes that fail: below "
        "half-way from a random policy's mean return to the greedy teacher's median. % of teacher: the student's "
        "mean return alone against the greedy teacher's, a random policy's mean being 0 %. The student is the "
        "expert's no-preset student (`policykd distill --preset none`, seed 0). Noise: Gaussian, in units of half "
        "the action range (discrete actions: a uniformly random action with that probability).\n\n" + table
    )
    command = "python benchmarks/teacher_fragility.py" + (" --quick" if args.quick else "")
    results_page = page("Teacher fragility", command, text)
    publish("teacher_fragility", results_page, quick=args.quick, readme_marker="teacher-fragility", readme_text=text)
    print(text)


if __name__ == "__main__":
    main()
