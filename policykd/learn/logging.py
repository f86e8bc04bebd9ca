"""Metric loggers, passed in (never global). Tags follow a fixed vocabulary, CleanRL-style:
``losses/distill``, ``teacher/entropy``, ``student/entropy``, ``distill/kl_teacher_student``,
``distill/action_agreement``, ``charts/SPS``, ``eval/student_return``, ``eval/pct_of_teacher``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class MetricLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def log_hparams(self, hparams: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class NullLogger:
    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_hparams(self, hparams: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars to TensorBoard event files under ``log_dir``; hyperparameters as a Markdown table.
    ``purge_step``: a resumed run's first step; TensorBoard hides what earlier writers logged at
    that step and after (so a resumed run shows no step twice)."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def log_hparams(self, hparams: dict[str, Any]) -> None:
        rows = "\n".join(f"|{key}|{value}|" for key, value in hparams.items())
        self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")

    def flush(self) -> None:
        """Write what is queued to disk (before a checkpoint: a crash then loses no logged step)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
