"""Online distillation: who drives the env while the teacher labels, round after round.

A round collects ``n_transitions_per_round`` transitions with the current student and that
round's beta (per env step the teacher acts with probability beta, the student otherwise), appends
them to a ring buffer that keeps the most recent ``capacity`` transitions, runs
``n_updates_per_round`` Trainer updates on that buffer, then evaluates the student.

Drivers: ``teacher`` (beta = 1), ``student`` (beta = 0, on-policy distillation: the teacher only
labels) and ``dagger`` (beta from a decaying schedule). Targets are always the teacher's: the
buffer stores the teacher's outputs at every visited state whoever drove; the driver's action goes
to the ``actions`` column, which no loss reads.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import RolloutCursor, collect_rollouts
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import write_json_atomic, write_text_atomic
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, ReturnStats, episode_returns
from policykd.jobs.resolve import check_teacher_score, resolve_teacher
from policykd.jobs.sweep import (
    RunCache,
    check_out_dir,
    check_positive_int,
    mean_ci,
    no_cache,
    student_for,
    teacher_baselines,
    write_csv,
)
from policykd.learn.logging import MetricLogger, NullLogger, TensorBoardLogger
from policykd.learn.losses import make_loss
from policykd.learn.students import Student
from policykd.learn.trainer import LossFn, Trainer, TrainerConfig
from policykd.zoo.presets import load_preset

BetaSchedule = Callable[[int], float]  # round index (0, 1, ...) -> probability that the teacher acts
DRIVERS: tuple[str, ...] = ("teacher", "student", "dagger")


def check_beta(beta: Any, what: str = "beta") -> float:
    """``beta`` as a float; PolicyKDError unless it lies in [0, 1] (NaN is refused)."""
    try:
        value = float(beta)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise PolicyKDError(f"{what} must be a probability in [0, 1], got {beta!r}; e.g. 1 = the teacher drives")
    return value


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PolicyKDError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ConstantBeta:
    """beta is the same every round: 1 is teacher-driven, 0 on-policy (student-driven)."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        check_beta(self.beta)

    def __call__(self, round_index: int) -> float:
        return float(self.beta)


@dataclasses.dataclass(frozen=True)
class LinearBeta:
    """beta falls linearly from ``start`` at round 0 to ``end`` at round ``n_rounds`` and stays
    there. imitation's ``LinearBetaSchedule(rampdown_rounds)`` is ``LinearBeta(rampdown_rounds)``."""

    n_rounds: int
    start: float = 1.0
    end: float = 0.0

    def __post_init__(self) -> None:
        _check_int("the linear schedule's n_rounds", self.n_rounds, 1)
        check_beta(self.start, "the schedule's start beta")
        check_beta(self.end, "the schedule's end beta")

    def __call__(self, round_index: int) -> float:
        fraction = min(max(round_index, 0) / self.n_rounds, 1.0)
        return float(self.start + fraction * (self.end - self.start))


@dataclasses.dataclass(frozen=True)
class ExponentialBeta:
    """beta = ``start * decay ** round``. imitation's ``ExponentialBetaSchedule(p)`` is
    ``ExponentialBeta(p)``."""

    decay: float
    start: float = 1.0

    def __post_init__(self) -> None:
        check_beta(self.decay, "the exponential schedule's decay")
        check_beta(self.start, "the schedule's start beta")

    def __call__(self, round_index: int) -> float:
        return float(self.start * self.decay ** max(round_index, 0))


def parse_schedule(spec: str) -> BetaSchedule:
    """A schedule from text: ``teacher`` (beta 1), ``student`` (beta 0), ``constant:B``,
    ``linear:N`` (1 -> 0 over N rounds) or ``exponential:D`` (beta = D ** round)."""
    name, _, arg = str(spec).partition(":")
    try:
        if name == "teacher" and not arg:
            return ConstantBeta(1.0)
        if name == "student" and not arg:
            return ConstantBeta(0.0)
        if name == "constant":
            return ConstantBeta(float(arg))
        if name == "linear":
            return LinearBeta(int(arg))
        if name in ("exponential", "exp"):
            return ExponentialBeta(float(arg))
    except ValueError:
        pass
    raise PolicyKDError(
        f"cannot read the beta schedule {spec!r}; use teacher, student, constant:0.5, linear:5 or exponential:0.5"
    )


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    n_rounds: int = 10
    """Collection + training rounds."""
    n_transitions_per_round: int = 5_000
    """Teacher-labelled transitions collected per round (rounded up to whole vector steps)."""
    n_updates_per_round: int = 500
    """Gradient steps after each collection round."""
    capacity: int = 50_000
    """Ring buffer size: training always sees the most recent ``capacity`` transitions."""
    n_envs: int = 8
    batch_size: int = 256
    learning_rate: float = 1e-3
    deterministic_drivers: bool = True
    """Teacher and student act greedily while driving; False samples from their policies."""
    log_every: int = 100
    seed: int = 0
    """Seeds the env, the beta coin flips, sampling and the student's actions."""

    def __post_init__(self) -> None:
        for name in ("n_rounds", "n_transitions_per_round", "n_updates_per_round", "capacity", "n_envs", "log_every"):
            _check_int(name, getattr(self, name), 1)


@dataclasses.dataclass(frozen=True)
class RoundRecord:
    round: int
    beta: float
    n_labels: int
    """Teacher labels used so far: every collected transition is one teacher query."""
    n_teacher_steps: int
    """Of those, the steps the teacher drove."""
    buffer_size: int
    share_teacher: float
    """Fraction of the buffer's transitions the teacher drove (after this round's collection)."""
    share_student: float
    student_return: float | None
    """Evaluation after this round's training (None without an evaluator)."""
    driver_return: float | None
    """Mean return of the episodes that ended while collecting this round (NaN-free: None if none)."""
    train_metrics: dict[str, float]


@dataclasses.dataclass
class OnlineResult:
    student: Student
    buffer: LabelledBuffer
    rounds: list[RoundRecord]

    def to_json(self) -> dict[str, Any]:
        return {"rounds": [dataclasses.asdict(r) for r in self.rounds]}


def return_evaluator(
    recipe: EnvRecipe, n_episodes: int, seed: int, deterministic: bool = True
) -> Callable[[Student], float]:
    """``evaluate(student) -> mean return`` over the same ``n_episodes`` episodes every call."""

    def evaluate(student: Student) -> float:
        rng = np.random.default_rng(seed)
        returns = episode_returns(lambda o: student.act(o, deterministic, rng), recipe, n_episodes, seed=seed)
        return float(returns.mean())

    return evaluate


def train_online(
    teacher: Teacher,
    student: Student,
    loss_fn: LossFn,
    schedule: BetaSchedule,
    *,
    config: OnlineConfig,
    evaluate: Callable[[Student], float] | None = None,
    logger: MetricLogger | None = None,
    temperature: float | None = None,
    venv: Any = None,
) -> OnlineResult:
    """Alternate collection rounds (driver mixture ``schedule(round)``) and training rounds.

    ``venv`` defaults to ``n_envs`` copies of the teacher's env seeded ``config.seed``; episodes
    run on across rounds (no reset between them). ``temperature`` goes to the Trainer (None: the
    loss's). Logs ``online/beta``, ``online/n_labels`` and ``eval/student_return`` per round at the
    global update count, next to the Trainer's own tags.
    """
    logger = logger or NullLogger()
    owns_venv = venv is None
    venv = make_vec_env(teacher.recipe, config.n_envs, config.seed) if owns_venv else venv
    rng = np.random.default_rng(config.seed)
    cursor = RolloutCursor()
    act_rng = np.random.default_rng(config.seed + 1)

    def student_act(obs: np.ndarray) -> np.ndarray:
        return student.act(obs, config.deterministic_drivers, act_rng)

    trainer_config = TrainerConfig(
        n_updates=config.n_updates_per_round,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        temperature=temperature,
        log_every=config.log_every,
        seed=config.seed,
        progress_bar=False,
    )
    ring: LabelledBuffer | None = None
    trainer: Trainer | None = None
    rounds: list[RoundRecord] = []
    n_labels = n_teacher_steps = 0
    try:
        for index in range(config.n_rounds):
            beta = check_beta(schedule(index), f"the schedule's beta at round {index}")
            student.eval()
            chunk, stats = collect_rollouts(
                venv,
                [teacher],
                config.n_transitions_per_round,
                rng=rng,
                student_act=student_act,
                beta=beta,
                deterministic=config.deterministic_drivers,
                cursor=cursor,
            )
            if ring is None:
                ring = LabelledBuffer(config.capacity, meta={"env_id": teacher.recipe.env_id}, **chunk.layout())
                trainer = Trainer(student, loss_fn, ring, config=trainer_config, logger=logger)
            assert trainer is not None
            ring.extend(chunk)
            n_labels += stats.n_transitions
            n_teacher_steps += stats.n_teacher_steps
            metrics = trainer.train()
            student_return = evaluate(student) if evaluate is not None else None
            shares = ring.driver_shares()
            returns = stats.episode_returns
            rounds.append(
                RoundRecord(
                    round=index,
                    beta=beta,
                    n_labels=n_labels,
                    n_teacher_steps=n_teacher_steps,
                    buffer_size=len(ring),
                    share_teacher=shares["teacher"],
                    share_student=shares["student"],
                    student_return=student_return,
                    driver_return=float(np.mean(returns)) if returns else None,
                    train_metrics={k: v for k, v in metrics.items() if k not in ("charts/SPS", "train/wall_time_s")},
                )
            )
            logged = {"online/beta": beta, "online/n_labels": float(n_labels)}
            if student_return is not None:
                logged["eval/student_return"] = student_return
            logger.log(logged, trainer.n_updates_done)
    finally:
        if owns_venv:
            venv.close()
    assert ring is not None
    student.eval()
    return OnlineResult(student=student, buffer=ring, rounds=rounds)


# -- the drivers comparison -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DriversConfig:
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
    teacher_check: bool = True


def _drive_one(
    teacher: Teacher,
    driver: str,
    schedule: BetaSchedule,
    seed: int,
    config: DriversConfig,
    online: OnlineConfig,
    budgets: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    """One (driver, seed) online run; JSON-able rounds."""
    loss = config.loss or ("mse" if teacher.kind == "deterministic" else "kl")
    loss_fn = make_loss(loss, teacher.kind, temperature=config.temperature)
    tb_dir = out / "tb" / f"{driver}-seed{seed}"
    shutil.rmtree(tb_dir, ignore_errors=True)
    logger = TensorBoardLogger(tb_dir)
    eval_seed = config.seed + EVAL_SEED_OFFSET  # every driver and seed plays the same evaluation episodes
    try:
        logger.log_hparams({"driver": driver, "schedule": repr(schedule), "loss": loss, **dataclasses.asdict(online)})
        result = train_online(
            teacher,
            student_for(teacher, budgets["hidden_sizes"], seed),
            loss_fn,
            schedule,
            config=dataclasses.replace(online, seed=seed),
            logger=logger,
            temperature=config.temperature,
            evaluate=return_evaluator(teacher.recipe, config.n_eval_episodes, eval_seed, budgets["deterministic"]),
        )
    finally:
        logger.close()
    return {"driver": driver, "seed": seed, "schedule": repr(schedule), **result.to_json()}


def labels_to_reach(n_labels: Sequence[int], returns: Sequence[float], threshold: float) -> int | None:
    """The first label count whose return is >= ``threshold``; None if none is."""
    return next((int(n) for n, r in zip(n_labels, returns) if r >= threshold), None)


def compare_drivers(config: DriversConfig, *, cache: RunCache | None = None) -> dict[str, Any]:
    """Run every driver for ``n_seeds`` seeds with the same label budget per round and write
    ``drivers.md``, ``drivers.csv``, ``drivers.png``, ``summary.json`` and ``tb/<driver>-seed<s>/``
    into ``config.out_dir``. The threshold is 95 % of the teacher, normalised so that a uniform
    random policy is 0 %: ``random + 0.95 * (teacher - random)``. Returns the summary."""
    from policykd.jobs.plots import plot_drivers  # matplotlib is an optional dependency

    unknown = [d for d in config.drivers if d not in DRIVERS]
    if not config.drivers or unknown:
        raise PolicyKDError(f"unknown or no drivers {unknown or []}; choose from {', '.join(DRIVERS)}")
    for flag, value in (
        ("--seeds", config.n_seeds),
        ("--eval-episodes", config.n_eval_episodes),
        ("--rounds", config.n_rounds),
        ("--round-transitions", config.n_transitions_per_round),
        ("--round-updates", config.n_updates_per_round),
        ("--capacity", config.capacity or 1),
    ):
        check_positive_int(flag, value)
    check_out_dir(config.out_dir)
    schedules = {
        "teacher": ConstantBeta(1.0),
        "student": ConstantBeta(0.0),
        "dagger": parse_schedule(config.dagger_schedule or f"linear:{max(config.n_rounds // 2, 1)}"),
    }
    teacher = resolve_teacher(config.teacher, config.env_id)
    preset = load_preset(teacher.recipe.env_id)

    def pick(value: Any, key: str) -> Any:
        return preset[key] if value is None else value

    budgets = {
        "hidden_sizes": pick(config.hidden_sizes, "hidden_sizes"),
        "deterministic": bool(preset["deterministic_eval"]),
    }
    online = OnlineConfig(
        n_rounds=config.n_rounds,
        n_transitions_per_round=config.n_transitions_per_round,
        n_updates_per_round=config.n_updates_per_round,
        n_envs=pick(config.n_envs, "n_envs"),
        capacity=config.capacity or config.n_rounds * config.n_transitions_per_round,
        batch_size=pick(config.batch_size, "batch_size"),
        learning_rate=pick(config.learning_rate, "learning_rate"),
        deterministic_drivers=config.deterministic_drivers,
        seed=config.seed,
    )
    TrainerConfig(batch_size=online.batch_size, learning_rate=online.learning_rate)  # validates both now
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or no_cache
    eval_seed = config.seed + EVAL_SEED_OFFSET
    baselines = cache("teacher", functools.partial(teacher_baselines, teacher, config.n_eval_episodes, eval_seed))
    if config.teacher_check:
        check_teacher_score(teacher, ReturnStats.of(baselines["teacher_greedy_returns"]))
    teacher_return = baselines["teacher_greedy" if budgets["deterministic"] else "teacher_sampled"]
    threshold = baselines["random"] + 0.95 * (teacher_return - baselines["random"])
    runs = [
        cache(
            f"{driver}-seed{seed}",
            functools.partial(_drive_one, teacher, driver, schedules[driver], seed, config, online, budgets, out),
        )
        for driver in config.drivers
        for seed in range(config.seed, config.seed + config.n_seeds)
    ]
    curves, reach, csv_rows = {}, {}, []
    for driver in config.drivers:
        mine = [r for r in runs if r["driver"] == driver]
        n_labels = [rec["n_labels"] for rec in mine[0]["rounds"]]
        per_round = [mean_ci([r["rounds"][i]["student_return"] for r in mine]) for i in range(len(n_labels))]
        curves[driver] = {"n_labels": n_labels, "return": per_round}
        per_seed = [labels_to_reach(n_labels, [rec["student_return"] for rec in r["rounds"]], threshold) for r in mine]
        reach[driver] = {
            "mean_curve": labels_to_reach(n_labels, [m for m, _, _ in per_round], threshold),
            "per_seed": per_seed,
        }
        for i, (m, lo, hi) in enumerate(per_round):
            rec = mine[0]["rounds"][i]
            csv_rows.append(
                {
                    "driver": driver,
                    "round": i,
                    "n_labels": n_labels[i],
                    "beta": rec["beta"],
                    "share_teacher": float(np.mean([r["rounds"][i]["share_teacher"] for r in mine])),
                    "return_mean": m,
                    "return_ci_low": lo,
                    "return_ci_high": hi,
                }
            )
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
        "curves": curves,
        "reach": reach,
        "runs": runs,
        "n_eval_episodes": config.n_eval_episodes,
        "out_dir": str(out),
    }
    write_json_atomic(out / "summary.json", summary)
    write_csv(out / "drivers.csv", csv_rows)
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
