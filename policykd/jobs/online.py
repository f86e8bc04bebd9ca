"""Online distillation: who drives the env while the teacher labels, round after round.

A round collects ``n_transitions_per_round`` transitions with the current student and that
round's beta (per env step the teacher acts with probability beta, the student otherwise), appends
them to a ring buffer that keeps the most recent ``capacity`` transitions, runs
``n_updates_per_round`` Trainer updates on that buffer, then evaluates the student.

Drivers: ``teacher`` (beta = 1), ``student`` (beta = 0, on-policy distillation: the teacher only
labels) and ``dagger`` (beta from a decaying schedule, learn/schedules.py). Targets are always the
teacher's: the buffer stores the teacher's outputs at every visited state whoever drove; the
driver's action goes to the ``actions`` column, which no loss reads. The experiment that compares
the drivers is jobs/drivers.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from policykd.checks import check_int
from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats
from policykd.data.envs import EnvRecipe
from policykd.data.teachers import Teacher
from policykd.jobs.evaluate import evaluate_policy
from policykd.jobs.online_workers import RoundSplit, join_stats, round_collection
from policykd.learn.logging import MetricLogger, NullLogger
from policykd.learn.schedules import BetaSchedule, check_beta
from policykd.learn.students import Student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.types import LossFn


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    n_rounds: int = 10
    """Collection + training rounds."""
    n_transitions_per_round: int = 5_000
    """Teacher-labelled transitions collected per round (rounded up to whole vector steps)."""
    n_updates_per_round: int = 500
    """Gradient steps after each collection round."""
    capacity: int = 50_000
    """Ring buffer size: training always sees the most recent ``capacity`` transitions."""
    n_envs: int = 8
    batch_size: int = 256
    learning_rate: float = 1e-3
    deterministic_drivers: bool = True
    """Teacher and student act greedily while driving; False samples from their policies."""
    log_every: int = 100
    seed: int = 0
    """Seeds the env, the beta coin flips, sampling and the student's actions."""

    def __post_init__(self) -> None:
        for name in ("n_rounds", "n_transitions_per_round", "n_updates_per_round", "capacity", "n_envs", "log_every"):
            check_int(name, getattr(self, name), 1)


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    round: int
    beta: float
    n_labels: int
    """Teacher labels used so far: every collected transition is one teacher query."""
    n_teacher_steps: int
    """Of those, the steps the teacher drove."""
    buffer_size: int
    share_teacher: float
    """Fraction of the buffer's transitions the teacher drove (after this round's collection)."""
    share_student: float
    student_return: float | None
    """Evaluation after this round's training (None without an evaluator)."""
    driver_return: float | None
    """Mean return of the episodes that ended while collecting this round (NaN-free: None if none)."""
    train_metrics: dict[str, float]


@dataclasses.dataclass
class OnlineResult:
    student: Student
    buffer: LabelledBuffer
    rounds: list[RoundRecord]

    def to_json(self) -> dict[str, Any]:
        return {"rounds": [dataclasses.asdict(r) for r in self.rounds]}


def return_evaluator(
    recipe: EnvRecipe, n_episodes: int, seed: int, deterministic: bool = True
) -> Callable[[Student], float]:
    """``evaluate(student) -> mean return`` over the same ``n_episodes`` episodes every call."""

    def evaluate(student: Student) -> float:
        return evaluate_policy(student, recipe, n_episodes, seed=seed, deterministic=deterministic).mean

    return evaluate


def train_online(
    teacher: Teacher,
    student: Student,
    loss_fn: LossFn,
    schedule: BetaSchedule,
    *,
    config: OnlineConfig,
    evaluate: Callable[[Student], float] | None = None,
    logger: MetricLogger | None = None,
    temperature: float | None = None,
    venv: Any = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    split: RoundSplit | None = None,
) -> OnlineResult:
    """Alternate collection rounds (driver mixture ``schedule(round)``) and training rounds.

    ``venv`` defaults to ``n_envs`` copies of the teacher's env seeded ``config.seed``; episodes
    run on across rounds (no reset between them). ``temperature`` goes to the Trainer (None: the
    loss's). Logs ``online/beta``, ``online/n_labels`` and ``eval/student_return`` per round at the
    global update count, next to the Trainer's own tags. ``on_round(record)`` after each round.
    ``split``: each round's collection across workers, here or on Ray (jobs/online_workers.py;
    default one worker here).
    """
    logger = logger or NullLogger()
    collect_round = round_collection(teacher, student, config, split or RoundSplit(), venv)
    trainer_config = _trainer_config(config, temperature, str(teacher.device))  # the student trains where it labels
    ring: LabelledBuffer | None = None
    trainer: Trainer | None = None
    rounds: list[RoundRecord] = []
    try:
        for index in range(config.n_rounds):
            beta = check_beta(schedule(index), f"the schedule's beta at round {index}")
            chunks = collect_round(beta)  # one per worker, in worker order
            stats = join_stats(chunks)
            if ring is None:
                ring = LabelledBuffer(config.capacity, meta={"env_id": teacher.recipe.env_id}, **chunks[0][0].layout())
                trainer = Trainer(student, loss_fn, ring, config=trainer_config, logger=logger)
            assert trainer is not None
            for chunk, _ in chunks:
                ring.extend(chunk)
            metrics = trainer.train()
            student_return = evaluate(student) if evaluate is not None else None
            rounds.append(_round_record(index, beta, stats, rounds, ring, metrics, student_return))
            _log_round(logger, rounds[-1], trainer.n_updates_done)
            if on_round is not None:  # e.g. a progress bar over rounds
                on_round(rounds[-1])
    finally:
        collect_round.close()
    assert ring is not None
    student.eval()
    return OnlineResult(student=student, buffer=ring, rounds=rounds)


def _trainer_config(config: OnlineConfig, temperature: float | None, device: str = "cpu") -> TrainerConfig:
    """The Trainer's settings for each round's ``n_updates_per_round`` updates."""
    return TrainerConfig(
        n_updates=config.n_updates_per_round,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        temperature=temperature,
        log_every=config.log_every,
        seed=config.seed,
        progress_bar=False,
        device=device,
    )


def _round_record(
    index: int,
    beta: float,
    stats: CollectStats,
    earlier: list[RoundRecord],
    ring: LabelledBuffer,
    metrics: dict[str, float],
    student_return: float | None,
) -> RoundRecord:
    """Round ``index``'s record; label counts add this round's collection to the ``earlier`` rounds'."""
    previous = earlier[-1] if earlier else None
    shares = ring.driver_shares()
    returns = stats.episode_returns
    return RoundRecord(
        round=index,
        beta=beta,
        n_labels=(previous.n_labels if previous else 0) + stats.n_transitions,
        n_teacher_steps=(previous.n_teacher_steps if previous else 0) + stats.n_teacher_steps,
        buffer_size=len(ring),
        share_teacher=shares["teacher"],
        share_student=shares["student"],
        student_return=student_return,
        driver_return=float(np.mean(returns)) if returns else None,
        train_metrics={k: v for k, v in metrics.items() if k not in ("charts/SPS", "train/wall_time_s")},
    )


def _log_round(logger: MetricLogger, record: RoundRecord, step: int) -> None:
    """The round at update ``step``; its evaluation also against teacher labels (a second x-axis:
    ``eval_vs_labels/student_return`` at step = labels used so far)."""
    logged = {"online/beta": record.beta, "online/n_labels": float(record.n_labels)}
    if record.student_return is not None:
        logged["eval/student_return"] = record.student_return
        logger.log({"eval_vs_labels/student_return": record.student_return}, record.n_labels)
    logger.log(logged, step)
