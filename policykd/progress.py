"""Feedback on long steps: progress bars with an ETA, and one line per finished step with ``-v``.

Every step that can last more than a couple of seconds (teacher check and evaluation episodes,
collection, training, sweep runs, compare-drivers rounds) makes a :class:`Progress` bar. A bar shows
only on a terminal: on a pipe or a file tqdm leaves it out (``disable=None``), so logs hold no
carriage-return flood. Whether a job shows bars is an argument (its config's ``progress_bar``, the
``progress`` description of evaluate_policy / collect_rollouts), never a global; library
functions default to none.

What the command line prints besides its result goes through the ``policykd`` logger:
:func:`configure_output` sets ``-q`` (errors only), the default (warnings) or ``-v`` (also each
finished step with its duration, written by its bar when it closes, on a terminal or not).
Imports nothing of ours.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from typing import Any

from tqdm import tqdm

LOGGER = logging.getLogger("policykd")
QUIET, NORMAL, VERBOSE = -1, 0, 1


class Progress(tqdm):
    """A tqdm bar over ``total`` ``unit`` that shows on a terminal only, redraws at most twice a
    second and leaves no line behind; when closed, it logs ``desc: n unit in t s`` at INFO level
    (``-v``), on a terminal or not. Not ``enabled`` (``--no-progress``, or an inner step such as
    the evaluations during training): neither."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, unit: str = "it", **kwargs: Any) -> None:
        self._done, self._started, self._what = 0, time.perf_counter(), (desc, unit)
        self._logged = not enabled
        options = {"leave": False, "mininterval": 0.5, "dynamic_ncols": True, "smoothing": 0.1, **kwargs}
        super().__init__(total=total, desc=desc, unit=f" {unit}", disable=None if enabled else True, **options)

    def update(self, n: float | None = 1) -> bool | None:
        self._done += n or 0
        return super().update(n)

    def advance_to(self, done: int) -> None:
        """Count up to ``done`` (work that finished without reporting each step, e.g. a cached run)."""
        if done > self._done:
            self.update(done - self._done)

    def close(self) -> None:
        super().close()
        if not self._logged and self._done:
            self._logged = True
            desc, unit = self._what  # a disabled tqdm keeps neither
            LOGGER.info("%s: %s %s in %.1f s", desc, f"{self._done:,}", unit, time.perf_counter() - self._started)


def progress_bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it", initial: int = 0) -> Progress:
    """A :class:`Progress` bar (the one way jobs make one); ``initial``: the steps already done (a resumed run)."""
    return Progress(total, desc, enabled=enabled, unit=unit, initial=initial)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_output(verbosity: int = NORMAL) -> None:
    """The command line's verbosity: QUIET (errors only, warnings ignored), NORMAL (warnings) or
    VERBOSE (each finished step with its duration, and every library warning)."""
    for handler in [h for h in LOGGER.handlers if isinstance(h, _StderrHandler)]:
        LOGGER.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("policykd: %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel({QUIET: logging.ERROR, NORMAL: logging.WARNING, VERBOSE: logging.INFO}[verbosity])
    LOGGER.propagate = False
    if verbosity == QUIET:
        warnings.simplefilter("ignore")
    elif verbosity == VERBOSE:
        warnings.simplefilter("default")
