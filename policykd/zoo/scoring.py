"""The zoo's score of an expert, and the one way to record it in its ``expert.json``.

The protocol is rl-zoo's: ``SCORE_EPISODES`` full episodes with env ``i`` seeded ``SCORE_SEED + i``,
played through the expert's zoo folder (so with its env recipe: wrappers, frame stack,
VecNormalize), deterministically unless the env preset says otherwise (Atari experts act
stochastically, as rl-zoo evaluates them). ``policykd evaluate --record`` and training records go
through :func:`record_score`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from policykd.data.teachers import load_teacher
from policykd.errors import PolicyKDError
from policykd.fileio import read_json, write_json_atomic
from policykd.jobs.evaluate import ReturnStats, evaluate_policy
from policykd.zoo.layout import RECORD_FILE
from policykd.zoo.presets import load_preset

SCORE_EPISODES, SCORE_SEED = 30, 0


def score_entry(stats: ReturnStats, *, seed: int, deterministic: bool) -> dict[str, Any]:
    """What ``expert.json`` keeps as ``score``: mean, std, 95 % CI, episodes, the seed and whether
    the expert acted deterministically."""
    return {**stats.to_json(), "seed": seed, "deterministic": deterministic}


def record_score(run_dir: str | Path, score: dict[str, Any]) -> Path:
    """Write ``score`` into ``run_dir``'s expert.json, atomically, keeping every other key.
    Returns the record's path; a folder with no expert.json is refused."""
    record_path = Path(run_dir) / RECORD_FILE
    if not record_path.is_file():
        raise PolicyKDError(f"a score is recorded in a zoo folder's {RECORD_FILE}; {run_dir} has none")
    record = read_json(record_path)
    record["score"] = score
    write_json_atomic(record_path, record)
    return record_path


def measure_expert(run_dir: Path, n_episodes: int = SCORE_EPISODES, seed: int = SCORE_SEED) -> dict[str, Any]:
    """Score a finished expert through its zoo folder and record the score in its expert.json."""
    score = score_folder(run_dir, read_json(Path(run_dir) / RECORD_FILE)["env_id"], n_episodes, seed)
    record_score(run_dir, score)
    return score


def score_folder(folder: Path, env_id: str, n_episodes: int, seed: int) -> dict[str, Any]:
    """The zoo's score (a :func:`score_entry`) of the expert in rl-zoo folder ``folder``; the env
    preset decides whether it acts deterministically."""
    deterministic = bool(load_preset(env_id)["deterministic_eval"])
    teacher = load_teacher(folder)
    stats = evaluate_policy(teacher, teacher.recipe, n_episodes, seed=seed, deterministic=deterministic)
    return score_entry(stats, seed=seed, deterministic=deterministic)


def score_checkpoint(
    algo: str, env_id: str, run_dir: Path, checkpoint: Path, n_episodes: int, seed: int
) -> dict[str, Any]:
    """Score a training checkpoint (``checkpoint/model.zip`` and, with VecNormalize,
    ``checkpoint/<env_id>/vecnormalize.pkl``) as if it had shipped from ``run_dir``: the same
    config, the same protocol as :func:`measure_expert`."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / algo / f"{env_id}_1"
        shutil.copytree(Path(run_dir) / env_id, folder / env_id, ignore=shutil.ignore_patterns("vecnormalize.pkl"))
        shutil.copyfile(Path(checkpoint) / "model.zip", folder / f"{env_id}.zip")
        stats_file = Path(checkpoint) / env_id / "vecnormalize.pkl"
        if stats_file.is_file():
            shutil.copyfile(stats_file, folder / env_id / "vecnormalize.pkl")
        return score_folder(folder, env_id, n_episodes, seed)
