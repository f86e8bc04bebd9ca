"""Load a distilled student from whatever the user points at: ``policykd.load_student(path)``.

``path`` is a run folder of ``policykd distill`` (its ``student/``), a student folder
(``student.json`` or, several tasks, ``multitask.json``) or an exported ``.onnx`` file. A task of
a multi-task student is picked by its env id (``task=``, ``--env``) and becomes a standalone
``Student`` (``learn.sb3_policy.task_student``), so everything downstream serves one kind of
student. Folders of a run that is not ``done`` are refused (``run_folder.check_finished``).

The returned :class:`~policykd.learn.sb3_policy.StudentPolicy` answers SB3's ``predict`` and
carries the env recipe it was distilled on (``policy.recipe``), so::

    policy = policykd.load_student("runs/CartPole-v1/kl-tau1-seed0")
    env = policykd.make_vec_env(policy.recipe, n_envs=1, seed=0)
    mean, std = stable_baselines3.common.evaluation.evaluate_policy(policy, env, n_eval_episodes=10)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from policykd.data.envs import EnvRecipe
from policykd.errors import PolicyKDError
from policykd.fileio import read_json
from policykd.jobs.onnx_policy import OnnxPolicy
from policykd.jobs.resolve import RECIPE_FILE, load_recipe
from policykd.jobs.run_folder import CONFIG_FILE as RUN_CONFIG_FILE
from policykd.jobs.run_folder import STATE_FILE, check_finished
from policykd.learn.multitask import CONFIG_FILE as MULTITASK_FILE
from policykd.learn.multitask import MultiTaskStudent
from policykd.learn.sb3_policy import StudentPolicy, task_student
from policykd.learn.students import CONFIG_FILE as STUDENT_FILE
from policykd.learn.students import Student

RECIPES_FILE, SUMMARY_FILE, STUDENT_DIR = "recipes.json", "summary.json", "student"


@dataclasses.dataclass(frozen=True)
class OpenedStudent:
    """A saved student, resolved: one task's ``Student`` and where it came from."""

    student: Student  # single-task; a multi-task student's task already extracted
    recipe: EnvRecipe | None  # the env it was distilled on, as recorded (None: not recorded)
    folder: Path  # the student folder
    run_dir: Path | None  # the run folder holding it (summary.json, config.yml, videos/), if any
    task: str | None  # the task picked from a multi-task student

    @property
    def summary(self) -> dict[str, Any] | None:
        """The run's ``summary.json`` (None without a run folder)."""
        path = None if self.run_dir is None else self.run_dir / SUMMARY_FILE
        return read_json(path) if path is not None and path.is_file() else None

    @property
    def run_config(self) -> dict[str, Any] | None:
        """The run's resolved ``config.yml`` (None without a run folder, or when it cannot be read)."""
        path = None if self.run_dir is None else self.run_dir / RUN_CONFIG_FILE
        try:
            config = yaml.safe_load(path.read_text()) if path is not None and path.is_file() else None
        except (OSError, yaml.YAMLError):
            return None
        return config if isinstance(config, dict) else None


def load_student(path: str | Path, task: str | None = None, *, seed: int | None = None) -> StudentPolicy:
    """The student at ``path`` (a run folder, a student folder or an exported ``.onnx``) with
    SB3's ``predict``; ``task``: the env id of one task of a multi-task student. ``seed`` seeds
    sampled actions (``predict(..., deterministic=False)``); an ONNX file acts greedily only."""
    if str(path).endswith(".onnx"):
        onnx = OnnxPolicy(path)
        if task is not None and onnx.recipe is not None and task != onnx.recipe.env_id:
            raise PolicyKDError(f"exported student {path} is for {onnx.recipe.env_id}, not {task}; drop the task")
        return StudentPolicy(onnx, onnx.config, onnx.recipe, seed)
    opened = open_student(path, task)
    return StudentPolicy(opened.student, opened.student.config, opened.recipe, seed)


def student_folder(path: str | Path) -> Path | None:
    """The student folder ``path`` names: itself, or the ``student/`` of a run folder (one with
    a ``state.json`` or ``summary.json``); None when it is neither."""
    path = Path(path)
    if _is_student(path):
        return path
    is_run = (path / STATE_FILE).is_file() or (path / SUMMARY_FILE).is_file()
    return path / STUDENT_DIR if is_run and _is_student(path / STUDENT_DIR) else None


def _is_student(folder: Path) -> bool:
    return (folder / STUDENT_FILE).is_file() or (folder / MULTITASK_FILE).is_file()


def open_student(path: str | Path, task: str | None = None) -> OpenedStudent:
    """The student at ``path`` (a run or student folder, see :func:`student_folder`). A
    multi-task student needs ``task``; a single-task one takes none, or the env it was distilled
    on. Refuses a folder whose run is not done, and anything that is not a student, in one line."""
    folder = student_folder(path)
    if folder is None:
        raise PolicyKDError(
            f"{path} is not a policykd student, nor a run folder holding one (no {STUDENT_FILE} or {MULTITASK_FILE}); "
            "pass a run folder of `policykd distill`, its student/ folder or an exported .onnx file"
        )
    check_finished(folder.parent, f"student {folder}")
    run_dir = folder.parent if (folder.parent / SUMMARY_FILE).is_file() else None
    if (folder / MULTITASK_FILE).is_file():
        student, recipe, task = _open_task(folder, task)
        return OpenedStudent(student, recipe, folder, run_dir, task)
    recipe = load_recipe(folder) if (folder / RECIPE_FILE).is_file() else None
    if task is not None and recipe is not None and task != recipe.env_id:
        raise PolicyKDError(f"student {folder} is for {recipe.env_id}, not {task}; drop --env or pick its env")
    return OpenedStudent(Student.load(folder), recipe, folder, run_dir, None)


def _open_task(folder: Path, task: str | None) -> tuple[Student, EnvRecipe | None, str]:
    multitask = MultiTaskStudent.load(folder)
    if task is None:
        raise PolicyKDError(
            f"{folder} is a multi-task student (tasks: {', '.join(multitask.tasks)}); "
            "pick one with --env ENV_ID (Python: task=ENV_ID)"
        )
    student = task_student(multitask, task)  # refuses an unknown task, naming the known ones
    recipes = read_json(folder / RECIPES_FILE) if (folder / RECIPES_FILE).is_file() else {}
    recipe = EnvRecipe.from_json(recipes[task], str(folder / RECIPES_FILE)) if task in recipes else None
    return student, recipe, task
