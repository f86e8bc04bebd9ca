"""``policykd finetune`` in its run folder: the learning curve, the best checkpoint, checkpoints, a
stop on SIGINT / SIGTERM, and ``--resume`` from the last checkpoint.

The learning curve plays validation episodes (env seeds from ``--seed`` + VALIDATION_SEED_OFFSET),
not the held-out ones of the job's final evaluation (``--seed`` + EVAL_SEED_OFFSET). Each new best
validation return saves the model as ``best-<steps>.zip``; the job scores those weights on the
held-out episodes at the end and hands them back as ``best_model.zip`` (as rl-zoo's EvalCallback
keeps ``best_model.zip``). Choosing on validation episodes leaves the held-out score unbiased: an
RL fine-tuning run that swings between evaluations (DQN does) is not credited with its luckiest one.

A checkpoint is taken when a rollout starts (SB3's ``train()`` on the steps so far has run, so the
weights, the optimisers and the counters agree), once ``--checkpoint-every`` seconds have passed
since the last one, and when a signal asks the run to stop. It is ``checkpoint-<steps>.zip`` (SB3's
own zip: policy, optimisers, SAC's entropy coefficient), for an off-policy student
``replay-<steps>.npz`` (its replay buffer, arrays only) and ``checkpoint.json``, written last,
which names them and holds policykd's state: the step and update counters, the recent episodes
(the performance schedule reads them), the VecNormalize statistics, the learning curve. A run
killed while writing keeps its previous checkpoint whole.

A resumed run is built as the first one was, loads the checkpoint and learns the remaining env
steps (SB3's learning-rate and clip schedules continue from where they were). Its envs start new
episodes, seeded with ``--seed`` plus the steps done, so it does not end bitwise where an
uninterrupted run would; an uninterrupted run is the same for the same seed, checkpoints or not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from policykd.data.vec_normalize import set_vec_normalize_state, vec_normalize_state
from policykd.fileio import atomic_path, read_json, write_json_atomic
from policykd.jobs.evaluate import ReturnStats, evaluate_policy

CHECKPOINT_STATE = "checkpoint.json"
# the learning curve's episodes: env seeds seed + 20,000 + i, apart from the held-out ones (evaluate.EVAL_SEED_OFFSET)
VALIDATION_SEED_OFFSET = 20_000
REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_n_calls")


class SB3Actor:
    """An SB3 model as a ``jobs.evaluate.Policy``: ``act(obs, deterministic, rng)`` -> env actions.
    A model trained in a VecNormalize'd env reads observations normalised with its current statistics."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vec_normalize = model.get_vec_normalize_env()

    def act(self, observations: np.ndarray, deterministic: bool = True, rng: Any = None) -> np.ndarray:
        if self.vec_normalize is not None:
            observations = self.vec_normalize.normalize_obs(observations)
        return self.model.predict(observations, deterministic=deterministic)[0]


class EvalCurve:
    """The student's return on the validation episodes (env seeds from ``seed``) before training,
    every ``every`` env steps and at the end (``every`` 0: before and at the end only), logged as
    ``eval/student_return``; ``points`` are ``[steps, mean, ci low, ci high]``.
    Evaluations run when a rollout starts, after SB3's ``train()`` on the steps so far: an on-policy
    rollout (LunarLander PPO: 16,384 steps) updates the policy only at its end."""

    def __init__(self, recipe: Any, n_episodes: int, seed: int, every: int) -> None:
        self.recipe, self.n_episodes, self.seed, self.every = recipe, n_episodes, seed, every
        self.points: list[list[float]] = []

    def evaluate(self, model: Any) -> None:
        self.add(
            int(model.num_timesteps), evaluate_policy(SB3Actor(model), self.recipe, self.n_episodes, seed=self.seed)
        )
        model.logger.record("eval/student_return", self.points[-1][1])

    def add(self, steps: int, stats: ReturnStats) -> None:
        if not self.points or self.points[-1][0] != steps:
            self.points.append([steps, stats.mean, *stats.ci95])

    def due(self, steps: int) -> bool:
        """Whether an evaluation falls due at ``steps``: a multiple of ``every`` was passed since the last one."""
        return bool(self.every) and bool(self.points) and steps // self.every > int(self.points[-1][0]) // self.every


class FinetuneRun:
    """Training in the run folder ``out_dir``: the learning curve, checkpoints every
    ``checkpoint_every_s`` seconds (0: at every rollout) and a checkpointed stop on SIGINT / SIGTERM."""

    def __init__(
        self,
        out_dir: Path,
        curve: EvalCurve,
        checkpoint_every_s: float,
        seed: int,
        save_best: Callable[[Any, Path], None] | None = None,
    ) -> None:
        self.out_dir, self.curve, self.checkpoint_every_s, self.seed = out_dir, curve, checkpoint_every_s, seed
        self.save_best = save_best or _save_zip  # how a best model is written (the job's: as model.zip is)
        self.extra: dict[str, Any] = {}  # kept in the checkpoints (the value-head initialisation)
        self.stop_requested = self.stopped = False
        self.checkpoint_steps: int | None = None  # the env steps of the last checkpoint written or loaded
        # the best validation evaluation so far: steps, validation_return, vec_normalize (its statistics)
        self.best: dict[str, Any] | None = None
        self._last_checkpoint = time.monotonic()

    def learn(self, model: Any, n_timesteps: int) -> None:
        """Train ``model`` until it has taken ``n_timesteps`` env steps in all (a restored one continues)."""
        remaining = n_timesteps - int(model.num_timesteps)
        if remaining <= 0:
            return
        with self._signals_stop():
            model.learn(
                remaining,
                callback=self.callback(),
                tb_log_name="finetune",
                reset_num_timesteps=self.checkpoint_steps is None,
            )

    def evaluate(self, model: Any) -> None:
        """A point of the learning curve; a new best validation return saves ``best-<steps>.zip``
        (ties keep the earlier one). Older best files go when a checkpoint records the new best."""
        self.curve.evaluate(model)
        steps, mean = int(self.curve.points[-1][0]), float(self.curve.points[-1][1])
        if self.best is not None and mean <= self.best["validation_return"]:
            return
        self.save_best(model, self.out_dir / _best_file(steps))
        vec_normalize = model.get_vec_normalize_env()
        self.best = {
            "steps": steps,
            "validation_return": mean,
            "vec_normalize": None if vec_normalize is None else vec_normalize_state(vec_normalize),
        }

    def finish(self, model: Any) -> None:
        """The learning curve's last point, at the end of training (unless one was just taken)."""
        if not self.curve.points or int(self.curve.points[-1][0]) != int(model.num_timesteps):
            self.evaluate(model)

    def load_best(self, model: Any) -> None:
        """Put the best evaluation's weights (and VecNormalize statistics) into ``model``."""
        assert self.best is not None, "no evaluation yet"
        _load_weights(model, self.out_dir / _best_file(self.best["steps"]))
        if self.best["vec_normalize"] is not None:
            set_vec_normalize_state(model.get_vec_normalize_env(), self.best["vec_normalize"])

    def hand_back_best(self, model_path: Path, vec_normalize_path: Path) -> None:
        """Move the best evaluation's zip to ``model_path``; its VecNormalize statistics, if any, to
        ``vec_normalize_path`` (JSON)."""
        assert self.best is not None, "no evaluation yet"
        os.replace(self.out_dir / _best_file(self.best["steps"]), model_path)
        if self.best["vec_normalize"] is not None:
            write_json_atomic(vec_normalize_path, self.best["vec_normalize"])

    def on_rollout_start(self, model: Any) -> None:
        if self.curve.due(int(model.num_timesteps)):
            self.evaluate(model)
        due = time.monotonic() - self._last_checkpoint >= self.checkpoint_every_s
        if (due or self.stop_requested) and self.checkpoint_steps != model.num_timesteps:
            self.save(model)
        self.stopped = self.stop_requested

    def callback(self) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        run = self

        class _Callback(BaseCallback):
            def _on_training_start(self) -> None:
                if not run.curve.points:
                    run.evaluate(self.model)

            def _on_rollout_start(self) -> None:
                run.on_rollout_start(self.model)

            def _on_step(self) -> bool:
                return not run.stopped

        return _Callback()

    @contextlib.contextmanager
    def _signals_stop(self) -> Iterator[None]:
        """The first SIGINT / SIGTERM stops the run at the next rollout's start, with a checkpoint;
        a second one at once (from the last checkpoint)."""
        if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
            yield
            return

        def handler(*_: Any) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True

        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, handler) for signum in signals}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, model: Any) -> None:
        """Write a checkpoint of ``model`` (see the module docstring); the previous one goes once it is whole."""
        steps = int(model.num_timesteps)
        names = {"model": f"checkpoint-{steps}.zip"}
        _save_zip(model, self.out_dir / names["model"])
        buffer = getattr(model, "replay_buffer", None)
        if buffer is not None:
            names["replay"] = f"replay-{steps}.npz"
            _save_replay_buffer(buffer, self.out_dir / names["replay"])
        vec_normalize = model.get_vec_normalize_env()
        state = {
            **names,
            "counters": {name: int(getattr(model, name)) for name in COUNTERS if hasattr(model, name)},
            "episodes": [_episode(info) for info in model.ep_info_buffer or []],
            "successes": [bool(success) for success in model.ep_success_buffer or []],
            "vec_normalize": None if vec_normalize is None else vec_normalize_state(vec_normalize),
            "curve": self.curve.points,
            "best": self.best,
            **self.extra,
        }
        write_json_atomic(self.out_dir / CHECKPOINT_STATE, state)
        for old in [*self.out_dir.glob("checkpoint-*.zip"), *self.out_dir.glob("replay-*.npz")]:
            if old.name not in names.values():
                old.unlink(missing_ok=True)
        self._remove_other_best()
        self.checkpoint_steps, self._last_checkpoint = steps, time.monotonic()

    def restore(self, model: Any) -> dict[str, Any] | None:
        """Load the run folder's checkpoint into ``model`` (built as the stopped run built it);
        returns the checkpoint's state, or None when there is none (the run starts over)."""
        if not (self.out_dir / CHECKPOINT_STATE).is_file():
            return None
        state = read_json(self.out_dir / CHECKPOINT_STATE)
        _load_weights(model, self.out_dir / state["model"])
        for name, value in state["counters"].items():
            setattr(model, name, value)
        model.ep_info_buffer = deque(state["episodes"], maxlen=model._stats_window_size)
        model.ep_success_buffer = deque(state.get("successes", []), maxlen=model._stats_window_size)
        if state.get("replay"):
            _load_replay_buffer(model.replay_buffer, self.out_dir / state["replay"])
        if state["vec_normalize"] is not None:
            set_vec_normalize_state(model.get_vec_normalize_env(), state["vec_normalize"])
        self.curve.points = [list(point) for point in state["curve"]]
        self.best = state.get("best")
        self._remove_other_best()  # a best saved after this checkpoint: its evaluation is run again
        model.set_random_seed(self.seed + int(model.num_timesteps))  # new episodes, not the first run's again
        self.checkpoint_steps = int(model.num_timesteps)
        return state

    def _remove_other_best(self) -> None:
        kept = None if self.best is None else _best_file(self.best["steps"])
        for old in self.out_dir.glob(_best_file("*")):
            if old.name != kept:
                old.unlink(missing_ok=True)


def _best_file(steps: int | str) -> str:
    return f"best-{steps}.zip"


def _save_zip(model: Any, path: Path) -> None:
    with atomic_path(path, ".zip") as tmp:
        model.save(tmp)


def _load_weights(model: Any, path: Path) -> None:
    """The policy (and SAC's entropy coefficient) of an SB3 zip ``model.save`` wrote, into ``model``."""
    from stable_baselines3.common.save_util import load_from_zip_file

    _, params, variables = load_from_zip_file(path, device=model.device, load_data=False)
    model.set_parameters(params, exact_match=True, device=model.device)
    for name, value in (variables or {}).items():
        getattr(model, name).data.copy_(value.data)  # SAC's log_ent_coef


def remove_checkpoints(out_dir: Path) -> None:
    """The checkpoint files of a run that is done (and its best-<steps>.zip, handed back as best_model.zip)."""
    stale = [*out_dir.glob("checkpoint-*.zip"), *out_dir.glob("replay-*.npz"), *out_dir.glob(_best_file("*"))]
    for path in [*stale, out_dir / CHECKPOINT_STATE]:
        path.unlink(missing_ok=True)


def _episode(info: dict[str, Any]) -> dict[str, float]:
    """A Monitor episode record (return ``r``, length ``l``, time ``t``) as JSON numbers."""
    return {key: float(value) for key, value in info.items() if key in ("r", "l", "t")}


def _save_replay_buffer(buffer: Any, path: Path) -> None:
    """SB3's ReplayBuffer as arrays (the filled part only), readable without pickle."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: getattr(buffer, name)[:n] for name in REPLAY_FIELDS if getattr(buffer, name, None) is not None}
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, pos=np.array(buffer.pos), full=np.array(buffer.full), **arrays)


def _load_replay_buffer(buffer: Any, path: Path) -> None:
    with np.load(path, allow_pickle=False) as data:
        for name in REPLAY_FIELDS:
            if name in data.files:
                array = data[name]
                getattr(buffer, name)[: len(array)] = array
        buffer.pos, buffer.full = int(data["pos"]), bool(data["full"])
