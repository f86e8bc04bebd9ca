"""Progress bars: off on a pipe, one ``-v`` line per finished step (whether the bar shows or not),
none for a step that is not shown (``--no-progress``, inner evaluations), and the verbosity levels."""

from __future__ import annotations

import logging
import warnings

import pytest

from policykd.progress import LOGGER, NORMAL, QUIET, VERBOSE, configure_output, progress_bar


@pytest.fixture
def output_levels():
    """Restore the ``policykd`` logger after a test that configures it."""
    handlers, level, propagate = list(LOGGER.handlers), LOGGER.level, LOGGER.propagate
    yield
    LOGGER.handlers[:], LOGGER.level, LOGGER.propagate = handlers, level, propagate


def test_a_bar_logs_its_step_once_when_verbose_and_stays_off_a_pipe(capsys, output_levels):
    configure_output(VERBOSE)
    bar = progress_bar(10, "collect", unit="transitions")
    assert bar.disable, "stderr is captured (no terminal): tqdm draws nothing"
    bar.update(4)
    bar.advance_to(10)  # e.g. a cached run: counted at once
    bar.advance_to(3)  # never backwards
    bar.close()
    bar.close()
    silent = progress_bar(5, "inner", enabled=False, unit="episodes")
    silent.update(5)
    silent.close()
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("policykd: collect: 10 transitions in "), err
    assert "\r" not in err


def test_verbosity_levels(capsys, output_levels):
    with warnings.catch_warnings():
        configure_output(NORMAL)
        LOGGER.info("step")
        LOGGER.warning("careful")
        configure_output(QUIET)
        LOGGER.warning("hidden")
        LOGGER.error("shown")
        warnings.warn("ignored when quiet", UserWarning, stacklevel=1)
        assert LOGGER.level == logging.ERROR
    assert capsys.readouterr().err.splitlines() == ["policykd: careful", "policykd: shown"]
    assert len([h for h in LOGGER.handlers if h.__class__.__name__ == "_StderrHandler"]) == 1
