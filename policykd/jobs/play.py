"""What ``policykd evaluate`` plays: an exported student, a student folder or a teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policykd.data.envs import EnvRecipe
from policykd.errors import PolicyKDError
from policykd.jobs.export import OnnxPolicy
from policykd.jobs.resolve import playing_recipe, resolve_student, resolve_teacher
from policykd.learn.students import is_student_dir


def resolve_policy(
    source: str, env_id: str | None, stochastic: bool = False, *, trust_pickles: bool = False
) -> tuple[Any, EnvRecipe, str]:
    """Whatever ``policykd evaluate`` is given, as ``(policy, recipe, description)``: an exported
    student (.onnx), a student folder, or a teacher (rl-zoo folder, SB3 .zip or hub id).
    ``trust_pickles``: see :func:`policykd.data.teachers.load_teacher`."""
    if str(source).endswith(".onnx"):
        if stochastic:
            raise PolicyKDError("an exported student acts greedily only; drop --stochastic")
        onnx = OnnxPolicy(source)
        recipe = playing_recipe(
            onnx.recipe, env_id, f"exported student {source}", onnx.config, trust_pickles=trust_pickles
        )
        return onnx, recipe, "exported student (onnxruntime)"
    if is_student_dir(source):
        student, recipe = resolve_student(source, env_id, trust_pickles=trust_pickles)
        return student, recipe, f"student ({student.n_params:,} params)"
    if is_student_dir(Path(source) / "student"):
        raise PolicyKDError(
            f"{source} is a policykd run folder; evaluate its student: policykd evaluate {Path(source) / 'student'}"
        )
    teacher = resolve_teacher(source, env_id, trust_pickles=trust_pickles)
    return teacher, teacher.recipe, teacher.describe()
