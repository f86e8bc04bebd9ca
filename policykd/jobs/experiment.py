"""What the experiment jobs (the temperature sweep and the drivers comparison) share: a cache of
finished runs (kept in the output folder, so a rerun of a stopped experiment resumes), their YAML
config files, a fresh student per seed, one TensorBoard run per setting, and the teacher's
baselines measured once."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from policykd.checks import check_int, check_out_dir
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import write_text_atomic
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, ReturnStats, teacher_baselines
from policykd.jobs.ray_backend import check_backend
from policykd.jobs.resolve import check_teacher_score, make_student_for, teacher_defaults, teacher_domain, uses_preset
from policykd.jobs.run_folder import CONFIG_FILE, LOCK_FILE, run_folder
from policykd.learn.logging import TensorBoardLogger
from policykd.learn.students import Student
from policykd.zoo.presets import has_preset, resolve

RunCache = Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]  # (name, run) -> run() or a stored result


def no_cache(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A RunCache that always runs."""
    return run()


CELLS_DIR = "cells"
# Experiment config fields that change no cell (the output folder, how many seeds, checks and
# display); each experiment adds the field that lists its cells (temperatures, drivers).
CELL_INDEPENDENT = ("out_dir", "n_seeds", "teacher_check", "progress_bar", "zoo_dir", "trust_pickles", "backend",
                    "ray_address")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ExperimentOptions:
    """How an experiment (SweepConfig, DriversConfig) runs, beside what it computes: the teacher
    check, how the teacher is read, progress bars, the device, and where its cells run."""

    teacher_check: bool = True
    trust_pickles: bool = False
    """Read the teacher's pickles and env wrappers as SB3 does (a file you trust: it may run code)."""
    zoo_dir: str | None = None
    """The expert zoo the preset's expert is read from (default: presets.find_zoo)."""
    progress_bar: bool = True
    """Progress bars with an ETA on stderr (shown on a terminal only)."""
    device: str = "cpu"
    """Torch device of teacher labelling, student training and evaluation (``--device``)."""
    backend: str = "local"
    """Where the cells run: local (one after the other) or ray (a Ray task per cell, one CPU each;
    jobs/ray_backend.py)."""
    ray_address: str | None = None
    """A running Ray cluster to join with ``backend="ray"`` (default: a local Ray started for the run)."""


def check_experiment_config(config: Any, extra: Iterable[tuple[str, int, int]] = ()) -> None:
    """Before anything runs, refuse in one line what every experiment config (SweepConfig,
    DriversConfig) shares: its seed, seed count and evaluation episodes, then ``extra``'s
    ``(flag, value, minimum)`` integers, its output folder and its backend."""
    for flag, value, minimum in (
        ("--seed", config.seed, 0),
        ("--seeds", config.n_seeds, 1),
        ("--eval-episodes", config.n_eval_episodes, 1),
        *extra,
    ):
        check_int(flag, value, minimum)
    check_out_dir(config.out_dir)
    check_backend(config)


def cell_cache(out: Path, config: Any, listed_by: str) -> RunCache:
    """:func:`folder_cache` for an experiment whose cells ``config.<listed_by>`` lists: the cells it
    shares with an earlier run in ``out`` are reused, whatever else that run listed."""
    return folder_cache(out, config, (*CELL_INDEPENDENT, listed_by))


def folder_cache(out: Path, config: Any, ignore: Collection[str]) -> RunCache:
    """The experiments' default RunCache: each finished cell's result in ``out/cells/<name>.json``
    with the settings it was computed under (``config``'s fields but ``ignore``: those that change
    no cell, such as the output folder or the list of cells). Rerunning the same command after a
    crash, SIGKILL or Ctrl-C reuses the cells done and computes the others; a cell computed under
    other settings is computed again and replaced. A cell is seeded by its name's seed, so a
    reused cell is the one a rerun would compute."""
    settings = json.loads(json.dumps({k: v for k, v in dataclasses.asdict(config).items() if k not in ignore}))

    def cache(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = out / CELLS_DIR / f"{name}.json"
        if path.is_file():
            stored = json.loads(path.read_text())
            if stored.get("settings") == settings:
                return stored["result"]
        result = run()
        write_text_atomic(path, json.dumps({"settings": settings, "result": result}))  # NaN kept as NaN
        return result

    return cache


@contextlib.contextmanager
def experiment_folder(config: Any, command: str) -> Iterator[Path]:
    """``config.out_dir`` held as a run folder (``run_folder``'s lock, config and state) for the
    ``with`` block. Rerunning the same experiment there resumes it (its finished cells are reused,
    see :func:`folder_cache`), even with other settings; a folder holding anything else (another
    command's run, other files) is refused before anything is written, and so is a folder that a
    live process is writing."""
    out = Path(config.out_dir)
    fields = dataclasses.asdict(config)
    if out.is_dir() and any(child.name != LOCK_FILE for child in out.iterdir()) and not _same_experiment(out, fields):
        raise PolicyKDError(
            f"--out {out} already holds files of another command's run or of something else, not a {command} "
            "run; pass another --out"
        )
    with run_folder(out, fields, resume=tuple(fields)):
        yield out


def _same_experiment(out: Path, fields: dict[str, Any]) -> bool:
    """Whether ``out`` holds a run of the experiment ``fields`` configure: its config.yml has the
    same keys, or it has cells but no config.yml (an experiment run before run folders had one)."""
    import yaml

    if not (out / CONFIG_FILE).exists():
        return (out / CELLS_DIR).is_dir()
    try:
        recorded = yaml.safe_load((out / CONFIG_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(recorded, dict) and set(recorded) == set(fields)


def read_config_file(path: str | Path, config_cls: type | None, aliases: Mapping[str, str]) -> dict[str, Any]:
    """The settings a YAML file gives, by field / option dest. Keys are the fields of
    ``config_cls`` (a dataclass, or None for a command without one; a run folder's config.yml has
    exactly these) or the CLI's long options (``seeds``, ``env``, ``n-transitions`` ...), which
    ``aliases`` maps to their dests; a field wins over an option of the same name. Lists become
    tuples, nested ones too. An unknown key or a file that is not a mapping raises PolicyKDError."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not UTF-8 text
        raise PolicyKDError(f"cannot read config file {path}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise PolicyKDError(f"config file {path} must be a mapping of option: value, e.g. 'seeds: 3'")
    fields = {f.name for f in dataclasses.fields(config_cls)} if config_cls is not None else set()
    known = fields | set(aliases.values())
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_ = str(key).replace("-", "_")
        name = key_ if key_ in fields else aliases.get(key_, key_)
        if name not in known:
            keys = sorted(fields | {alias for alias, dest in aliases.items() if dest in known})
            raise PolicyKDError(f"config file {path}: unknown key {key!r}; use one of {', '.join(keys)}")
        values[name] = _tuples(value)
    return values


def _tuples(value: Any) -> Any:
    """YAML lists as tuples, nested ones too (config fields are tuples: ``tasks`` holds pairs)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


STUDENT_KEYS = ("hidden_sizes", "cnn_width", "learning_rate")


def student_budgets(teacher: Teacher, config: Any) -> tuple[dict[str, Any], str]:
    """The student's size (``hidden_sizes``; ``cnn_width`` for image observations) and Adam step as
    ``distill`` picks them for ``teacher`` (resolve.teacher_defaults): the config's where it sets
    them, else the env preset's, else (no preset applies, or the preset's student would be too large
    for this teacher) a student of about presets.STUDENT_FRACTION of its acting parameters. Returns
    them and the line that says what was derived and why ("" where nothing was)."""
    env_id = teacher.recipe.env_id
    use_file = uses_preset(env_id, config)
    derived, why = teacher_defaults(teacher, config, use_file)
    given = {key: getattr(config, key, None) for key in STUDENT_KEYS}
    values = resolve(env_id, {key: derived.get(key) if given[key] is None else given[key] for key in STUDENT_KEYS},
                     STUDENT_KEYS, use_file)  # fmt: skip
    if "{budget}" in why:  # no preset: the line also names distill's budgets, which an experiment sets its own way
        reason = "--preset none" if has_preset(env_id) else f"no preset for {env_id}"
        why = f"defaults from the teacher ({reason}): student {why.split('; student ', 1)[1]}"
    return values, why


def experiment_budgets(teacher: Teacher, config: Any, keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` as ``config`` or else the env preset sets them, with distill's student for
    ``teacher`` (student_budgets) and, under "defaults", the line that says what was derived
    (printed; None where nothing was)."""
    student, picked = student_budgets(teacher, config)
    if picked:
        print(picked, flush=True)
    return {"defaults": picked or None, **resolve(teacher.recipe.env_id, config, keys), **student}


def student_for(teacher: Teacher, hidden_sizes: Sequence[int], seed: int, cnn_width: float = 1.0) -> Student:
    """A fresh student for ``teacher`` (input normalisation copied from its VecNormalize statistics),
    its initial weights fixed by ``seed``; ``cnn_width`` sizes its CNN where the observations are images."""
    cnn_width = cnn_width if teacher_domain(teacher) == "image" else 1.0  # an MLP student has no CNN
    return make_student_for(teacher, teacher.kind, tuple(hidden_sizes), cnn_width, seed=seed)


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
    teacher: Teacher, n_episodes: int, seed: int, *, cache: RunCache, teacher_check: bool = True, progress: bool = False
) -> dict[str, Any]:
    """``teacher_baselines`` on the evaluation episodes (seeds from ``seed + EVAL_SEED_OFFSET``),
    through ``cache`` under the name ``teacher``. With ``teacher_check``, refuses a teacher that
    is not clearly better than a random policy or plays far below the score its zoo folder records.
    ``progress``: bars over the episodes."""
    measure = functools.partial(teacher_baselines, teacher, n_episodes, seed + EVAL_SEED_OFFSET, progress=progress)
    baselines = cache("teacher", measure)
    if teacher_check:  # a result cached before random_returns was kept holds the random mean only
        random = ReturnStats.of(baselines.get("random_returns") or [baselines["random"]])
        check_teacher_score(teacher, ReturnStats.of(baselines["teacher_greedy_returns"]), random)
    return baselines


def experiment_baselines(teacher: Teacher, config: Any, cache: RunCache) -> dict[str, Any]:
    """:func:`checked_baselines` with an experiment config's (SweepConfig, DriversConfig)
    ``n_eval_episodes``, ``seed``, ``teacher_check`` and ``progress_bar``."""
    return checked_baselines(
        teacher,
        config.n_eval_episodes,
        config.seed,
        cache=cache,
        teacher_check=config.teacher_check,
        progress=config.progress_bar,
    )
