"""policykd: distil Stable-Baselines3 experts into smaller, faster or merged student policies.

The data flow (see the README): load_teacher -> collect_rollouts -> LabelledBuffer -> Trainer
(soften -> merge -> loss) -> Student -> evaluation, and export_onnx to deploy it. ``load_student``
gives a distilled student SB3's ``predict``, so SB3's ``evaluate_policy`` plays it.
"""

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import collect_rollouts
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.data.teachers import Teacher, load_teacher
from policykd.errors import PolicyKDError
from policykd.jobs.collect import collect
from policykd.jobs.config import CollectConfig, DistillConfig
from policykd.jobs.distill import distill
from policykd.jobs.export import export_onnx, export_sb3
from policykd.jobs.load import load_student
from policykd.jobs.video import record_episodes
from policykd.learn.losses import KLLoss, MSELoss, NLLLoss, make_loss
from policykd.learn.sb3_policy import StudentPolicy
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
