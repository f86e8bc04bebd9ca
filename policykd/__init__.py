"""policykd: distil Stable-Baselines3 experts into smaller, faster or merged student policies.

The data flow (see the README): load_teacher -> collect_rollouts -> LabelledBuffer -> Trainer
(soften -> merge -> loss) -> Student -> evaluation, and export_onnx to deploy it.
"""

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

__version__ = "0.1.0"

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
    "Teacher",
    "TeacherOutput",
    "Trainer",
    "TrainerConfig",
    "collect",
    "collect_rollouts",
    "distill",
    "export_onnx",
    "load_teacher",
    "make_loss",
    "make_student",
    "make_vec_env",
    "soften",
]
