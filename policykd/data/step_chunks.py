"""Vector steps written to a LabelledBuffer a chunk at a time.

``LabelledBuffer.add`` checks every column's shape, dtype and finiteness and lays the teachers'
outputs out in NaN-padded blocks: some twenty numpy calls, whatever the row count. Called once per
vector step of 8 CartPoles, that costs a third of the env step itself. :class:`StepChunks` keeps
``steps`` vector steps and adds them in one call: the same rows in the same order, so the same
buffer, with the checks paid once per chunk. A frame-deduplicated buffer (Atari) takes one step per
add, as it needs; its env steps cost far more than the add anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from policykd.data.buffers import LabelledBuffer
from policykd.types import TeacherOutput

DEFAULT_STEPS = 64
"""Vector steps per add: past a few dozen, the add's cost per row stops falling."""


class StepChunks:
    """``add(...)`` takes ``LabelledBuffer.add``'s arguments for one vector step; every ``steps``
    steps, and at :meth:`flush`, they go into ``buffer`` in one add. Flush before reading the buffer."""

    def __init__(self, buffer: LabelledBuffer, steps: int = DEFAULT_STEPS) -> None:
        self.buffer = buffer
        self.steps = steps if buffer.frame_stack == 1 else 1
        self.pending: list[tuple[tuple[np.ndarray, ...], Sequence[TeacherOutput], np.ndarray | None]] = []

    def add(self, *columns: Any, outputs: Sequence[TeacherOutput], action_masks: np.ndarray | None = None) -> None:
        """``columns``: observations, actions, rewards, terminated, truncated, episode_starts,
        drivers, each ``(n_envs, ...)``; ``outputs``: one TeacherOutput per teacher; ``action_masks``:
        the env's (MaskablePPO), for a buffer that stores them."""
        masks = None if action_masks is None else np.array(action_masks)
        self.pending.append((tuple(np.array(c) for c in columns), outputs, masks))  # copies: envs may reuse arrays
        if len(self.pending) >= self.steps:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        if len(pending) == 1:
            columns, outputs, masks = pending[0]
            self.buffer.add(*columns, outputs, masks)
            return
        columns = tuple(np.concatenate(column) for column in zip(*(step[0] for step in pending)))
        outputs = [_concatenate([step[1][k] for step in pending]) for k in range(len(pending[0][1]))]
        masks = None if pending[0][2] is None else np.concatenate([step[2] for step in pending])
        self.buffer.add(*columns, outputs, masks)


def _concatenate(outputs: Sequence[TeacherOutput]) -> TeacherOutput:
    """One teacher's outputs of several steps as one, row after row."""
    first = outputs[0]
    fields = {
        name: torch.cat([getattr(out, name) for out in outputs])
        for name in first._fields[1:]
        if getattr(first, name) is not None
    }
    return TeacherOutput(first.kind, **fields)
