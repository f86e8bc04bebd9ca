"""Past one process: the measurements throughput.py adds for issue 20, and the page that predicts
from them what 10 and 100 nodes would reach (results/scaling.md). Imported by throughput.py;
never run on its own.

- Ray overhead: CartPole collection in this process against the same collection as 1 and 2 Ray
  tasks on a local Ray head (and 2 workers run one after the other here, for the split's own cost).
- The learner's side: how fast the driver merges workers' chunks into one buffer (transitions/s),
  the first ceiling a cluster meets, with the bytes each transition sends.
- CPU against GPU for a Pong CNN distillation, when torch sees a GPU (else "not measured").
- Pong-sized batch sampling to the GPU: frame stacks rebuilt on the host and copied, against stacks
  gathered on the GPU from the buffer's copy of its frames (``LabelledBuffer.stack_frames_on``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from common import head_of

from policykd.data.buffers import LabelledBuffer
from policykd.data.teachers import Teacher
from policykd.jobs.collect import collect, collect_chunk
from policykd.jobs.config import CollectConfig
from policykd.jobs.ray_backend import collect_task, merge_chunks, worker_configs
from policykd.jobs.resolve import resolve_budgets, resolve_teachers
from policykd.learn.losses import make_loss
from policykd.learn.students import make_student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.types import TeacherOutput

# The cluster the page plans for: nodes like the GPU machine lent to this project (16 cores), one
# collection worker per core; the driver receives chunks through Ray's object store over the network.
CORES_PER_NODE = 16
DRIVER_BANDWIDTH_BYTES_S = 1.0e9  # ~10 Gbit/s into the driver node: an assumption, not a measurement
SWEEP_CELLS = 6 * 10 * 12  # 6 temperatures x 10 seeds x 12 experts
SWEEP_EXPERTS = 12


def ray_overhead(teacher_dir: str, n_transitions: int) -> dict[str, Any]:
    """CartPole collection in this process against Ray with 1 and 2 workers: each backend's rate
    once started (transitions/s, the chunks' trip back and the merge included) and, for Ray, the
    start-up a user also waits for (Ray's worker processes and their imports), in seconds."""
    base = CollectConfig(
        teacher=teacher_dir, n_transitions=n_transitions, seed=0, teacher_check=False, progress_bar=False
    )
    _seconds(dataclasses.replace(base, n_transitions=64))  # warm, as Ray's workers are before they are timed
    results: dict[str, Any] = {
        "in_process": {"rate": n_transitions / _seconds(base), "startup_s": 0.0},
        "local_2_workers": {"rate": n_transitions / _seconds(dataclasses.replace(base, workers=2)), "startup_s": 0.0},
    }
    try:
        import ray
    except ImportError:
        return {**results, "ray": "not measured (ray not installed)"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for workers in (1, 2):
            results[f"ray_{workers}_workers"] = _ray_rate(
                ray, dataclasses.replace(base, backend="ray", workers=workers)
            )
    finally:
        ray.shutdown()
    return results


def _ray_rate(ray: Any, config: CollectConfig) -> dict[str, float]:
    """A cold run as the CLI makes it (Ray's workers start), then the same split on warm workers,
    three times, each beside the same collection in this process (wall-clock seconds throughout)."""
    cold = _seconds(config)
    in_process: list[float] = []
    teachers = resolve_teachers(config)
    n_envs = resolve_budgets(teachers[0].recipe.env_id, config).n_envs
    configs = worker_configs(config, teachers, config.n_transitions, n_envs)
    remote = ray.remote(num_cpus=1)(collect_task)
    warm_up = dataclasses.replace(configs[0], n_transitions=n_envs)  # Ray keeps its worker processes warm
    ray.get([remote.remote(collect_chunk, warm_up) for _ in configs])
    seconds = []
    for _ in range(3):  # the median of 3, each beside an in-process run (the machine's load moves)
        start = time.perf_counter()
        chunks = ray.get([remote.remote(collect_chunk, c) for c in configs])
        merge_chunks(chunks, config, configs)
        seconds.append(time.perf_counter() - start)
        in_process.append(_seconds(dataclasses.replace(config, backend="local", workers=1)))
    rate = config.n_transitions / float(np.median(seconds))
    return {
        "rate": rate,
        "startup_s": max(cold - config.n_transitions / rate, 0.0),
        "in_process_rate": config.n_transitions / float(np.median(in_process)),
    }


def _seconds(config: CollectConfig) -> float:
    start = time.perf_counter()
    collect(config)
    return time.perf_counter() - start


def merge_rate(buffer: LabelledBuffer, n_chunks: int = 8) -> dict[str, float]:
    """The driver's side: transitions/s merged into one buffer from ``n_chunks`` worker chunks
    (LabelledBuffer.extend, as jobs/ray_backend.merge_chunks does), and bytes per transition."""
    chunk = head_of(buffer, len(buffer) // n_chunks)
    start = time.process_time()  # CPU time, as throughput.py's in-process timings
    merged = LabelledBuffer(len(chunk) * n_chunks, meta=buffer.meta, **buffer.layout())
    for _ in range(n_chunks):
        merged.extend(chunk)
    seconds = time.process_time() - start
    return {"merge_transitions_per_s": len(merged) / seconds, "bytes_per_transition": buffer.nbytes / buffer.capacity}


def pong_cpu_vs_gpu(teacher: Teacher, buffer: LabelledBuffer, n_updates: int) -> dict[str, Any]:
    """Pong CNN distillation samples/s on the CPU and (when torch sees one) on the GPU."""
    if not torch.cuda.is_available():
        return {"gpu": "not measured (no GPU)"}
    rates = {}
    for device in ("cpu", "cuda"):
        student = make_student(teacher.kind, teacher.observation_space, teacher.action_space, hidden_sizes=(512,))
        config = TrainerConfig(n_updates=n_updates, batch_size=256, progress_bar=False, device=device)
        trainer = Trainer(student, make_loss("kl", teacher.kind), buffer, config=config)
        start = time.perf_counter()
        trainer.train()
        rates[f"pong_distill_{device}_samples_per_s"] = n_updates * 256 / (time.perf_counter() - start)
    return rates


def stack_sampling(n_rows: int = 50_000, n_batches: int = 500, device: str = "cuda") -> dict[str, Any]:
    """Batches/s of ``sample(64)`` from a Pong-sized frame-stacked buffer (``n_rows`` 84x84 frames,
    8 envs, stack 4) to ``device``: stacks rebuilt on the host and copied, then gathered on the
    device from its copy of the frames (the copy's first sync is not timed). Wall clock, the
    device synchronised at each end; one torch thread, as every benchmark here. Without a GPU:
    "not measured" (``device="cpu"`` runs the same code, for a dry run)."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return {"stacks": "not measured (no GPU)"}
    buffer = _pong_sized_buffer(n_rows)
    rates = {}
    for where in ("host", "device"):
        buffer.stack_frames_on(None if where == "host" else device)
        rng = np.random.default_rng(0)
        buffer.sample(64, rng, device)  # warm: the copy's first sync, CUDA's lazy start
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(n_batches):
            buffer.sample(64, rng, device)
        _synchronize(device)
        rates[f"stack_batches_per_s_{where}"] = n_batches / (time.perf_counter() - start)
    buffer.stack_frames_on(None)
    return {**rates, "stack_rows": n_rows, "stack_frames_gb": buffer.column("observations").nbytes / 1e9}


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _pong_sized_buffer(n_rows: int, n_envs: int = 8, n_actions: int = 6) -> LabelledBuffer:
    """Random 84x84 frames, an episode start about every 1,000 steps per env, random logits."""
    buffer = LabelledBuffer(
        n_rows, observation_shape=(4, 84, 84), observation_dtype=np.uint8, action_shape=(), action_dtype=np.int64,
        teacher_kinds=["categorical"], teacher_field_shapes={"logits": (n_actions,), "value": ()},
        frame_stack=4, n_envs=n_envs,
    )  # fmt: skip
    rng, zeros = np.random.default_rng(0), np.zeros(n_envs, bool)
    for step in range(n_rows // n_envs):
        frames = rng.integers(0, 256, (n_envs, 4, 84, 84), dtype=np.uint8)
        logits = torch.from_numpy(rng.standard_normal((n_envs, n_actions), dtype=np.float32))
        starts = rng.random(n_envs) < 1e-3 if step else ~zeros
        out = TeacherOutput("categorical", logits=logits, value=logits.sum(1))
        buffer.add(frames, np.zeros(n_envs, np.int64), np.zeros(n_envs), zeros, zeros, starts, 0, [out])
    return buffer


def stack_row(results: dict[str, Any]) -> tuple[str, str, float, str]:
    """The table row of :func:`stack_sampling`'s results (NaN ratio: not measured)."""
    stacks = results.get("stacks", {"stacks": "not measured (the run predates this row)"})
    label = (
        "Pong-sized batch sampling to the GPU (batch 64, 50,000 84×84 frames, 8 envs, stack 4), device ÷ host stacks"
    )
    if "stacks" in stacks:
        return label, stacks["stacks"], float("nan"), "-"
    host, device = stacks["stack_batches_per_s_host"], stacks["stack_batches_per_s_device"]
    return label, f"{device:,.0f} / {host:,.0f} batches/s", device / host, "-"


def sweep_cell_seconds(distill_samples_per_s: float, n_updates: int, batch_size: int, eval_s: float) -> float:
    """One sweep cell (a CartPole student at one tau and seed): its updates at the measured rate,
    plus its two evaluations (greedy and sampled)."""
    return n_updates * batch_size / distill_samples_per_s + 2 * eval_s


def prediction_rows(collection: list[dict[str, Any]], merge: dict[str, float], pong_bytes: float, ray_eff: float):
    """Per env: one worker's rate, 10 and 100 nodes, and the node count past which the driver's
    merge or its network stops the growth."""
    rows = []
    for case in collection:
        per_worker = case["collect"] * ray_eff
        nbytes = pong_bytes if case["label"].startswith("Pong") else case.get("bytes_per_transition", 64.0)
        ceiling = min(merge["merge_transitions_per_s"], DRIVER_BANDWIDTH_BYTES_S / nbytes)
        reach = [min(n * CORES_PER_NODE * per_worker, ceiling) for n in (10, 100)]
        stops_at = ceiling / (CORES_PER_NODE * per_worker)
        rows.append((case["label"], case["n_envs"], per_worker, reach[0], reach[1], stops_at, nbytes))
    return rows


def scaling_page(results: dict[str, Any], command: str) -> str:
    """results/scaling.md: the predictions, each from the measurements it names."""
    ray = results["ray"]
    # a worker is at best as fast as this process (a measured ratio above 1 is the machine's load moving)
    one = ray.get("ray_1_workers")
    ray_eff = min(one["rate"] / one["in_process_rate"], 1.0) if one else 1.0
    rows = prediction_rows(results["collection"], results["merge"], results["pong_bytes_per_transition"], ray_eff)
    lines = [
        "# Planning past one machine",
        "",
        f"Generated by `{command}` from the measurements in throughput.md; do not edit by hand.",
        "",
        f"Model: a node has {CORES_PER_NODE} cores, one collection worker each, each as fast as one worker here "
        f"(in-process rate × the measured ratio of one Ray worker's steady rate to it, capped at 1: {ray_eff:.2f}; each "
        "worker's start-up, a few seconds, is paid once per collection); collection grows linearly until the "
        f"driver's ceiling: the lower of its measured merge rate ({results['merge']['merge_transitions_per_s']:,.0f} "
        f"transitions/s into one buffer) and an assumed {DRIVER_BANDWIDTH_BYTES_S / 1e9:.0f} GB/s into the driver "
        "node divided by the bytes each transition carries.",
        "",
        "| env (envs per worker) | one worker (transitions/s) | 10 nodes | 100 nodes | stops scaling past | bytes/transition |",
        "|---|---|---|---|---|---|",
    ]
    for label, n_envs, per_worker, ten, hundred, stops_at, nbytes in rows:
        lines.append(
            f"| {label} ({n_envs}) | {per_worker:,.0f} | {ten:,.0f} | {hundred:,.0f} | {stops_at:,.1f} nodes | {nbytes:,.0f} |"
        )
    lines += ["", *_sweep_lines(results)]
    return "\n".join(lines) + "\n"


def _sweep_lines(results: dict[str, Any]) -> list[str]:
    cell_s = results["sweep_cell_s"]
    lines = [
        f"Sweep of {SWEEP_CELLS} cells (6 τ × 10 seeds × {SWEEP_EXPERTS} experts), each a CartPole-sized cell "
        f"of {cell_s:.0f} s measured here ({results['sweep_cell_updates']:,} updates of "
        f"{results['sweep_cell_batch']} at the measured distillation rate, plus a greedy and a sampled evaluation); "
        "cells are independent, so they run in waves of one cell per worker:",
        "",
        "| nodes | workers | waves | wall time |",
        "|---|---|---|---|",
    ]
    for nodes in (1, 10, 45, 100):
        workers = nodes * CORES_PER_NODE
        waves = math.ceil(SWEEP_CELLS / workers)
        seconds = waves * cell_s
        lines.append(f"| {nodes} | {workers:,} | {waves} | {_duration(seconds)} |")
    lines += [
        "",
        f"It stops scaling at {math.ceil(SWEEP_CELLS / CORES_PER_NODE)} nodes: past one cell per worker the wall time "
        "is one cell's (plus the 12 experts' buffer collections, which run in parallel too). A cell of an Atari "
        "expert costs far more than a CartPole one, but the shape is the same: waves of cells, then one cell.",
        "",
        "What is measured and what is assumed: the per-worker rates, the Ray overhead ratio, the merge rate, the "
        "bytes per transition and the cell time are measured on this 2-core machine; the cores per node and the "
        "driver bandwidth are assumptions; no cluster was run.",
    ]
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 120 else f"{seconds / 60:,.1f} min"
