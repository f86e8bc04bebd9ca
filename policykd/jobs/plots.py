"""PNG plots of the sweep, the drivers comparison and other learning curves: a mean line with its
95 % CI band over seeds.

matplotlib (the ``plots`` extra) is imported lazily with the Agg backend, so nothing here needs a
display and the rest of policykd runs without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path

Band = Sequence[tuple[float, float, float]]  # (mean, ci_low, ci_high) per x


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PolicyKDError("plots need matplotlib: pip install 'policykd[plots]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _band(ax: Any, x: Sequence[float], band: Band, label: str | None = None) -> None:
    means, lows, highs = zip(*band)
    (line,) = ax.plot(x, means, marker="o", label=label)
    ax.fill_between(x, lows, highs, alpha=0.2, color=line.get_color())


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def plot_sweep(summary: dict[str, Any], path: Path) -> None:
    """One panel per metric of ``summary["labels"]`` against tau (log x axis), mean and 95 % CI
    band over seeds; the return panels also show the teacher's return."""
    plt = _pyplot()
    taus = [row["tau"] for row in summary["rows"]]
    labels: dict[str, str] = summary["labels"]
    teacher = {"return_greedy": summary["teacher_greedy"], "return_sampled": summary["teacher_sampled"]}
    title = f"{summary['env_id']} {summary['teacher_algo']}: {summary['n_seeds']} seeds, 95 % CI"

    def draw(ax: Any, key: str) -> None:
        _band(ax, taus, [row[key] for row in summary["rows"]])
        if key in teacher:
            ax.axhline(teacher[key], color="grey", linestyle="--", label="teacher's return")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("temperature τ")
        ax.set_title(labels[key], fontsize=9)
        ax.grid(alpha=0.3)

    n_cols = 4
    n_rows = -(-len(labels) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4 * n_cols, 3.2 * n_rows), squeeze=False)
    for ax, key in zip(axes.flat, labels):
        draw(ax, key)
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.1, top=0.88, wspace=0.28, hspace=0.45)  # tight_layout: 1 s
    _save(fig, path)


def plot_curves(
    curves: dict[str, tuple[Sequence[float], Band]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    hlines: Sequence[tuple[float, str, str]] = (),
    log_x: bool = False,
) -> None:
    """One line and 95 % CI band per ``label: (xs, band)``, with horizontal reference lines
    ``(y, label, linestyle)`` in grey."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, band) in curves.items():
        _band(ax, xs, band, label=label)
    for y, label, style in hlines:
        ax.axhline(y, color="grey", linestyle=style, label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_drivers(summary: dict[str, Any], path: Path) -> None:
    """Student return against teacher labels used, one line and CI band per driver, with the
    teacher's return and the 95 % threshold as horizontal lines."""
    plot_curves(
        {driver: (curve["n_labels"], curve["return"]) for driver, curve in summary["curves"].items()},
        path,
        xlabel="teacher labels used",
        ylabel="student return",
        title=f"{summary['env_id']} {summary['teacher_algo']} teacher: {summary['n_seeds']} seeds, 95 % CI",
        hlines=[
            (summary["teacher_return"], "teacher's return", "--"),
            (summary["threshold"], "95 % of teacher (random = 0 %)", ":"),
        ],
    )
