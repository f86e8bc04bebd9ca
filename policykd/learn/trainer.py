"""The one owner of the optimizer and the step counter. A training step reads top to bottom:
sample -> soften each teacher at tau -> merge -> student forward -> loss -> Adam step."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from policykd.data.buffers import LabelledBuffer
from policykd.errors import PolicyKDError
from policykd.learn.logging import MetricLogger, NullLogger
from policykd.learn.merging import per_teacher_kl, single_teacher, teacher_disagreement
from policykd.learn.metrics import distill_metrics
from policykd.learn.students import Student
from policykd.learn.targets import check_temperature, soften
from policykd.types import DistillBatch, DistillTarget, EvalFn, LossFn, LossOutput, MergeFn, StudentOutput


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    n_updates: int = 2_000
    """Gradient steps."""
    batch_size: int = 256
    """Transitions per gradient step, sampled uniformly with replacement."""
    learning_rate: float = 1e-3
    """Adam step size."""
    temperature: float | None = None
    """Applied to each teacher's raw output before merging (see targets.soften). None: the
    loss's own temperature (KLLoss), else 1. Set both and they must agree."""
    max_grad_norm: float | None = 10.0
    """Gradient clipping; None to disable."""
    log_every: int = 100
    """Updates between metric logs (losses, entropies and their gap, the buffer's driver shares)."""
    eval_every: int = 0
    """Updates between evaluations (0: only after the last update)."""
    seed: int = 0
    """Seeds the sampling generator and torch."""
    progress_bar: bool = True

    def __post_init__(self) -> None:
        for name, minimum in (("n_updates", 1), ("batch_size", 1), ("log_every", 1), ("eval_every", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise PolicyKDError(f"{name} must be an integer >= {minimum}, got {value!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise PolicyKDError(f"learning_rate must be a finite number > 0, got {self.learning_rate!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise PolicyKDError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if self.temperature is not None:
            check_temperature(self.temperature)


class Trainer:
    def __init__(
        self,
        student: Student,
        loss_fn: LossFn,
        buffer: LabelledBuffer,
        *,
        config: TrainerConfig,
        merge: MergeFn = single_teacher,
        logger: MetricLogger | None = None,
        evaluate: EvalFn | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        self.student, self.loss_fn, self.buffer, self.config = student, loss_fn, buffer, config
        self.merge, self.logger, self.evaluate = merge, logger or NullLogger(), evaluate
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.optimizer = torch.optim.Adam(student.parameters(), lr=config.learning_rate)
        self.rng = np.random.default_rng(config.seed)
        self.n_updates_done = 0
        self.last_eval: dict[str, float] = {}
        self.temperature = _resolve_temperature(config.temperature, loss_fn.temperature)

    def step(self) -> tuple[LossOutput, StudentOutput, DistillTarget, DistillBatch]:
        """One gradient step. Returns the loss, the student output, the target and the batch."""
        batch = self.buffer.sample(self.config.batch_size, self.rng)
        target = self.merge([soften(out, self.temperature) for out in batch.teacher_outputs])
        student_out = self.student(batch.observations)
        loss_out = self.loss_fn(student_out, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss_out.loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.n_updates_done += 1
        return loss_out, student_out, target, batch

    def train(self) -> dict[str, float]:
        """Run ``n_updates`` steps with periodic logging, evaluation and checkpoints.
        Returns the last logged metrics merged with the last evaluation.

        Calling it again continues training (the online loop does, once per round): the optimizer
        state carries over and metrics are logged at the global update count ``n_updates_done``."""
        cfg = self.config
        if self.n_updates_done == 0:
            torch.manual_seed(cfg.seed)
        self.student.train()
        metrics: dict[str, float] = {}
        started, window_start, window_steps = time.perf_counter(), time.perf_counter(), 0
        bar = tqdm(total=cfg.n_updates, desc="distil", disable=not cfg.progress_bar, leave=False)
        for update in range(1, cfg.n_updates + 1):
            loss_out, student_out, target, batch = self.step()
            step = self.n_updates_done  # global: counts the updates of earlier train() calls too
            window_steps += 1
            if update % cfg.log_every == 0 or update == cfg.n_updates:
                sps = window_steps * cfg.batch_size / max(time.perf_counter() - window_start, 1e-9)
                references = [soften(out, 1.0) for out in batch.teacher_outputs]  # the teachers at tau = 1
                reference = self.merge(references)
                metrics = {
                    **loss_out.metrics,
                    **with_entropy_gap(distill_metrics(student_out, target, reference)),
                    **self._tracking_metrics(),
                    "charts/SPS": sps,
                }
                if len(references) > 1:  # ensembles: how far the student is from each teacher, and theirs apart
                    metrics.update(per_teacher_kl(student_out, references), **teacher_disagreement(references))
                self.logger.log(metrics, step)
                bar.set_postfix(loss=f"{metrics['losses/distill']:.4f}")
                window_start, window_steps = time.perf_counter(), 0
            if self.evaluate is not None and (
                update == cfg.n_updates or (cfg.eval_every > 0 and update % cfg.eval_every == 0)
            ):
                self.run_evaluation(step)
            bar.update(1)
        bar.close()
        self.student.eval()
        if self.checkpoint_dir is not None:
            self.student.save(self.checkpoint_dir)
        metrics["train/wall_time_s"] = time.perf_counter() - started
        return {**metrics, **self.last_eval}

    def _tracking_metrics(self) -> dict[str, float]:
        """Each driver's share of the buffer: ``buffer/share_teacher``, ``buffer/share_student``."""
        return {f"buffer/share_{name}": share for name, share in self.buffer.driver_shares().items()}

    def run_evaluation(self, update: int) -> None:
        assert self.evaluate is not None
        self.student.eval()
        self.last_eval = self.evaluate(self.student)
        self.student.train()
        self.logger.log(self.last_eval, update)
        if self.checkpoint_dir is not None:
            self.student.save(self.checkpoint_dir)

    def hparams(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)


def with_entropy_gap(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` plus ``distill/entropy_gap`` = ``student/entropy`` (as it acts, tau = 1) minus
    ``teacher/entropy`` (the target at tau), in nats, when both are there (not for deterministic
    policies). Positive: the student is more random than the target it is trained towards."""
    if "student/entropy" in metrics and "teacher/entropy" in metrics:
        return {**metrics, "distill/entropy_gap": metrics["student/entropy"] - metrics["teacher/entropy"]}
    return metrics


def _resolve_temperature(configured: float | None, loss_temperature: float | None) -> float:
    """One temperature for softening the teachers: the loss's (KL applies it to the student too)."""
    if configured is not None and loss_temperature is not None and configured != loss_temperature:
        raise PolicyKDError(
            f"TrainerConfig.temperature {configured} differs from the loss's {loss_temperature}; set it in one place"
        )
    return configured if configured is not None else (loss_temperature if loss_temperature is not None else 1.0)
