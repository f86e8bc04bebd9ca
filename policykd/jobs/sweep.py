"""The temperature sweep: collect ONE teacher-labelled buffer, distil one student per (tau, seed)
from it (the buffer stores raw teacher outputs, so tau is applied at training time), and write a
table (Markdown + CSV) with one row per tau, PNG plots against tau, and one TensorBoard run per
(tau, seed).

Temperature (targets.soften): discrete teachers give softmax(logits / tau) (or softmax(Q / tau));
Gaussian teachers (PPO on Box, SAC) keep their mean and have their standard deviation multiplied
by tau. Deterministic teachers (TD3 / DDPG) have no temperature and are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policykd.data.buffers import LabelledBuffer
from policykd.data.envs import EnvRecipe
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.fileio import write_csv, write_json_atomic, write_text_atomic
from policykd.jobs.collect import collect
from policykd.jobs.config import CollectConfig
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, evaluate_policy, mean_ci
from policykd.jobs.experiment import (
    ExperimentOptions,
    RunCache,
    cell_cache,
    check_experiment_config,
    experiment_baselines,
    experiment_budgets,
    experiment_folder,
    run_logger,
    student_for,
)
from policykd.jobs.ray_backend import run_cells
from policykd.jobs.resolve import (
    check_batch_size,
    check_exploration,
    check_hidden_sizes,
    resolve_budgets,
    resolve_teacher,
)
from policykd.learn.logging import hparams_of
from policykd.learn.losses import make_loss
from policykd.learn.metrics import distill_metrics
from policykd.learn.students import Student
from policykd.learn.targets import check_temperature, soften, student_kind_for
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.progress import progress_bar

DEFAULT_TEMPERATURES: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0)
# The field that lists the sweep's cells: a rerun with more or fewer taus reuses the cells it shares
CELLS_LISTED_BY = "temperatures"


@dataclasses.dataclass(frozen=True)
class SweepConfig(ExperimentOptions):
    teacher: str | None = None
    """Teacher source (default: the env preset's expert)."""
    env_id: str | None = None
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    n_seeds: int = 3
    """Students per temperature (seeds ``seed, seed + 1, ...``); all learn from the same buffer."""
    n_transitions: int | None = None
    n_envs: int | None = None
    epsilon: float | None = None
    action_noise: float | None = None
    temperature_on: str = "teacher"
    kl_direction: str = "forward"
    hidden_sizes: tuple[int, ...] | None = None
    n_updates: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    n_eval_episodes: int = 10
    """Episodes per evaluation (greedy and sampled), on seeds collection never used."""
    n_bins: int = 8
    """Bins per observation dimension for the state-visitation entropy."""
    max_grid_dims: int = 4
    """Observations with more dimensions use the episode-return spread instead."""
    n_metric_states: int = 10_000
    """Buffer states that entropies, KL and agreement are measured on."""
    seed: int = 0
    out_dir: str = "runs/sweep"


def check_sweep_config(config: SweepConfig) -> tuple[float, ...]:
    """Refuse bad input before anything runs; returns the temperatures as floats."""
    if not isinstance(config.temperatures, (tuple, list)):
        raise PolicyKDError(f"temperatures must be a list of numbers, got {config.temperatures!r}")
    if not config.temperatures:
        raise PolicyKDError("the temperature list is empty; pass at least one, e.g. --temperatures 0.1 1 5")
    temperatures = tuple(check_temperature(tau) for tau in config.temperatures)
    if len(set(temperatures)) != len(temperatures):
        raise PolicyKDError(f"temperatures {list(config.temperatures)} repeat a value; list each tau once")
    check_experiment_config(
        config,
        (
            ("--bins", config.n_bins, 2),
            ("max_grid_dims", config.max_grid_dims, 0),
            ("n_metric_states", config.n_metric_states, 1),
        ),
    )
    return temperatures


# -- exploration --------------------------------------------------------------------------------


def grid_bounds(observations: np.ndarray, quantile: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension ``(low, high)`` ``(D,)`` of a grid over observations ``(N, *obs_shape)``:
    their ``quantile`` and ``1 - quantile`` quantiles (so a few outliers don't stretch the grid)."""
    flat = np.asarray(observations, dtype=np.float64).reshape(len(observations), -1)
    low, high = np.quantile(flat, [quantile, 1.0 - quantile], axis=0)
    return low, np.where(high > low, high, low + 1e-6)


def visitation_entropy(states: np.ndarray, low: np.ndarray, high: np.ndarray, n_bins: int) -> float:
    """Plug-in entropy (nats) of the visit histogram of ``states (N, *obs_shape)`` over ``n_bins``
    equal bins per dimension between ``low`` and ``high`` ``(D,)``; values outside fall into the
    edge bins. 0 when every state is in one cell, at most ``D * log(n_bins)``."""
    flat = np.asarray(states, dtype=np.float64).reshape(len(states), -1)
    if len(flat) == 0:
        raise PolicyKDError("no visited states to measure; play at least one episode")
    cells = np.floor((flat - low) / (high - low) * n_bins).astype(np.int64).clip(0, n_bins - 1)
    counts = np.unique(cells, axis=0, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


# -- one student ----------------------------------------------------------------------------------


@torch.no_grad()
def buffer_metrics(student: Student, observations: torch.Tensor, raw: Any, temperature: float) -> dict[str, float]:
    """On buffer states ``(B, *obs_shape)`` with the teacher's raw output there: student entropy
    (as it acts), target entropy at tau, KL(teacher at tau = 1 || student), and top-1 agreement
    (discrete) or mean L2 gap of greedy actions (continuous)."""
    device = student.obs_mean.device  # the probe lives on the CPU; the student where it trained
    raw = raw._replace(**{k: v.to(device) for k, v in raw._asdict().items() if isinstance(v, torch.Tensor)})
    m = distill_metrics(student(observations.to(device)), soften(raw, temperature), soften(raw, 1.0))
    return {
        "student_entropy": m["student/entropy"],
        "target_entropy": m["teacher/entropy"],
        "kl_teacher": m["distill/kl_teacher_student"],
        "agreement": m["distill/action_agreement"],
    }


class _Recorder:
    """Acts as ``policy`` and keeps a copy of every observation it acts on (the visited states)."""

    def __init__(self, policy: Student) -> None:
        self.policy = policy
        self.visited: list[np.ndarray] = []

    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        self.visited.append(np.array(observations, copy=True))
        return self.policy.act(observations, deterministic, rng)


def _evaluate_student(
    student: Student, recipe: EnvRecipe, config: SweepConfig, grid: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, Any]:
    """Greedy and sampled returns on the evaluation episodes, and how widely the sampled episodes
    explore: the visitation entropy of their states on ``grid``, else the std of their returns."""
    eval_seed = config.seed + EVAL_SEED_OFFSET
    greedy = evaluate_policy(student, recipe, config.n_eval_episodes, seed=eval_seed)
    recorder = _Recorder(student)
    sampled = evaluate_policy(recorder, recipe, config.n_eval_episodes, seed=eval_seed, deterministic=False)
    if grid is not None:
        exploration = visitation_entropy(np.concatenate(recorder.visited), grid[0], grid[1], config.n_bins)
    else:
        exploration = sampled.std
    return {
        "return_greedy": greedy.mean,
        "return_sampled": sampled.mean,
        "exploration": exploration,
        "n_visited_states": int(sum(len(v) for v in recorder.visited)),
    }


def _distil_one(
    teacher: Teacher,
    buffer: LabelledBuffer,
    tau: float,
    seed: int,
    config: SweepConfig,
    budgets: dict[str, Any],
    probe: tuple[torch.Tensor, Any],
    grid: tuple[np.ndarray, np.ndarray] | None,
    out: Path,
) -> dict[str, Any]:
    """Distil one student at ``tau`` from ``buffer`` and measure it; JSON-able result."""
    started = time.perf_counter()
    loss_fn = make_loss(
        "kl", teacher.kind, temperature=tau, temperature_on=config.temperature_on, direction=config.kl_direction
    )
    trainer_config = TrainerConfig(
        n_updates=budgets["n_updates"],
        batch_size=budgets["batch_size"],
        learning_rate=budgets["learning_rate"],
        temperature=tau,
        seed=seed,
        progress_bar=False,
        device=str(teacher.device),
    )
    hparams = hparams_of(
        trainer_config,
        {
            "loss": "kl",
            "temperature_on": config.temperature_on,
            "kl_direction": config.kl_direction,
            "hidden_sizes": budgets["hidden_sizes"],
            "n_transitions": len(buffer),
            "n_eval_episodes": config.n_eval_episodes,
            "teacher": teacher.source,
        },
    )
    with run_logger(out, f"tau{tau:g}-seed{seed}", hparams) as logger:
        student = student_for(teacher, budgets["hidden_sizes"], seed, budgets["cnn_width"])
        Trainer(student, loss_fn, buffer, config=trainer_config, logger=logger).train()
        result = {"tau": tau, "seed": seed, **buffer_metrics(student, probe[0], probe[1], tau)}
        result.update(_evaluate_student(student, teacher.recipe, config, grid))
        result["wall_time_s"] = time.perf_counter() - started
        logger.log(
            {
                "eval/student_return": result["return_greedy"],
                "eval/student_return_sampled": result["return_sampled"],
                "eval/exploration": result["exploration"],
            },
            budgets["n_updates"],
        )
    return result


# -- the sweep ----------------------------------------------------------------------------------

METRICS: tuple[str, ...] = (
    "return_greedy",
    "return_sampled",
    "student_entropy",
    "target_entropy",
    "kl_teacher",
    "agreement",
    "exploration",
)


def metric_labels(discrete: bool, grid: bool, n_bins: int) -> dict[str, str]:
    """Column titles of the sweep table, in METRICS order."""
    return {
        "return_greedy": "student return (greedy)",
        "return_sampled": "student return (sampled)",
        "student_entropy": "student entropy (nats)",
        "target_entropy": "target entropy at τ (nats)",
        "kl_teacher": "KL(teacher at τ=1 ‖ student)",
        "agreement": "top-1 agreement" if discrete else "greedy action gap (L2)",
        "exploration": f"state-visitation entropy, {n_bins} bins/dim (nats)" if grid else "sampled return std",
    }


def _sweep_buffer(config: SweepConfig, teacher: Teacher, n_transitions: int, out: Path) -> LabelledBuffer:
    """Collect the one buffer, or reuse ``out/buffer.npz`` if an earlier run with the same
    collection settings wrote it (an interrupted sweep resumes on the same data)."""
    settings = {
        "teacher": teacher.source,
        "env_id": teacher.recipe.env_id,
        "n_transitions": n_transitions,
        "n_envs": config.n_envs,
        "epsilon": config.epsilon,
        "action_noise": config.action_noise,
        "seed": config.seed,
    }
    path = out / "buffer.npz"
    if path.is_file():
        buffer = LabelledBuffer.load(path)
        if buffer.meta.get("sweep_collect") == settings:
            return buffer
    buffer, _, _ = collect(_collect_config(config, teacher, n_transitions), [teacher])
    buffer.meta["sweep_collect"] = settings
    buffer.save(path)
    return buffer


def _collect_config(config: SweepConfig, teacher: Teacher, n_transitions: int) -> CollectConfig:
    return CollectConfig(
        teacher=teacher.source,
        env_id=teacher.recipe.env_id,
        n_transitions=n_transitions,
        n_envs=config.n_envs,
        epsilon=config.epsilon,
        action_noise=config.action_noise,
        seed=config.seed,
        progress_bar=config.progress_bar,
    )


def _resolve_sweep(config: SweepConfig) -> tuple[tuple[float, ...], Teacher, dict[str, Any]]:
    """Refuse bad input, load the teacher and fill the budgets from its env's preset, all before
    minutes are spent or anything is written. Returns the temperatures, the teacher and the budgets."""
    temperatures = check_sweep_config(config)
    options = {"trust_pickles": config.trust_pickles, "zoo_dir": config.zoo_dir, "device": config.device}
    teacher = resolve_teacher(config.teacher, config.env_id, **options)
    if student_kind_for(teacher.kind) == "deterministic":
        raise PolicyKDError(
            f"{teacher.source} is a deterministic ({teacher.algo}) teacher: it has no temperature to "
            "sweep; pick a PPO, A2C, DQN, QR-DQN or SAC expert"
        )
    # the preset's budgets where the config leaves them, and distill's student for this teacher
    budgets = experiment_budgets(teacher, config, ("n_transitions", "n_updates", "batch_size"))
    TrainerConfig(
        n_updates=budgets["n_updates"], batch_size=budgets["batch_size"], learning_rate=budgets["learning_rate"]
    )  # validates them
    collect_config = _collect_config(config, teacher, budgets["n_transitions"])
    check_exploration(collect_config, teacher)
    collection = resolve_budgets(teacher.recipe.env_id, collect_config)  # the collection options, checked now
    check_hidden_sizes(budgets["hidden_sizes"])
    check_batch_size(budgets["batch_size"], collection.n_transitions)
    make_loss("kl", teacher.kind, temperature_on=config.temperature_on, direction=config.kl_direction)
    return temperatures, teacher, budgets


def _probe(
    buffer: LabelledBuffer, config: SweepConfig
) -> tuple[tuple[torch.Tensor, Any], tuple[np.ndarray, np.ndarray] | None]:
    """The buffer states the metrics are measured on (with the teacher's raw outputs there), and the
    grid of the visitation entropy (None for observations of more than ``max_grid_dims`` dimensions)."""
    indices = np.sort(np.random.default_rng(config.seed).permutation(len(buffer))[: config.n_metric_states])
    probe_batch = buffer.batch_at(indices)
    use_grid = len(buffer.observation_shape) == 1 and buffer.observation_shape[0] <= config.max_grid_dims
    grid = grid_bounds(buffer.column("observations")) if use_grid else None
    return (probe_batch.observations, probe_batch.teacher_outputs[0]), grid


def run_sweep(config: SweepConfig, *, cache: RunCache | None = None) -> dict[str, Any]:
    """Run the sweep and write ``sweep.md``, ``sweep.csv``, ``runs.csv``, ``summary.json``,
    ``sweep.png`` (one panel per metric) and ``tb/tau<t>-seed<s>/`` into
    ``config.out_dir``. ``cache(name, run)`` may return a stored result of ``run()`` (resume);
    by default the finished cells are kept in ``out_dir/cells/`` (``experiment.folder_cache``), so
    rerunning a stopped sweep computes only the cells it had not finished. Returns the summary
    (also in ``summary.json``)."""
    temperatures, teacher, budgets = _resolve_sweep(config)
    with experiment_folder(config, "sweep") as out:
        return _sweep_in(out, config, temperatures, teacher, budgets, cache)


def _sweep_in(
    out: Path,
    config: SweepConfig,
    temperatures: tuple[float, ...],
    teacher: Teacher,
    budgets: dict[str, Any],
    cache: RunCache | None,
) -> dict[str, Any]:
    from policykd.jobs.plots import plot_sweep

    cache = cache or cell_cache(out, config, CELLS_LISTED_BY)
    baselines = experiment_baselines(teacher, config, cache)
    buffer = _sweep_buffer(config, teacher, budgets["n_transitions"], out)
    probe, grid = _probe(buffer, config)
    cells = [
        (f"tau{tau:g}-seed{seed}", functools.partial(_distil_one, teacher, buffer, tau, seed, config, budgets, probe, grid, out))
        for tau in temperatures
        for seed in range(config.seed, config.seed + config.n_seeds)
    ]  # fmt: skip
    bar = progress_bar(len(cells), "sweep", enabled=config.progress_bar, unit="runs")
    runs = run_cells(cells, cache, backend=config.backend, address=config.ray_address, on_done=lambda _: bar.update(1))
    bar.close()
    rows = []
    for tau in temperatures:
        cell = [r for r in runs if r["tau"] == tau]
        rows.append({"tau": tau, "n_seeds": len(cell), **{key: mean_ci([r[key] for r in cell]) for key in METRICS}})
    discrete = student_kind_for(teacher.kind) == "discrete"
    summary = {
        "env_id": teacher.recipe.env_id,
        "teacher": teacher.source,
        "teacher_algo": teacher.algo,
        "teacher_kind": teacher.kind,
        **{k: v for k, v in baselines.items() if not k.endswith("_returns")},
        "temperatures": list(temperatures),
        "n_seeds": config.n_seeds,
        "n_transitions": len(buffer),
        "epsilon": buffer.meta.get("epsilon") or 0.0,
        "action_noise": buffer.meta.get("action_noise") or 0.0,
        "n_updates": budgets["n_updates"],
        "batch_size": budgets["batch_size"],
        "hidden_sizes": list(budgets["hidden_sizes"]),
        "defaults": budgets["defaults"],
        "n_eval_episodes": config.n_eval_episodes,
        "temperature_on": config.temperature_on,
        "kl_direction": config.kl_direction,
        "labels": metric_labels(discrete, grid is not None, config.n_bins),
        "rows": rows,
        "runs": runs,
        "out_dir": str(out),
    }
    _write_sweep(out, summary)
    plot_sweep(summary, out / "sweep.png")
    return summary


def _write_sweep(out: Path, summary: dict[str, Any]) -> None:
    """``summary.json``, ``sweep.csv`` (one row per tau), ``runs.csv`` (one per run) and ``sweep.md``."""
    write_json_atomic(out / "summary.json", summary)
    write_csv(
        out / "sweep.csv",
        [
            {
                "tau": r["tau"],
                "n_seeds": r["n_seeds"],
                **{
                    f"{key}_{part}": value
                    for key in METRICS
                    for part, value in zip(("mean", "ci_low", "ci_high"), r[key])
                },
            }
            for r in summary["rows"]
        ],
    )
    write_csv(out / "runs.csv", summary["runs"])
    write_text_atomic(out / "sweep.md", sweep_markdown(summary))


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}"


def sweep_markdown(summary: dict[str, Any]) -> str:
    """The sweep table with the definitions a reader needs, as Markdown."""
    labels = summary["labels"]
    gaussian = summary["teacher_kind"] in ("gaussian", "squashed_gaussian")
    tau_text = (
        (
            "τ multiplies the teacher's standard deviation (the mean is kept); entropies and the action gap "
            + (
                "are those of the pre-tanh Gaussian"
                if summary["teacher_kind"] == "squashed_gaussian"
                else "are in action units"
            )
        )
        if gaussian
        else "target = softmax(teacher scores / τ)"
    )
    header = ["τ", *labels.values()]
    noise = (f" with ε-greedy ε = {summary['epsilon']:g}" if summary.get("epsilon") else "") + (
        f" with Gaussian action noise {summary['action_noise']:g} × half range" if summary.get("action_noise") else ""
    )
    lines = [
        f"{summary['env_id']}: {summary['teacher_algo']} teacher ({summary['teacher_kind']}) `{summary['teacher']}`, "
        f"one buffer of {summary['n_transitions']:,} transitions driven by the greedy teacher{noise}; per (τ, seed) "
        f"a student {summary['hidden_sizes']} trained {summary['n_updates']:,} updates × batch {summary['batch_size']} with "
        f"KL({'teacher' if summary['kl_direction'] == 'forward' else 'student'} ‖ …), "
        f"τ on {summary['temperature_on']}.",
        "",
        f"Temperature: {tau_text}. Cells: mean [95 % CI] over {summary['n_seeds']} seeds (Student t: wide for few "
        f"seeds, and it can leave a metric's range). Returns over "
        f"{summary['n_eval_episodes']} episodes; teacher greedy {summary['teacher_greedy']:.1f}, teacher sampled "
        f"{summary['teacher_sampled']:.1f}, uniform random {summary['random']:.1f}. Entropies, KL and agreement on "
        "buffer states; exploration from the sampled episodes' visited states.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in summary["rows"]:
        cells = [f"{_fmt(m)} [{_fmt(lo)}, {_fmt(hi)}]" for m, lo, hi in (row[key] for key in labels)]
        lines.append(f"| {row['tau']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
