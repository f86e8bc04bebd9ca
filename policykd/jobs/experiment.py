"""What the experiment jobs (the temperature sweep and the drivers comparison) share: a cache of
finished runs, their YAML config files, a fresh student per seed, one TensorBoard run per
setting, and the teacher's baselines measured once."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, ReturnStats, teacher_baselines
from policykd.jobs.resolve import check_teacher_score, make_student_for
from policykd.learn.logging import TensorBoardLogger
from policykd.learn.students import Student

RunCache = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]  # (name, run) -> run() or a stored result


def no_cache(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The default RunCache: always run."""
    return run()


def read_config_file(path: str | Path, config_cls: type, aliases: dict[str, str]) -> dict[str, Any]:
    """The fields of ``config_cls`` set by a YAML file. Keys are the CLI's long options (``seeds``,
    ``env``, ``n-transitions`` ...; ``aliases`` maps them to fields) or the field names; lists
    become tuples. An unknown key or a file that is not a mapping raises PolicyKDError."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not UTF-8 text
        raise PolicyKDError(f"cannot read config file {path}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise PolicyKDError(f"config file {path} must be a mapping of option: value, e.g. 'seeds: 3'")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(str(key).replace("-", "_"), str(key).replace("-", "_"))
        if name not in fields:
            known = sorted({alias for alias, field in aliases.items() if field in fields} | fields)
            raise PolicyKDError(f"config file {path}: unknown key {key!r}; use one of {', '.join(known)}")
        values[name] = tuple(value) if isinstance(value, list) else value
    return values


def student_for(teacher: Teacher, hidden_sizes: Sequence[int], seed: int) -> Student:
    """A fresh MLP student for ``teacher`` (input normalisation copied from its VecNormalize
    statistics), its initial weights fixed by ``seed``."""
    return make_student_for(teacher, teacher.kind, tuple(hidden_sizes), seed=seed)


@contextlib.contextmanager
def run_logger(out: Path, name: str, hparams: dict[str, Any]) -> Iterator[TensorBoardLogger]:
    """A TensorBoard logger for ``out/tb/<name>`` with ``hparams`` logged; a rerun replaces that
    run, never appends to it. Closed on leaving the block."""
    tb_dir = out / "tb" / name
    shutil.rmtree(tb_dir, ignore_errors=True)
    logger = TensorBoardLogger(tb_dir)
    try:
        logger.log_hparams(hparams)
        yield logger
    finally:
        logger.close()


def checked_baselines(
    teacher: Teacher, n_episodes: int, seed: int, *, cache: RunCache, teacher_check: bool = True
) -> dict[str, Any]:
    """``teacher_baselines`` on the evaluation episodes (seeds from ``seed + EVAL_SEED_OFFSET``),
    through ``cache`` under the name ``teacher``. With ``teacher_check``, refuses a teacher that
    plays far below the score its zoo folder records."""
    measure = functools.partial(teacher_baselines, teacher, n_episodes, seed + EVAL_SEED_OFFSET)
    baselines = cache("teacher", measure)
    if teacher_check:
        check_teacher_score(teacher, ReturnStats.of(baselines["teacher_greedy_returns"]))
    return baselines
