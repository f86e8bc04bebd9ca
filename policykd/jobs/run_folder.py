"""Where a run writes: ``--out`` as given, or a fresh default folder that never replaces an earlier run."""

from __future__ import annotations

from pathlib import Path


def claim_run_folder(out_dir: str | Path | None, default: Path) -> Path:
    """Create and return the run folder. ``out_dir`` is used as given; ``default`` gets a ``-2``,
    ``-3`` ... suffix so an earlier run is never overwritten (``mkdir`` without ``exist_ok``
    claims a name atomically, even against a concurrent run)."""
    if out_dir is not None:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
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
