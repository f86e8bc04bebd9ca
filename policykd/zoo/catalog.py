"""The shipped expert zoo: what ``agents/`` holds, with recorded scores next to rl-zoo's."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from policykd.fileio import read_json
from policykd.zoo.experts import RECORD_FILE, RESUME_DIR
from policykd.zoo.presets import ZOO_DIR, load_preset


def list_experts(zoo_dir: Path = ZOO_DIR) -> list[dict[str, Any]]:
    """One row per ``<algo>/<EnvId>_<n>`` folder, finished or still training."""
    rows = []
    for run_dir in sorted(p for p in zoo_dir.glob("*/*_*") if p.is_dir()):
        algo, env_id = run_dir.parent.name, run_dir.name.rsplit("_", 1)[0]
        record = read_json(run_dir / RECORD_FILE) if (run_dir / RECORD_FILE).is_file() else {}
        progress_file = run_dir / RESUME_DIR / "progress.json"
        progress = read_json(progress_file) if progress_file.is_file() else {}
        score = record.get("score")
        model = run_dir / f"{env_id}.zip"
        rows.append(
            {
                "algo": algo,
                "env_id": env_id,
                "path": str(run_dir),
                "score": f"{score['mean']:.1f} ± {score['std']:.1f} (n={score['n_episodes']})" if score else "-",
                "reference": load_preset(env_id)["references"].get(algo, "-"),
                "timesteps": f"{record.get('n_timesteps', progress.get('num_timesteps', 0)):,}",
                "size": f"{model.stat().st_size / 1e6:.1f} MB" if model.is_file() else "-",
                "status": record.get("status") or ("training" if progress else "empty"),
            }
        )
    return rows


SCORE_EPISODES, SCORE_SEED = 30, 0


def measure_expert(run_dir: Path, n_episodes: int = SCORE_EPISODES, seed: int = SCORE_SEED) -> dict[str, Any]:
    """Play a finished expert through its zoo folder (so with its env recipe) and record the score
    in its ``expert.json``. Atari experts act stochastically, as rl-zoo evaluates them."""
    from policykd.fileio import write_json_atomic

    record_path = Path(run_dir) / RECORD_FILE
    record = read_json(record_path)
    record["score"] = score_folder(run_dir, record["env_id"], n_episodes, seed)
    write_json_atomic(record_path, record)
    return record["score"]


def score_folder(folder: Path, env_id: str, n_episodes: int, seed: int) -> dict[str, Any]:
    """The zoo's score of the expert in rl-zoo folder ``folder``: mean, std, 95 % CI, episodes,
    seed and whether it acted deterministically (the env preset decides)."""
    from policykd.data.teachers import load_teacher
    from policykd.jobs.evaluate import evaluate_teacher

    deterministic = bool(load_preset(env_id)["deterministic_eval"])
    stats = evaluate_teacher(load_teacher(folder), n_episodes, seed, deterministic)
    return {**stats.to_json(), "seed": seed, "deterministic": deterministic}


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
