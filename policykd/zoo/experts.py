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

A training is an :class:`ExpertRequest` (checked once) run through named steps: set up the rl-zoo
experiment, resume, train with checkpoints, choose the checkpoint, ship the zip, write the record.
File names come from ``zoo.layout``; scores from ``zoo.scoring``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import fcntl
import platform
import shutil
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
import yaml

from policykd.checks import check_int
from policykd.data.envs import check_env_id
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path, read_json, write_json_atomic, write_text_atomic
from policykd.zoo.layout import RECORD_FILE, RESUME_DIR, is_finished, run_dir_for
from policykd.zoo.presets import hyperparams_path
from policykd.zoo.scoring import SCORE_EPISODES, SCORE_SEED, score_checkpoint

VERSIONED_PACKAGES = ("torch", "stable_baselines3", "sb3_contrib", "rl_zoo3", "gymnasium", "ale_py", "mujoco", "numpy")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def hyperparams_file(algo: str, env_id: str) -> str | None:
    """Our config file for ``algo`` if it has an entry for ``env_id``; else None (rl_zoo3's own).
    Our own hyperparameters (e.g. MuJoCo -v5 entries rl_zoo3 lacks) override rl_zoo3's defaults."""
    ours = hyperparams_path(algo)  # envs/hyperparams/<algo>.yml, shipped in the package
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


# ExpertRequest's integer options and the least value each takes
_INT_MINIMUMS = {
    "seed": 0,
    "n_timesteps": 0,
    "checkpoint_every": 1,
    "n_eval_episodes": 0,
    "run_id": 1,
    "selection_episodes": 0,
}


@dataclasses.dataclass(frozen=True)
class ExpertRequest:
    """One expert to train: ``algo`` on ``env_id`` into ``<zoo>/<algo>/<env_id>_<run_id>``.
    Checked on creation; a bad value raises PolicyKDError saying what to pass instead."""

    algo: str  # an rl_zoo3 algorithm: ppo, dqn, qrdqn, sac, td3, ...
    env_id: str
    seed: int = 0
    n_timesteps: int | None = None  # None (or 0): rl-zoo's tuned budget
    checkpoint_every: int = 50_000  # env steps between resume checkpoints (each with an evaluation)
    n_eval_episodes: int = 10  # episodes per in-training evaluation; 0: no evaluation, no best/ checkpoint
    run_id: int = 1
    hyperparams: dict[str, Any] | None = None  # overrides of rl-zoo's hyperparameters
    progress_bar: bool = True
    device: str = "cpu"  # torch's: cpu, cuda, cuda:<index> or auto; a resume may change it
    selection_episodes: int | None = None  # per re-scored checkpoint; None: SCORE_EPISODES, 0: no re-scoring

    def __post_init__(self) -> None:
        from rl_zoo3.utils import ALGOS

        if self.algo not in ALGOS:
            raise PolicyKDError(f"unknown algo {self.algo!r}: choose one of {', '.join(sorted(ALGOS))}")
        check_env_id(self.env_id)  # rl_zoo3 would fail on it with a KeyError
        try:
            th.device("cpu" if self.device == "auto" else self.device)
        except RuntimeError:
            raise PolicyKDError(f"unknown device {self.device!r}: pass cpu, cuda, cuda:<index> or auto") from None
        if self.selection_episodes is not None and self.selection_episodes < 0:
            raise PolicyKDError(f"selection episodes must be >= 0 (0 skips re-scoring), got {self.selection_episodes}")
        for field, minimum in _INT_MINIMUMS.items():
            if getattr(self, field) is not None:  # None: rl-zoo's budget, the zoo's scoring protocol
                check_int(field, getattr(self, field), minimum)

    @property
    def command(self) -> str:
        """The CLI command that trains this expert (as expert.json records it)."""
        command = f"policykd train-expert --algo {self.algo} --env {self.env_id} --seed {self.seed}"
        return command + (f" --n-timesteps {self.n_timesteps}" if self.n_timesteps else "")


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
    decides by the last in-training evaluations instead. The options are :class:`ExpertRequest`'s.
    """
    request = ExpertRequest(
        algo,
        env_id,
        seed=seed,
        n_timesteps=n_timesteps,
        checkpoint_every=checkpoint_every,
        n_eval_episodes=n_eval_episodes,
        run_id=run_id,
        hyperparams=hyperparams,
        progress_bar=progress_bar,
        device=device,
        selection_episodes=selection_episodes,
    )
    run_dir = run_dir_for(zoo_dir, algo, env_id, run_id)
    with _exclusive(run_dir):
        return _train_expert(request, run_dir)


def _train_expert(request: ExpertRequest, run_dir: Path) -> Path:
    """The steps of one training, each resumable: set up, resume, train, choose, ship, record."""
    if is_finished(run_dir):
        raise PolicyKDError(f"{run_dir} already holds a finished expert; pass another --run-id to train a new one")
    resume_dir = run_dir / RESUME_DIR
    continuing = (resume_dir / "model.zip").is_file()
    progress: dict[str, Any] = (
        read_json(resume_dir / "progress.json")
        if continuing
        else {"num_timesteps": 0, "wall_time_s": 0.0, "eval_history": [], "best_eval": None, "resumes": [], "notes": []}
    )
    exp, model, saved_hyperparams = _set_up_experiment(request, run_dir, continuing)
    if continuing:
        _resume(request, exp, model, saved_hyperparams, progress)
    _train_with_checkpoints(request, exp, model, progress, resume_dir, continuing)
    source, selection = _select_checkpoint(request, run_dir, resume_dir, progress)
    shipped_name = "best" if source.name == "best" else "final"
    _ship(request, run_dir, source)
    _write_record(request, run_dir, progress, saved_hyperparams, model, shipped_name, selection)
    shutil.rmtree(resume_dir)
    return run_dir


def _set_up_experiment(request: ExpertRequest, run_dir: Path, continuing: bool) -> tuple[Any, Any, dict[str, Any]]:
    """rl_zoo3's ExperimentManager with its tuned hyperparameters and training env, in our layout;
    writes ``<env_id>/config.yml`` and ``args.yml``. Returns the manager, the model (loaded from
    ``resume/model.zip`` when continuing) and the hyperparameters it used."""
    from rl_zoo3.exp_manager import ExperimentManager

    algo, env_id, n_timesteps = request.algo, request.env_id, request.n_timesteps
    args = argparse.Namespace(
        algo=algo, env=env_id, seed=request.seed, n_timesteps=n_timesteps or -1, run_id=request.run_id
    )
    exp = ExperimentManager(
        args,
        algo,
        env_id,
        log_folder=str(run_dir.parent.parent),
        n_timesteps=n_timesteps or 0,
        eval_freq=-1,
        save_freq=-1,
        hyperparams=request.hyperparams,
        trained_agent=str(run_dir / RESUME_DIR / "model.zip") if continuing else "",
        seed=request.seed,
        verbose=0,
        device=request.device,
        config=hyperparams_file(algo, env_id),
    )
    # Our layout, not rl_zoo3's auto-numbered one; monitor logs go to a git-ignored folder.
    exp.save_path = str(run_dir / "train_logs")
    exp.params_path = str(run_dir / env_id)
    model, saved_hyperparams = exp.setup_experiment()
    # rl_zoo3 dumps OrderedDicts with Python tags; rewrite them as plain YAML any safe loader reads.
    write_text_atomic(Path(exp.params_path) / "config.yml", yaml.safe_dump(dict(saved_hyperparams)))
    write_text_atomic(Path(exp.params_path) / "args.yml", yaml.safe_dump(vars(args)))
    return exp, model, saved_hyperparams


def _resume(request: ExpertRequest, exp: Any, model: Any, saved_hyperparams: dict[str, Any], progress: dict) -> None:
    """Note where training resumes. An off-policy model comes back with an empty replay buffer:
    learning waits until it is refilled with random-action steps, and the record says so."""
    progress["resumes"].append(int(model.num_timesteps))
    if hasattr(model, "replay_buffer") and int(exp.n_timesteps) - int(model.num_timesteps) > 0:
        refill = max(int(saved_hyperparams.get("learning_starts", 0)), 1000)
        model.learning_starts = model.num_timesteps + refill
        progress["notes"].append(
            f"resumed at step {model.num_timesteps} with an emptied replay buffer, "
            f"refilled with {refill} random-action steps before learning restarted"
        )
    print(f"resuming {request.algo} {request.env_id} from step {model.num_timesteps}/{exp.n_timesteps}")


def _train_with_checkpoints(
    request: ExpertRequest, exp: Any, model: Any, progress: dict[str, Any], resume_dir: Path, continuing: bool
) -> None:
    """Learn the remaining steps with a resume checkpoint (and an evaluation that keeps the best
    one) every ``checkpoint_every`` steps, then save the final weights as the last checkpoint."""
    eval_fn = _make_eval_fn(exp, request.n_eval_episodes) if request.n_eval_episodes > 0 else None
    checkpoint = _ResumableCheckpoint.make(
        resume_dir=resume_dir, env_id=request.env_id, every=request.checkpoint_every, progress=progress, eval_fn=eval_fn
    )
    remaining = int(exp.n_timesteps) - int(model.num_timesteps)
    if remaining > 0:
        model.learn(
            total_timesteps=remaining,
            reset_num_timesteps=not continuing,
            callback=[*exp.callbacks, checkpoint],
            progress_bar=request.progress_bar,
        )
    else:
        # Stopped after the last checkpoint but before the expert was shipped: nothing left to learn,
        # but the callback still needs its model (learn() would have given it) for the final save.
        checkpoint.init_callback(model)
    checkpoint.num_timesteps = int(model.num_timesteps)
    if progress["num_timesteps"] != int(model.num_timesteps):  # else the last checkpoint holds the final weights
        checkpoint.save()
    model.env.close()


def _make_eval_fn(exp: Any, n_eval_episodes: int) -> Callable[[Any], float]:
    """The in-training evaluation: SB3's evaluate_policy on rl-zoo's evaluation env, with the
    training env's normalisation statistics."""
    from stable_baselines3.common.evaluation import evaluate_policy as sb3_evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    eval_env = exp.create_envs(1, eval_env=True)

    def evaluate(m: Any) -> float:
        if m.get_vec_normalize_env() is not None:
            sync_envs_normalization(m.get_env(), eval_env)
        mean, _ = sb3_evaluate_policy(
            m, eval_env, n_eval_episodes=n_eval_episodes, deterministic=exp.deterministic_eval
        )
        return mean

    return evaluate


def _ship(request: ExpertRequest, run_dir: Path, source: Path) -> None:
    """Write the chosen checkpoint as ``<run>/<env_id>.zip`` with its optimiser state stripped,
    and its VecNormalize statistics as ``<run>/<env_id>/vecnormalize.pkl``."""
    from rl_zoo3.utils import ALGOS

    env_id = request.env_id
    shipped = ALGOS[request.algo].load(source / "model.zip", device="cpu")
    strip_optimizer_state(shipped)
    with atomic_path(run_dir / f"{env_id}.zip", suffix=".zip") as tmp:
        shipped.save(tmp)
    if (source / env_id / "vecnormalize.pkl").is_file():
        shutil.copyfile(source / env_id / "vecnormalize.pkl", run_dir / env_id / "vecnormalize.pkl")


def _write_record(
    request: ExpertRequest,
    run_dir: Path,
    progress: dict[str, Any],
    saved_hyperparams: dict[str, Any],
    model: Any,
    shipped_name: str,
    selection: dict[str, dict[str, Any]],
) -> None:
    """``expert.json``: how the expert was trained, which checkpoint shipped and its score."""
    record_path = run_dir / RECORD_FILE
    old = read_json(record_path) if record_path.is_file() else {}
    record = {
        "algo": request.algo,
        "env_id": request.env_id,
        "seed": request.seed,
        "status": "finished",
        "n_timesteps": int(progress["num_timesteps"]),
        "shipped_checkpoint": shipped_name,
        "shipped_timesteps": int(progress.get("best_timesteps", progress["num_timesteps"]))
        if shipped_name == "best"
        else int(progress["num_timesteps"]),
        "wall_time_s": round(progress["wall_time_s"], 1),
        "hyperparams": {k: _plain(v) for k, v in saved_hyperparams.items()},
        "command": request.command,
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


def _select_checkpoint(
    request: ExpertRequest, run_dir: Path, resume_dir: Path, progress: dict[str, Any]
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Which checkpoint ships: ``resume/`` (the final weights) or ``resume/best/``.

    In-training evaluations are a few episodes each (3 for Atari), and the best of many noisy
    evaluations is biased upwards: QR-DQN Pong's "best" scored +16.3 at 800k steps over 3 episodes
    and −6.9 over 30. So when both exist and differ, each is scored by the zoo's protocol and the
    higher mean ships (the final one on a tie). Returns the folder and ``{"best"|"final":
    {"timesteps", "score"}}`` (empty when nothing was re-scored)."""
    best, history = progress.get("best_eval"), progress["eval_history"]
    final = history[-1][1] if history else None
    best_dir = resume_dir / "best"
    if best is None or progress.get("best_timesteps") == progress["num_timesteps"]:
        return resume_dir, {}
    if not (best_dir / "model.zip").is_file():  # a committed resume may leave best/ out to keep the repo light
        if final is not None and best > final:
            progress["notes"].append(f"best checkpoint (evaluation {best:.3g}) was not kept; shipped the final one")
        return resume_dir, {}
    n_episodes = SCORE_EPISODES if request.selection_episodes is None else request.selection_episodes
    if n_episodes <= 0:
        return (best_dir if final is not None and best > final else resume_dir), {}
    selection = {
        name: {
            "timesteps": int(steps),
            "score": score_checkpoint(request.algo, request.env_id, run_dir, folder, n_episodes, SCORE_SEED),
        }
        for name, folder, steps in (
            ("best", best_dir, progress["best_timesteps"]),
            ("final", resume_dir, progress["num_timesteps"]),
        )
    }
    winner = max(("final", "best"), key=lambda name: selection[name]["score"]["mean"])  # first wins ties
    progress["notes"].append(_selection_note(winner, n_episodes, selection))
    return (best_dir if winner == "best" else resume_dir), selection


def _selection_note(winner: str, n_episodes: int, selection: dict[str, dict[str, Any]]) -> str:
    best, final = selection["best"], selection["final"]
    return (
        f"shipped the {winner} checkpoint: re-scored over {n_episodes} episodes, "
        f"best ({best['timesteps']:,} steps) {best['score']['mean']:.3g}, "
        f"final ({final['timesteps']:,} steps) {final['score']['mean']:.3g}"
    )


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
