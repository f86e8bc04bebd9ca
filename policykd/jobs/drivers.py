"""The drivers comparison: who should drive while the teacher labels? For each driver (teacher,
student, dagger) and seed, one online run (jobs/online.py) with the same label budget per round;
then the student's return against teacher labels used, the labels each driver needs to reach
95 % of the teacher, and a Markdown + CSV + PNG report with one TensorBoard run per (driver, seed).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policykd.data.collect import episode_covering_envs, max_episode_steps
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import write_csv, write_json_atomic, write_text_atomic
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, mean_ci
from policykd.jobs.experiment import (
    CELL_INDEPENDENT,
    ExperimentOptions,
    RunCache,
    check_experiment_config,
    experiment_baselines,
    experiment_budgets,
    experiment_folder,
    folder_cache,
    run_logger,
    student_for,
)
from policykd.jobs.online import OnlineConfig, return_evaluator, train_online
from policykd.jobs.online_workers import RoundSplit
from policykd.jobs.ray_backend import run_cells
from policykd.jobs.resolve import check_batch_size, check_hidden_sizes, resolve_teacher, run_loss
from policykd.learn.logging import hparams_of
from policykd.learn.losses import check_loss_options, make_loss
from policykd.learn.schedules import BetaSchedule, ConstantBeta, parse_schedule
from policykd.learn.trainer import TrainerConfig
from policykd.progress import progress_bar

DRIVERS: tuple[str, ...] = ("teacher", "student", "dagger")
# The field that lists the comparison's cells: a rerun with other drivers reuses the cells it shares
CELLS_LISTED_BY = "drivers"


@dataclasses.dataclass(frozen=True)
class DriversConfig(ExperimentOptions):
    teacher: str | None = None
    env_id: str | None = None
    drivers: tuple[str, ...] = DRIVERS
    dagger_schedule: str | None = None
    """The dagger driver's beta schedule (parse_schedule); default ``linear:<n_rounds // 2>``."""
    n_seeds: int = 3
    n_rounds: int = 10
    n_transitions_per_round: int = 5_000
    n_updates_per_round: int = 500
    capacity: int | None = None
    """Ring buffer size; default: every label collected (DAgger's aggregated dataset)."""
    n_envs: int | None = None
    loss: str | None = None
    """Default: kl (mse for a deterministic TD3 / DDPG teacher)."""
    temperature: float = 1.0
    hidden_sizes: tuple[int, ...] | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    n_eval_episodes: int = 10
    deterministic_drivers: bool = True
    seed: int = 0
    out_dir: str = "runs/compare-drivers"
    workers: int = 1
    """Each round's collection split across this many workers (jobs/online_workers.py); above 1,
    with ``backend="ray"`` the workers are Ray actors and the runs go one after another here."""


def _check_drivers_config(config: DriversConfig) -> dict[str, BetaSchedule]:
    """Refuse bad input before anything runs; returns every driver's beta schedule."""
    unknown = [d for d in config.drivers if d not in DRIVERS]
    if not config.drivers or unknown:
        raise PolicyKDError(f"unknown or no drivers {unknown or []}; choose from {', '.join(DRIVERS)}")
    check_experiment_config(
        config,
        (
            ("--rounds", config.n_rounds, 1),
            ("--round-transitions", config.n_transitions_per_round, 1),
            ("--round-updates", config.n_updates_per_round, 1),
            ("--capacity", 1 if config.capacity is None else config.capacity, 1),
        ),
    )
    return {
        "teacher": ConstantBeta(1.0),
        "student": ConstantBeta(0.0),
        "dagger": parse_schedule(config.dagger_schedule or f"linear:{max(config.n_rounds // 2, 1)}"),
    }


def _online_config(config: DriversConfig, budgets: dict[str, Any], env_id: str) -> OnlineConfig:
    """Every run's online settings (its seed aside); the preset fills the budgets left unset. With no
    ``--n-envs``, a small round uses fewer envs, so that each round plays whole episodes
    (collect.episode_covering_envs)."""
    n_envs = budgets["n_envs"]
    if config.n_envs is None:
        n_envs = episode_covering_envs(config.n_transitions_per_round, n_envs, max_episode_steps(env_id))
    online = OnlineConfig(
        n_rounds=config.n_rounds,
        n_transitions_per_round=config.n_transitions_per_round,
        n_updates_per_round=config.n_updates_per_round,
        n_envs=n_envs,
        capacity=config.capacity or config.n_rounds * config.n_transitions_per_round,
        batch_size=budgets["batch_size"],
        learning_rate=budgets["learning_rate"],
        deterministic_drivers=config.deterministic_drivers,
        seed=config.seed,
    )
    TrainerConfig(batch_size=online.batch_size, learning_rate=online.learning_rate)  # validates both now
    return online


def _make_loss(config: DriversConfig, teacher: Teacher) -> tuple[str, Any]:
    """The loss's name (default kl; mse for a deterministic teacher) and the loss, checked."""
    loss, _ = run_loss(config.loss, teacher.kind)
    loss_fn = make_loss(loss, teacher.kind, temperature=config.temperature)
    check_loss_options(loss, temperature=config.temperature)  # mse and nll would ignore --temperature
    return loss, loss_fn


def _drive_one(
    teacher: Teacher,
    driver: str,
    schedule: BetaSchedule,
    seed: int,
    config: DriversConfig,
    online: OnlineConfig,
    budgets: dict[str, Any],
    out: Path,
    on_round: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """One (driver, seed) online run; JSON-able rounds. ``on_round(record)`` after each round."""
    loss, loss_fn = _make_loss(config, teacher)
    eval_seed = config.seed + EVAL_SEED_OFFSET  # every driver and seed plays the same evaluation episodes
    hparams = hparams_of(
        online,
        {"seed": seed, "driver": driver, "schedule": repr(schedule), "loss": loss, "temperature": config.temperature},
        {"hidden_sizes": budgets["hidden_sizes"], "n_eval_episodes": config.n_eval_episodes, "teacher": teacher.source},
    )
    with run_logger(out, f"{driver}-seed{seed}", hparams) as logger:
        result = train_online(
            teacher,
            student_for(teacher, budgets["hidden_sizes"], seed, budgets["cnn_width"]),
            loss_fn,
            schedule,
            config=dataclasses.replace(online, seed=seed),
            logger=logger,
            temperature=config.temperature,
            evaluate=return_evaluator(
                teacher.recipe, config.n_eval_episodes, eval_seed, bool(budgets["deterministic_eval"])
            ),
            on_round=on_round,
            split=_round_split(config),
        )
    return {"driver": driver, "seed": seed, "schedule": repr(schedule), **result.to_json()}


def _round_split(config: DriversConfig) -> RoundSplit:
    """Where each round collects: one worker in the run's own process, or ``--workers`` on ``--backend``."""
    if config.workers == 1:
        return RoundSplit()
    return RoundSplit(config.workers, config.backend, config.ray_address, config.trust_pickles)


def _cells_backend(config: DriversConfig) -> str:
    """Where the (driver, seed) runs go: Ray tasks with one worker each, else here (their rounds use Ray)."""
    return config.backend if config.workers == 1 else "local"


def labels_to_reach(n_labels: Sequence[int], returns: Sequence[float], threshold: float) -> int | None:
    """The first label count whose return is >= ``threshold``; None if none is."""
    return next((int(n) for n, r in zip(n_labels, returns) if r >= threshold), None)


def _driver_results(
    driver: str, runs: list[dict[str, Any]], threshold: float
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """One driver's return curve over its seeds, the labels it needs to reach ``threshold``, and
    its CSV rows (one per round)."""
    mine = [r for r in runs if r["driver"] == driver]
    n_labels = [rec["n_labels"] for rec in mine[0]["rounds"]]
    per_round = [mean_ci([r["rounds"][i]["student_return"] for r in mine]) for i in range(len(n_labels))]
    per_seed = [labels_to_reach(n_labels, [rec["student_return"] for rec in r["rounds"]], threshold) for r in mine]
    reach = {"mean_curve": labels_to_reach(n_labels, [m for m, _, _ in per_round], threshold), "per_seed": per_seed}
    rows = [
        {
            "driver": driver,
            "round": i,
            "n_labels": n_labels[i],
            "beta": mine[0]["rounds"][i]["beta"],
            "share_teacher": float(np.mean([r["rounds"][i]["share_teacher"] for r in mine])),
            "return_mean": m,
            "return_ci_low": lo,
            "return_ci_high": hi,
        }
        for i, (m, lo, hi) in enumerate(per_round)
    ]
    return {"n_labels": n_labels, "return": per_round}, reach, rows


def compare_drivers(config: DriversConfig, *, cache: RunCache | None = None) -> dict[str, Any]:
    """Run every driver for ``n_seeds`` seeds with the same label budget per round and write
    ``drivers.md``, ``drivers.csv``, ``drivers.png``, ``summary.json`` and ``tb/<driver>-seed<s>/``
    into ``config.out_dir``. The threshold is 95 % of the teacher, normalised so that a uniform
    random policy is 0 %: ``random + 0.95 * (teacher - random)``. Finished cells are kept in
    ``out_dir/cells/`` unless ``cache`` is given (see ``run_sweep``): a rerun resumes. Returns the summary."""

    schedules = _check_drivers_config(config)
    options = {"trust_pickles": config.trust_pickles, "zoo_dir": config.zoo_dir, "device": config.device}
    teacher = resolve_teacher(config.teacher, config.env_id, **options)
    # the preset's budgets where the config leaves them, and distill's student for this teacher
    budgets = experiment_budgets(teacher, config, ("n_envs", "batch_size", "deterministic_eval"))
    online = _online_config(config, budgets, teacher.recipe.env_id)
    check_hidden_sizes(budgets["hidden_sizes"])
    n_first = min(online.capacity, online.n_transitions_per_round)  # what the first round trains on
    check_batch_size(online.batch_size, n_first, "label more per round (--round-transitions, --capacity)")
    _make_loss(config, teacher)  # refused now, not after the baselines
    with experiment_folder(config, "compare-drivers") as out:
        return _compare_in(out, config, teacher, schedules, online, budgets, cache)


def _compare_in(
    out: Path,
    config: DriversConfig,
    teacher: Teacher,
    schedules: dict[str, BetaSchedule],
    online: OnlineConfig,
    budgets: dict[str, Any],
    cache: RunCache | None,
) -> dict[str, Any]:
    from policykd.jobs.plots import plot_drivers

    one_worker = ("workers",) if config.workers == 1 else ()  # cells stored before --workers existed stay valid
    cache = cache or folder_cache(out, config, (*CELL_INDEPENDENT, CELLS_LISTED_BY, *one_worker))
    baselines = experiment_baselines(teacher, config, cache)
    teacher_return = baselines["teacher_greedy" if budgets["deterministic_eval"] else "teacher_sampled"]
    threshold = baselines["random"] + 0.95 * (teacher_return - baselines["random"])
    n_runs = len(config.drivers) * config.n_seeds
    bar = progress_bar(n_runs * config.n_rounds, "compare-drivers", enabled=config.progress_bar, unit="rounds")
    # rounds tick the bar here; a Ray task's rounds cannot reach it, its run's end does
    on_round = (lambda _: bar.update(1)) if _cells_backend(config) == "local" else None
    cells = [
        (f"{driver}-seed{seed}", functools.partial(_drive_one, teacher, driver, schedules[driver], seed, config, online, budgets, out, on_round))
        for driver in config.drivers
        for seed in range(config.seed, config.seed + config.n_seeds)
    ]  # fmt: skip
    n_done = 0

    def run_done(name: str) -> None:
        nonlocal n_done
        n_done += 1
        bar.advance_to(n_done * config.n_rounds)  # a cached run reports no rounds

    runs = run_cells(cells, cache, backend=_cells_backend(config), address=config.ray_address, on_done=run_done)
    bar.close()
    results = {driver: _driver_results(driver, runs, threshold) for driver in config.drivers}
    summary = {
        "env_id": teacher.recipe.env_id,
        "teacher": teacher.source,
        "teacher_algo": teacher.algo,
        **{k: v for k, v in baselines.items() if not k.endswith("_returns")},
        "teacher_return": teacher_return,
        "threshold": threshold,
        "n_seeds": config.n_seeds,
        "online": dataclasses.asdict(online),
        "schedules": {d: repr(schedules[d]) for d in config.drivers},
        "curves": {driver: curve for driver, (curve, _, _) in results.items()},
        "reach": {driver: reach for driver, (_, reach, _) in results.items()},
        "runs": runs,
        "n_eval_episodes": config.n_eval_episodes,
        "out_dir": str(out),
        "defaults": budgets["defaults"],
    }
    write_json_atomic(out / "summary.json", summary)
    write_csv(out / "drivers.csv", [row for _, _, rows in results.values() for row in rows])
    write_text_atomic(out / "drivers.md", drivers_markdown(summary))
    plot_drivers(summary, out / "drivers.png")
    return summary


def drivers_markdown(summary: dict[str, Any]) -> str:
    """Labels-to-95 % table and the return-vs-labels table, as Markdown."""
    o = summary["online"]
    lines = [
        f"{summary['env_id']}: {summary['teacher_algo']} teacher `{summary['teacher']}` (return "
        f"{summary['teacher_return']:.1f}; uniform random {summary['random']:.1f}). {o['n_rounds']} rounds × "
        f"{o['n_transitions_per_round']:,} labelled transitions, {o['n_updates_per_round']:,} updates per round, "
        f"buffer keeps the last {o['capacity']:,}; {summary['n_seeds']} seeds, {summary['n_eval_episodes']} "
        "evaluation episodes after each round.",
        "",
        f"Threshold: 95 % of the teacher with random = 0 %, i.e. return ≥ {summary['threshold']:.1f}.",
        "",
        "| driver | β schedule | labels to 95 % (mean curve) | labels to 95 % (per seed) | final return [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    for driver, curve in summary["curves"].items():
        reach = summary["reach"][driver]
        fmt = lambda n: "not reached" if n is None else f"{n:,}"  # noqa: E731
        m, lo, hi = curve["return"][-1]
        lines.append(
            f"| {driver} | {summary['schedules'][driver]} | {fmt(reach['mean_curve'])} | "
            f"{', '.join(fmt(n) for n in reach['per_seed'])} | {m:.1f} [{lo:.1f}, {hi:.1f}] |"
        )
    drivers = list(summary["curves"])
    lines += [
        "",
        "Student return after each round, mean [95 % CI] over seeds:",
        "",
        "| teacher labels | " + " | ".join(drivers) + " |",
        "|---|" + "---|" * len(drivers),
    ]
    for i, n in enumerate(summary["curves"][drivers[0]]["n_labels"]):
        cells = [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" for m, lo, hi in (summary["curves"][d]["return"][i] for d in drivers)]
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
