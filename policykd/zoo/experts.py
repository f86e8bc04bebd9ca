"""Train rl-baselines3-zoo experts that survive interruptions.

rl_zoo3's ``ExperimentManager`` reads the tuned hyperparameters and builds the training env
(wrappers, frame stack, VecNormalize); this module adds what a 2-core machine with 3-hour
sessions needs on top of it:

- a resume checkpoint (weights + optimiser + VecNormalize) written atomically every
  ``checkpoint_every`` steps under ``<run>/resume/``, so a rerun of the same command continues
  where the last one stopped, with learning-rate and exploration schedules intact;
- a periodic evaluation that keeps the best checkpoint. Those evaluations are short and noisy,
  so before shipping, the best and the final checkpoint are both scored the way the zoo scores
  experts (30 episodes, fixed seeds) and the higher one ships, with that score recorded;
- at the end, the rl-zoo layout a user expects (``<run>/<EnvId>.zip``, ``<run>/<EnvId>/config.yml``,
  ``args.yml``, ``vecnormalize.pkl``) with the optimiser state stripped, and ``expert.json``
  recording how it was trained.

Off-policy resumes cannot keep their replay buffer (too large to commit); they restart from the
weights with an empty buffer that is refilled before learning restarts, and ``expert.json`` says so.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml

from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path, read_json, write_json_atomic, write_text_atomic

RESUME_DIR = "resume"
RECORD_FILE = "expert.json"
# Our own hyperparameters (e.g. MuJoCo -v5 entries rl_zoo3 lacks) override rl_zoo3's defaults.
OUR_HYPERPARAMS_DIR = Path(__file__).resolve().parents[2] / "envs" / "hyperparams"
VERSIONED_PACKAGES = ("torch", "stable_baselines3", "sb3_contrib", "rl_zoo3", "gymnasium", "ale_py", "mujoco", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished expert (its expert.json says so)."""
    record = Path(run_dir) / RECORD_FILE
    return record.is_file() and read_json(record).get("status") == "finished"


def run_dir_for(zoo_dir: str | Path, algo: str, env_id: str, run_id: int = 1) -> Path:
    return Path(zoo_dir) / algo / f"{env_id}_{run_id}"


def hyperparams_file(algo: str, env_id: str) -> str | None:
    """Our config file for ``algo`` if it has an entry for ``env_id``; else None (rl_zoo3's own)."""
    ours = OUR_HYPERPARAMS_DIR / f"{algo}.yml"
    if ours.is_file() and env_id in (yaml.safe_load(ours.read_text()) or {}):
        return str(ours)
    return None


def strip_optimizer_state(model: Any) -> None:
    """Empty every optimiser's per-parameter state (Adam moments): inference does not need it and
    it doubles or triples the size of the shipped zip. The zip still loads with ``ALGO.load``."""
    for name in model._get_torch_save_params()[0]:
        obj = model
        for attr in name.split("."):
            obj = getattr(obj, attr)
        if isinstance(obj, th.optim.Optimizer):
            obj.state = collections.defaultdict(dict)


def _save_checkpoint(model: Any, directory: Path, env_id: str) -> None:
    with atomic_path(directory / "model.zip", suffix=".zip") as tmp:
        model.save(tmp)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        with atomic_path(directory / env_id / "vecnormalize.pkl") as tmp:
            vec_normalize.save(tmp)


class _ResumableCheckpoint:
    """Built lazily so importing this module does not import SB3 callbacks at start-up."""

    @staticmethod
    def make(**kwargs: Any) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        class ResumableCheckpoint(BaseCallback):
            def __init__(self, *, resume_dir: Path, env_id: str, every: int, progress: dict, eval_fn: Any) -> None:
                super().__init__()
                self.resume_dir, self.env_id, self.every = resume_dir, env_id, every
                self.progress, self.eval_fn = progress, eval_fn
                self.last_saved = 0
                self.started = time.time()

            def _on_training_start(self) -> None:
                self.last_saved = self.num_timesteps

            def _on_step(self) -> bool:
                if self.num_timesteps - self.last_saved >= self.every:
                    self.save()
                return True

            def save(self) -> None:
                self.last_saved = self.num_timesteps
                now = time.time()
                self.progress["wall_time_s"] += now - self.started
                self.started = now
                if self.eval_fn is not None:
                    mean = float(self.eval_fn(self.model))
                    self.progress["eval_history"].append([int(self.num_timesteps), round(mean, 3)])
                    if self.progress.get("best_eval") is None or mean >= self.progress["best_eval"]:
                        self.progress["best_eval"] = mean
                        self.progress["best_timesteps"] = int(self.num_timesteps)
                        _save_checkpoint(self.model, self.resume_dir / "best", self.env_id)
                _save_checkpoint(self.model, self.resume_dir, self.env_id)
                self.progress["num_timesteps"] = int(self.num_timesteps)
                write_json_atomic(self.resume_dir / "progress.json", self.progress)

        return ResumableCheckpoint(**kwargs)


@contextlib.contextmanager
def _exclusive(run_dir: Path):
    """Refuse a second training process on the same run folder (two queues, two terminals)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".train.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PolicyKDError(f"{run_dir} is being trained by another process; wait for it or stop it") from None
        yield


def train_expert(
    algo: str,
    env_id: str,
    *,
    zoo_dir: str | Path = "agents",
    seed: int = 0,
    n_timesteps: int | None = None,
    checkpoint_every: int = 50_000,
    n_eval_episodes: int = 10,
    run_id: int = 1,
    hyperparams: dict[str, Any] | None = None,
    progress_bar: bool = True,
    device: str = "cpu",
    selection_episodes: int | None = None,
) -> Path:
    """Train (or resume training) ``algo`` on ``env_id`` into ``<zoo_dir>/<algo>/<env_id>_<run_id>``.

    Rerunning the same call after an interruption resumes from ``resume/``. Returns the run folder.
    ``device`` is torch's ("cpu", "cuda", "auto"): CPU is faster for MLP policies, a GPU pays off
    for Atari's CNNs. A resume may change it. ``selection_episodes`` (default: the zoo's scoring
    protocol, 30) is how many episodes the best and final checkpoints get when they differ; 0
    decides by the last in-training evaluations instead.
    """
    from rl_zoo3.utils import ALGOS

    if algo not in ALGOS:
        raise PolicyKDError(f"unknown algo {algo!r}: choose one of {', '.join(sorted(ALGOS))}")
    try:
        th.device("cpu" if device == "auto" else device)
    except RuntimeError:
        raise PolicyKDError(f"unknown device {device!r}: pass cpu, cuda, cuda:<index> or auto") from None
    if selection_episodes is not None and selection_episodes < 0:
        raise PolicyKDError(f"selection episodes must be >= 0 (0 skips re-scoring), got {selection_episodes}")
    run_dir = run_dir_for(zoo_dir, algo, env_id, run_id)
    with _exclusive(run_dir):
        return _train_expert(
            algo,
            env_id,
            run_dir,
            seed,
            n_timesteps,
            checkpoint_every,
            n_eval_episodes,
            run_id,
            hyperparams,
            progress_bar,
            device,
            selection_episodes,
        )


def _train_expert(
    algo: str,
    env_id: str,
    run_dir: Path,
    seed: int,
    n_timesteps: int | None,
    checkpoint_every: int,
    n_eval_episodes: int,
    run_id: int,
    hyperparams: dict[str, Any] | None,
    progress_bar: bool,
    device: str,
    selection_episodes: int | None,
) -> Path:
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    record_path = run_dir / RECORD_FILE
    if is_finished(run_dir):
        raise PolicyKDError(f"{run_dir} already holds a finished expert; pass another --run-id to train a new one")
    resume_dir = run_dir / RESUME_DIR
    resume_model = resume_dir / "model.zip"
    continuing = resume_model.is_file()
    progress: dict[str, Any] = (
        read_json(resume_dir / "progress.json")
        if continuing
        else {"num_timesteps": 0, "wall_time_s": 0.0, "eval_history": [], "best_eval": None, "resumes": [], "notes": []}
    )

    args = argparse.Namespace(algo=algo, env=env_id, seed=seed, n_timesteps=n_timesteps or -1, run_id=run_id)
    exp = ExperimentManager(
        args,
        algo,
        env_id,
        log_folder=str(run_dir.parent.parent),
        n_timesteps=n_timesteps or 0,
        eval_freq=-1,
        save_freq=-1,
        hyperparams=hyperparams,
        trained_agent=str(resume_model) if continuing else "",
        seed=seed,
        verbose=0,
        device=device,
        config=hyperparams_file(algo, env_id),
    )
    # Our layout, not rl_zoo3's auto-numbered one; monitor logs go to a git-ignored folder.
    exp.save_path = str(run_dir / "train_logs")
    exp.params_path = str(run_dir / env_id)
    model, saved_hyperparams = exp.setup_experiment()
    # rl_zoo3 dumps OrderedDicts with Python tags; rewrite them as plain YAML any safe loader reads.
    write_text_atomic(Path(exp.params_path) / "config.yml", yaml.safe_dump(dict(saved_hyperparams)))
    write_text_atomic(Path(exp.params_path) / "args.yml", yaml.safe_dump(vars(args)))

    remaining = int(exp.n_timesteps) - int(model.num_timesteps)
    if continuing:
        progress["resumes"].append(int(model.num_timesteps))
        if hasattr(model, "replay_buffer") and remaining > 0:
            refill = max(int(saved_hyperparams.get("learning_starts", 0)), 1000)
            model.learning_starts = model.num_timesteps + refill
            progress["notes"].append(
                f"resumed at step {model.num_timesteps} with an emptied replay buffer, "
                f"refilled with {refill} random-action steps before learning restarted"
            )
        print(f"resuming {algo} {env_id} from step {model.num_timesteps}/{exp.n_timesteps}")

    eval_fn = None
    if n_eval_episodes > 0:
        eval_env = exp.create_envs(1, eval_env=True)

        def evaluate(m: Any) -> float:
            if m.get_vec_normalize_env() is not None:
                sync_envs_normalization(m.get_env(), eval_env)
            mean, _ = evaluate_policy(
                m, eval_env, n_eval_episodes=n_eval_episodes, deterministic=exp.deterministic_eval
            )
            return mean

        eval_fn = evaluate

    checkpoint = _ResumableCheckpoint.make(
        resume_dir=resume_dir, env_id=env_id, every=checkpoint_every, progress=progress, eval_fn=eval_fn
    )
    if remaining > 0:
        model.learn(
            total_timesteps=remaining,
            reset_num_timesteps=not continuing,
            callback=[*exp.callbacks, checkpoint],
            progress_bar=progress_bar,
        )
    else:
        # Stopped after the last checkpoint but before the expert was shipped: nothing left to learn,
        # but the callback still needs its model (learn() would have given it) for the final save.
        checkpoint.init_callback(model)
    checkpoint.num_timesteps = int(model.num_timesteps)
    if progress["num_timesteps"] != int(model.num_timesteps):  # else the last checkpoint holds the final weights
        checkpoint.save()
    model.env.close()

    source, selection = _select_checkpoint(algo, env_id, run_dir, resume_dir, progress, selection_episodes)
    shipped_name = "best" if source.name == "best" else "final"
    shipped = ALGOS[algo].load(source / "model.zip", device="cpu")
    strip_optimizer_state(shipped)
    with atomic_path(run_dir / f"{env_id}.zip", suffix=".zip") as tmp:
        shipped.save(tmp)
    if (source / env_id / "vecnormalize.pkl").is_file():
        shutil.copyfile(source / env_id / "vecnormalize.pkl", run_dir / env_id / "vecnormalize.pkl")

    old = read_json(record_path) if record_path.is_file() else {}
    record = {
        "algo": algo,
        "env_id": env_id,
        "seed": seed,
        "status": "finished",
        "n_timesteps": int(progress["num_timesteps"]),
        "shipped_checkpoint": shipped_name,
        "shipped_timesteps": int(progress.get("best_timesteps", progress["num_timesteps"]))
        if shipped_name == "best"
        else int(progress["num_timesteps"]),
        "wall_time_s": round(progress["wall_time_s"], 1),
        "hyperparams": {k: _plain(v) for k, v in saved_hyperparams.items()},
        "command": f"policykd train-expert --algo {algo} --env {env_id} --seed {seed}"
        + (f" --n-timesteps {n_timesteps}" if n_timesteps else ""),
        "versions": package_versions(),
        "machine": f"{platform.machine()}, {th.get_num_threads()} torch threads, {model.device}",
        "resumed_at": progress["resumes"],
        "eval_history": progress["eval_history"],
        "notes": progress["notes"],
        "checkpoint_selection": selection or None,
        # a checkpoint re-scored during selection was scored as the zoo scores experts: keep that score
        "score": selection[shipped_name]["score"] if selection else old.get("score"),
    }
    write_json_atomic(record_path, record)
    shutil.rmtree(resume_dir)
    return run_dir


def _select_checkpoint(
    algo: str, env_id: str, run_dir: Path, resume_dir: Path, progress: dict[str, Any], selection_episodes: int | None
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Which checkpoint ships: ``resume/`` (the final weights) or ``resume/best/``.

    In-training evaluations are a few episodes each (3 for Atari), and the best of many noisy
    evaluations is biased upwards: QR-DQN Pong's "best" scored +16.3 at 800k steps over 3 episodes
    and −6.9 over 30. So when both exist and differ, each is scored by the zoo's protocol and the
    higher mean ships (the final one on a tie). Returns the folder and ``{"best"|"final": {"timesteps", "score"}}`` (empty
    when nothing was re-scored)."""
    from policykd.zoo.catalog import SCORE_EPISODES, SCORE_SEED, score_checkpoint

    best, history = progress.get("best_eval"), progress["eval_history"]
    final = history[-1][1] if history else None
    best_dir = resume_dir / "best"
    if best is None or progress.get("best_timesteps") == progress["num_timesteps"]:
        return resume_dir, {}
    if not (best_dir / "model.zip").is_file():  # a committed resume may leave best/ out to keep the repo light
        if final is not None and best > final:
            progress["notes"].append(f"best checkpoint (evaluation {best:.3g}) was not kept; shipped the final one")
        return resume_dir, {}
    n_episodes = SCORE_EPISODES if selection_episodes is None else selection_episodes
    if n_episodes <= 0:
        return (best_dir if final is not None and best > final else resume_dir), {}
    selection = {
        name: {
            "timesteps": int(steps),
            "score": score_checkpoint(algo, env_id, run_dir, folder, n_episodes, SCORE_SEED),
        }
        for name, folder, steps in (
            ("best", best_dir, progress["best_timesteps"]),
            ("final", resume_dir, progress["num_timesteps"]),
        )
    }
    winner = max(("final", "best"), key=lambda name: selection[name]["score"]["mean"])  # first wins ties
    progress["notes"].append(
        "shipped the {} checkpoint: re-scored over {} episodes, best ({:,} steps) {:.3g}, final ({:,} steps) {:.3g}".format(
            winner,
            n_episodes,
            selection["best"]["timesteps"],
            selection["best"]["score"]["mean"],
            selection["final"]["timesteps"],
            selection["final"]["score"]["mean"],
        )
    )
    return (best_dir if winner == "best" else resume_dir), selection


def _plain(value: Any) -> Any:
    """YAML-safe, JSON-safe copy of a hyperparameter value."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
