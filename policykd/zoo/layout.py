"""Where a zoo expert's files live. A run folder ``<zoo>/<algo>/<EnvId>_<run id>/`` holds
``<EnvId>.zip``, ``<EnvId>/`` (``config.yml``, ``args.yml``, ``vecnormalize.pkl``), ``expert.json``
(how it was trained and, once measured, its score) and, while it trains, ``resume/``.

Names only: training (experts), scoring and the catalog all import them, and this module imports
nothing of ours but ``fileio``, so none of them imports another to learn a file name.
"""

from __future__ import annotations

from pathlib import Path

from policykd.fileio import read_json

RECORD_FILE = "expert.json"
RESUME_DIR = "resume"


def run_dir_for(zoo_dir: str | Path, algo: str, env_id: str, run_id: int = 1) -> Path:
    """``<zoo_dir>/<algo>/<env_id>_<run_id>``: the rl-zoo layout."""
    return Path(zoo_dir) / algo / f"{env_id}_{run_id}"


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished expert (its expert.json says so)."""
    record = Path(run_dir) / RECORD_FILE
    return record.is_file() and read_json(record).get("status") == "finished"
