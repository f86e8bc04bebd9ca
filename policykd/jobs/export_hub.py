"""``policykd export --format hub``: a folder ready for the Hugging Face hub, written and checked
offline (nothing is uploaded; ``huggingface-cli upload USER/REPO FOLDER`` pushes it as it is).

It is laid out as huggingface_sb3's ``package_to_hub`` lays out a repo, so ``load_from_hub`` and
rl-zoo's tools read it:

- ``README.md``: the model card: hub metadata (``library_name: stable-baselines3``, tags, the
  student's ``mean_reward`` as ``model-index``) and the table the run measured (``summary.json``:
  teacher and student on the same episodes, % of teacher, parameters, latency);
- ``<algo>-<env>.zip``: the SB3 zip (``export_sb3``: loaded back and compared with the student);
- ``config.json``: the zip's hyperparameters (its ``data``), as ``package_to_hub`` writes it;
- ``results.json``: the student's ``mean_reward``, ``std_reward``, ``n_eval_episodes``,
  ``is_deterministic`` from the run;
- ``env-recipe.json``: the env the student plays in (wrappers, frame stack, env kwargs);
- ``policykd-config.yml``: the run's resolved ``config.yml``;
- ``replay.mp4``: the student's first recorded episode, when the run was made with ``--video``.

The folder is built next to its destination and moved into place when every file is written and
checked; an earlier export's folder is replaced, a folder holding anything else is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

from policykd.errors import PolicyKDError
from policykd.fileio import read_json, write_json_atomic, write_text_atomic
from policykd.jobs.export import SB3ExportReport, model_env_name, write_sb3_zip
from policykd.jobs.load import OpenedStudent, open_student
from policykd.jobs.run_folder import CONFIG_FILE
from policykd.jobs.video import VIDEOS_DIR, task_folder_name
from policykd.learn.sb3_export import sb3_algo_for
from policykd.zoo.presets import load_preset

CARD, CONFIG_JSON, RESULTS, RECIPE, RUN_CONFIG, REPLAY = (
    "README.md",
    "config.json",
    "results.json",
    "env-recipe.json",
    "policykd-config.yml",
    "replay.mp4",
)


@dataclasses.dataclass(frozen=True)
class HubExportReport:
    folder: Path
    files: tuple[str, ...]  # names in the folder
    sb3: SB3ExportReport  # the zip and its check


def export_hub(
    source: str | Path, out_dir: str | Path | None = None, *, task: str | None = None, n_check: int = 1000
) -> HubExportReport:
    """Write the hub folder of the run at ``source`` (a run folder or its ``student/``; ``task``:
    one task of a multi-task student) to ``out_dir`` (default ``<run>/hub``, or
    ``<run>/hub-<task>``); see the module docstring. Needs the run's ``summary.json``."""
    opened = open_student(source, task)
    summary = opened.summary
    if summary is None or opened.run_dir is None or opened.recipe is None:
        raise PolicyKDError(
            f"--format hub writes the measured table of a `policykd distill` run, and {source} is not in a run "
            "folder with summary.json and the student's recipe; pass the run folder (or use --format sb3)"
        )
    algo = sb3_algo_for(opened.student.config, summary.get("loss"))
    default = "hub" if task is None else f"hub-{task_folder_name(task)}"
    out = Path(out_dir) if out_dir is not None else opened.run_dir / default
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        zip_name = f"{algo}-{model_env_name(opened)}.zip"
        sb3 = write_sb3_zip(opened, staging / zip_name, algo, n_check=n_check, seed=0)
        _write_files(staging, opened, summary, zip_name, dict_observations=sb3.observation_keys is not None)
        check_hub_folder(staging, zip_name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return HubExportReport(
        out, tuple(sorted(p.name for p in out.iterdir())), dataclasses.replace(sb3, path=out / zip_name)
    )


def _write_files(
    folder: Path, opened: OpenedStudent, summary: dict[str, Any], zip_name: str, *, dict_observations: bool = False
) -> None:
    assert opened.run_dir is not None and opened.recipe is not None
    measured = _measured(summary, opened)
    with zipfile.ZipFile(folder / zip_name) as archive:
        write_json_atomic(folder / CONFIG_JSON, json.loads(archive.read("data")))
    deterministic = bool(load_preset(opened.recipe.env_id).get("deterministic_eval", True))
    student = measured["student"]
    write_json_atomic(
        folder / RESULTS,
        {
            "mean_reward": student["mean"],
            "std_reward": student["std"],
            "n_eval_episodes": measured["n_eval_episodes"],
            "is_deterministic": deterministic,
        },
    )
    write_json_atomic(folder / RECIPE, opened.recipe.to_json())
    if (opened.run_dir / CONFIG_FILE).is_file():
        shutil.copyfile(opened.run_dir / CONFIG_FILE, folder / RUN_CONFIG)
    video = _student_video(opened)
    if video is not None:
        shutil.copyfile(video, folder / REPLAY)
    write_text_atomic(folder / CARD, model_card(measured, opened, zip_name, summary, dict_observations))


def _measured(summary: dict[str, Any], opened: OpenedStudent) -> dict[str, Any]:
    """The run's measurements of this student (one task's, for a multi-task run), in one shape."""
    if opened.task is None:
        return {
            "teacher": {
                "algo": summary["teacher_algo"],
                "source": summary["teacher"],
                **{key: summary[f"teacher_return_{key}"] for key in ("mean", "std", "ci95")},
            },
            "student": {key: summary[f"student_return_{key}"] for key in ("mean", "std", "ci95")},
            "pct_of_teacher": summary["pct_of_teacher"],
            "random": summary["random_return_mean"],
            "n_eval_episodes": summary["n_eval_episodes"],
            "teacher_params": summary["teacher_params"],
            "student_params": summary["student_params"],
            "latency_ms": (summary.get("teacher_latency_ms"), summary.get("student_latency_ms")),
        }
    row = summary["tasks"][opened.task]
    return {
        "teacher": row["teacher"],
        "student": row["student"],
        "pct_of_teacher": row["pct_of_teacher"],
        "random": row["random_return_mean"],
        "n_eval_episodes": row["student"]["n_episodes"],
        "teacher_params": row["teacher_params"],
        "student_params": opened.student.n_params,
        "latency_ms": (None, None),
    }


def model_card(
    measured: dict[str, Any],
    opened: OpenedStudent,
    zip_name: str,
    summary: dict[str, Any],
    dict_observations: bool = False,
) -> str:
    """``README.md``: hub metadata between ``---`` lines, then the measured table and how to play it
    (``dict_observations``: a MultiInputPolicy zip, played on the env's own dicts)."""
    assert opened.recipe is not None
    env_id, algo = opened.recipe.env_id, zip_name.split("-", 1)[0]
    teacher, student = measured["teacher"], measured["student"]
    metadata = card_metadata(env_id, algo, student)
    latency = [f"{ms:.3f}" if ms is not None else "-" for ms in measured["latency_ms"]]
    rows = [
        ["policy", "return (mean ± std)", "95 % CI", "% of teacher", "params", "latency (ms)"],
        ["---"] * 6,
        [f"teacher ({teacher['algo']})", *_return_cells(teacher), "100.0", f"{measured['teacher_params']:,}", latency[0]],
        ["student", *_return_cells(student), f"{measured['pct_of_teacher']:.1f}", f"{measured['student_params']:,}", latency[1]],
    ]  # fmt: skip
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    task = f" (task {opened.task} of a multi-task student)" if opened.task else ""
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False)}---

# {algo.upper()} student of {env_id}, distilled with policykd

A {measured["student_params"]:,}-parameter student{task} distilled from the {teacher["algo"]} expert
`{_public_source(teacher["source"])}` with policykd (loss {summary.get("loss")}, temperature
{summary.get("temperature")}). It is a plain Stable-Baselines3 `{algo.upper()}` model: the student's input
normalisation is folded into its first layer, so it plays on the env's raw observations (no VecNormalize).

## Evaluation

Measured by `policykd distill` on {measured["n_eval_episodes"]} episodes, the same episodes for teacher and student.
% of teacher is (student − random) / (teacher − random); a uniformly random policy scores {measured["random"]:.1f}.

{table}

## Usage

```python
import json

import policykd
from stable_baselines3 import {algo.upper()}
from stable_baselines3.common.evaluation import evaluate_policy

model = {algo.upper()}.load("{zip_name}")  # or huggingface_sb3.load_from_hub(repo_id, "{zip_name}")
recipe = policykd.EnvRecipe.from_json(json.load(open("{RECIPE}")), "{RECIPE}")
env = policykd.make_vec_env(recipe, n_envs=1, seed=0)  # the teacher's env wrappers and frame stack{_DICT_ENV if dict_observations else ""}
print(evaluate_policy(model, env, n_eval_episodes=10))
```

The env recipe ({RECIPE}): `{json.dumps(opened.recipe.to_json())}`.
"""


# make_vec_env gives a dict env's observations as flat rows (what the student learnt on); a MultiInputPolicy zip
# takes the env's own dicts, one wrapper below
_DICT_ENV = "\nenv = env.venv  # the env's own dict observations, as this MultiInputPolicy zip takes them"


def card_metadata(env_id: str, algo: str, student: dict[str, Any]) -> dict[str, Any]:
    """The hub metadata huggingface_sb3 writes: library, tags, and the student's mean_reward."""
    return {
        "library_name": "stable-baselines3",
        "tags": [env_id, "deep-reinforcement-learning", "reinforcement-learning", "stable-baselines3", "policykd"],
        "model-index": [
            {
                "name": algo.upper(),
                "results": [
                    {
                        "task": {"type": "reinforcement-learning", "name": "reinforcement-learning"},
                        "dataset": {"name": env_id, "type": env_id},
                        "metrics": [
                            {
                                "type": "mean_reward",
                                "value": f"{student['mean']:.2f} +/- {student['std']:.2f}",
                                "name": "mean_reward",
                                "verified": False,
                            }
                        ],
                    }
                ],
            }
        ],
    }


def _public_source(source: str) -> str:
    """A teacher source as a public card shows it: a hub id as is, a local folder or zip by its last
    two parts (``ppo/CartPole-v1_1``), never the machine's own path."""
    path = Path(source)
    return "/".join(path.parts[-2:]) if path.is_absolute() or path.exists() else source


def _return_cells(stats: dict[str, Any]) -> list[str]:
    low, high = stats["ci95"]
    return [f"{stats['mean']:.1f} ± {stats['std']:.1f}", f"[{low:.1f}, {high:.1f}]"]


def _student_video(opened: OpenedStudent) -> Path | None:
    assert opened.run_dir is not None
    folder = opened.run_dir / VIDEOS_DIR
    if opened.task is not None:
        folder = folder / task_folder_name(opened.task)
    path = folder / "student-episode-0.mp4"
    return path if path.is_file() else None


def check_hub_folder(folder: Path, zip_name: str) -> None:
    """Offline: every file is there and reads (the card's metadata as YAML, the JSON files as
    JSON); the zip itself was loaded and compared with the student by ``export_sb3``."""
    for name in (CARD, zip_name, CONFIG_JSON, RESULTS, RECIPE):
        if not (folder / name).is_file() or (folder / name).stat().st_size == 0:
            raise PolicyKDError(f"the hub folder lacks {name}; please report this with the run folder")
    front = (folder / CARD).read_text().split("---\n")[1]
    metadata = yaml.safe_load(front)
    if metadata.get("library_name") != "stable-baselines3" or not metadata.get("model-index"):
        raise PolicyKDError(f"{folder / CARD} has no hub metadata; please report this with the run folder")
    for name in (CONFIG_JSON, RESULTS, RECIPE):
        read_json(folder / name)


def _check_target(out: Path) -> None:
    """The destination may be new, or an earlier export (only files this writes); nothing else."""
    if not out.exists():
        return
    ours = {CARD, CONFIG_JSON, RESULTS, RECIPE, RUN_CONFIG, REPLAY}
    others = (
        [p.name for p in out.iterdir() if p.name not in ours and not p.name.endswith(".zip")]
        if out.is_dir()
        else [out.name]
    )
    if others:
        raise PolicyKDError(
            f"{out} holds other files ({', '.join(sorted(others)[:3])}); pass another --out for the hub folder"
        )
