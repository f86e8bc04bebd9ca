"""A run folder is a contract: one writer at a time (a lock), a state (``running`` / ``done`` /
``failed`` with the error), the resolved config that reproduces it, and nothing stale from an
earlier run. Readers (evaluate, export) refuse a folder whose run is not ``done``.

``state.json`` sits next to ``summary.json``; a student folder's run is its parent folder.

A run that stopped (``failed``, or ``running`` with no process holding the lock: killed) can be
resumed into the same folder when its ``config.yml`` matches the new command but for the fields
that change no result (:func:`check_resumable`); the job then picks up the checkpoints it finds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import socket
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import yaml

from policykd.errors import PolicyKDError
from policykd.fileio import read_json, write_json_atomic, write_text_atomic

STATE_FILE, LOCK_FILE, CONFIG_FILE = "state.json", ".lock", "config.yml"
RUNNING, DONE, FAILED = "running", "done", "failed"


def claim_run_folder(out_dir: str | Path | None, default: Path) -> Path:
    """Create and return the run folder. ``out_dir`` is used as given; ``default`` gets a ``-2``,
    ``-3`` ... suffix so an earlier run is never overwritten (``mkdir`` without ``exist_ok``
    claims a name atomically, even against a concurrent run)."""
    if out_dir is not None:
        path = Path(out_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PolicyKDError(f"cannot create the run folder {out_dir}: {err.strerror}; pass another --out") from None
        return path
    default.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = default, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = default.with_name(f"{default.name}-{n}")


def run_state(folder: str | Path) -> dict[str, Any] | None:
    """The run's ``state.json``, or None where there is none (a folder older than run states)."""
    path = Path(folder) / STATE_FILE
    return read_json(path) if path.is_file() else None


def check_finished(folder: str | Path, what: str) -> None:
    """Refuse ``what`` (e.g. "student runs/x/student") when the run that writes ``folder`` is not done."""
    state = run_state(folder)
    if state is not None and state.get("state") != DONE:
        reason = f" ({state['error']})" if state.get("error") else ""
        raise PolicyKDError(
            f"{what} belongs to a run that is {state.get('state')}{reason}, not done; "
            "wait for it to finish or rerun it with --overwrite"
        )


def check_resumable(folder: str | Path, config: dict[str, Any], ignore: Collection[str]) -> dict[str, Any] | None:
    """Before anything runs, for ``--resume``: the state of the run ``folder`` holds, or None when
    there is none yet (nothing to resume: the run starts). Refuses, in one line, a folder being
    written, a folder of something else, and a run whose ``config.yml`` differs from ``config``
    in a key not in ``ignore`` (naming the key)."""
    path = Path(folder)
    if not path.is_dir() or not any(child.name != LOCK_FILE for child in path.iterdir()):
        return None
    _check_unlocked(path)
    _check_same_config(path, config, ignore)
    return run_state(path) or {"state": RUNNING}


def check_resume_options(resume: bool, overwrite: bool, out_dir: str | Path | None, checkpoint_every_s: float) -> None:
    """``--resume`` / ``--overwrite`` / ``--out`` / ``--checkpoint-every`` of a job that checkpoints, in one line."""
    if resume and overwrite:
        raise PolicyKDError("--resume continues the run in --out and --overwrite empties it; pass one of them")
    if resume and out_dir is None:
        raise PolicyKDError("--resume needs --out, the folder of the run to continue")
    if not checkpoint_every_s >= 0:  # `not >=` also refuses NaN
        raise PolicyKDError(f"--checkpoint-every must be >= 0 seconds, got {checkpoint_every_s}")


def check_run_folder(config: Any, may_differ: Collection[str]) -> dict[str, Any] | None:
    """Before anything runs, for a job's ``config`` (a dataclass with ``out_dir``, ``resume`` and
    ``overwrite``): the state of the run ``--resume`` continues (None: there is none, it starts);
    without ``--resume``, refuse a folder that holds an earlier run unless ``--overwrite``."""
    if config.out_dir is None:
        return None
    if config.resume:
        return check_resumable(config.out_dir, dataclasses.asdict(config), may_differ)
    check_reusable(config.out_dir, config.overwrite)
    return None


def finished_summary(out_dir: str | Path | None, state: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The summary file ``name`` a finished run wrote, when ``--resume`` found one (nothing to do); else None."""
    path = Path(out_dir or "", name)
    return read_json(path) if state is not None and state.get("state") == DONE and path.is_file() else None


def _check_same_config(path: Path, config: dict[str, Any], ignore: Collection[str]) -> None:
    if not (path / CONFIG_FILE).is_file():
        raise PolicyKDError(f"--resume: {path} holds no run (no {CONFIG_FILE}); pass the --out of a run")
    try:
        recorded = yaml.safe_load((path / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PolicyKDError(f"--resume: cannot read {path / CONFIG_FILE} ({' '.join(str(err).split())})") from None
    given = _plain(config)
    if not isinstance(recorded, dict):
        raise PolicyKDError(f"--resume: {path / CONFIG_FILE} is not a run's config; pass the --out of a run")
    for key in sorted(set(recorded) | set(given)):
        if key not in ignore and recorded.get(key) != given.get(key):
            raise PolicyKDError(
                f"--resume: {path} was run with {key} = {recorded.get(key)!r}, this command gives "
                f"{given.get(key)!r}; resume with the run's options (its {CONFIG_FILE}) or pass another --out"
            )


def _check_unlocked(path: Path) -> None:
    """Refuse a folder whose lock a live process holds (the lock is released when it dies)."""
    if not (path / LOCK_FILE).is_file():
        return
    with open(path / LOCK_FILE, "a") as lock:
        _lock(lock, path)
        fcntl.flock(lock, fcntl.LOCK_UN)


def check_reusable(folder: str | Path, overwrite: bool) -> None:
    """Before anything runs: refuse to write into a folder that holds another run, unless ``overwrite``."""
    path = Path(folder)
    if not path.is_dir() or overwrite or not any(child.name != LOCK_FILE for child in path.iterdir()):
        return
    state = run_state(path)
    what = f"an earlier run ({_shown_state(path, state)})" if state else "files of an earlier run or of something else"
    resume = ", --resume to continue it" if state and state["state"] != DONE else ""
    raise PolicyKDError(
        f"--out {folder} already holds {what}; pass another --out{resume}, or --overwrite to empty it and run again"
    )


def _shown_state(path: Path, state: dict[str, Any]) -> str:
    """``running`` only while a process holds the run's lock; a killed one could not say it stopped."""
    if state.get("state") != RUNNING or not (path / LOCK_FILE).is_file():
        return str(state.get("state"))
    with open(path / LOCK_FILE, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return RUNNING
        fcntl.flock(lock, fcntl.LOCK_UN)
    return "stopped: its process is gone"


@contextlib.contextmanager
def run_folder(
    path: Path, config: dict[str, Any], overwrite: bool = False, resume: Collection[str] | None = None
) -> Iterator[Path]:
    """Hold ``path`` as the one writer for the ``with`` block: lock it, empty it when
    ``overwrite``, record the config and the state ``running``; ``done`` when the block ends,
    ``failed`` with the error when it raises (the exception propagates). ``resume``: the config
    keys that may differ from the run's (see :func:`check_resumable`); the folder's files stay."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_FILE, "a") as lock:
        _lock(lock, path)
        # again under the lock: another run may have finished (or started) here meanwhile
        if resume is not None:
            if any(child.name != LOCK_FILE for child in path.iterdir()):
                _check_same_config(path, config, resume)
        else:
            check_reusable(path, overwrite)
        if overwrite:
            _empty(path)
        _remove_orphans(path)
        started = time.time()
        base = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        # the config first: a folder with a state always has the config that state belongs to
        write_text_atomic(path / CONFIG_FILE, yaml.safe_dump(_plain(config), sort_keys=False))
        write_json_atomic(path / STATE_FILE, {"state": RUNNING, **base})
        try:
            yield path
        except BaseException as err:
            message = " ".join(str(err).split()) or type(err).__name__
            write_json_atomic(path / STATE_FILE, {"state": FAILED, "error": message, **base})
            raise
        write_json_atomic(path / STATE_FILE, {"state": DONE, **base, "finished": time.time()})


def _lock(lock: Any, path: Path) -> None:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        state = run_state(path) or {}
        holder = f"process {state.get('pid', '?')} on {state.get('host', '?')}"
        raise PolicyKDError(f"{path} is being written by {holder}; wait for it or pass another --out") from None


def _remove_orphans(path: Path) -> None:
    """The temporary files of atomic writes a killed run left behind (``fileio.atomic_path``'s
    ``.<name>.<random>.tmp``); this process holds the lock, so no writer of this run is using them."""
    for orphan in path.rglob(".*.tmp*"):
        if orphan.is_file() and not orphan.is_symlink():
            orphan.unlink(missing_ok=True)


def _empty(path: Path) -> None:
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _plain(value: Any) -> Any:
    """A YAML-safe copy: tuples become lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
