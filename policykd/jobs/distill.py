"""The distill job: K teachers of one task, or T tasks (one teacher each) into one student.

Several tasks are several buffers (shared/DESIGN.md), so both go through one path: resolve and
check everything (:func:`plan_tasks`), measure the teachers (and refuse one far below its recorded
score), collect one buffer per task, train with the one Trainer, evaluate, write the run folder.
Every user error is raised before anything is written. An option that cannot apply to several
tasks is refused in one line when ``--task`` is given.

A run resumes (``--resume``): the run folder keeps the baselines (``baselines.json``), each task's
collected buffer (``buffer.npz``; ``buffer-<env>.npz`` per task with several) and the training
checkpoint (``checkpoint.safetensors``), so a resumed run measures, collects and evaluates nothing
twice, trains from the last checkpoint and ends with the student an uninterrupted run writes,
bitwise (on CPU). SIGINT / SIGTERM during training stop it after the update in progress, with a
checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from policykd.checks import check_int, check_out_dir
from policykd.data.buffers import LabelledBuffer
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import read_json, write_json_atomic
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
    DEFAULT_LOSS,
    RECIPE_FILE,
    Budgets,
    auto_temperature,
    check_buffer_fits,
    check_student_sampling,
    make_run_merge,
    make_student_for,
    measure_teachers,
    resolve_budgets,
    resolve_teacher,
    resolve_teachers,
    run_loss,
    run_temperature,
    student_exploration_rate,
)
from policykd.jobs.run_folder import (
    check_resume_options,
    check_run_folder,
    claim_run_folder,
    finished_summary,
    run_folder,
)
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
from policykd.learn.trainer import Trainer, TrainerConfig, read_checkpoint

# Several tasks share one student and one training budget, so it does not come from one env's preset.
MULTITASK_DEFAULTS: dict[str, Any] = {
    "n_updates": 5_000,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "hidden_sizes": (64, 64),
    "cnn_width": 1.0,
}
MULTITASK_INPUT_WIDTH = 64
CHECKPOINT_FILE, BASELINES_FILE, SUMMARY_FILE = "checkpoint.safetensors", "baselines.json", "summary.json"
# DistillConfig fields that change no result: a run resumes whatever they were
RESUME_MAY_DIFFER = (
    "out_dir",
    "overwrite",
    "resume",
    "progress_bar",
    "checkpoint_every_s",
    "device",
    "backend",
    "ray_address",
)
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
    temperature: float = 1.0
    """The tau the run trains at: ``--temperature``, else :func:`settle_temperature`'s once the buffer is in."""
    temperature_why: str = ""
    loss: str = DEFAULT_LOSS
    """The loss's name: ``--loss``, else resolve.run_loss's for the teacher."""
    loss_why: str = ""
    """Where the loss was picked for the teacher (no ``--loss``): the words that say why."""
    exploration_rate: float | None = None
    """The student's sampled actions: epsilon-greedy at this rate, or (None) its distribution
    (resolve.student_exploration_rate)."""
    sampling_why: str = ""
    """Where the evaluation samples and the student acts epsilon-greedily as its teacher: the words that say so."""

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
    task's teacher; write the run folder. Returns the summary also written to ``summary.json``
    (with ``--resume`` of a finished run: the summary it wrote)."""
    started = time.perf_counter()
    check_resume_options(config.resume, config.overwrite, config.out_dir, config.checkpoint_every_s)
    plans = plan_tasks(config)
    if config.loss is None and len({plan.loss for plan in plans}) == 1:  # config.yml records the loss picked
        config = dataclasses.replace(config, loss=plans[0].loss)
    trainer_config = make_trainer_config(config, plans[0].budgets, str(plans[0].teacher.device))
    if config.video:  # refused now (no moviepy, an env that cannot render here), not after training
        for plan in plans:
            check_video_support(plan.teacher.recipe, config.video_episodes)
    check_out_dir(config.out_dir)
    state = check_run_folder(config, RESUME_MAY_DIFFER)
    finished = finished_summary(config.out_dir, state, SUMMARY_FILE)
    if finished is not None:  # resumed a finished run: nothing to do
        return finished
    eval_seed = config.seed + EVAL_SEED_OFFSET  # teacher and student play the same episodes
    baselines = _saved_baselines(Path(config.out_dir or "")) if state is not None else None
    if baselines is None:
        baselines = [measure_baselines(plan, eval_seed, config.teacher_check, config.progress_bar) for plan in plans]
    for plan, base in zip(plans, baselines):  # with no preset, the episodes the teacher's variance asked for
        plan.budgets = dataclasses.replace(plan.budgets, n_eval_episodes=base.random.n_episodes)
    out_dir = claim_run_folder(config.out_dir, default_run_folder(config, plans))
    resume = RESUME_MAY_DIFFER if config.resume else None
    with run_folder(out_dir, dataclasses.asdict(config), config.overwrite, resume):
        stage = _Stage()
        try:
            write_json_atomic(out_dir / BASELINES_FILE, [_baselines_json(b) for b in baselines])
            for plan in plans:
                stage.doing = f"while collecting {plan.name}"
                if plan.buffer is None:
                    plan.buffer = _task_buffer(config, plan, out_dir / _buffer_file(plan.name, len(plans) > 1))
                settle_temperature(config, plan)
            stage.doing = "before its first update"
            if len(plans) == 1:
                summary = _train_single_task(config, plans[0], baselines[0], trainer_config, eval_seed, out_dir, stage)
            else:
                summary = _train_tasks(config, plans, baselines, trainer_config, eval_seed, out_dir, stage)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(stage.interrupted(config, out_dir)) from None
        if config.video:
            tasks = {plan.name: (plan.teacher, plan.budgets.deterministic_eval) for plan in plans}
            summary["videos"] = record_run_videos(out_dir, tasks, n_episodes=config.video_episodes, seed=eval_seed)
        summary.update(wall_time_s=time.perf_counter() - started, seed=config.seed, out_dir=str(out_dir))
        write_json_atomic(out_dir / SUMMARY_FILE, summary)
    return summary


@dataclasses.dataclass
class _Stage:
    """What a run is doing, for the one line an interruption prints."""

    doing: str = "while starting"
    trainer: Trainer | None = None

    def interrupted(self, config: DistillConfig, out_dir: Path) -> str:
        if self.trainer is not None:
            n = self.trainer.n_updates_done
            where = f"at update {n:,} of {self.trainer.config.n_updates:,} (checkpoint saved)"
        else:
            where = self.doing
        again = "the same command plus --resume" + ("" if config.out_dir else f" --out {out_dir}")
        return f"interrupted {where}; resume with {again}"


def _buffer_file(task: str, several: bool) -> str:
    """Where a task's collected buffer is kept in the run folder."""
    return f"buffer-{task.replace('/', '_')}.npz" if several else "buffer.npz"


def _task_buffer(config: DistillConfig, plan: TaskPlan, path: Path) -> LabelledBuffer:
    """The buffer a resumed run collected already (saved whole at ``path`` when its collection
    ended), else collected now and saved there."""
    if config.resume and path.is_file():
        buffer = LabelledBuffer.load(path)
        check_buffer_fits(buffer, plan.teachers, str(path))
        return buffer
    buffer, _, _ = collect(_collect_config(config, plan), plan.teachers)
    buffer.save(path)
    return buffer


def _baselines_json(baselines: Baselines) -> dict[str, Any]:
    return {"each_teacher": [list(s.returns) for s in baselines.each_teacher], "random": list(baselines.random.returns)}


def _saved_baselines(out_dir: Path) -> list[Baselines] | None:
    """The baselines a resumed run measured already (its episode returns), or None."""
    path = out_dir / BASELINES_FILE
    if not path.is_file():
        return None
    return [
        Baselines([ReturnStats.of(r) for r in task["each_teacher"]], ReturnStats.of(task["random"]))
        for task in read_json(path)
    ]


def plan_tasks(config: DistillConfig) -> list[TaskPlan]:
    """Resolve every task's teachers, buffer, budgets and loss, refusing bad input in one line."""
    check_int("--seed", config.seed, 0)
    check_student_sampling(config.student_sampling)
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
        options = {"trust_pickles": config.trust_pickles, "zoo_dir": config.zoo_dir, "device": config.device}
        teacher = resolve_teacher(source, env_id, **options)
        budgets = resolve_budgets(env_id, config, MULTITASK_DEFAULTS, teacher)
        plans.append(TaskPlan(env_id, [teacher], budgets, **_task_loss(config, teacher.kind)))
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
    loss = _task_loss(config, kind)
    if config.student_fraction is not None and config.hidden_sizes is not None:
        raise PolicyKDError("--student-fraction sizes the student and --hidden too; pass one of them")
    budgets = resolve_budgets(
        teachers[0].recipe.env_id, _without_collection(config) if buffer else config, teacher=teachers[0]
    )
    n_rows = len(buffer) if buffer is not None else budgets.n_transitions
    if budgets.batch_size > n_rows:
        raise PolicyKDError(
            f"--batch-size {budgets.batch_size} is more than the {n_rows:,} transitions to train on; "
            "lower --batch-size or collect more (--n-transitions)"
        )
    plan = TaskPlan(teachers[0].recipe.env_id, teachers, budgets, merge=merge, buffer=buffer, **loss)
    _set_student_sampling(config, plan)
    return plan


def _set_student_sampling(config: DistillConfig, plan: TaskPlan) -> None:
    """How ``plan``'s student acts when sampled (resolve.student_exploration_rate), and where the
    evaluation samples, the words that say so."""
    plan.exploration_rate = student_exploration_rate(config.student_sampling, plan.kind, plan.teacher)
    if plan.exploration_rate is not None and not plan.budgets.deterministic_eval:
        plan.sampling_why = (
            f"sampled evaluation: the student acts epsilon-greedily at its {plan.teacher.algo.upper()} teacher's "
            f"exploration rate {plan.exploration_rate:g}, as the teacher does (--student-sampling distribution: "
            "it samples its softmax)"
        )


def _without_collection(config: DistillConfig) -> DistillConfig:
    """A run from a saved buffer collects nothing, so its collection options are not checked."""
    return dataclasses.replace(config, n_transitions=None, n_envs=None)


def _task_loss(config: DistillConfig, kind: str) -> dict[str, Any]:
    """A task's loss for a teacher of ``kind`` (resolve.run_loss), checked: TaskPlan's loss fields."""
    loss, why = run_loss(config.loss, kind)
    return {"loss_fn": _make_loss(config, loss, kind), "loss": loss, "loss_why": why}


def _make_loss(config: DistillConfig, loss: str, kind: str, temperature: float | None = None) -> Any:
    """The run's loss ``loss`` at ``temperature`` (default: ``--temperature``, else 1 until
    :func:`settle_temperature` knows it)."""
    options = {
        "temperature": temperature or (1.0 if config.temperature is None else config.temperature),
        "temperature_on": config.temperature_on,
        **config.loss_kwargs(),
    }
    loss_fn = make_loss(loss, kind, **options)
    check_loss_options(loss, **{**options, "temperature": config.temperature or 1.0})  # ignored otherwise
    return loss_fn


def settle_temperature(config: DistillConfig, plan: TaskPlan) -> None:
    """Fix ``plan``'s tau (and its loss) once its buffer is in (resolve.run_temperature)."""
    assert plan.buffer is not None
    plan.temperature, plan.temperature_why = run_temperature(config.temperature, plan.loss, plan.kind, plan.buffer)
    if plan.temperature_why:
        plan.loss_fn = _make_loss(config, plan.loss, plan.kind, plan.temperature)


def make_trainer_config(config: DistillConfig, budgets: Budgets, device: str = "cpu") -> TrainerConfig:
    """``device``: where the student trains, the teachers' resolved ``--device``."""
    return TrainerConfig(
        n_updates=budgets.n_updates,
        batch_size=budgets.batch_size,
        learning_rate=budgets.learning_rate,
        temperature=config.temperature,
        eval_every=config.eval_every if config.eval_every is not None else budgets.n_updates // 4,
        seed=config.seed,
        progress_bar=config.progress_bar,
        checkpoint_every_s=config.checkpoint_every_s,
        device=device,
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
        tau = (
            "auto"
            if auto_temperature(config.temperature, plans[0].loss, plans[0].kind)
            else f"{config.temperature or 1.0:g}"
        )
        return Path("runs") / plans[0].name / f"{plans[0].loss}-tau{tau}-seed{config.seed}"
    names = "+".join(plan.name.split("-")[0] for plan in plans)
    return Path("runs") / "multitask" / f"{names}-seed{config.seed}"


def _train_single_task(
    config: DistillConfig,
    plan: TaskPlan,
    baselines: Baselines,
    trainer_config: TrainerConfig,
    eval_seed: int,
    out_dir: Path,
    stage: _Stage,
) -> dict[str, Any]:
    budgets = plan.budgets
    student = make_student_for(
        plan.teacher, plan.kind, budgets.hidden_sizes, budgets.cnn_width, config.seed, plan.exploration_rate
    )
    progress: dict[str, Any] = {"evaluations": []}  # each evaluation's returns, kept in the checkpoints

    def evaluate(s: Any) -> dict[str, float]:
        stats = _evaluate_task(s, plan, eval_seed)
        progress["evaluations"].append(list(stats.returns))
        return {"eval/student_return": stats.mean, "eval/pct_of_teacher": _pct(stats, baselines)}

    assert plan.buffer is not None
    shown = {**dataclasses.asdict(plan.budgets), "temperature": plan.temperature, "loss": plan.loss}  # as settled
    shown.pop("picked")  # a sentence, in summary.json's "defaults"
    run = _TrainRun(config, trainer_config, out_dir, progress, stage, shown)
    trainer, metrics = run.train(student, plan.loss_fn, plan.buffer, plan.merge, evaluate)
    write_json_atomic(out_dir / "student" / RECIPE_FILE, plan.teacher.recipe.to_json())
    final = ReturnStats.of(progress["evaluations"][-1])
    return single_task_summary(config, plan, baselines, student, final, trainer, metrics)


def _train_tasks(
    config: DistillConfig,
    plans: list[TaskPlan],
    baselines: list[Baselines],
    trainer_config: TrainerConfig,
    eval_seed: int,
    out_dir: Path,
    stage: _Stage,
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
    progress: dict[str, Any] = {"returns": {}}  # each task's last evaluation, kept in the checkpoints

    def evaluate(s: Any) -> dict[str, float]:
        logged = {}
        for plan, base in zip(plans, baselines):
            stats = _evaluate_task(s.task_policy(plan.name), plan, eval_seed)
            progress["returns"][plan.name] = list(stats.returns)
            logged[f"tasks/{plan.name}/eval/student_return"] = stats.mean
            logged[f"tasks/{plan.name}/eval/pct_of_teacher"] = _pct(stats, base)
        return logged

    sampler = MultiTaskSampler({plan.name: plan.buffer for plan in plans}, config.task_weights)
    loss_fns = {plan.name: plan.loss_fn for plan in plans}
    shared = {
        "hidden_sizes": plans[0].budgets.hidden_sizes,
        "n_transitions": sum(p.budgets.n_transitions for p in plans),
    }
    trainer, metrics = _TrainRun(config, trainer_config, out_dir, progress, stage, shared).train(
        student, loss_fns, sampler, None, evaluate
    )
    write_json_atomic(out_dir / "student" / "recipes.json", {p.name: p.teacher.recipe.to_json() for p in plans})
    results = {plan.name: ReturnStats.of(progress["returns"][plan.name]) for plan in plans}
    return {
        **multitask_summary(config, plans, baselines, student, results, metrics),
        "frame_stacks": trainer.frame_stacks or None,
    }


@dataclasses.dataclass
class _TrainRun:
    """Training in a run folder: TensorBoard in ``tb/``, the student in ``student/``, checkpoints
    in ``checkpoint.safetensors`` (a resumed run starts from it), SIGINT / SIGTERM as a checkpointed stop."""

    config: DistillConfig
    trainer_config: TrainerConfig
    out_dir: Path
    progress: dict[str, Any]
    stage: _Stage
    budgets: Any = None
    """The resolved budgets (a Budgets or a mapping) the HParams show in place of the config's None."""

    def train(
        self, student: Any, loss_fns: Any, sampler: Any, merge: Any, evaluate: Any
    ) -> tuple[Trainer, dict[str, float]]:
        """Returns the trainer and its last training metrics (evaluations left out)."""
        path = self.out_dir / CHECKPOINT_FILE
        checkpoint = read_checkpoint(path) if self.config.resume and path.is_file() else None
        if checkpoint is None:  # what a run stopped before its first checkpoint logged is dropped
            shutil.rmtree(self.out_dir / "tb", ignore_errors=True)
        # TensorBoard hides what the stopped run logged from the checkpoint's step on; restore() logs that step again
        purge_step = None if checkpoint is None else max(checkpoint.n_updates_done, 1)
        logger = TensorBoardLogger(self.out_dir / "tb", purge_step=purge_step)
        try:
            if checkpoint is None:
                logger.log_hparams(hparams_of(self.config, self.budgets or {}, self.trainer_config))
            trainer = Trainer(
                student, loss_fns, sampler, config=self.trainer_config, logger=logger, evaluate=evaluate,
                checkpoint_dir=self.out_dir / "student", checkpoint_path=path, progress=self.progress,
                **({} if merge is None else {"merge": merge}),
            )  # fmt: skip
            if checkpoint is not None:
                trainer.restore(checkpoint)
            self.stage.trainer = trainer
            with _signals_stop(trainer):
                metrics = trainer.train()  # evaluates every eval_every updates and after the last one
        finally:
            logger.close()
        return trainer, {k: v for k, v in metrics.items() if not (k.startswith("eval/") or "/eval/" in k)}


@contextlib.contextmanager
def _signals_stop(trainer: Trainer) -> Iterator[None]:
    """While training, SIGINT and SIGTERM stop it where its state is whole (``Trainer.interrupt``:
    after the update in progress), so the checkpoint it writes resumes bitwise."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda *_: trainer.interrupt()) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _evaluate_task(policy: Any, plan: TaskPlan, eval_seed: int) -> ReturnStats:
    budgets = plan.budgets
    return evaluate_policy(
        policy, plan.teacher.recipe, budgets.n_eval_episodes, seed=eval_seed, deterministic=budgets.deterministic_eval
    )


def _pct(stats: ReturnStats, baselines: Baselines) -> float:
    return pct_of(stats.mean, baselines.teacher.mean, baselines.random.mean)
