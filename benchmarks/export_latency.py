"""What `policykd export` buys at serving time: the student each env's preset distils, exported to
ONNX, against the same student in torch (policykd's `Student.act`) and against its teacher.

    python benchmarks/export_latency.py          # writes benchmarks/results/export_latency.md (+ .json)
    python benchmarks/export_latency.py --quick  # CartPole and Pendulum only

Per env: the student the preset builds for its default expert (hidden sizes / CNN width, the
teacher's input normalisation), exported and checked by `export_onnx` (same actions as the torch
student on 256 random observations), then the median wall time of one action at batch 1 and of
a batch of 256, on 1 thread for torch and for onnxruntime. Latency does not depend on the weights,
so the students are freshly initialised: no training is timed. The teacher's batch-1 time is its
`Teacher.act` (SB3 policy forward plus policykd's action mapping).
"""

from __future__ import annotations

import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import RESULTS_DIR, parse_quick_args, provenance, results_name
from policykd.evaluation import action_latency_ms
from policykd.export import random_observations, onnx_session, export_onnx
from policykd.fileio import write_json_atomic, write_text_atomic
from policykd.presets import load_preset
from policykd.students import make_student
from policykd.teachers import load_teacher

ENVS = ("CartPole-v1", "LunarLander-v3", "Pendulum-v1", "HalfCheetah-v5", "PongNoFrameskip-v4")
QUICK_ENVS = ("CartPole-v1", "Pendulum-v1")
BATCH = 256


def batch_ms(act: Any, observations: np.ndarray, n_calls: int = 30) -> float:
    """Median wall time of one call on the whole batch, in milliseconds."""
    for _ in range(3):
        act(observations)
    times = []
    for _ in range(n_calls):
        start = time.perf_counter()
        act(observations)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def measure(env_id: str, workdir: Path) -> dict[str, Any]:
    preset = load_preset(env_id)
    teacher = load_teacher(preset["default_expert"])
    torch.manual_seed(0)
    student = make_student(
        teacher.kind, teacher.observation_space, teacher.action_space,
        hidden_sizes=tuple(preset["hidden_sizes"]), cnn_width=float(preset["cnn_width"]),
        obs_mean=None if teacher.normalizer is None else teacher.normalizer.mean,
        obs_std=None if teacher.normalizer is None else np.sqrt(teacher.normalizer.var + teacher.normalizer.epsilon),
    )  # fmt: skip
    student.save(workdir / env_id / "student")
    report = export_onnx(workdir / env_id / "student", workdir / env_id / "policy.onnx")
    session = onnx_session(report.path)
    onnx_act = lambda obs: session.run(["actions"], {"observations": obs})[0]  # noqa: E731
    batch = random_observations(student, BATCH, np.random.default_rng(1))
    single = batch[0]
    return {
        "env_id": env_id,
        "teacher": preset["default_expert"],
        "teacher_params": teacher.n_params,
        "student": "CNN ×{:g}".format(student.config.cnn_width) if student.config.image
        else "×".join(map(str, student.config.hidden_sizes)),
        "student_params": report.n_params,
        "onnx_kb": report.size_bytes / 1e3,
        "max_abs_diff": report.max_abs_diff,
        "teacher_ms": action_latency_ms(lambda obs: teacher.act(obs), single),
        "torch_ms": action_latency_ms(lambda obs: student.act(obs), single),
        "onnx_ms": action_latency_ms(onnx_act, single),
        "torch_batch_ms": batch_ms(lambda obs: student.act(obs), batch),
        "onnx_batch_ms": batch_ms(onnx_act, batch),
    }


def main() -> None:
    args = parse_quick_args(__doc__, "CartPole and Pendulum only")
    envs = QUICK_ENVS if args.quick else ENVS
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for env_id in envs:
            print(f"exporting and timing {env_id}", flush=True)
            rows.append(measure(env_id, Path(tmp)))
    name = results_name("export_latency", args.quick)
    write_json_atomic(RESULTS_DIR / f"{name}.json", {"rows": rows})
    table = "\n".join(
        ["| env | teacher (params) | student (params) | ONNX file | batch-1: teacher | student, torch | student, ONNX "
         f"| torch ÷ ONNX | batch {BATCH}: torch | ONNX |",
         "|---|---|---|---|---|---|---|---|---|---|"]
        + [f"| {r['env_id']} | `{r['teacher']}` ({r['teacher_params']:,}) | {r['student']} ({r['student_params']:,}) "
           f"| {r['onnx_kb']:,.1f} kB | {r['teacher_ms']:.3f} ms | {r['torch_ms']:.3f} ms | {r['onnx_ms']:.3f} ms "
           f"| {r['torch_ms'] / r['onnx_ms']:.1f}× | {r['torch_batch_ms']:.2f} ms | {r['onnx_batch_ms']:.2f} ms |"
           for r in rows]
    )  # fmt: skip
    command = "python benchmarks/export_latency.py" + (" --quick" if args.quick else "")
    text = (
        "# Exported students: ONNX against torch\n\nGenerated by `benchmarks/export_latency.py`; do not edit by hand.\n\n"
        + provenance(command)
        + f"- exporter: torch.onnx (dynamo), onnx {metadata.version('onnx')}, onnxscript {metadata.version('onnxscript')}, "
        f"onnxruntime {metadata.version('onnxruntime')}\n"
        + "\nMedian wall time of one call, 1 thread each (torch and onnxruntime). Every exported file acts as its "
        "torch student on 256 random observations (`export_onnx` refuses otherwise). Students are the preset's "
        "architecture, freshly initialised: latency does not depend on the weights. Other jobs may have shared the "
        "2 cores; each row's figures were measured back to back.\n\n"
        + table + "\n"
    )
    write_text_atomic(RESULTS_DIR / f"{name}.md", text)
    print(table)


if __name__ == "__main__":
    main()
