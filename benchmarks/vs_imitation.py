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
  policykd's online loop (`policykd.online.train_online`, β-mixture collection), same linear β
  schedule, round budget and updates per round.
- every policy, imitation's included (its weights are exported and loaded into policykd's
  `Student`, checked output for output), is evaluated by `policykd.evaluation` on the same episodes.
Results: `results/vs_imitation.md` and `.json` (`vs_imitation-quick.*` with `--quick`), one cached
JSON per cell under `results/vs_imitation[-quick]/`; scratch files under `runs/benchmarks/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import RESULTS_DIR, cached_run, provenance
from policykd.buffers import LabelledBuffer
from policykd.collect import collect_rollouts
from policykd.envs import make_vec_env
from policykd.evaluation import ReturnStats, episode_returns, pct_of
from policykd.fileio import write_json_atomic, write_text_atomic
from policykd.losses import make_loss
from policykd.online import LinearBeta, OnlineConfig, train_online
from policykd.pipeline import EVAL_SEED_OFFSET, evaluate_random, evaluate_teacher
from policykd.presets import ZOO_DIR, load_preset
from policykd.students import Student, make_student
from policykd.teachers import Teacher, load_teacher
from policykd.trainer import Trainer, TrainerConfig

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV = BENCH_DIR / ".venv-imitation"
REQUIREMENTS = BENCH_DIR / "imitation-requirements.txt"
SCRATCH = REPO / "runs" / "benchmarks" / "vs_imitation"
# imitation's gymnasium 0.29 predates these ids; its DAgger runs in the closest one (BC needs no env).
IMITATION_ENV = {"LunarLander-v3": "LunarLander-v2", "HalfCheetah-v5": "HalfCheetah-v4"}
METHODS = ("imitation", "nll", "kl")


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
        return dataclasses.replace(self, budgets=(self.budgets[0], self.budgets[len(self.budgets) // 2]),
                                   n_updates=self.n_updates // 2, dagger_rounds=max(self.dagger_rounds // 2, 2),
                                   dagger_round_updates=self.dagger_round_updates // 2)  # fmt: skip


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
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1")  # DAgger saves every demo through `datasets`
    env.pop("PYTHONPATH", None)
    subprocess.run([str(python), str(BENCH_DIR / "imitation_side.py"), str(jobs_path), str(results_path)],
                   check=True, env=env, cwd=REPO)  # fmt: skip
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


def head_of(buffer: LabelledBuffer, n: int) -> LabelledBuffer:
    """A buffer holding the first ``n`` transitions of ``buffer`` (collected in order, never wrapped)."""
    out = LabelledBuffer(n, meta=buffer.meta, **buffer.layout())
    batch = buffer.batch_at(np.arange(n))
    out.add(batch.observations.numpy(), batch.actions.numpy(), batch.rewards.numpy(),
            *(buffer.column(c)[:n] for c in ("terminated", "truncated", "episode_starts", "drivers")),
            batch.teacher_outputs)  # fmt: skip
    return out


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
        norm = self.teacher.normalizer
        return make_student(self.teacher.kind, self.teacher.observation_space, self.teacher.action_space,
                            hidden_sizes=tuple(self.preset["hidden_sizes"]),
                            obs_mean=None if norm is None else norm.mean,
                            obs_std=None if norm is None else np.sqrt(norm.var + norm.epsilon))  # fmt: skip

    def evaluate(self, student: Student) -> ReturnStats:
        rng, deterministic = np.random.default_rng(self.eval_seed), bool(self.preset["deterministic_eval"])
        act = lambda obs: student.act(obs, deterministic, rng)  # noqa: E731
        return ReturnStats.of(episode_returns(act, self.teacher.recipe, self.n_eval, seed=self.eval_seed))

    def imitation_job(self, seed: int) -> dict[str, Any]:
        """What imitation_side needs to build the same student."""
        s = self.new_student(seed)
        space = self.teacher.action_space
        action = {"n": int(space.n)} if hasattr(space, "n") else {"low": space.low.tolist(), "high": space.high.tolist()}
        obs_space = self.teacher.observation_space
        return {"seed": seed, "hidden_sizes": list(self.preset["hidden_sizes"]), "batch_size": self.preset["batch_size"],
                "learning_rate": self.preset["learning_rate"], "obs_mean": s.obs_mean.flatten().tolist(),
                "obs_std": s.obs_std.flatten().tolist(), "action_space": action,
                "observation_space": {"low": obs_space.low.tolist(), "high": obs_space.high.tolist()}}  # fmt: skip

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
        record = ZOO_DIR.parent / source / "expert.json"
        if record.is_file() and json.loads(record.read_text()).get("status") == "finished":
            teacher = load_teacher(ZOO_DIR.parent / source)
            teacher.source = source  # repository-relative in the results
            preset = load_preset(teacher.recipe.env_id)
            plan = PLANS[source].reduced() if quick else PLANS[source]
            n_eval = int(preset["n_eval_episodes"]) // (2 if quick else 1)
            return Task(name, source, teacher, plan, preset, n_eval, EVAL_SEED_OFFSET,
                        0.1 if teacher.kind in ("q_values", "quantiles") else 1.0, 1 if quick else 3)  # fmt: skip
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
    venv = make_vec_env(task.teacher.recipe, n_envs, seed)
    try:
        buffer, _ = collect_rollouts(venv, [task.teacher], n, rng=np.random.default_rng(seed),
                                     epsilon=float(task.preset["epsilon"]),
                                     action_noise=float(task.preset["action_noise"]))  # fmt: skip
    finally:
        venv.close()
    path = SCRATCH / task.key / f"data-seed{seed}.npz"
    export_transitions(task.teacher, buffer, n_envs, path)
    return buffer, path


def train_ours(task: Task, buffer: LabelledBuffer, loss_name: str, seed: int) -> tuple[Student, float]:
    """A policykd student trained on ``buffer``; returns it and the time of ``Trainer.train``."""
    student = task.new_student(seed)
    loss = make_loss(loss_name, task.teacher.kind, temperature=task.kl_temperature if loss_name == "kl" else 1.0)
    config = TrainerConfig(n_updates=task.plan.n_updates, batch_size=task.preset["batch_size"],
                           learning_rate=task.preset["learning_rate"], seed=seed, progress_bar=False)  # fmt: skip
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
    settings = {"bc": f"u{plan.n_updates}-{e}", "dagger": f"r{plan.dagger_rounds}x{plan.dagger_round_labels}x"
                f"{plan.dagger_round_updates}-{e}", "throughput": f"u{plan.n_updates}-x{task.repeats}", "baselines": e}
    tagged = lambda name: f"{name}-{settings[name.split('-')[0]]}"  # noqa: E731
    done = lambda name: (cache / f"{tagged(name)}.json").is_file() and not force  # noqa: E731
    store = lambda name, fn: cached_run(cache, tagged(name), fn, force=force)  # noqa: E731
    baselines = store("baselines", lambda: {
        "teacher": stats_json(evaluate_teacher(task.teacher, task.n_eval, task.eval_seed,
                                               bool(task.preset["deterministic_eval"]))),
        "random": stats_json(evaluate_random(task.teacher, task.n_eval, task.eval_seed))})  # fmt: skip
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
                jobs[name] = {**task.imitation_job(seed), "kind": "bc", "data": str(data[seed][1]), "n_transitions": n,
                              "n_updates": task.plan.n_updates, "out": str(SCRATCH / task.key / f"{name}.npz")}  # fmt: skip
    imitation = run_imitation_side(python, jobs, f"{task.key}-bc")
    for seed in seeds:
        for n in task.plan.budgets:
            for method in METHODS:
                name = f"bc-{method}-n{n}-seed{seed}"
                if method == "imitation":
                    r = imitation.get(name, {})
                    fn = lambda r=r, name=name: cell_result(
                        task, task.evaluate(task.student_from_imitation(jobs[name]["out"])), r["train_time_s"])
                else:
                    fn = lambda method=method, seed=seed, n=n: (lambda s, t: cell_result(task, task.evaluate(s), t))(
                        *train_ours(task, head_of(data[seed][0], n), method, seed))
                result = store(name, fn)
                print(f"{task.key} {name}: return {result['return']['mean']:.1f}, "
                      f"{result['samples_per_s']:,.0f} samples/s", flush=True)  # fmt: skip

    # Throughput: both tools on the same 20k-or-largest buffer, back to back, so load from other jobs hits both alike.
    def throughput() -> dict[str, Any]:
        buffer, path = data[seeds[0]]
        n = min(20_000, len(buffer))
        small = head_of(buffer, n)
        reps, rng = task.repeats, np.random.default_rng(0)
        ours = {m: [train_ours(task, small, m, seeds[0])[1] for _ in range(reps)] for m in ("nll", "kl")}
        job = {**task.imitation_job(seeds[0]), "kind": "bc", "data": str(path), "n_transitions": n,
               "n_updates": task.plan.n_updates, "out": None, "time_loader": True}  # fmt: skip
        theirs = run_imitation_side(python, {f"rep{i}": job for i in range(reps)}, f"{task.key}-throughput")
        ours = {m: ours[m] + [train_ours(task, small, m, seeds[0])[1] for _ in range(reps)] for m in ours}
        started = time.perf_counter()  # policykd's batches alone: buffer.sample, as Trainer.step draws them
        for _ in range(task.plan.n_updates):
            small.sample(task.preset["batch_size"], rng)
        sample_time = time.perf_counter() - started
        median = lambda xs: float(np.median(xs))  # noqa: E731
        sps = lambda t: task.plan.n_updates * task.preset["batch_size"] / median(t)  # noqa: E731
        imitation_times = [r["train_time_s"] for r in theirs.values()]
        return {"n_transitions": n, "n_updates": task.plan.n_updates, "repeats": reps,
                "imitation": sps(imitation_times), **{m: sps(t) for m, t in ours.items()},
                "imitation_train_time_s": median(imitation_times), "nll_train_time_s": median(ours["nll"]),
                "imitation_loader_time_s": median([r["loader_time_s"] for r in theirs.values()]),
                "policykd_sample_time_s": sample_time}  # fmt: skip

    result_throughput = store("throughput", throughput)
    print(f"{task.key} throughput (samples/s): {result_throughput}", flush=True)
    dagger = run_dagger(task, python, seeds, cache, done, store)
    return {"name": task.name, "env_id": task.key, "teacher": task.source, "teacher_algo": task.teacher.algo,
            "teacher_kind": task.teacher.kind, "plan": dataclasses.asdict(task.plan), "seeds": seeds,
            "n_eval_episodes": task.n_eval, "hidden_sizes": list(task.preset["hidden_sizes"]),
            "batch_size": task.preset["batch_size"], "learning_rate": task.preset["learning_rate"],
            "n_envs": int(task.preset["n_envs"]), "kl_temperature": task.kl_temperature,
            "imitation_env_id": IMITATION_ENV.get(task.key, task.key), "baselines": baselines,
            "bc": {name: store(name, None) for name in bc_names},
            "throughput": result_throughput, "dagger": dagger}  # fmt: skip


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
            jobs[name] = {**task.imitation_job(seed), "kind": "dagger", "env_id": IMITATION_ENV.get(task.key, task.key),
                          "expert": {"zip": str(expert_zip), "normalizer": None if norm is None else {
                              "mean": norm.mean.tolist(), "var": norm.var.tolist(), "clip": norm.clip,
                              "epsilon": norm.epsilon}},
                          # One env: each round ends at the first episode end past the label budget (with
                          # n envs imitation would finish n whole episodes per round, e.g. 4,000 CartPole labels).
                          "n_envs": 1, "n_rounds": plan.dagger_rounds, "round_min_timesteps": plan.dagger_round_labels,
                          "round_min_episodes": 1, "n_updates_per_round": plan.dagger_round_updates,
                          "rampdown_rounds": rampdown, "out_dir": str(SCRATCH / task.key / name)}  # fmt: skip
    theirs = run_imitation_side(python, jobs, f"{task.key}-dagger")

    def imitation_cell(seed: int) -> dict[str, Any]:
        rounds = []
        for r in theirs[f"dagger-imitation-seed{seed}"]["rounds"]:
            stats = task.evaluate(task.student_from_imitation(r["weights"]))
            rounds.append({k: r[k] for k in ("round", "beta", "n_labels", "n_dataset", "driver_return")} | {"return": stats_json(stats)})
        return {"rounds": rounds}

    def ours_cell(loss_name: str, seed: int) -> dict[str, Any]:
        evaluations: list[ReturnStats] = []

        def evaluate(student: Student) -> float:
            evaluations.append(task.evaluate(student))
            return evaluations[-1].mean

        config = OnlineConfig(n_rounds=plan.dagger_rounds, n_transitions_per_round=plan.dagger_round_labels,
                              n_updates_per_round=plan.dagger_round_updates,
                              capacity=plan.dagger_rounds * plan.dagger_round_labels, n_envs=int(task.preset["n_envs"]),
                              batch_size=task.preset["batch_size"], learning_rate=task.preset["learning_rate"],
                              seed=seed)  # fmt: skip
        loss = make_loss(loss_name, task.teacher.kind, temperature=task.kl_temperature if loss_name == "kl" else 1.0)
        result = train_online(task.teacher, task.new_student(seed), loss, LinearBeta(rampdown), config=config,
                              evaluate=evaluate)  # fmt: skip
        return {"rounds": [{"round": r.round, "beta": r.beta, "n_labels": r.n_labels, "n_dataset": r.buffer_size,
                            "driver_return": r.driver_return, "return": stats_json(e)} for r, e in zip(result.rounds, evaluations)]}  # fmt: skip

    out = {}
    for seed in seeds:
        for method in METHODS:
            name = f"dagger-{method}-seed{seed}"
            fn = (lambda seed=seed: imitation_cell(seed)) if method == "imitation" else (
                lambda method=method, seed=seed: ours_cell(method, seed))
            out[name] = store(name, fn)
            last = out[name]["rounds"][-1]
            print(f"{task.key} {name}: {last['n_labels']:,} labels, return {last['return']['mean']:.1f}", flush=True)
    return {"rampdown_rounds": rampdown, "runs": out}


# -- the report ------------------------------------------------------------------------------------


def pooled(cells: list[dict[str, Any]]) -> ReturnStats:
    """Every evaluation episode of ``cells`` (one per seed) as one sample."""
    return ReturnStats.of([x for c in cells for x in c["return"]["returns"]])


def seed_mean_ci(values: list[float]) -> tuple[float, float, float]:
    s = ReturnStats.of(values)
    return s.mean, s.ci95[0], s.ci95[1]


def reach(xs: list[float], returns: list[float], threshold: float) -> float | None:
    """The first x whose return is >= threshold (None: never)."""
    return next((x for x, r in zip(xs, returns) if r >= threshold), None)


def fmt_n(n: float | None) -> str:
    return "not reached" if n is None else f"{n:,.0f}"


def ratio(ours: float | None, theirs: float | None, digits: int = 2) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.{digits}f}"


def fmt_ret(s: ReturnStats) -> str:
    return f"{s.mean:.1f} ± {(s.ci95[1] - s.ci95[0]) / 2:.1f}"


LABEL = {"imitation": "imitation", "nll": "policykd nll", "kl": "policykd kl"}


def summarise(t: dict[str, Any]) -> dict[str, Any]:
    """Per method: final return, samples/s, transitions (BC) and labels (DAgger) to 95 %."""
    teacher, random = t["baselines"]["teacher"]["mean"], t["baselines"]["random"]["mean"]
    threshold = random + 0.95 * (teacher - random)
    budgets, seeds = t["plan"]["budgets"], t["seeds"]
    out: dict[str, Any] = {"threshold": threshold, "teacher": teacher, "random": random, "methods": {}}
    for m in METHODS:
        bc = {(n, s): t["bc"][f"bc-{m}-n{n}-seed{s}"] for n in budgets for s in seeds}
        curve = [seed_mean_ci([bc[n, s]["return"]["mean"] for s in seeds]) for n in budgets]
        final = pooled([bc[budgets[-1], s] for s in seeds])
        runs = [t["dagger"]["runs"][f"dagger-{m}-seed{s}"]["rounds"] for s in seeds]
        d_labels = [float(np.mean([r[i]["n_labels"] for r in runs])) for i in range(len(runs[0]))]
        d_curve = [float(np.mean([r[i]["return"]["mean"] for r in runs])) for i in range(len(runs[0]))]
        d_final = ReturnStats.of([x for r in runs for x in r[-1]["return"]["returns"]])
        out["methods"][m] = {
            "bc_curve": curve, "bc_final": final.to_json(),
            "bc_final_pct_of_teacher": pct_of(final.mean, teacher, random),
            "bc_to_95": reach(budgets, [c[0] for c in curve], threshold),
            "bc_to_95_per_seed": [reach(budgets, [bc[n, s]["return"]["mean"] for n in budgets], threshold) for s in seeds],
            "samples_per_s": t["throughput"][m],
            "dagger_labels": d_labels, "dagger_curve": d_curve, "dagger_final": d_final.to_json(),
            "dagger_final_pct_of_teacher": pct_of(d_final.mean, teacher, random),
            "dagger_to_95": reach(d_labels, d_curve, threshold),
            "dagger_to_95_per_seed": [reach([x["n_labels"] for x in r], [x["return"]["mean"] for x in r], threshold)
                                      for r in runs],
        }  # fmt: skip
    return out


def task_markdown(t: dict[str, Any], s: dict[str, Any]) -> list[str]:
    m, p, imit = s["methods"], t["plan"], s["methods"]["imitation"]
    lines = [
        f"### {t['name']}: {t['env_id']}, {t['teacher_algo']} teacher `{t['teacher']}`", "",
        f"Teacher {s['teacher']:.1f}, uniform random {s['random']:.1f} on the {t['n_eval_episodes']} evaluation "
        f"episodes; 95 % of the teacher (random = 0 %) is a return ≥ {s['threshold']:.1f}. Student: MLP "
        f"{'×'.join(map(str, t['hidden_sizes']))}, ReLU; batch {t['batch_size']}, Adam lr {t['learning_rate']:g}, "
        f"{p['n_updates']:,} gradient steps at every budget; kl at τ = {t['kl_temperature']:g}; seeds {t['seeds']}.", "",
        f"BC, final return at {p['budgets'][-1]:,} transitions (mean ± 95 % CI over all "
        f"{len(t['seeds']) * t['n_eval_episodes']} evaluation episodes of all seeds) and transitions needed:", "",
        "| method | return | % of teacher | transitions to 95 % (seed mean; per seed) | samples/s |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for k in METHODS:
        x = m[k]
        lines.append(f"| {LABEL[k]} | {fmt_ret(ReturnStats.of(t_returns(t, k)))} | {x['bc_final_pct_of_teacher']:.1f} | "
                     f"{fmt_n(x['bc_to_95'])}; {', '.join(fmt_n(n) for n in x['bc_to_95_per_seed'])} | "
                     f"{x['samples_per_s']:,.0f} |")  # fmt: skip
    lines += ["", "BC learning curve: return after training on the first n transitions, mean [95 % CI] over seeds:", "",
              "| transitions | " + " | ".join(LABEL[k] for k in METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for i, n in enumerate(p["budgets"]):
        lines.append(f"| {n:,} | " + " | ".join(
            "{:.1f} [{:.1f}, {:.1f}]".format(*m[k]["bc_curve"][i]) for k in METHODS) + " |")
    lines += ["", f"DAgger: {p['dagger_rounds']} rounds, β from 1 to 0 over {t['dagger']['rampdown_rounds']} rounds "
              f"(linear), ≥ {p['dagger_round_labels']:,} labels and {p['dagger_round_updates']:,} gradient steps per "
              f"round. imitation: 1 env in {t['imitation_env_id']}, whole episodes per round; policykd: "
              f"{t['n_envs']} envs in {t['env_id']}, episodes continue across rounds. Return after each round, "
              "mean over seeds (labels: mean over seeds):", "",
              "| round | " + " | ".join(f"{LABEL[k]} labels | return" for k in METHODS) + " |",
              "|---|" + "---|---|" * len(METHODS)]  # fmt: skip
    for i in range(p["dagger_rounds"]):
        lines.append(f"| {i} | " + " | ".join(f"{m[k]['dagger_labels'][i]:,.0f} | {m[k]['dagger_curve'][i]:.1f}"
                                               for k in METHODS) + " |")  # fmt: skip
    expert_there = [t["dagger"]["runs"][f"dagger-imitation-seed{seed}"]["rounds"][0]["driver_return"] for seed in t["seeds"]]
    lines += ["", f"The expert loaded in imitation's venv scored {np.mean(expert_there):.1f} in {t['imitation_env_id']} "
              "(its round-0 episodes, β = 1), against "
              f"{s['teacher']:.1f} in {t['env_id']} through policykd.", "",
              "| method | DAgger labels to 95 % (seed mean; per seed) | final return | % of teacher |",
              "|---|---|---|---|"]  # fmt: skip
    for k in METHODS:
        x = m[k]
        lines.append(f"| {LABEL[k]} | {fmt_n(x['dagger_to_95'])}; {', '.join(fmt_n(n) for n in x['dagger_to_95_per_seed'])} | "
                     f"{fmt_ret(ReturnStats.of(x['dagger_final_returns']))} | {x['dagger_final_pct_of_teacher']:.1f} |")  # fmt: skip
    return lines + [""]


def t_returns(t: dict[str, Any], method: str) -> list[float]:
    n = t["plan"]["budgets"][-1]
    return [x for s in t["seeds"] for x in t["bc"][f"bc-{method}-n{n}-seed{s}"]["return"]["returns"]]


def imitation_versions(python: Path) -> str:
    code = ("import importlib.metadata as m, platform; print(', '.join(['python ' + platform.python_version()] + "
            "[f'{p} {m.version(p)}' for p in ('imitation', 'stable_baselines3', 'gymnasium', 'torch', 'numpy')]))")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def write_report(tasks: dict[str, Any], out: Path, command: str, wall_time: float, python: Path) -> None:
    done = {name: t for name, t in tasks.items() if isinstance(t, dict)}
    summaries = {name: summarise(t) for name, t in done.items()}
    for name, s in summaries.items():
        for k in METHODS:
            s["methods"][k]["dagger_final_returns"] = [
                x for seed in done[name]["seeds"]
                for x in done[name]["dagger"]["runs"][f"dagger-{k}-seed{seed}"]["rounds"][-1]["return"]["returns"]]
    rows = []
    for name, t in done.items():
        m = summaries[name]["methods"]
        rnd = summaries[name]["random"]
        norm = lambda x: x - rnd  # noqa: E731  (returns on the scale where random = 0)
        for k in ("nll", "kl"):
            rows.append(
                f"| {t['env_id']} | {k} | {ratio(norm(m[k]['bc_final']['mean']), norm(m['imitation']['bc_final']['mean']))} | "
                f"{ratio(m[k]['samples_per_s'], m['imitation']['samples_per_s'], 1)} | "
                f"{ratio(m[k]['bc_to_95'], m['imitation']['bc_to_95'])} | "
                f"{ratio(norm(m[k]['dagger_final']['mean']), norm(m['imitation']['dagger_final']['mean']))} | "
                f"{ratio(m[k]['dagger_to_95'], m['imitation']['dagger_to_95'])} |")  # fmt: skip
    text = [
        "# policykd vs the imitation library (BC and DAgger)", "",
        "Generated by `benchmarks/vs_imitation.py`; do not edit by hand.", "",
        provenance(command).rstrip(), f"- imitation's venv (`benchmarks/.venv-imitation`): {imitation_versions(python)}",
        f"- wall time of this invocation: {wall_time / 60:.1f} min (cells cached by earlier invocations are read, not rerun); "
        "1 torch thread on both sides, on 2 cores shared with expert trainings", "",
        "## Ratios (policykd / imitation)", "",
        "Returns are compared on the scale where a uniformly random policy scores 0 (return − random), so a ratio"
        " of 1.00 is a tie on negative-return tasks too. Above 1 is better for policykd for return and samples/s;"
        " below 1 is better for the transitions and labels needed to reach 95 % of the teacher.", "",
        "| task | policykd loss | BC return | training samples/s | BC transitions to 95 % | DAgger return | DAgger labels to 95 % |",
        "|---|---|---|---|---|---|---|", *rows, "",
    ]  # fmt: skip
    text += ["## Where the training time goes", "",
             "Medians over back-to-back repeats on the same ≤ 20,000 transitions (imitation's between policykd's; 3 per "
             "side, 1 with `--quick`); \"batches alone\" draws the same "
             "number of batches without training (imitation: iterating BC's `DataLoader`, which indexes `Transitions` "
             "one sample at a time and collates them; policykd: `LabelledBuffer.sample`, one vectorised gather).", "",
             "| task | gradient steps × batch | imitation BC s | its batches alone | policykd nll s | its batches alone |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for t in done.values():
        th = t["throughput"]
        share = lambda part, whole: f"{part:.1f} s ({100 * part / whole:.0f} %)"  # noqa: E731
        text.append(f"| {t['env_id']} | {th['n_updates']:,} × {t['batch_size']} | {th['imitation_train_time_s']:.1f} | "
                    f"{share(th['imitation_loader_time_s'], th['imitation_train_time_s'])} | {th['nll_train_time_s']:.1f} | "
                    f"{share(th['policykd_sample_time_s'], th['nll_train_time_s'])} |")  # fmt: skip
    text.append("")
    for name, t in tasks.items():
        if not isinstance(t, dict):
            text += [f"### {name}", "", t, ""]
        else:
            text += task_markdown(t, summaries[name])
    text += [
        "## How the two sides are made the same", "",
        "- Same expert, same data: for each seed one buffer of teacher-driven transitions is collected by policykd's "
        "`collect_rollouts` (the preset's exploration) and exported as `obs, acts, next_obs, dones`; imitation reads "
        "it as `Transitions`. A budget of n transitions is the first n rows for both. Labels: the teacher's greedy "
        "action (argmax of logits / Q-values, or the Gaussian mean): what policykd's `nll` fits.",
        "- Same student: MLP trunk with the same hidden sizes and ReLU, the same input normalisation (the teacher's "
        "VecNormalize mean and std, or none); imitation's `ActorCriticPolicy` keeps SB3's orthogonal initialisation, a "
        "state-independent log-std for Box actions and a one-layer value head it computes but BC never trains. Each "
        "tool keeps its own loss details: imitation's BC adds its default entropy bonus (1e-3) and does not clip "
        "gradients; policykd clips the gradient norm at 10.",
        "- Same optimisation: Adam with the same learning rate, batch size and number of gradient steps.",
        "- Same evaluation: imitation's trained weights are exported as a plain `.npz`, loaded into policykd's "
        "`Student` (checked against the policy's own outputs) and played by `policykd.evaluation` on the same "
        "episodes (seeds 10000+) as every other policy, greedily.",
        "- Samples/s: gradient steps × batch size over the wall time of the training call alone (`BC.train`, "
        "`Trainer.train`), medians over the repeats of the throughput measurement (next section); the per-cell "
        "figures in the JSON are single runs under whatever load the machine had.",
        "- DAgger labels: every state the expert is asked to label, whoever drove (imitation: counted at the "
        "expert's `predict`; policykd: `collect_rollouts`).", "",
    ]  # fmt: skip
    write_text_atomic(out.with_suffix(".md"), "\n".join(text))
    write_json_atomic(out.with_suffix(".json"), {"command": command, "wall_time_s": wall_time, "tasks": tasks,
                                                  "summaries": summaries})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 data budgets, half the gradient steps, "
                        "DAgger rounds and evaluation episodes, no MuJoCo")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="recompute cached cells")
    parser.add_argument("--only", default="", help="only tasks whose env id contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.chdir(REPO)
    started = time.perf_counter()
    python = ensure_imitation_venv()
    tag = "vs_imitation-quick" if args.quick else "vs_imitation"
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
        tasks[name] = run_task(task, python, seeds, RESULTS_DIR / tag, args.force)
    command = "python benchmarks/vs_imitation.py" + (" --quick" if args.quick else "")
    write_report(tasks, RESULTS_DIR / tag, command, time.perf_counter() - started, python)
    print(f"wrote {RESULTS_DIR / tag}.md and .json in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
