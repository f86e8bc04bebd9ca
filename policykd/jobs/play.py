"""What ``policykd evaluate`` plays: an exported student, a student (its run folder, its folder, or
one task of a multi-task student) or a teacher."""

from __future__ import annotations

from typing import Any

from policykd.data.envs import EnvRecipe
from policykd.devices import resolve_device
from policykd.errors import PolicyKDError
from policykd.jobs.load import open_student, student_folder
from policykd.jobs.onnx_policy import OnnxPolicy
from policykd.jobs.resolve import playing_recipe, resolve_teacher


def resolve_policy(
    source: str, env_id: str | None, stochastic: bool = False, *, trust_pickles: bool = False, device: str = "cpu"
) -> tuple[Any, EnvRecipe, str]:
    """Whatever ``policykd evaluate`` is given, as ``(policy, recipe, description)``: an exported
    student (.onnx), a student (run folder, student folder; ``env_id`` picks the task of a
    multi-task student), or a teacher (rl-zoo folder, SB3 .zip or hub id).
    ``trust_pickles``: see :func:`policykd.data.teachers.load_teacher`. ``device``: where a student or
    teacher plays (``--device``); an exported student runs on onnxruntime's CPU."""
    chosen = resolve_device(device)  # refused before anything loads
    if str(source).endswith(".onnx"):
        if chosen.type != "cpu":
            raise PolicyKDError(f"an exported student runs on onnxruntime's CPU; drop --device {device}")
        if stochastic:
            raise PolicyKDError("an exported student acts greedily only; drop --stochastic")
        onnx = OnnxPolicy(source)
        recipe = playing_recipe(
            onnx.recipe, env_id, f"exported student {source}", onnx.config, trust_pickles=trust_pickles
        )
        return onnx, recipe, "exported student (onnxruntime)"
    if student_folder(source) is not None:
        opened = open_student(source, env_id)
        opened.student.to(resolve_device(device, image_observations=opened.student.config.image))
        name = f"student {opened.folder}" + (f" (task {opened.task})" if opened.task else "")
        recipe = playing_recipe(opened.recipe, env_id, name, opened.student.config, trust_pickles=trust_pickles)
        task = f"task {opened.task}, " if opened.task else ""
        return opened.student, recipe, f"student ({task}{opened.student.n_params:,} params)"
    teacher = resolve_teacher(source, env_id, trust_pickles=trust_pickles, device=device)
    return teacher, teacher.recipe, teacher.describe()
