"""policykd: distil Stable-Baselines3 experts into smaller, faster or merged student policies.

The data flow (see the README): load_teacher -> collect_rollouts -> LabelledBuffer -> Trainer
(soften -> merge -> loss) -> Student -> evaluation, and export_onnx to deploy it. ``load_student``
gives a distilled student SB3's ``predict``, so SB3's ``evaluate_policy`` plays it.

Every name below is imported on first use (PEP 562), so ``import policykd`` and ``policykd --help``
load neither torch nor gymnasium; ``from policykd import distill`` imports what distill needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "CollectConfig": "policykd.jobs.config",
    "DistillBatch": "policykd.types",
    "DistillConfig": "policykd.jobs.config",
    "DistillTarget": "policykd.types",
    "EnvRecipe": "policykd.data.envs",
    "KLLoss": "policykd.learn.losses",
    "LabelledBuffer": "policykd.data.buffers",
    "LossOutput": "policykd.types",
    "MSELoss": "policykd.learn.losses",
    "NLLLoss": "policykd.learn.losses",
    "PolicyKDError": "policykd.errors",
    "Student": "policykd.learn.students",
    "StudentPolicy": "policykd.learn.sb3_policy",
    "StudentOutput": "policykd.types",
    "Teacher": "policykd.data.teachers",
    "TeacherOutput": "policykd.types",
    "Trainer": "policykd.learn.trainer",
    "TrainerConfig": "policykd.learn.trainer",
    "collect": "policykd.jobs.collect",
    "collect_rollouts": "policykd.data.collect",
    "distill": "policykd.jobs.distill",
    "export_onnx": "policykd.jobs.export",
    "export_sb3": "policykd.jobs.export",
    "load_student": "policykd.jobs.load",
    "record_episodes": "policykd.jobs.video",
    "load_teacher": "policykd.data.teachers",
    "make_loss": "policykd.learn.losses",
    "make_student": "policykd.learn.students",
    "make_vec_env": "policykd.data.envs",
    "soften": "policykd.learn.targets",
}

__all__ = [
    "CollectConfig",
    "DistillBatch",
    "DistillConfig",
    "DistillTarget",
    "EnvRecipe",
    "KLLoss",
    "LabelledBuffer",
    "LossOutput",
    "MSELoss",
    "NLLLoss",
    "PolicyKDError",
    "Student",
    "StudentOutput",
    "StudentPolicy",
    "Teacher",
    "TeacherOutput",
    "Trainer",
    "TrainerConfig",
    "collect",
    "collect_rollouts",
    "distill",
    "export_onnx",
    "export_sb3",
    "load_student",
    "load_teacher",
    "make_loss",
    "make_student",
    "make_vec_env",
    "record_episodes",
    "soften",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'policykd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; never run
    from policykd.data.buffers import LabelledBuffer
    from policykd.data.collect import collect_rollouts
    from policykd.data.envs import EnvRecipe, make_vec_env
    from policykd.data.teachers import Teacher, load_teacher
    from policykd.errors import PolicyKDError
    from policykd.jobs.collect import collect
    from policykd.jobs.config import CollectConfig, DistillConfig
    from policykd.jobs.distill import distill
    from policykd.jobs.export import export_onnx
    from policykd.learn.losses import KLLoss, MSELoss, NLLLoss, make_loss
    from policykd.learn.students import Student, make_student
    from policykd.learn.targets import soften
    from policykd.learn.trainer import Trainer, TrainerConfig
    from policykd.types import DistillBatch, DistillTarget, LossOutput, StudentOutput, TeacherOutput
