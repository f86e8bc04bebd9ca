"""policykd against the imitation library (HumanCompatibleAI/imitation 1.0.1): BC and DAgger on the
same expert, the same teacher transitions and the same student network, in one run.

    python benchmarks/vs_imitation.py            # full run; resumes from results/vs_imitation/
    python benchmarks/vs_imitation.py --quick    # reduced budgets and seeds (under ~8 min once set up)
    python benchmarks/vs_imitation.py --force    # recompute every cached cell

imitation pins stable-baselines3 2.2 and gymnasium 0.29, so it runs in its own venv,
`benchmarks/.venv-imitation`. This script creates it when it is missing, and rebuilds it when
`benchmarks/imitation-requirements.txt` changed (a stamp in the venv records the file's hash):
`python -m venv`, then the CPU build of torch (the local wheel if pip's find-links has one, else
PyTorch's CPU index, never the multi-GB CUDA build), then the pinned requirements. The first run
therefore needs PyPI and a few minutes more. imitation's half of the work is
`benchmarks/imitation_side.py`, run in that venv on files this script writes.

Per task (CartPole; LunarLander PPO when its expert has finished training, else Acrobot DQN;
HalfCheetah PPO when its expert exists, else reported as pending):
- data: for each seed, one buffer of teacher-driven transitions collected with `collect_rollouts`,
  exported to an .npz that imitation reads as `Transitions`; a budget of n transitions is the first
  n of it, for both tools. Labels are the teacher's greedy actions (argmax, or the Gaussian mean).
- BC: imitation's `bc.BC` against `policykd` with `--loss nll` (hard labels) and `--loss kl`
  (soft targets); same MLP (hidden sizes, ReLU), same input normalisation, batch size, learning
  rate and number of gradient steps, at every data budget and seed.
- DAgger: imitation's `SimpleDAggerTrainer` (the SB3 expert loaded in imitation's venv) against
  policykd's online loop (`policykd.jobs.online.train_online`, β-mixture collection), same linear β
  schedule, round budget and updates per round.
- every policy, imitation's included (its weights are exported and loaded into policykd's
  `Student`, checked output for output), is evaluated by `policykd.jobs.evaluate` on the same episodes.
Results: `results/vs_imitation.md` and `.json` (either mode: the command in the file says which; only
a full run refreshes the ratio table in `benchmarks/README.md`), one cached JSON per cell under
`results/vs_imitation/{full,quick}/`; scratch files (data, exported weights) under `runs/benchmarks/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS_DIR, cached_run, collect_teacher_buffer, head_of, is_cached, parse_quick_args, results_name
from vs_imitation_report import METHODS, write_report

from policykd.data.buffers import LabelledBuffer
from policykd.data.teachers import Teacher, load_teacher
from policykd.jobs.evaluate import EVAL_SEED_OFFSET, ReturnStats, episode_returns, evaluate_random, evaluate_teacher
from policykd.jobs.online import OnlineConfig, train_online
from policykd.jobs.resolve import make_student_for
from policykd.learn.losses import make_loss
from policykd.learn.schedules import LinearBeta
from policykd.learn.students import Student
from policykd.learn.trainer import Trainer, TrainerConfig
from policykd.zoo.layout import is_finished
from policykd.zoo.presets import ZOO_DIR, load_preset

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV = BENCH_DIR / ".venv-imitation"
REQUIREMENTS = BENCH_DIR / "imitation-requirements.txt"
SCRATCH = REPO / "runs" / "benchmarks" / "vs_imitation"
# imitation's gymnasium 0.29 predates these ids; its DAgger runs in the closest one (BC needs no env).
IMITATION_ENV = {"LunarLander-v3": "LunarLander-v2", "HalfCheetah-v5": "HalfCheetah-v4"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """Budgets for one expert; n_updates is the same for every data budget and both tools."""

    budgets: tuple[int, ...]
    n_updates: int
    dagger_rounds: int
    dagger_round_labels: int
    dagger_round_updates: int

    def reduced(self) -> Plan:
        """--quick: the smallest and the middle budget, half the gradient steps, half the DAgger rounds and
        half their gradient steps."""
        return dataclasses.replace(
            self,
            budgets=(self.budgets[0], self.budgets[len(self.budgets) // 2]),
            n_updates=self.n_updates // 2,
            dagger_rounds=max(self.dagger_rounds // 2, 2),
            dagger_round_updates=self.dagger_round_updates // 2,
        )


PLANS: dict[str, Plan] = {
    # Every CartPole student reaches 500 from 1,000 transitions: its curve has to start lower.
    "agents/ppo/CartPole-v1_1": Plan((300, 500, 1_000, 2_000, 5_000), 2_000, 8, 500, 500),
    "agents/ppo/LunarLander-v3_1": Plan((1_000, 2_000, 5_000, 10_000, 20_000), 5_000, 8, 2_000, 1_000),
    "agents/dqn/Acrobot-v1_1": Plan((1_000, 2_000, 5_000, 10_000, 20_000), 3_000, 8, 1_000, 500),
    "agents/ppo/HalfCheetah-v5_1": Plan((5_000, 10_000, 20_000, 50_000, 100_000), 10_000, 8, 5_000, 1_000),
}
# (task, candidate experts in order of preference: the first whose expert.json says finished is used)
TASKS: list[tuple[str, tuple[str, ...]]] = [
    ("CartPole", ("agents/ppo/CartPole-v1_1",)),
    ("classic / Box2D", ("agents/ppo/LunarLander-v3_1", "agents/dqn/Acrobot-v1_1")),
    ("MuJoCo", ("agents/ppo/HalfCheetah-v5_1",)),
]


# -- the imitation venv ----------------------------------------------------------------------------


def ensure_imitation_venv() -> Path:
    """``benchmarks/.venv-imitation/bin/python``, (re)built when missing or out of date."""
    python, stamp = VENV / "bin" / "python", VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return python
    print(f"setting up {VENV.relative_to(REPO)} (imitation's own venv; a few minutes, once)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    # The CPU build of torch: from local disk (pip's find-links) where there is one, else PyTorch's CPU index.
    if subprocess.run([*pip, "--no-index", "--no-deps", "torch==2.13.0"], stderr=subprocess.DEVNULL).returncode:
        subprocess.run([*pip, "torch", "--index-url", "https://download.pytorch.org/whl/cpu"], check=True)
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(digest + "\n")
    return python


def run_imitation_side(python: Path, jobs: dict[str, dict[str, Any]], tag: str) -> dict[str, Any]:
    """Run ``jobs`` in imitation's venv (one process: its imports take seconds) and return its results."""
    if not jobs:
        return {}
    SCRATCH.mkdir(parents=True, exist_ok=True)
    jobs_path, results_path = SCRATCH / f"jobs-{tag}.json", SCRATCH / f"results-{tag}.json"
    jobs_path.write_text(json.dumps(jobs))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    )  # DAgger saves every demo through `datasets`
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [str(python), str(BENCH_DIR / "imitation_side.py"), str(jobs_path), str(results_path)],
        check=True,
        env=env,
        cwd=REPO,
    )
    return json.loads(results_path.read_text())


# -- data ------------------------------------------------------------------------------------------


def labels_of(teacher: Teacher, buffer: LabelledBuffer) -> np.ndarray:
    """The teacher's greedy label per stored transition: argmax action, or the Gaussian mean
    (the targets of policykd's nll loss, so both tools learn the same labels)."""
    if teacher.kind == "categorical":
        return buffer.column("teacher_logits")[:, 0].argmax(-1)
    if teacher.kind in ("q_values", "quantiles"):
        return buffer.column("teacher_q_values")[:, 0].argmax(-1)
    if teacher.kind == "gaussian":
        return np.array(buffer.column("teacher_mean")[:, 0], np.float32)
    raise SystemExit(f"vs_imitation: no imitation BC counterpart for a {teacher.kind} teacher ({teacher.source})")


def export_transitions(teacher: Teacher, buffer: LabelledBuffer, n_envs: int, path: Path) -> None:
    """obs, acts, next_obs, dones for imitation's ``Transitions``. Rows are vector steps of
    ``n_envs`` envs, so the next observation of row i is row i + n_envs unless the episode ended
    there; at an episode end (whose final observation the buffer does not keep) it repeats obs.
    BC never reads next_obs."""
    obs = np.asarray(buffer.column("observations"), np.float32)
    dones = np.asarray(buffer.column("terminated") | buffer.column("truncated"))
    next_obs = obs.copy()
    follows = ~dones[:-n_envs]
    next_obs[:-n_envs][follows] = obs[n_envs:][follows]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, obs=obs, acts=labels_of(teacher, buffer), next_obs=next_obs, dones=dones)


# -- students ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Task:
    name: str
    source: str
    teacher: Teacher
    plan: Plan
    preset: dict[str, Any]
    n_eval: int
    eval_seed: int
    kl_temperature: float
    repeats: int  # of the throughput measurement, per side

    @property
    def key(self) -> str:
        return self.teacher.recipe.env_id

    def new_student(self, seed: int) -> Student:
        torch.manual_seed(seed)
        return make_student_for(self.teacher, self.teacher.kind, tuple(self.preset["hidden_sizes"]))

    def evaluate(self, student: Student) -> ReturnStats:
        rng, deterministic = np.random.default_rng(self.eval_seed), bool(self.preset["deterministic_eval"])
        act = lambda obs: student.act(obs, deterministic, rng)  # noqa: E731
        return ReturnStats.of(episode_returns(act, self.teacher.recipe, self.n_eval, seed=self.eval_seed))

    def imitation_job(self, seed: int) -> dict[str, Any]:
        """What imitation_side needs to build the same student."""
        s, space, obs_space = self.new_student(seed), self.teacher.action_space, self.teacher.observation_space
        box = {"low": getattr(space, "low", np.zeros(0)).tolist(), "high": getattr(space, "high", np.zeros(0)).tolist()}
        action = {"n": int(space.n)} if hasattr(space, "n") else box
        return {
            "seed": seed,
            "hidden_sizes": list(self.preset["hidden_sizes"]),
            "batch_size": self.preset["batch_size"],
            "learning_rate": self.preset["learning_rate"],
            "obs_mean": s.obs_mean.flatten().tolist(),
            "obs_std": s.obs_std.flatten().tolist(),
            "action_space": action,
            "observation_space": {"low": obs_space.low.tolist(), "high": obs_space.high.tolist()},
        }

    def student_from_imitation(self, weights: str | Path) -> Student:
        """imitation's ActorCriticPolicy weights in policykd's Student (the same function: MLP trunk,
        action head; a Box policy's state-independent log-std becomes the head's log-std bias).
        Checked against the policy's own outputs on the probe observations exported with it."""
        config = dataclasses.replace(self.new_student(0).config, squash=False)
        student = Student(config)
        with np.load(weights, allow_pickle=False) as w:
            state = {"obs_mean": w["features_extractor.mean"], "obs_std": w["features_extractor.std"]}
            for i in range(len(config.hidden_sizes)):
                for p in ("weight", "bias"):
                    state[f"trunk.1.{2 * i}.{p}"] = w[f"mlp_extractor.policy_net.{2 * i}.{p}"]
            head_w, head_b = w["action_net.weight"], w["action_net.bias"]
            if config.head == "gaussian":
                head_w = np.concatenate([head_w, np.zeros_like(head_w)])
                head_b = np.concatenate([head_b, w["log_std"]])
            state.update({"head.weight": head_w, "head.bias": head_b})
            student.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
            with torch.no_grad():
                out = student(torch.as_tensor(w["probe_obs"]))
            # torch's Categorical keeps normalised logits (log-probabilities)
            mine = (torch.log_softmax(out.logits, -1) if config.head == "discrete" else out.mean).numpy()
            if not np.allclose(mine, w["probe_out"], rtol=1e-4, atol=1e-4):
                raise SystemExit(f"vs_imitation: the port of {weights} into Student does not reproduce its outputs")
        return student.eval()


def resolve_task(name: str, candidates: tuple[str, ...], quick: bool) -> Task | str:
    """The task's first finished expert, or a line saying why the task is pending."""
    for source in candidates:
        if is_finished(ZOO_DIR.parent / source):
            teacher = load_teacher(ZOO_DIR.parent / source)
            teacher.source = source  # repository-relative in the results
            preset = load_preset(teacher.recipe.env_id)
            plan = PLANS[source].reduced() if quick else PLANS[source]
            n_eval = int(preset["n_eval_episodes"]) // (2 if quick else 1)
            return Task(
                name,
                source,
                teacher,
                plan,
                preset,
                n_eval,
                EVAL_SEED_OFFSET,
                0.1 if teacher.kind in ("q_values", "quantiles") else 1.0,
                1 if quick else 3,
            )
    states = []
    for source in candidates:
        record = ZOO_DIR.parent / source / "expert.json"
        status = json.loads(record.read_text()).get("status") if record.is_file() else "not started"
        states.append(f"`{source}`: {status}")
    return f"pending: no finished expert ({'; '.join(states)})"


# -- cells -------------------------------------------------------------------------------------------


def collect_data(task: Task, seed: int) -> tuple[LabelledBuffer, Path]:
    """Seed ``seed``'s buffer of ``max(budgets)`` teacher transitions and its imitation export."""
    n_envs, n = int(task.preset["n_envs"]), max(task.plan.budgets)
    buffer = collect_teacher_buffer(task.teacher, task.preset, n, seed, n_envs)
    path = SCRATCH / task.key / f"data-seed{seed}.npz"
    export_transitions(task.teacher, buffer, n_envs, path)
    return buffer, path


def train_ours(task: Task, buffer: LabelledBuffer, loss_name: str, seed: int) -> tuple[Student, float]:
    """A policykd student trained on ``buffer``; returns it and the time of ``Trainer.train``."""
    student = task.new_student(seed)
    loss = make_loss(loss_name, task.teacher.kind, temperature=task.kl_temperature if loss_name == "kl" else 1.0)
    config = TrainerConfig(
        n_updates=task.plan.n_updates,
        batch_size=task.preset["batch_size"],
        learning_rate=task.preset["learning_rate"],
        seed=seed,
        progress_bar=False,
    )
    trainer = Trainer(student, loss, buffer, config=config)
    started = time.perf_counter()
    trainer.train()
    return student, time.perf_counter() - started


def stats_json(stats: ReturnStats) -> dict[str, Any]:
    return {**stats.to_json(), "returns": list(stats.returns)}


def cell_result(task: Task, stats: ReturnStats, train_time: float, **extra: Any) -> dict[str, Any]:
    sps = task.plan.n_updates * task.preset["batch_size"] / train_time
    return {"return": stats_json(stats), "train_time_s": train_time, "samples_per_s": sps, **extra}


def run_task(task: Task, python: Path, seeds: list[int], cache: Path, force: bool) -> dict[str, Any]:
    """Every cell of one task (each cached on its own), then the task's summary."""
    cache = cache / task.key
    plan, e = task.plan, f"e{task.n_eval}"
    # A cell's file name carries the settings it depends on, so a changed plan never reads a stale cell.
    settings = {
        "bc": f"u{plan.n_updates}-{e}",
        "dagger": f"r{plan.dagger_rounds}x{plan.dagger_round_labels}x{plan.dagger_round_updates}-{e}",
        "throughput": f"u{plan.n_updates}-x{task.repeats}",
        "baselines": e,
    }
    tagged = lambda name: f"{name}-{settings[name.split('-')[0]]}"  # noqa: E731
    done = lambda name: is_cached(cache / f"{tagged(name)}.json") and not force  # noqa: E731
    store = lambda name, fn: cached_run(cache, tagged(name), fn, force=force)  # noqa: E731
    baselines = store(
        "baselines",
        lambda: {
            "teacher": stats_json(
                evaluate_teacher(task.teacher, task.n_eval, task.eval_seed, bool(task.preset["deterministic_eval"]))
            ),
            "random": stats_json(evaluate_random(task.teacher, task.n_eval, task.eval_seed)),
        },
    )
    bc_names = [f"bc-{m}-n{n}-seed{s}" for s in seeds for n in task.plan.budgets for m in METHODS]
    data: dict[int, tuple[LabelledBuffer, Path]] = {}
    for seed in seeds:
        if not all(done(name) for name in bc_names if name.endswith(f"seed{seed}")) or (
            seed == seeds[0] and not done("throughput")
        ):
            data[seed] = collect_data(task, seed)
            print(f"{task.key}: collected {len(data[seed][0]):,} teacher transitions (seed {seed})", flush=True)

    # BC: imitation's cells run first, all in one process, then policykd's.
    jobs = {}
    for seed in data:
        for n in task.plan.budgets:
            name = f"bc-imitation-n{n}-seed{seed}"
            if not done(name):
                jobs[name] = {
                    **task.imitation_job(seed),
                    "kind": "bc",
                    "data": str(data[seed][1]),
                    "n_transitions": n,
                    "n_updates": task.plan.n_updates,
                    "out": str(SCRATCH / task.key / f"{name}.npz"),
                }
    imitation = run_imitation_side(python, jobs, f"{task.key}-bc")

    def imitation_cell(name: str) -> dict[str, Any]:
        student = task.student_from_imitation(jobs[name]["out"])
        return cell_result(task, task.evaluate(student), imitation[name]["train_time_s"])

    def ours_cell(method: str, seed: int, n: int) -> dict[str, Any]:
        student, train_time = train_ours(task, head_of(data[seed][0], n), method, seed)
        return cell_result(task, task.evaluate(student), train_time)

    bc = {}
    for seed in seeds:
        for n in task.plan.budgets:
            for method in METHODS:
                name = f"bc-{method}-n{n}-seed{seed}"
                run = partial(imitation_cell, name) if method == "imitation" else partial(ours_cell, method, seed, n)
                bc[name] = store(name, run)
                print(
                    f"{task.key} {name}: return {bc[name]['return']['mean']:.1f}, "
                    f"{bc[name]['samples_per_s']:,.0f} samples/s",
                    flush=True,
                )

    # Throughput: both tools on the same 20k-or-largest buffer, back to back, so load from other jobs hits both alike.
    def throughput() -> dict[str, Any]:
        buffer, path = data[seeds[0]]
        n = min(20_000, len(buffer))
        small = head_of(buffer, n)
        reps, rng = task.repeats, np.random.default_rng(0)
        ours = {m: [train_ours(task, small, m, seeds[0])[1] for _ in range(reps)] for m in ("nll", "kl")}
        job = {
            **task.imitation_job(seeds[0]),
            "kind": "bc",
            "data": str(path),
            "n_transitions": n,
            "n_updates": task.plan.n_updates,
            "out": None,
            "time_loader": True,
        }
        theirs = run_imitation_side(python, {f"rep{i}": job for i in range(reps)}, f"{task.key}-throughput")
        ours = {m: ours[m] + [train_ours(task, small, m, seeds[0])[1] for _ in range(reps)] for m in ours}
        started = time.perf_counter()  # policykd's batches alone: buffer.sample, as Trainer.step draws them
        for _ in range(task.plan.n_updates):
            small.sample(task.preset["batch_size"], rng)
        sample_time = time.perf_counter() - started
        median = lambda xs: float(np.median(xs))  # noqa: E731
        sps = lambda t: task.plan.n_updates * task.preset["batch_size"] / median(t)  # noqa: E731
        imitation_times = [r["train_time_s"] for r in theirs.values()]
        return {
            "n_transitions": n,
            "n_updates": task.plan.n_updates,
            "repeats": reps,
            "imitation": sps(imitation_times),
            **{m: sps(t) for m, t in ours.items()},
            "imitation_train_time_s": median(imitation_times),
            "nll_train_time_s": median(ours["nll"]),
            "imitation_loader_time_s": median([r["loader_time_s"] for r in theirs.values()]),
            "policykd_sample_time_s": sample_time,
        }

    result_throughput = store("throughput", throughput)
    print(f"{task.key} throughput (samples/s): {result_throughput}", flush=True)
    dagger = run_dagger(task, python, seeds, cache, done, store)
    return {
        "name": task.name,
        "env_id": task.key,
        "teacher": task.source,
        "teacher_algo": task.teacher.algo,
        "teacher_kind": task.teacher.kind,
        "plan": dataclasses.asdict(task.plan),
        "seeds": seeds,
        "n_eval_episodes": task.n_eval,
        "hidden_sizes": list(task.preset["hidden_sizes"]),
        "batch_size": task.preset["batch_size"],
        "learning_rate": task.preset["learning_rate"],
        "n_envs": int(task.preset["n_envs"]),
        "kl_temperature": task.kl_temperature,
        "imitation_env_id": IMITATION_ENV.get(task.key, task.key),
        "baselines": baselines,
        "bc": bc,
        "throughput": result_throughput,
        "dagger": dagger,
    }


def run_dagger(task: Task, python: Path, seeds: list[int], cache: Path, done: Any, store: Any) -> dict[str, Any]:
    """imitation's SimpleDAggerTrainer and policykd's online β-mixture loop (nll and kl), per seed."""
    plan = task.plan
    rampdown = max(plan.dagger_rounds // 2, 1)
    jobs = {}
    for seed in seeds:
        name = f"dagger-imitation-seed{seed}"
        if not done(name):
            expert_zip = ZOO_DIR.parent / task.source / f"{task.key}.zip"
            norm = task.teacher.normalizer
            jobs[name] = {
                **task.imitation_job(seed),
                "kind": "dagger",
                "env_id": IMITATION_ENV.get(task.key, task.key),
                "expert": {
                    "zip": str(expert_zip),
                    "normalizer": None
                    if norm is None
                    else {
                        "mean": norm.mean.tolist(),
                        "var": norm.var.tolist(),
                        "clip": norm.clip,
                        "epsilon": norm.epsilon,
                    },
                },
                # One env: each round ends at the first episode end past the label budget (with
                # n envs imitation would finish n whole episodes per round, e.g. 4,000 CartPole labels).
                "n_envs": 1,
                "n_rounds": plan.dagger_rounds,
                "round_min_timesteps": plan.dagger_round_labels,
                "round_min_episodes": 1,
                "n_updates_per_round": plan.dagger_round_updates,
                "rampdown_rounds": rampdown,
                "out_dir": str(SCRATCH / task.key / name),
            }
    theirs = run_imitation_side(python, jobs, f"{task.key}-dagger")

    def imitation_cell(seed: int) -> dict[str, Any]:
        rounds = []
        for r in theirs[f"dagger-imitation-seed{seed}"]["rounds"]:
            stats = task.evaluate(task.student_from_imitation(r["weights"]))
            kept = {k: r[k] for k in ("round", "beta", "n_labels", "n_dataset", "driver_return")}
            rounds.append({**kept, "return": stats_json(stats)})
        return {"rounds": rounds}

    def ours_cell(loss_name: str, seed: int) -> dict[str, Any]:
        evaluations: list[ReturnStats] = []

        def evaluate(student: Student) -> float:
            evaluations.append(task.evaluate(student))
            return evaluations[-1].mean

        n_envs = int(task.preset["n_envs"])
        per_round = -(-plan.dagger_round_labels // n_envs) * n_envs  # collect_rollouts takes whole vector steps
        config = OnlineConfig(
            n_rounds=plan.dagger_rounds,
            n_transitions_per_round=plan.dagger_round_labels,
            n_updates_per_round=plan.dagger_round_updates,
            capacity=plan.dagger_rounds * per_round,
            n_envs=n_envs,
            batch_size=task.preset["batch_size"],
            learning_rate=task.preset["learning_rate"],
            seed=seed,
        )
        loss = make_loss(loss_name, task.teacher.kind, temperature=task.kl_temperature if loss_name == "kl" else 1.0)
        result = train_online(
            task.teacher, task.new_student(seed), loss, LinearBeta(rampdown), config=config, evaluate=evaluate
        )
        return {
            "rounds": [
                {
                    "round": r.round,
                    "beta": r.beta,
                    "n_labels": r.n_labels,
                    "n_dataset": r.buffer_size,
                    "driver_return": r.driver_return,
                    "return": stats_json(e),
                }
                for r, e in zip(result.rounds, evaluations)
            ]
        }

    out = {}
    for seed in seeds:
        for method in METHODS:
            name = f"dagger-{method}-seed{seed}"
            run = partial(imitation_cell, seed) if method == "imitation" else partial(ours_cell, method, seed)
            out[name] = store(name, run)
            last = out[name]["rounds"][-1]
            print(f"{task.key} {name}: {last['n_labels']:,} labels, return {last['return']['mean']:.1f}", flush=True)
    return {"rampdown_rounds": rampdown, "runs": out}


def imitation_versions(python: Path) -> str:
    code = (
        "import importlib.metadata as m, platform; print(', '.join(['python ' + platform.python_version()] + "
        "[f'{p} {m.version(p)}' for p in ('imitation', 'stable_baselines3', 'gymnasium', 'torch', 'numpy')]))"
    )
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    args = parse_quick_args(
        __doc__,
        "1 seed, 2 data budgets, half the gradient steps, DAgger rounds and evaluation episodes, no MuJoCo",
        only_help="only tasks whose env id contains this",
    )
    started = time.perf_counter()
    python = ensure_imitation_venv()
    cache = RESULTS_DIR / "vs_imitation" / ("quick" if args.quick else "full")
    seeds = [0] if args.quick else [0, 1, 2]
    tasks = {}
    for name, candidates in TASKS:
        if args.quick and name == "MuJoCo":
            tasks[name] = "left out of `--quick` (a 128×128 student, 10,000 gradient steps per cell); see the full run"
            continue
        task = resolve_task(name, candidates, args.quick)
        if isinstance(task, str) or args.only not in task.key:
            tasks[name] = task if isinstance(task, str) else "not selected (--only)"
            continue
        print(f"== {name}: {task.source}", flush=True)
        tasks[name] = run_task(task, python, seeds, cache, args.force)
    command = "python benchmarks/vs_imitation.py" + (" --quick" if args.quick else "")
    out = RESULTS_DIR / results_name("vs_imitation", args.quick)
    write_report(
        tasks,
        out,
        command,
        time.perf_counter() - started,
        imitation_versions(python),
        None if args.quick else REPO / "README.md",
    )
    print(f"wrote {out}.md and .json in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
