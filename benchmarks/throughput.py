"""Throughput and latency against the hardware limit, each as a ratio measured in one run.

    python benchmarks/throughput.py            # writes benchmarks/results/throughput.md (+ .json)
    python benchmarks/throughput.py --quick    # CartPole and Pendulum collection only, half the updates:
                                               # writes results/throughput-quick.md (+ .json)

1. labelled collection steps/s  ÷  raw vectorised env steps/s (random actions, same env count)   target ≥ 0.8
   (also ÷ the env replaying the teacher's own actions: the cost policykd adds, trajectory aside)
2. distillation samples/s       ÷  a bare forward+backward+Adam loop on the same tensors/student  target ≥ 0.5
3. wall time of `policykd distill` (whole CLI job, interpreter start included)
                                ÷  benchmarks/minimal_distill.py doing the same work, same budgets target ≤ 2
4. batch-1 action latency of each student size ÷ the teacher's
5. buffer bytes per transition for Pong (frame-deduplicated), and 1M transitions in GiB          target < 8 GiB
6. (issue 20) each collection case also through the old path (the teacher's modules, one buffer add
   per vector step), measured back to back; CartPole collection in-process ÷ through Ray with 1 and
   2 workers; the driver's merge rate; Pong distillation on the CPU ÷ the GPU when torch sees one;
   Pong-sized batch sampling with frame stacks gathered on the GPU ÷ rebuilt on the host (GPU only);
   and from these results/scaling.md, what 10 and 100 nodes would reach (benchmarks/scale_out.py)
7. (issue 20) each collection case at its preset env count through overlapped collection
   (--vec-env subproc: two env groups in subprocesses) ÷ random-action stepping, wall clock and CPU time
   (benchmarks/overlap_timing.py)

``--only overlap`` or ``--only stacks`` re-measures just those rows into the last run's results.

All timings on 1 torch thread, in CPU seconds (``time.process_time``, and the children's for the
whole-job ratio): single-threaded work takes that long on an idle core, whatever else the shared
machine runs. The Ray rows are wall clock (the work runs in other processes), each side measured
back to back so they see the same load.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from typing import Any

import numpy as np
import torch
from common import README, RESULTS_DIR, parse_quick_args, provenance, replace_between_markers, results_name
from overlap_timing import overlap_readme, overlap_rows, overlap_vs_in_process
from scale_out import (
    merge_rate,
    pong_cpu_vs_gpu,
    ray_overhead,
    scaling_page,
    stack_row,
    stack_sampling,
    sweep_cell_seconds,
)

from policykd.data import collect as collect_module
from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import RolloutCursor, collect_rollouts
from policykd.data.envs import EnvRecipe, make_vec_env
from policykd.data.fast_forward import fast_labeller
from policykd.data.step_chunks import StepChunks
from policykd.data.teachers import Teacher, load_teacher
from policykd.fileio import write_json_atomic, write_text_atomic
from policykd.jobs.evaluate import action_latency_ms, evaluate_policy
from policykd.learn.losses import make_loss
from policykd.learn.students import make_student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.zoo.layout import is_finished
from policykd.zoo.presets import ZOO_DIR, resolve

REPO = ZOO_DIR.parent
CARTPOLE = REPO / "agents/ppo/CartPole-v1_1"


def _timed_steps(venv: Any, actions: np.ndarray) -> float:
    """CPU seconds to step ``venv`` through ``actions (n_steps, n_envs, ...)`` from a reset (not timed).
    Collection and the env limits are timed in this process's CPU time (``time.process_time``): the
    work is single-threaded, so that is its wall time on an idle core, whatever else the shared
    machine runs (wall-clock ratios moved by ±0.3 between runs beside four other jobs)."""
    venv.reset()
    start = time.process_time()
    for step_actions in actions:
        venv.step(step_actions)
    return time.process_time() - start


@contextlib.contextmanager
def old_collection_path():
    """Collection as it was before issue 20: labels through the teacher's modules, one buffer add
    per vector step (the same buffer: tests/test_fast_forward.py)."""
    saved = collect_module.fast_labeller, collect_module.StepChunks
    collect_module.fast_labeller = lambda teacher: teacher
    collect_module.StepChunks = lambda buffer: StepChunks(buffer, steps=1)
    try:
        yield
    finally:
        collect_module.fast_labeller, collect_module.StepChunks = saved


def _timed_collection(teacher: Teacher, n_envs: int, n_steps: int) -> tuple[LabelledBuffer, float]:
    venv = make_vec_env(teacher.recipe, n_envs, seed=0)
    cursor = RolloutCursor(venv.reset(), np.ones(n_envs, dtype=bool))  # the reset is not timed on either side
    start = time.process_time()  # CPU time, as _timed_steps
    buffer, _ = collect_rollouts(venv, [teacher], n_steps * n_envs, rng=np.random.default_rng(0), cursor=cursor)
    seconds = time.process_time() - start
    venv.close()
    return buffer, seconds


def collection_vs_env(teacher: Teacher, n_envs: int, n_steps: int, repeats: int = 1) -> dict[str, float]:
    """Labelled collection against two limits, all on the same env count and seeds:
    - ``random``: the env stepping uniformly random actions (the limit the issue names);
    - ``replay``: the env replaying the very actions the teacher chose (the envs are seeded, so it
      walks the same trajectories). Simulation cost depends on the trajectory (an expert
      LunarLander hovers with its engines on, which costs Box2D more than a random crash), so this
      is the ratio that isolates what policykd adds: labelling, buffer writes, bookkeeping.
    Also collection through the old path (see :func:`old_collection_path`). Each time is the
    median of ``repeats`` rounds, each round timing every side back to back (a shared machine's
    load moves between rounds more than within one)."""
    times: dict[str, list[float]] = {"random": [], "collect": [], "old": [], "replay": []}
    for _ in range(repeats):
        venv = make_vec_env(teacher.recipe, n_envs, seed=0)
        venv.action_space.seed(0)
        random_actions = np.array([[venv.action_space.sample() for _ in range(n_envs)] for _ in range(n_steps)])
        times["random"].append(_timed_steps(venv, random_actions))
        venv.close()
        buffer, collect_s = _timed_collection(teacher, n_envs, n_steps)
        times["collect"].append(collect_s)
        with old_collection_path():
            times["old"].append(_timed_collection(teacher, n_envs, n_steps)[1])
        venv = make_vec_env(teacher.recipe, n_envs, seed=0)
        times["replay"].append(
            _timed_steps(venv, buffer.column("actions").reshape(n_steps, n_envs, *buffer.action_shape))
        )
        venv.close()
    random_s, collect_s, old_s, replay_s = (float(np.median(times[k])) for k in ("random", "collect", "old", "replay"))
    steps = n_steps * n_envs
    return {
        "collect": steps / collect_s,
        "random": steps / random_s,
        "replay": steps / replay_s,
        "ratio_random": random_s / collect_s,
        "ratio_replay": replay_s / collect_s,
        "ratio_random_old": random_s / old_s,
        "repeats": repeats,
        "bytes_per_transition": buffer.nbytes / buffer.capacity,
        **collection_breakdown(teacher, buffer, n_envs, collect_s, replay_s),
    }


def collection_breakdown(
    teacher: Teacher, buffer: LabelledBuffer, n_envs: int, collect_s: float, env_s: float
) -> dict[str, float]:
    """Where collection's time goes, as shares of ``collect_s``: the env (its replay time), the
    teacher labelling each step's observations, the buffer writes, and the rest (actions, loop)."""
    n_steps = len(buffer) // n_envs
    observations = [
        buffer.batch_at(np.arange(i * n_envs, (i + 1) * n_envs)).observations.numpy() for i in range(n_steps)
    ]
    label = fast_labeller(teacher)  # as collect_rollouts labels
    start = time.process_time()
    outputs = [label(obs) for obs in observations]
    teacher_s = time.process_time() - start
    chunks = StepChunks(LabelledBuffer(len(buffer), meta=buffer.meta, **buffer.layout()))
    columns = [buffer.column(c) for c in ("actions", "rewards", "terminated", "truncated", "episode_starts", "drivers")]
    start = time.process_time()
    for i, (obs, out) in enumerate(zip(observations, outputs)):
        chunks.add(obs, *(c[i * n_envs : (i + 1) * n_envs] for c in columns), outputs=[out])
    chunks.flush()
    buffer_s = time.process_time() - start
    shares = {"env": env_s, "teacher": teacher_s, "buffer": buffer_s}
    shares["other"] = max(collect_s - sum(shares.values()), 0.0)
    return {f"share_{name}": value / collect_s for name, value in shares.items()}


PONG = REPO / "agents/ppo/PongNoFrameskip-v4_1"


def pong_teacher() -> Teacher:
    """The zoo's CNN PPO Pong expert; while it is unfinished, an untrained CNN PPO with the zoo's
    recipe (it costs the same to run, though its trajectories differ)."""
    from stable_baselines3 import PPO

    if is_finished(PONG):
        return load_teacher(PONG)
    recipe = EnvRecipe(
        "PongNoFrameskip-v4", env_wrapper=["stable_baselines3.common.atari_wrappers.AtariWrapper"], frame_stack=4
    )
    venv = make_vec_env(recipe, 1, seed=0)  # only to give the policy its spaces
    try:
        policy = PPO("CnnPolicy", venv, n_steps=8, batch_size=8, device="cpu", seed=0).policy
    finally:
        venv.close()
    return Teacher(policy, algo="ppo", source="untrained CNN", recipe=recipe)


# (label, teacher source or "pong", env count, vector steps): each env at its preset's env count,
# CartPole also with 64 envs, where the env's share of the work grows.
COLLECTION_CASES: list[tuple[str, str, int, int]] = [
    ("CartPole-v1 PPO", "agents/ppo/CartPole-v1_1", 8, 2_000),
    ("CartPole-v1 PPO", "agents/ppo/CartPole-v1_1", 64, 300),
    ("LunarLander-v3 PPO", "agents/ppo/LunarLander-v3_1", 8, 500),
    ("Pendulum-v1 SAC", "agents/sac/Pendulum-v1_1", 8, 1_000),
    ("HalfCheetah-v5 PPO", "agents/ppo/HalfCheetah-v5_1", 4, 500),
    ("PongNoFrameskip-v4 PPO (CNN)", "pong", 8, 150),
]
QUICK_CASES = ("CartPole-v1 PPO", "Pendulum-v1 SAC")  # --quick: the cheap envs, each at its preset env count


def distill_samples_per_s(
    teacher: Teacher, buffer: LabelledBuffer, n_updates: int, batch_size: int
) -> tuple[float, float]:
    """(policykd Trainer samples/s, bare loop samples/s) on the same student shape and data."""
    loss = make_loss("kl", teacher.kind)
    student = make_student(teacher.kind, teacher.observation_space, teacher.action_space, hidden_sizes=(24, 24))
    config = TrainerConfig(n_updates=n_updates, batch_size=batch_size, progress_bar=False, log_every=100)
    trainer = Trainer(student, loss, buffer, config=config)
    start = time.process_time()
    trainer.train()
    ours = n_updates * batch_size / (time.process_time() - start)

    # The limit: the same student on pre-sampled tensors, plain log-softmax KL, Adam, nothing else.
    bare = make_student(teacher.kind, teacher.observation_space, teacher.action_space, hidden_sizes=(24, 24))
    optimizer = torch.optim.Adam(bare.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    batches = [buffer.sample(batch_size, rng) for _ in range(64)]
    obs = [b.observations.float() for b in batches]
    targets = [torch.log_softmax(b.teacher_outputs[0].logits, dim=-1) for b in batches]
    start = time.process_time()
    for i in range(n_updates):
        logits = bare.head(bare.trunk((obs[i % 64] - bare.obs_mean) / bare.obs_std))
        log_q = torch.log_softmax(logits, dim=-1)
        loss_value = (targets[i % 64].exp() * (targets[i % 64] - log_q)).sum(-1).mean()
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
    limit = n_updates * batch_size / (time.process_time() - start)
    return ours, limit


def wall_time(command: list[str]) -> float:
    """The CPU seconds (user + system) ``command`` takes: its wall time on idle cores, whatever else
    the shared machine runs (its torch and OpenMP keep to one thread)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, cwd=REPO, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def pong_bytes_per_transition() -> float:
    teacher = pong_teacher()
    venv = make_vec_env(teacher.recipe, 8, seed=0)
    buffer, _ = collect_rollouts(venv, [teacher], 64, rng=np.random.default_rng(0))
    venv.close()
    return buffer.nbytes / buffer.capacity


def measure(quick: bool) -> dict[str, Any]:
    """Every ratio of the module docstring (``quick``: fewer collection cases, half the updates)."""
    teacher = load_teacher(CARTPOLE)
    results: dict[str, Any] = {}
    collection = []
    cases = [case for case in COLLECTION_CASES if not quick or (case[0] in QUICK_CASES and case[2] == 8)]
    for label, source, n_envs, n_steps in cases:
        case_teacher = pong_teacher() if source == "pong" else load_teacher(REPO / source)
        print(f"collection: {label}, {n_envs} envs", flush=True)
        measured = collection_vs_env(case_teacher, n_envs, n_steps, repeats=1 if quick else 3)
        collection.append({"label": label, "n_envs": n_envs, **measured})
    results["collection"] = collection
    results["collection_ratio"] = collection[0]["ratio_random"]
    results["overlap"] = measure_overlap(quick)

    venv = make_vec_env(teacher.recipe, 8, seed=0)
    buffer, _ = collect_rollouts(venv, [teacher], 20_000, rng=np.random.default_rng(0))
    venv.close()
    ours, limit = distill_samples_per_s(teacher, buffer, 1_000 if quick else 2_000, 256)
    results.update(distill_samples_per_s=ours, bare_loop_samples_per_s=limit, distill_ratio=ours / limit)

    cli = wall_time(
        [
            sys.executable,
            "-m",
            "policykd.cli",
            "distill",
            "--no-progress",
            "--overwrite",
            "--out",
            "runs/benchmarks/throughput-cli",
        ]
    )
    minimal = wall_time([sys.executable, "benchmarks/minimal_distill.py"])
    results.update(cli_wall_s=cli, minimal_wall_s=minimal, wall_ratio=cli / minimal)

    obs = buffer.batch_at(np.arange(1)).observations.numpy()[0]
    teacher_ms = action_latency_ms(lambda o: teacher.act(o), obs)
    results["teacher_latency_ms"] = teacher_ms
    for hidden in ((64, 64), (24, 24), (8, 8)):
        student = make_student(teacher.kind, teacher.observation_space, teacher.action_space, hidden_sizes=hidden)
        results[f"student_{hidden[0]}x{hidden[1]}_latency_ratio"] = (
            action_latency_ms(lambda o: student.act(o), obs) / teacher_ms
        )
        results[f"student_{hidden[0]}x{hidden[1]}_params"] = student.n_params

    per_transition = pong_bytes_per_transition()
    results.update(pong_bytes_per_transition=per_transition, pong_1m_gib=per_transition * 1e6 / 2**30)
    results.update(scale_out(teacher, buffer, ours, quick))
    return results


def measure_overlap(quick: bool) -> list[dict[str, Any]]:
    """Each collection case (at its preset env count) through overlapped collection (overlap_timing.py)."""
    cases = [case for case in COLLECTION_CASES if not quick or (case[0] in QUICK_CASES and case[2] == 8)]
    overlap = []
    for label, source, n_envs, n_steps in cases:
        case_teacher = pong_teacher() if source == "pong" else load_teacher(REPO / source)
        print(f"overlapped collection: {label}, {n_envs} envs", flush=True)
        measured = overlap_vs_in_process(case_teacher, n_envs, n_steps, repeats=1 if quick else 3)
        overlap.append({"label": label, "n_envs": n_envs, **measured})
    return overlap


def scale_out(teacher: Teacher, buffer: LabelledBuffer, distill_rate: float, quick: bool) -> dict[str, Any]:
    """Issue 20's measurements (benchmarks/scale_out.py): Ray's overhead, the driver's merge rate,
    Pong on the GPU, and one sweep cell's time for the scaling page."""
    print("collection: in-process vs Ray", flush=True)
    results: dict[str, Any] = {"ray": ray_overhead(str(CARTPOLE), 20_000 if quick else 100_000)}
    results["merge"] = merge_rate(buffer)
    pong = pong_teacher()
    venv = make_vec_env(pong.recipe, 8, seed=0)
    n_pong = 2_048 if torch.cuda.is_available() else 8
    pong_buffer, _ = collect_rollouts(venv, [pong], n_pong, rng=np.random.default_rng(0))
    venv.close()
    results["gpu"] = pong_cpu_vs_gpu(pong, pong_buffer, 20 if quick else 100)
    results.update(REMEASURABLE["stacks"][1](quick))
    start = time.process_time()
    evaluate_policy(teacher, teacher.recipe, 10, seed=0)  # a sweep cell evaluates greedily and sampled, 10 each
    budgets = resolve("CartPole-v1", {}, ("n_updates", "batch_size"))
    cell_s = sweep_cell_seconds(distill_rate, budgets["n_updates"], budgets["batch_size"], time.process_time() - start)
    results.update(sweep_cell_s=cell_s, sweep_cell_updates=budgets["n_updates"], sweep_cell_batch=budgets["batch_size"])
    return results


def scale_rows(results: dict[str, Any]) -> list[tuple[str, str, float, str]]:
    """Table rows of :func:`scale_out`'s results; a ratio of NaN is shown as not measured."""
    ray, merge, gpu = results["ray"], results["merge"], results["gpu"]
    base = ray["in_process"]["rate"]
    rows = []
    cases = [("local_2_workers", "CartPole collection, 2 workers one after the other in this process")]
    cases += [(f"ray_{w}_workers", f"CartPole collection on a local Ray head (2 CPUs), {w} worker(s)") for w in (1, 2)]
    for key, label in cases:
        if key not in ray:
            rows.append((f"{label} ÷ in-process", ray["ray"], float("nan"), "-"))
            continue
        reference = ray[key].get("in_process_rate", base)  # measured beside it
        measured = (
            f"{ray[key]['rate']:,.0f} / {reference:,.0f} transitions/s once started (wall clock, median of 3 beside "
            f"in-process runs); start-up {ray[key]['startup_s']:.1f} s"
        )
        rows.append((f"{label} ÷ in-process (steady rate)", measured, ray[key]["rate"] / reference, "-"))
    rows.append(("driver merge of 8 worker chunks into one buffer (CartPole)",
                 f"{merge['merge_transitions_per_s']:,.0f} transitions/s, {merge['bytes_per_transition']:,.0f} bytes each",
                 float("nan"), "-"))  # fmt: skip
    if "gpu" in gpu:
        rows.append(("Pong CNN distillation, GPU ÷ CPU samples/s", gpu["gpu"], float("nan"), "-"))
    else:
        cpu, cuda = gpu["pong_distill_cpu_samples_per_s"], gpu["pong_distill_cuda_samples_per_s"]
        rows.append(("Pong CNN distillation, GPU ÷ CPU samples/s", f"{cuda:,.0f} / {cpu:,.0f}", cuda / cpu, "-"))
    return [*rows, stack_row(results)]


def table(results: dict[str, Any]) -> str:
    """The Markdown table of ``measure``'s results: measure, measured, ratio, target."""
    teacher_ms = results["teacher_latency_ms"]
    rows = [
        *[
            (
                f"labelled collection ÷ random-action env steps ({c['label']}, {c['n_envs']} envs)",
                f"{c['collect']:,.0f} / {c['random']:,.0f} steps/s (same trajectories replayed: {c['replay']:,.0f}, "
                f"ratio {c['ratio_replay']:.2f}; before issue 20's changes: ratio {c['ratio_random_old']:.2f}; "
                f"median of {c.get('repeats', 1)}); "
                f"time: env {c['share_env']:.0%}, teacher {c['share_teacher']:.0%}, "
                f"buffer {c['share_buffer']:.0%}, other {c['share_other']:.0%}",
                c["ratio_random"],
                "≥ 0.8",
            )
            for c in results["collection"]
        ],
        (
            "distillation ÷ bare Adam loop (CartPole, 24×24 student, batch 256)",
            f"{results['distill_samples_per_s']:,.0f} / {results['bare_loop_samples_per_s']:,.0f} samples/s",
            results["distill_ratio"],
            "≥ 0.5",
        ),
        (
            "`policykd distill` ÷ benchmarks/minimal_distill.py (whole job)",
            f"{results['cli_wall_s']:.1f} s / {results['minimal_wall_s']:.1f} s (CPU time)",
            results["wall_ratio"],
            "≤ 2",
        ),
        *[
            (
                f"batch-1 latency, student {h} ÷ teacher",
                f"teacher {teacher_ms:.3f} ms, student {results[f'student_{h}_params']:,} params",
                results[f"student_{h}_latency_ratio"],
                "-",
            )
            for h in ("64x64", "24x24", "8x8")
        ],
        (
            "Pong buffer, 1M transitions (frame-deduplicated)",
            f"{results['pong_bytes_per_transition']:,.0f} bytes/transition",
            results["pong_1m_gib"],
            "< 8 GiB",
        ),
    ]
    rows += overlap_rows(results)
    rows += scale_rows(results)
    return "\n".join(
        ["| measure | measured | ratio | target |", "|---|---|---|---|"]
        + [f"| {name} | {detail} | {_ratio(ratio)} | {target} |" for name, detail, ratio, target in rows]
    )


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: no ratio


REMEASURABLE = {
    "overlap": ("the overlapped-collection rows", lambda quick: {"overlap": measure_overlap(quick)}),
    "stacks": ("the frame-stack sampling row", lambda quick: {"stacks": stack_sampling(n_batches=100 if quick else 500)}),
}  # fmt: skip
"""``--only PART``: rows re-measured into the last run's results, the others kept as they were."""


def main() -> None:
    only = (("--only",), dict(choices=sorted(REMEASURABLE), help="re-measure only these rows (overlap: the overlapped-collection rows; stacks: the GPU frame-stack row), keeping the other results of the last run"))  # fmt: skip
    args = parse_quick_args(__doc__, "CartPole and Pendulum collection only, half the distillation updates", extra=[only])  # fmt: skip
    name = results_name("throughput", args.quick)  # a quick run never overwrites the full run's files
    if args.only:
        results = json.loads((RESULTS_DIR / f"{name}.json").read_text())
        results.update(REMEASURABLE[args.only][1](args.quick))
        results.setdefault("remeasured", {})[args.only] = date.today().isoformat()
    else:
        results = measure(args.quick)
    write_results(results, args.quick, args.only)


def write_results(results: dict[str, Any], quick: bool, only: str | None) -> None:
    """throughput[-quick].md (+ .json), scaling[-quick].md and, for a full run, the README's overlap block."""
    name = results_name("throughput", quick)
    write_json_atomic(RESULTS_DIR / f"{name}.json", results)
    command = "python benchmarks/throughput.py" + (" --quick" if quick else "")
    remeasured = results.get("remeasured", {}) if only else {}
    notes = [f"{REMEASURABLE[part][0]} with `--only {part}` on {day}" for part, day in sorted(remeasured.items())]
    note = f"Re-measured since the full run: {'; '.join(notes)}; the others are the full run's.\n\n" if notes else ""
    text = (
        "# Throughput and latency\n\nGenerated by `benchmarks/throughput.py`; do not edit by hand.\n\n"
        + provenance(command + (f" --only {only}" if only else ""))
        + "\n"
        + note
        + table(results)
        + "\n"
    )
    write_text_atomic(RESULTS_DIR / f"{name}.md", text)
    write_text_atomic(RESULTS_DIR / f"{results_name('scaling', quick)}.md", scaling_page(results, command))
    if not quick:
        replace_between_markers(README, "overlap", overlap_readme(results))
    print(text)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
