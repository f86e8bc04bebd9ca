"""Atomic writes: a reader never sees half a file, and a crash never destroys the previous one."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    ``suffix`` is kept on the temporary name for writers that insist on an extension
    (SB3's ``model.save`` appends ``.zip`` otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; our files are meant to be shared and committed
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    return json.loads(Path(path).read_text())
