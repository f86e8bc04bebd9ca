"""Atomic writes: a reader never sees half a file, and a crash never destroys the previous one."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import resource
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from policykd.errors import PolicyKDError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    ``suffix`` is kept on the temporary name for writers that insist on an extension
    (SB3's ``model.save`` appends ``.zip`` otherwise).
    """
    path = Path(path)
    check_folder_path(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; our files are meant to be shared and committed
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is not None or err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err  # say which file ("File too large" alone does not)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_folder_path(folder: str | os.PathLike) -> Path:
    """Raise an OSError that names the culprit when ``folder`` cannot be (made) a folder: its
    nearest existing ancestor is a file (``mkdir`` would only say "File exists") or a symlink
    loop. Returns that ancestor."""
    for ancestor in (Path(folder), *Path(folder).parents):
        if os.path.lexists(ancestor):
            if not stat.S_ISDIR(os.stat(ancestor).st_mode):  # os.stat raises ELOOP for a symlink loop
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(ancestor))
            return ancestor
    return Path(".")


def format_bytes(n_bytes: float) -> str:
    """``n_bytes`` for people: "812 B", "3.1 kB", "44.0 GB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n_bytes) < 1000:
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:,.1f} TB"


def check_room(path: str | os.PathLike, n_bytes: int, what: str) -> None:
    """Refuse, before the work that makes it, a file of about ``n_bytes`` that cannot be written at
    ``path``: more than the free space of its file system, or than the file-size limit (``ulimit -f``)."""
    folder = check_folder_path(Path(path).parent)
    free = shutil.disk_usage(folder).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    need = f"{what} needs about {format_bytes(n_bytes)}"
    if n_bytes > free:
        raise PolicyKDError(f"{need} but {folder} has {format_bytes(free)} free; free some space or pass another --out")
    if limit != resource.RLIM_INFINITY and n_bytes > limit:
        raise PolicyKDError(f"{need} but files may not exceed {format_bytes(limit)} here (ulimit -f); raise the limit")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """``data`` as standard JSON: a NaN or infinity (which ``json.dumps`` would write as the
    invalid ``NaN``) is written as ``null``, so every reader can parse the file."""
    write_text_atomic(path, json.dumps(_finite(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_csv(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` (same keys, plain values) as CSV with a header line, atomically (no rows: one empty line)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, text.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document in ``path``; one that is not valid JSON (truncated, edited, binary) is a
    PolicyKDError naming the file. OSError (missing, unreadable) passes through."""
    try:
        return json.loads(Path(path).read_bytes())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = " ".join(str(err).split())[:120]
        raise PolicyKDError(f"{path} is not valid JSON ({reason}); restore it from a copy or delete it") from None
