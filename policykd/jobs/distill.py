"""The distill job: K teachers of one task, or T tasks (one teacher each) into one student.

Several tasks are several buffers (shared/DESIGN.md), so both go through one path: resolve and
check everything (:func:`plan_tasks`), measure the teachers (and refuse one far below its recorded
score), collect one buffer per task, train with the one Trainer, evaluate, write the run folder.
Every user error is raised before anything is written. An option that cannot apply to several
tasks is refused in one line when ``--task`` is given.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from policykd.checks import check_int, check_out_dir
from policykd.data.buffers import LabelledBuffer
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import write_json_atomic
from policykd.jobs.collect import collect
from policykd.jobs.config import DistillConfig
from policykd.jobs.distill_summary import multitask_summary, single_task_summary
from policykd.jobs.evaluate import (
    EVAL_SEED_OFFSET,
    ReturnStats,
    evaluate_policy,
    pct_of,
)
from policykd.jobs.resolve import (
    RECIPE_FILE,
    Budgets,
    check_buffer_fits,
    make_run_merge,
    make_student_for,
    measure_teachers,
    resolve_budgets,
    resolve_teacher,
    resolve_teachers,
)
from policykd.jobs.run_folder import check_reusable, claim_run_folder, run_folder
from policykd.jobs.video import check_video_support, record_run_videos
from policykd.learn.logging import TensorBoardLogger, hparams_of
from policykd.learn.losses import check_loss_options, make_loss
from policykd.learn.merging import ensemble_teacher_kind, single_teacher
from policykd.learn.multitask import (
    MultiTaskSampler,
    TaskSpace,
    check_task_weights,
    make_multitask_student,
    named_items,
)
from policykd.learn.trainer import Trainer, TrainerConfig

# Several tasks share one student and one training budget, so it does not come from one env's preset.
MULTITASK_DEFAULTS: dict[str, Any] = {
    "n_updates": 5_000,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "hidden_sizes": (64, 64),
    "cnn_width": 1.0,
}
MULTITASK_INPUT_WIDTH = 64
# Options of one task's teachers that several tasks cannot take (each task names its own teacher).
SINGLE_TASK_ONLY = {
    "teacher": None,
    "teachers": (),
    "buffer": None,
    "merge": None,
    "teacher_weights": None,
    "teacher_drive": "merged",
}


@dataclasses.dataclass
class TaskPlan:
    """One task of the run, resolved and checked before anything is written."""

    name: str
    teachers: list[Teacher]
    budgets: Budgets
    loss_fn: Any
    merge: Any = single_teacher
    buffer: LabelledBuffer | None = None

    @property
    def teacher(self) -> Teacher:
        """The reference for env, recipe, spaces and input normalisation."""
        return self.teachers[0]

    @property
    def kind(self) -> str:
        return ensemble_teacher_kind([t.kind for t in self.teachers])


@dataclasses.dataclass(frozen=True)
class Baselines:
    """A task's teachers and a uniformly random policy on the evaluation episodes."""

    each_teacher: list[ReturnStats]
    random: ReturnStats

    @property
    def best(self) -> int:
        """With several teachers, the student is measured against the best one."""
        return int(np.argmax([stats.mean for stats in self.each_teacher]))

    @property
    def teacher(self) -> ReturnStats:
        return self.each_teacher[self.best]


def distill(config: DistillConfig) -> dict[str, Any]:
    """Collect (or load) a labelled buffer per task, train a student, evaluate it against each
    task's teacher; write the run folder. Returns the summary also written to ``summary.json``."""
    started = time.perf_counter()
    plans = plan_tasks(config)
    trainer_config = make_trainer_config(config, plans[0].budgets)
    if config.video:  # refused now (no moviepy, an env that cannot render here), not after training
        for plan in plans:
            check_video_support(plan.teacher.recipe, config.video_episodes)
    check_out_dir(config.out_dir)
    if config.out_dir is not None:
        check_reusable(config.out_dir, config.overwrite)
    eval_seed = config.seed + EVAL_SEED_OFFSET  # teacher and student play the same episodes
    baselines = [measure_baselines(plan, eval_seed, config.teacher_check, config.progress_bar) for plan in plans]
    for plan in plans:
        if plan.buffer is None:
            plan.buffer, _, _ = collect(_collect_config(config, plan), plan.teachers)
    out_dir = claim_run_folder(config.out_dir, default_run_folder(config, plans))
    with run_folder(out_dir, dataclasses.asdict(config), config.overwrite):
        if len(plans) == 1:
            summary = _train_single_task(config, plans[0], baselines[0], trainer_config, eval_seed, out_dir)
        else:
            summary = _train_tasks(config, plans, baselines, trainer_config, eval_seed, out_dir)
        if config.video:
            tasks = {plan.name: (plan.teacher, plan.budgets.deterministic_eval) for plan in plans}
            summary["videos"] = record_run_videos(out_dir, tasks, n_episodes=config.video_episodes, seed=eval_seed)
        summary.update(wall_time_s=time.perf_counter() - started, seed=config.seed, out_dir=str(out_dir))
        write_json_atomic(out_dir / "summary.json", summary)
    return summary


def plan_tasks(config: DistillConfig) -> list[TaskPlan]:
    """Resolve every task's teachers, buffer, budgets and loss, refusing bad input in one line."""
    check_int("--seed", config.seed, 0)
    if not config.tasks:
        if config.task_weights is not None or config.input_width is not None:
            raise PolicyKDError("--task-weights and --input-width need several --task ENV=TEACHER")
        return [_plan_single_task(config)]
    given = [name for name, default in SINGLE_TASK_ONLY.items() if getattr(config, name) != default]
    if given:
        raise PolicyKDError(
            f"--task names each task's teacher (ENV=TEACHER); drop {', '.join(given)}: "
            "ensembles and saved buffers are for one task"
        )
    if config.input_width is not None:
        check_int("--input-width", config.input_width)
    tasks = named_items(list(config.tasks), "task")  # refuses a task listed twice
    if len(tasks) < 2:
        raise PolicyKDError("a multi-task run needs at least two --task ENV=TEACHER")
    check_task_weights(config.task_weights, tuple(name for name, _ in tasks))
    plans = []
    for env_id, source in tasks:
        teacher = resolve_teacher(source, env_id, trust_pickles=config.trust_pickles, zoo_dir=config.zoo_dir)
        budgets = resolve_budgets(env_id, config, MULTITASK_DEFAULTS)
        plans.append(TaskPlan(env_id, [teacher], budgets, _make_loss(config, teacher.kind)))
    return plans


def _plan_single_task(config: DistillConfig) -> TaskPlan:
    buffer = None
    if config.buffer is not None:
        buffer = LabelledBuffer.load(config.buffer)
        if config.teacher is None and not config.teachers:
            # a buffer's header is data: it never makes policykd load a teacher the user did not name
            recorded = buffer.meta.get("teachers") or []
            if not recorded or not all(isinstance(t, dict) and "source" in t for t in recorded):
                raise PolicyKDError(f"buffer {config.buffer} does not record its teacher; pass --teacher")
            named = " ".join(f"--teacher {t['source']}" for t in recorded)
            raise PolicyKDError(f"buffer {config.buffer} was labelled by {named}; pass that to confirm the teacher")
    teachers = resolve_teachers(config)
    if buffer is not None:
        check_buffer_fits(buffer, teachers, str(config.buffer))
    kind = ensemble_teacher_kind([t.kind for t in teachers])
    merge = make_run_merge(config, len(teachers))
    # Validate the loss and every budget before spending minutes on evaluation and collection.
    loss_fn = _make_loss(config, kind)
    budgets = resolve_budgets(teachers[0].recipe.env_id, _without_collection(config) if buffer else config)
    n_rows = len(buffer) if buffer is not None else budgets.n_transitions
    if budgets.batch_size > n_rows:
        raise PolicyKDError(
            f"--batch-size {budgets.batch_size} is more than the {n_rows:,} transitions to train on; "
            "lower --batch-size or collect more (--n-transitions)"
        )
    return TaskPlan(teachers[0].recipe.env_id, teachers, budgets, loss_fn, merge, buffer)


def _without_collection(config: DistillConfig) -> DistillConfig:
    """A run from a saved buffer collects nothing, so its collection options are not checked."""
    return dataclasses.replace(config, n_transitions=None, n_envs=None)


def _make_loss(config: DistillConfig, kind: str) -> Any:
    options = {
        "temperature": config.temperature,
        "temperature_on": config.temperature_on,
        "direction": config.kl_direction,
        "tau2_scaling": config.tau2_scaling,
        "center_q": config.center_q,
        "nll_min_std": config.nll_min_std,
    }
    loss_fn = make_loss(config.loss, kind, **options)
    check_loss_options(config.loss, **options)  # an option of another loss would be silently ignored
    return loss_fn


def make_trainer_config(config: DistillConfig, budgets: Budgets) -> TrainerConfig:
    return TrainerConfig(
        n_updates=budgets.n_updates,
        batch_size=budgets.batch_size,
        learning_rate=budgets.learning_rate,
        temperature=config.temperature,
        eval_every=config.eval_every if config.eval_every is not None else budgets.n_updates // 4,
        seed=config.seed,
        progress_bar=config.progress_bar,
    )


def measure_baselines(plan: TaskPlan, eval_seed: int, teacher_check: bool, progress: bool = False) -> Baselines:
    """Play each teacher and a random policy on the evaluation episodes (env seeds from
    ``eval_seed``); with ``teacher_check``, refuse a teacher not clearly better than the random
    policy, or far below its recorded score (:func:`check_teacher_score`: its env recipe is then
    almost surely wrong). % of teacher is normalised so that the random policy scores 0 %."""
    return Baselines(*measure_teachers(plan.teachers, plan.budgets, eval_seed, check=teacher_check, progress=progress))


def _collect_config(config: DistillConfig, plan: TaskPlan) -> DistillConfig:
    """The collection settings of one task: the run's options, on that task's env."""
    return dataclasses.replace(config, env_id=plan.name, n_transitions=plan.budgets.n_transitions)


def default_run_folder(config: DistillConfig, plans: list[TaskPlan]) -> Path:
    if len(plans) == 1:
        return Path("runs") / plans[0].name / f"{config.loss}-tau{config.temperature:g}-seed{config.seed}"
    names = "+".join(plan.name.split("-")[0] for plan in plans)
    return Path("runs") / "multitask" / f"{names}-seed{config.seed}"


def _train_single_task(
    config: DistillConfig,
    plan: TaskPlan,
    baselines: Baselines,
    trainer_config: TrainerConfig,
    eval_seed: int,
    out_dir: Path,
) -> dict[str, Any]:
    budgets = plan.budgets
    student = make_student_for(plan.teacher, plan.kind, budgets.hidden_sizes, budgets.cnn_width, seed=config.seed)
    evaluations: list[ReturnStats] = []

    def evaluate(s: Any) -> dict[str, float]:
        evaluations.append(_evaluate_task(s, plan, eval_seed))
        return {"eval/student_return": evaluations[-1].mean, "eval/pct_of_teacher": _pct(evaluations[-1], baselines)}

    assert plan.buffer is not None
    trainer, metrics = _train(
        config, trainer_config, out_dir, student, plan.loss_fn, plan.buffer, plan.merge, evaluate, plan.budgets
    )
    write_json_atomic(out_dir / "student" / RECIPE_FILE, plan.teacher.recipe.to_json())
    return single_task_summary(config, plan, baselines, student, evaluations[-1], trainer, metrics)


def _train_tasks(
    config: DistillConfig,
    plans: list[TaskPlan],
    baselines: list[Baselines],
    trainer_config: TrainerConfig,
    eval_seed: int,
    out_dir: Path,
) -> dict[str, Any]:
    student = make_multitask_student(
        {plan.name: TaskSpace(plan.kind, plan.teacher.observation_space, plan.teacher.action_space) for plan in plans},
        hidden_sizes=plans[0].budgets.hidden_sizes,
        input_width=config.input_width or MULTITASK_INPUT_WIDTH,
        cnn_width=plans[0].budgets.cnn_width,
        obs_stats={
            plan.name: (plan.teacher.normalizer.mean, plan.teacher.normalizer.std, plan.teacher.normalizer.clip)
            for plan in plans
            if plan.teacher.normalizer is not None
        },
        seed=config.seed,
    )
    results: dict[str, ReturnStats] = {}

    def evaluate(s: Any) -> dict[str, float]:
        logged = {}
        for plan, base in zip(plans, baselines):
            results[plan.name] = _evaluate_task(s.task_policy(plan.name), plan, eval_seed)
            logged[f"tasks/{plan.name}/eval/student_return"] = results[plan.name].mean
            logged[f"tasks/{plan.name}/eval/pct_of_teacher"] = _pct(results[plan.name], base)
        return logged

    sampler = MultiTaskSampler({plan.name: plan.buffer for plan in plans}, config.task_weights)
    loss_fns = {plan.name: plan.loss_fn for plan in plans}
    shared = {
        "hidden_sizes": plans[0].budgets.hidden_sizes,
        "n_transitions": sum(p.budgets.n_transitions for p in plans),
    }
    _, metrics = _train(config, trainer_config, out_dir, student, loss_fns, sampler, None, evaluate, shared)
    write_json_atomic(out_dir / "student" / "recipes.json", {p.name: p.teacher.recipe.to_json() for p in plans})
    return multitask_summary(config, plans, baselines, student, results, metrics)


def _train(
    config: DistillConfig,
    trainer_config: TrainerConfig,
    out_dir: Path,
    student: Any,
    loss_fns: Any,
    sampler: Any,
    merge: Any,
    evaluate: Any,
    budgets: Any = None,
) -> tuple[Trainer, dict[str, float]]:
    """Train with TensorBoard in ``out_dir/tb`` and checkpoints in ``out_dir/student``; returns the
    trainer and its last training metrics (evaluations left out). The HParams are the config with
    the resolved ``budgets`` (a Budgets or a mapping) in place of its None ("the preset's")."""
    logger = TensorBoardLogger(out_dir / "tb")
    try:
        logger.log_hparams(hparams_of(config, budgets or {}, trainer_config))
        merges = {} if merge is None else {"merge": merge}
        trainer = Trainer(
            student, loss_fns, sampler, config=trainer_config, logger=logger, evaluate=evaluate,
            checkpoint_dir=out_dir / "student", **merges,
        )  # fmt: skip
        metrics = trainer.train()  # evaluates every eval_every updates and after the last one
    finally:
        logger.close()
    return trainer, {k: v for k, v in metrics.items() if not (k.startswith("eval/") or "/eval/" in k)}


def _evaluate_task(policy: Any, plan: TaskPlan, eval_seed: int) -> ReturnStats:
    budgets = plan.budgets
    return evaluate_policy(
        policy, plan.teacher.recipe, budgets.n_eval_episodes, seed=eval_seed, deterministic=budgets.deterministic_eval
    )


def _pct(stats: ReturnStats, baselines: Baselines) -> float:
    return pct_of(stats.mean, baselines.teacher.mean, baselines.random.mean)
