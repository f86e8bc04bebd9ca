"""The validations every job repeats, written once. Each returns the checked value (converted) or
raises PolicyKDError with a message that names the option and what to pass instead.

Uses nothing of ours but ``errors`` and ``fileio``, so any layer may import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policykd.errors import PolicyKDError
from policykd.fileio import check_folder_path


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int; refuses bools, floats, strings and anything below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PolicyKDError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    """``value`` as a float; refuses bools, NaN, infinities and anything <= 0."""
    number = _as_float(value)
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise PolicyKDError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_probability(name: str, value: Any, hint: str = "") -> float:
    """``value`` as a float in [0, 1] (NaN refused)."""
    number = _as_float(value)
    if not 0.0 <= number <= 1.0:
        raise PolicyKDError(f"{name} must be a probability in [0, 1], got {value!r}{'; ' + hint if hint else ''}")
    return number


def check_positive_sizes(name: str, sizes: Sequence[Any]) -> tuple[int, ...]:
    """Layer sizes: every one an integer >= 1."""
    return tuple(check_int(name, size, 1) for size in sizes)


def check_out_dir(out_dir: str | Path | None) -> None:
    """An output folder may exist (as a folder) or not yet; a file in its place is refused, and so
    is a path under a file or through a symlink loop (an OSError naming it)."""
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise PolicyKDError(f"--out {out_dir} is a file; pass a folder for the run")
    if out_dir is not None:
        check_folder_path(out_dir)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
