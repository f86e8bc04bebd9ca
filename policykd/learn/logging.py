"""Metric loggers, passed in (never global). Tags follow a fixed vocabulary, CleanRL-style:
``losses/distill``, ``teacher/entropy``, ``student/entropy``, ``distill/kl_teacher_student``,
``distill/action_agreement``, ``charts/SPS``, ``charts/teacher_transitions`` (the labelled
transitions trained on: a second x-axis next to the update count), ``eval/student_return``,
``eval/pct_of_teacher``, and per teacher of an ensemble ``teachers/<algo>-<run>/kl``.

Hyperparameters go to TensorBoard's HParams plugin: each run (one TensorBoard folder) records
its settings as a session, with no sub-run, so the runs of a sweep (or any runs under one
``--logdir``) compare in one HParams table against their final scalars (``eval/student_return``
...), which TensorBoard reads from the same folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

# Settings that say how a run is done, not what is learnt: kept out of the HParams table.
NOT_HPARAMS = frozenset(
    {"progress_bar", "overwrite", "out_dir", "trust_pickles", "teacher_check", "zoo_dir", "log_every"}
)


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


def hparams_of(*parts: Any) -> dict[str, Any]:
    """One hyperparameter dict from dataclasses or mappings, in order: a later part's value
    replaces an earlier one unless it is None (so a config's None, "the preset's", gives way to
    the budget resolved from the preset). Keys in NOT_HPARAMS are left out."""
    merged: dict[str, Any] = {}
    for part in parts:
        values = dataclasses.asdict(part) if dataclasses.is_dataclass(part) else dict(part)
        merged.update({k: v for k, v in values.items() if v is not None or k not in merged})
    return {k: v for k, v in merged.items() if k not in NOT_HPARAMS}


def hparam_value(value: Any) -> float | str | None:
    """What the HParams plugin can hold: numbers and strings as they are; bools as ``true`` /
    ``false`` (torch would write them as 1.0 / 0.0); lists and tuples as JSON (``[64, 64]``);
    None, empty lists and mappings are left out (None)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)) and value:
        return json.dumps(value)
    return None


class TensorBoardLogger:
    """Scalars to TensorBoard event files under ``log_dir``; hyperparameters to the HParams
    plugin of this same run (and as a Markdown table under TEXT, every setting with its value).
    ``purge_step``: a resumed run's first step; TensorBoard hides what earlier writers logged at
    that step and after (so a resumed run shows no step twice)."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def log_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Record ``hparams`` as this run's HParams session (SummaryWriter.add_hparams would
        write them into a new sub-run instead); values the plugin cannot hold are left out of
        it (see :func:`hparam_value`)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        rows = "\n".join(f"|{key}|{value}|" for key, value in hparams.items())
        self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{rows}")
        values = {key: hparam_value(value) for key, value in hparams.items()}
        _, session_start, session_end = hparams_summary({k: v for k, v in values.items() if v is not None}, {})
        writer = self.writer.file_writer
        writer.add_summary(session_start)
        writer.add_summary(session_end)

    def flush(self) -> None:
        """Write what is queued to disk (before a checkpoint: a crash then loses no logged step)."""
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
