"""Combine several teachers' softened targets into one. Pure functions over DistillTargets."""

from __future__ import annotations

from collections.abc import Sequence

from policykd.errors import PolicyKDError
from policykd.types import DistillTarget


def single_teacher(targets: Sequence[DistillTarget]) -> DistillTarget:
    """The K = 1 case: the one teacher's target, unchanged."""
    if len(targets) != 1:
        raise PolicyKDError(f"{len(targets)} teachers given but no merge strategy chosen; pass --merge")
    return targets[0]
