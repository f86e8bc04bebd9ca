"""The expert zoo (``agents/`` of a checkout, ``--zoo DIR`` or ``$POLICYKD_ZOO``: presets.find_zoo):
what it holds, with recorded scores next to rl-zoo's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policykd.errors import PolicyKDError
from policykd.fileio import read_json
from policykd.zoo.layout import RECORD_FILE, RESUME_DIR
from policykd.zoo.presets import find_zoo, load_preset, zoo_hint, zoo_source


def list_experts(zoo_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per ``<algo>/<EnvId>_<n>`` folder of the zoo (``zoo_dir``, else presets.find_zoo's),
    finished or still training. A zoo that cannot be found raises PolicyKDError."""
    zoo = find_zoo(zoo_dir)
    if zoo is None or not zoo.is_dir():
        where = f"no expert zoo at {zoo}" if zoo is not None else "no expert zoo found"
        raise PolicyKDError(f"{where} ({zoo_source(zoo_dir, zoo)}); {zoo_hint(teacher=False)}")
    rows = []
    for run_dir in sorted(p for p in zoo.glob("*/*_*") if p.is_dir()):
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
