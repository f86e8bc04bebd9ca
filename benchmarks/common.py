"""Shared by the benchmark scripts: the provenance block every results file starts with,
per-run result caching so an interrupted sweep resumes where it stopped, and the first-n-transitions
view of a buffer that data-budget curves train on."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from code_trace import CodeTrace, strip_docstrings

from policykd.data.buffers import LabelledBuffer
from policykd.fileio import read_json, write_json_atomic, write_text_atomic
from policykd.zoo.experts import package_versions
from policykd.zoo.layout import is_finished
from policykd.zoo.presets import ZOO_DIR

RESULTS_DIR = Path(__file__).resolve().parent / "results"
README = ZOO_DIR.parent / "README.md"
# env ids (prefixes) check_zoo --quick re-checks: classic control, a second or less per episode
# (LunarLander's DQN hovers up to 1,000 steps an episode; MuJoCo and Atari are slower still)
CLASSIC_ENVS = ("CartPole", "Acrobot", "Pendulum")
LIBRARY_DIR = ZOO_DIR.parent / "policykd"
CACHE_STAMP = "_cache"  # the key a cached cell keeps its fingerprints under
# the code each traced cell executed, by digest (benchmarks/code_trace.py)
CODE_TRACE = CodeTrace(LIBRARY_DIR, RESULTS_DIR / "code")
# cells this process read from cache that an older (or unrecorded) version of the library computed
STALE_CELLS: list[str] = []
REFRESH_STALE = False  # --refresh-stale: recompute the cached cells other library code computed, keep the rest


def provenance(command: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    return (
        f"- date: {datetime.date.today().isoformat()}\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}, no GPU used\n"
        f"- packages: {versions}\n"
        f"- command: `{command}`\n"
    )


def parse_quick_args(
    doc: str,
    quick_help: str | None = None,
    *,
    only_help: str | None = None,
    extra: Any = (),
    trace_code: bool = False,
) -> argparse.Namespace:
    """A benchmark's flags: --quick, and for a resumable sweep (``only_help`` given) --force and
    --only; ``extra``: the script's own, ``(flags, add_argument keywords)`` each. Also pins torch
    to one thread and runs from the repository root, as every benchmark does; ``trace_code``:
    stamp cached cells with the functions they ran (benchmarks/code_trace.py), for scripts whose
    published figures are not timings."""
    import torch

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if only_help is not None:
        parser.add_argument("--force", action="store_true", help="recompute cached cells")
        parser.add_argument("--only", default="", help=only_help)
    parser.add_argument(*REFRESH_OPTION[0], **REFRESH_OPTION[1])
    for flags, kwargs in extra:
        parser.add_argument(*flags, **kwargs)
    args = parser.parse_args()
    set_refresh_stale(args.refresh_stale)
    torch.set_num_threads(1)
    os.chdir(ZOO_DIR.parent)
    if trace_code:
        CODE_TRACE.start()
    return args


REFRESH_OPTION = (
    ("--refresh-stale",),
    dict(action="store_true", help="recompute the cached cells that other library code computed (resumable: "
         "a cell recomputed once is fresh), keep the others"),
)  # fmt: skip


def set_refresh_stale(on: bool) -> None:
    global REFRESH_STALE
    REFRESH_STALE = on


def results_name(name: str, quick: bool) -> str:
    """The stem of a script's results: ``name`` for a full run, ``name-quick`` for ``--quick``, so a
    quick run never overwrites the full run's files or cache."""
    return f"{name}-quick" if quick else name


def publish(name: str, text: str, *, quick: bool, readme_marker: str = "", readme_text: str = "") -> Path:
    """Write ``results/<name>[-quick].md`` (with ``stale_note()`` appended). A full run also
    regenerates the README section between ``readme_marker``'s markers; a quick run leaves the
    README quoting the full run."""
    path = RESULTS_DIR / f"{results_name(name, quick)}.md"
    traced = (
        "\n> Run under benchmarks/code_trace.py's profiler, which records the library code each cached cell ran: "
        "wall times here are about 1.2-1.4x those of an untraced run.\n"
        if CODE_TRACE.active
        else ""
    )
    write_text_atomic(path, text + traced + stale_note())
    if readme_marker and not quick:
        replace_between_markers(README, readme_marker, readme_text)
    print(f"wrote {path}" + (" and the README section" if readme_marker and not quick else ""), flush=True)
    return path


DEMO_CHECK = "cartpole-ppo-kl"  # distill_checks' bare `policykd distill`: the job `make demo` runs
DEMO_RUN_DIR = "runs/CartPole-v1/kl-tau1-seed0"  # where `make demo` writes its run (the check writes elsewhere)


def demo_output(summary: dict[str, Any]) -> str:
    """The README's ``make demo`` block for the summary of that job: what ``policykd distill``
    prints, by the CLI's own code fed ``summary`` instead of running the job again, with the run
    folder the demo uses."""
    import contextlib
    import io
    from unittest import mock

    from policykd import cli
    from policykd.jobs import distill as distill_job

    printed = io.StringIO()
    shown = {**summary, "out_dir": DEMO_RUN_DIR}
    with mock.patch.object(distill_job, "distill", lambda config: shown), contextlib.redirect_stdout(printed):
        cli.main(["distill"])
    return "```\n$ make demo\n" + printed.getvalue().strip("\n") + "\n```"


def publish_demo(summary: dict[str, Any], *, quick: bool) -> None:
    """Regenerate the README's ``make demo`` block (markers ``demo``) from the demo job's summary;
    a quick run leaves it quoting the full run."""
    if not quick:
        with CODE_TRACE.paused():  # rendering runs the CLI: it feeds no cell computed after it
            replace_between_markers(README, "demo", demo_output(summary))


@functools.cache  # the source does not change while a benchmark runs; hash it once, not per cell
def library_fingerprint() -> str:
    """A short hash of the library's code: a cached cell records the code that computed it.

    Each module is hashed as its syntax tree without docstrings, so comments, docstrings and
    formatting do not make cached cells stale; any change to what the code does does."""
    digest = hashlib.sha256()
    for path in sorted(LIBRARY_DIR.rglob("*.py")):
        digest.update(path.relative_to(LIBRARY_DIR).as_posix().encode() + b"\0" + code_of(path.read_text()).encode())
    return digest.hexdigest()[:12]


def code_of(source: str) -> str:
    """``source``'s syntax tree with docstrings removed, as text: equal for two sources that
    differ only in comments, docstrings or layout."""
    return ast.dump(strip_docstrings(ast.parse(source)))


# Fields that say how a run is executed, not what it computes.
RUN_ONLY_FIELDS = frozenset({"out_dir", "overwrite", "progress_bar", "resume", "checkpoint_every", "video",
                             "video_episodes", "zoo_dir", "backend", "ray_address"})  # fmt: skip
# A sweep benchmark's --backend: its cells as Ray tasks (a local Ray head, or the cluster RAY_ADDRESS names)
BACKEND_OPTION = (
    ("--backend",),
    dict(
        choices=("local", "ray"),
        default="local",
        help="run the cells here (default) or as Ray tasks: a local Ray head, "
        "or the cluster the RAY_ADDRESS environment variable names",
    ),
)
# DistillConfig's fields when the cached cells were first stamped (up to 2026-12-01), and the
# defaults that changed since: such a cell hashed every one of these fields.
LEGACY_FIELDS = {
    "DistillConfig": ("teacher", "env_id", "n_transitions", "n_envs", "epsilon", "action_noise", "seed",
                      "teacher_check", "teachers", "merge", "teacher_weights", "teacher_drive", "buffer", "loss",
                      "temperature", "temperature_on", "kl_direction", "tau2_scaling", "center_q", "nll_min_std",
                      "hidden_sizes", "cnn_width", "n_updates", "batch_size", "learning_rate", "n_eval_episodes",
                      "eval_every", "out_dir", "progress_bar"),
}  # fmt: skip
LEGACY_DEFAULTS = {"eval_every": 0, "loss": "kl"}
# Defaults that became None ("picked for the teacher") where the old value is what None resolves to
# for every run that could be cached (DistillConfig.loss: kl, or mse for a deterministic teacher,
# whose kl was refused): a cell that set the old default hashed without it, and still does.
FORMER_DEFAULTS = {"DistillConfig": {"loss": "kl"}}


def _hash(fields: Any) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_fingerprint(config: Any) -> str:
    """A short hash of what a run computes: a dataclass's fields that differ from their defaults
    (so a field added to a config later, left at its default, changes no cell's question), leaving
    out how it is executed (RUN_ONLY_FIELDS); or a JSON-able dict as it is."""
    if not dataclasses.is_dataclass(config):
        return _hash(config)
    former = FORMER_DEFAULTS.get(type(config).__name__, {})
    defaults = {f.name: (f.default, former.get(f.name, f.default)) for f in dataclasses.fields(config)}
    return _hash({name: getattr(config, name) for name, default in defaults.items()
                  if name not in RUN_ONLY_FIELDS and getattr(config, name) not in default})  # fmt: skip


def legacy_fingerprint(config: Any) -> str | None:
    """The hash a cell stamped before the fields of LEGACY_FIELDS changed holds for ``config``, or
    None when ``config`` sets a field added since (that cell answered another question)."""
    names = LEGACY_FIELDS.get(type(config).__name__) if dataclasses.is_dataclass(config) else None
    if names is None:
        return None
    added = [f for f in dataclasses.fields(config) if f.name not in names and f.name not in RUN_ONLY_FIELDS]
    if any(getattr(config, f.name) != f.default for f in added):
        return None
    fields = dataclasses.asdict(config)
    values = {name: fields[name] for name in names}
    values.update({k: v for k, v in LEGACY_DEFAULTS.items() if values.get(k) is None})
    return _hash(values)


def cached_run(
    cache_dir: Path,
    name: str,
    run: Callable[[], dict[str, Any]],
    force: bool = False,
    config: Any = None,
    traced: bool = True,
) -> dict[str, Any]:
    """``run()``'s result, read from ``cache_dir/name.json`` when an earlier invocation wrote it.

    Each cell records fingerprints of ``config`` and of the library code that computed it: the
    functions the process had executed by then (when it runs under ``CODE_TRACE`` and ``traced``),
    every function of the library modules it had loaded (``traced`` without the profiler), else
    (work done in other processes) the whole library; the first two with the env presets the process
    had looked up. A cell whose recorded config differs from ``config`` is recomputed (it answers
    another question). A cell whose code changed since is reused, since recomputing a sweep takes
    hours, but it is listed in ``STALE_CELLS`` and ``publish`` says so in the results file;
    ``--force`` recomputes. Pass ``traced=False`` when ``run`` hands the work to other processes."""
    path = cache_dir / f"{name}.json"
    stamp = {"library": library_fingerprint()}
    if config is not None:
        stamp["config"] = config_fingerprint(config)
    if path.is_file() and not force:
        result = json.loads(path.read_text())
        recorded = result.pop(CACHE_STAMP, {})
        if "config" in stamp and recorded.get("config", stamp["config"]) not in (
            stamp["config"],
            legacy_fingerprint(config),
        ):
            print(f"recomputing {path.name}: its configuration changed", flush=True)
        elif is_fresh(recorded):
            return result
        elif REFRESH_STALE:
            print(f"recomputing {path.name}: other library code computed it", flush=True)
        else:
            STALE_CELLS.append(_shown(path))
            return result
    here = traced and not runs_elsewhere(config)
    if here and not CODE_TRACE.active:
        CODE_TRACE.library  # hash the source before the cell runs: the stamp must describe the code that ran
        CODE_TRACE.watch_presets()
    result = run()
    if here:
        stamp["code"] = CODE_TRACE.stamp() if CODE_TRACE.active else CODE_TRACE.loaded_stamp()
    write_json_atomic(path, {**result, CACHE_STAMP: stamp})
    return result


def runs_elsewhere(config: Any) -> bool:
    """Whether ``config`` has part of its run done in other processes (Ray, collection workers,
    subprocess envs), where this process's profile cannot see the library code it runs."""
    return (
        getattr(config, "backend", "local") != "local"
        or getattr(config, "workers", 1) != 1
        or getattr(config, "vec_env", "dummy") == "subproc"
    )


def is_cached(path: Path) -> bool:
    """Whether ``cached_run`` would read the cell at ``path`` back rather than compute it (its
    config aside): it exists and is fresh, or stale cells are not being refreshed."""
    return path.is_file() and (not REFRESH_STALE or is_fresh(read_json(path).get(CACHE_STAMP, {})))


def is_fresh(stamp: dict[str, Any]) -> bool:
    """Whether the cell stamped ``stamp`` was computed by the library code there is now: the same
    library, or (for a traced cell) the same code in every function it executed."""
    if stamp.get("library") == library_fingerprint():
        return True
    return "code" in stamp and CODE_TRACE.changed(stamp["code"]) == []


class TaskCache:
    """``cached_run`` for the cells of one task, counting the cells this invocation computed, so
    that an invocation which only read the cache keeps the task's timing from the one that ran it.

    Called as ``cache(name, run, config=None)``: it fits wherever a ``RunCache`` is taken."""

    def __init__(self, cache_dir: Path, force: bool = False, traced: bool = True) -> None:
        self.cache_dir, self.force, self.traced = cache_dir, force, traced
        self.n_calls = self.n_computed = 0
        self.started = time.perf_counter()

    def __call__(self, name: str, run: Callable[[], dict[str, Any]], config: Any = None) -> dict[str, Any]:
        def counted() -> dict[str, Any]:
            self.n_computed += 1
            return run()

        self.n_calls += 1
        return cached_run(self.cache_dir, name, counted, force=self.force, config=config, traced=self.traced)

    @property
    def resumed(self) -> bool:
        """Whether some cell came from the cache."""
        return self.n_computed < self.n_calls

    def timing(self, previous_summary: Path) -> dict[str, Any]:
        """``wall_time_s`` and ``resumed`` for the task's summary: this invocation's, or, when it
        computed nothing, those ``previous_summary`` recorded."""
        if self.n_computed == 0 and previous_summary.is_file():
            previous = read_json(previous_summary)
            if "wall_time_s" in previous:
                return {"wall_time_s": previous["wall_time_s"], "resumed": bool(previous.get("resumed", False))}
        return {"wall_time_s": time.perf_counter() - self.started, "resumed": self.resumed}


def flag_stale_cells(cache_dir: Path) -> None:
    """List in ``STALE_CELLS`` the cells of ``cache_dir`` (a task reused whole from its summary)
    that other library code computed."""
    for path in sorted(cache_dir.glob("*.json")):
        if path.name != "summary.json" and not is_fresh(read_json(path).get(CACHE_STAMP, {})):
            STALE_CELLS.append(_shown(path))


def _shown(path: Path) -> str:
    return str(path.relative_to(RESULTS_DIR)) if path.is_relative_to(RESULTS_DIR) else str(path)


STALE_HEADING = "**Cached results from other library code:**"  # opens a results file's stale note


def stale_note() -> str:
    """The results file's note on cells reused from other library code, one line per cache
    folder (empty when none); also printed."""
    if not STALE_CELLS:
        return ""
    per_folder = Counter(str(Path(cell).parent) for cell in STALE_CELLS)
    lines = [f"> - `{folder}/`: {n} cell(s)" for folder, n in per_folder.items()]
    note = (
        f"\n> {STALE_HEADING} {len(STALE_CELLS)} cached cell(s) were computed by policykd "
        "code that has changed since (comments and docstrings aside): a function their benchmark ran, module-level "
        "code, an env preset it read (envs/<EnvId>.yml), or, for cells not traced by benchmarks/code_trace.py, "
        "anything in the library. "
        "`--refresh-stale` recomputes just these (`--force`: every cell).\n>\n" + "\n".join(lines) + "\n"
    )
    print(note, flush=True)
    return note


def cli_flags(values: dict[str, Any], flags: dict[str, str]) -> str:
    """``values`` as command-line options, each named by ``flags`` (a tuple as its items, space-separated)."""
    return " ".join(f"{flags[k]} {' '.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in values.items())


def head_of(buffer: LabelledBuffer, n: int) -> LabelledBuffer:
    """A buffer holding the first ``n`` transitions of ``buffer`` (collected in order, never wrapped)."""
    out = LabelledBuffer(n, meta=buffer.meta, **buffer.layout())
    batch = buffer.batch_at(np.arange(n))
    out.add(
        batch.observations.numpy(),
        batch.actions.numpy(),
        batch.rewards.numpy(),
        *(buffer.column(c)[:n] for c in ("terminated", "truncated", "episode_starts", "drivers")),
        batch.teacher_outputs,
    )
    return out


def replace_between_markers(path: Path, name: str, content: str) -> None:
    """Regenerate the part of a Markdown file between ``<!-- name:start -->`` and ``<!-- name:end -->``.
    The README quotes only results of the current library code: while this process reused cells that
    other code computed (``STALE_CELLS``), its block says so instead of quoting them."""
    if path == README and STALE_CELLS:
        content = withheld_block(Path(sys.argv[0]).stem, len(STALE_CELLS))
    write_text_atomic(path, _between_markers(path.read_text(), name, content, path))


def _between_markers(text: str, name: str, content: str, path: Path = README) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} markers")
    return text[: text.index(start) + len(start)] + "\n" + content + "\n" + text[text.index(end) :]


WITHHELD = "Withheld until rerun:"  # how a README block that would quote stale cells begins

# The results each generated README block quotes (None: not a benchmark's); a new block goes here.
README_BLOCKS = {
    "demo": "distill_checks",
    "distill-checks": "distill_checks",
    "atari": "atari",
    "atari-ablations": "atari_ablations",  # its sampled column quotes atari.py's cells (the "atari" block)
    "vs-imitation": "vs_imitation",
    "overlap": "throughput",
    "no-preset": "no_preset",
    "small-data": "small_data",
    "merge-strategies": "merge_strategies",
    "multitask": "multitask",
    "temperature-sweep": "temperature_sweep",
    "kickstart": "kickstart",
    "teacher-fragility": "teacher_fragility",
    "teacher-matrix": None,  # tests/test_teacher_matrix.py's cases
}


def stale_cells(stem: str) -> list[Path]:
    """The cached cells of ``results/<stem>/`` (a full run's) that library code other than today's
    computed: every cell JSON but a task's ``summary.json``, checked with :func:`is_fresh`."""
    folder = RESULTS_DIR / stem
    cells = (f for f in sorted(folder.rglob("*.json")) if f.name != "summary.json")
    return [
        f
        for f in cells
        if "quick" not in f.relative_to(folder).parts and not is_fresh(read_json(f).get(CACHE_STAMP, {}))
    ]


def stale_blocks() -> dict[str, tuple[str, int]]:
    """The README blocks that must not quote their results: ``{block: (results stem, stale cells)}``.
    The demo block is left out: it is the CLI's output for its run, checked against that run."""
    counts = {stem: len(stale_cells(stem)) for stem in set(README_BLOCKS.values()) - {None}}
    return {
        block: (stem, counts[stem])
        for block, stem in README_BLOCKS.items()
        if stem and block != "demo" and counts[stem]
    }


def withhold_stale_blocks() -> list[str]:
    """Replace every README block whose results hold stale cells by :func:`withheld_block` (no
    computation: after a library change, the README stops quoting what that code no longer gives)."""
    blocks = stale_blocks()
    for block, (stem, n_stale) in blocks.items():
        write_text_atomic(README, _between_markers(README.read_text(), block, withheld_block(stem, n_stale)))
    return list(blocks)


def withheld_block(script: str, n_stale: int) -> str:
    """The README block of a table some of whose cached cells older library code computed."""
    return (
        f"{WITHHELD} {n_stale} cached cell(s) behind this table were computed by library code that has "
        f"changed since. [`results/{script}.md`](benchmarks/results/{script}.md) lists them; "
        f"`python benchmarks/{script}.py --refresh-stale` recomputes just those."
    )


def task_sections(
    tasks: list[tuple[str, str, Any]],
    results_name: str,
    only: str,
    run: Callable[[str, str, Any, Path], dict[str, Any]],
    section: Callable[[str, dict[str, Any]], str],
) -> list[str]:
    """One Markdown section per ``(name, teacher, budgets)`` task: run it (when selected by
    ``only`` and its expert is finished), else reuse its cached ``summary.json``, else say why not."""
    sections = []
    for name, teacher, budgets in tasks:
        cache_dir = RESULTS_DIR / results_name / name
        finished = is_finished(ZOO_DIR.parent / teacher)
        if only in name and finished:
            sections.append(section(name, run(name, teacher, budgets, cache_dir)))
        elif (cache_dir / "summary.json").is_file():
            flag_stale_cells(cache_dir)
            sections.append(section(name, read_json(cache_dir / "summary.json")))
        else:
            reason = "not selected by --only" if finished else f"the expert `{teacher}` was not finished"
            print(f"skip {name}: {reason}", flush=True)
            sections.append(f"## {name}\n\nNot run yet: {reason}.\n")
    return sections


QUICK_SWEEP_TASKS = ("CartPole-v1", "Pendulum-v1")  # what a sweep's --quick keeps: the two fast tasks, 1 seed


def sweep_sections(
    args: argparse.Namespace,
    name: str,
    tasks: list[tuple[str, str, Any]],
    n_seeds: int,
    run_task: Callable[[str, str, Any, Path, bool, int], dict[str, Any]],
    section: Callable[[str, dict[str, Any], str], str],
) -> list[str]:
    """``task_sections`` for the resumable per-task sweeps (temperatures, drivers): --quick keeps
    QUICK_SWEEP_TASKS with one seed and caches under ``<name>-quick``. ``run_task(name, teacher,
    budgets, cache_dir, force, n_seeds, backend=)``; ``section(name, summary, results stem)``."""
    stem = results_name(name, args.quick)
    n_seeds = 1 if args.quick else n_seeds
    selected = [task for task in tasks if task[0] in QUICK_SWEEP_TASKS or not args.quick]
    return task_sections(
        selected,
        stem,
        args.only,
        lambda n, t, b, c: run_task(n, t, b, c, args.force, n_seeds, backend=args.backend),
        lambda n, summary: section(n, summary, stem),
    )


def train_benchmark_expert(algo: str, env_id: str, zoo: Path, n_timesteps: int | None) -> Path:
    """The rl-zoo folder of an expert a benchmark trains for itself (rl_zoo3's hyperparameters,
    under ``zoo``), trained or resumed unless it is finished: an expert this repository never shipped."""
    from policykd.zoo.experts import train_expert
    from policykd.zoo.layout import run_dir_for

    run_dir = run_dir_for(zoo, algo, env_id, 1)
    if not is_finished(run_dir):
        print(f"training {algo} on {env_id}", flush=True)
        every = max(5_000, (n_timesteps or 50_000) // 4)
        train_expert(algo, env_id, zoo_dir=zoo, n_timesteps=n_timesteps, checkpoint_every=every,
                     n_eval_episodes=5, progress_bar=False, selection_episodes=10)  # fmt: skip
    return run_dir


def collect_teacher_buffer(teacher: Any, preset: dict[str, Any], n: int, seed: int, n_envs: int) -> LabelledBuffer:
    """``n`` teacher-driven transitions (whole vector steps) from ``n_envs`` envs seeded by ``seed``,
    with the preset's epsilon and action noise: the data the data-budget benchmarks train on."""
    from policykd.data.collect import collect_rollouts
    from policykd.data.envs import make_vec_env

    venv = make_vec_env(teacher.recipe, n_envs, seed)
    try:
        buffer, _ = collect_rollouts(
            venv,
            [teacher],
            n,
            rng=np.random.default_rng(seed),
            epsilon=float(preset["epsilon"]),
            action_noise=float(preset["action_noise"]),
        )
    finally:
        venv.close()
    return buffer
