"""Collection with env stepping overlapped with teacher inference (double-buffering).

The envs are split into groups (two by default), each its own vector env. A group's actions are
sent with ``step_async``; while its envs step (each group in one subprocess, :class:`GroupProcess`),
this process waits for the next group, labels its observations and sends its actions. So the teacher's
forward pass and the buffer's bookkeeping of one group run while the other group's envs move.

The order of every random draw is fixed by the groups, not by which vector env class runs them:
the same seed and env split give the same buffer with in-process groups (``DummyVecEnv``, where
``step_wait`` does the stepping) and with subprocess groups. It is not the buffer of
:func:`policykd.data.collect.collect_rollouts` on one vector env of all the envs (there the draws
of one vector step are made for all envs at once). Rows are stored one full vector step at a
time, group after group, so the buffer's layout is the one-vector-env layout (row ``t * n_envs +
i`` is env ``i``'s step ``t``; env ``i`` is seeded ``seed + i`` in either split).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats, _check_collect_args, _Drivers, _explore, _new_buffer, _store
from policykd.data.fast_forward import fast_labeller
from policykd.data.step_chunks import StepChunks, _concatenate
from policykd.data.teachers import Teacher
from policykd.progress import progress_bar
from policykd.types import ActFn, DistillTarget


class _Group:
    """One vector env of the split, its drivers, and the step it has in flight."""

    def __init__(self, venv: Any, drivers: _Drivers) -> None:
        self.venv, self.drivers = venv, drivers
        self.obs = venv.reset()
        self.starts = np.ones(venv.num_envs, dtype=bool)
        self.sent: tuple[Any, ...] = ()

    def launch(self, labellers: Sequence[Callable], teachers: Sequence[Teacher], rng: np.random.Generator,
               epsilon: float, noise: float) -> None:  # fmt: skip
        """Label the group's observations, choose its actions and send them (``step_async``)."""
        outputs = [label(self.obs) for label in labellers]
        actions, drives = self.drivers.act(self.obs, outputs, self.starts, rng, self.venv)
        actions = _explore(actions, teachers[0].mapper, rng, epsilon, noise)
        self.venv.step_async(actions)
        self.sent = (self.obs, actions, drives, outputs, self.drivers.masks)

    def land(self) -> tuple[Any, ...]:
        """Wait for the step in flight; its (obs, actions, drives, outputs, masks, rewards, dones, infos, starts)."""
        next_obs, rewards, dones, infos = self.venv.step_wait()
        step = (*self.sent, rewards, dones, list(infos), self.starts)
        self.drivers.episodes_ended(dones)
        self.obs, self.starts = next_obs, dones
        return step


def collect_overlapped(
    venvs: Sequence[Any],
    teachers: Sequence[Teacher],
    n_transitions: int,
    *,
    rng: np.random.Generator,
    action_noise: float = 0.0,
    beta: float = 1.0,
    deterministic: bool = True,
    epsilon: float = 0.0,
    merge: Callable[[Sequence[DistillTarget]], DistillTarget] | None = None,
    meta: dict[str, Any] | None = None,
    progress: str | None = None,
    student_act: ActFn | None = None,
    teacher_drive: str = "first",
) -> tuple[LabelledBuffer, CollectStats]:
    """:func:`~policykd.data.collect.collect_rollouts`'s collection (same arguments, less the
    cursor) on the env groups ``venvs`` (see the module docstring), each reset first."""
    n_transitions = _check_collect_args(teachers, n_transitions, beta, student_act, epsilon, action_noise)
    groups = [
        _Group(venv, _Drivers(teachers, teacher_drive, merge, beta, student_act, deterministic, venv.num_envs))
        for venv in venvs
    ]
    n_envs = sum(venv.num_envs for venv in venvs)
    labellers = [fast_labeller(teacher) for teacher in teachers]
    stats, buffer, chunks = CollectStats(), None, None
    bar = progress_bar(n_transitions, progress or "", enabled=progress is not None, unit="transitions")
    for group in groups:
        group.launch(labellers, teachers, rng, epsilon, action_noise)
    while stats.n_transitions < n_transitions:
        steps = []
        for group in groups:  # land one group, relaunch it, then the next: labelling overlaps stepping
            steps.append(group.land())
            if stats.n_transitions + n_envs < n_transitions:
                group.launch(labellers, teachers, rng, epsilon, action_noise)
        obs, actions, drives, outputs, masks, rewards, dones, infos, starts = _join(steps)
        if buffer is None:
            joined = types.SimpleNamespace(num_envs=n_envs, observation_space=venvs[0].observation_space,
                                           action_space=venvs[0].action_space)  # fmt: skip
            buffer = _new_buffer(joined, teachers[0], outputs, n_transitions, meta, masks)
            chunks = StepChunks(buffer)
        _store(chunks, obs, actions, rewards, dones, infos, episode_starts=starts, teacher_drives=drives,
               outputs=outputs, action_masks=masks)  # fmt: skip
        stats.count(drives, infos)
        bar.update(n_envs)
    chunks.flush()
    bar.close()
    return buffer, stats


def _join(steps: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The groups' steps as one vector step of all the envs, group after group."""
    obs, actions, drives, outputs, masks, rewards, dones, infos, starts = zip(*steps)
    joined_outputs = [_concatenate([group[k] for group in outputs]) for k in range(len(outputs[0]))]
    joined_masks = None if masks[0] is None else np.concatenate(masks)
    return (
        np.concatenate(obs), np.concatenate(actions), np.concatenate(drives), joined_outputs, joined_masks,
        np.concatenate(rewards), np.concatenate(dones), [info for group in infos for info in group],
        np.concatenate(starts),
    )  # fmt: skip


def split_envs(n_envs: int, n_groups: int = 2) -> list[tuple[int, int]]:
    """``(first env, env count)`` of each group: ``n_envs`` split as evenly as it goes, first
    groups one larger; fewer groups than ``n_groups`` when there are fewer envs."""
    n_groups = max(1, min(n_groups, n_envs))
    sizes = [n_envs // n_groups + (g < n_envs % n_groups) for g in range(n_groups)]
    return [(sum(sizes[:g]), size) for g, size in enumerate(sizes)]


def make_env_groups(recipe: Any, n_envs: int, seed: int, *, subproc: bool, n_groups: int = 2) -> list[Any]:
    """The vector envs of :func:`split_envs`: group ``g``'s envs seeded ``seed + first``, so env
    ``i`` has seed ``seed + i`` as on one vector env; ``subproc``: each group one subprocess
    (:class:`GroupProcess`), else in this process."""
    from policykd.data.envs import make_vec_env

    venvs: list[Any] = []
    try:
        for first, size in split_envs(n_envs, n_groups):
            make = GroupProcess if subproc else make_vec_env
            venvs.append(make(recipe, size, seed + first))
    except BaseException:
        for venv in venvs:
            venv.close()
        raise
    return venvs


def _serve_group(remote: Any, recipe: Any, n_envs: int, seed: int) -> None:
    """A group's subprocess: its vector env (built here, as make_vec_env builds it) answers the
    parent's ``(method, args)`` until ``close``."""
    import torch

    from policykd.data.envs import make_vec_env

    torch.set_num_threads(1)
    try:
        venv = make_vec_env(recipe, n_envs, seed)
    except Exception as err:  # noqa: BLE001 - any failure reaches the parent as its one line
        remote.send((False, _failure(err)))
        return
    remote.send((True, (venv.observation_space, venv.action_space)))
    while True:
        method, args = remote.recv()
        if method == "close":
            venv.close()
            remote.close()
            return
        try:
            remote.send((True, getattr(venv, method)(*args)))
        except Exception as err:  # noqa: BLE001
            remote.send((False, _failure(err)))
            venv.close()
            return


def _failure(err: Exception) -> tuple[bool, str]:
    """(whether it is already a user error with its one line, its text), as the parent gets it."""
    from policykd.errors import PolicyKDError

    return isinstance(err, PolicyKDError), str(err) if isinstance(
        err, PolicyKDError
    ) else f"{type(err).__name__}: {err}"


def _answer(remote: Any, what: str) -> Any:
    """The group's answer to the last call, or a one-line error when its env failed or its process
    died (its envs live in another process: their traceback does not reach the user)."""
    from policykd.errors import PolicyKDError

    try:
        ok, answer = remote.recv()
    except (EOFError, ConnectionError) as err:
        raise PolicyKDError(f"a --vec-env subproc env group died during {what} ({type(err).__name__}); "
                            "rerun without --vec-env subproc to see the env's own traceback") from err  # fmt: skip
    if not ok:
        user_error, text = answer
        if user_error:
            raise PolicyKDError(text)
        raise PolicyKDError(f"an env of a --vec-env subproc group failed during {what}: {text}; "
                            "rerun without --vec-env subproc to see the full traceback")  # fmt: skip
    return answer


class GroupProcess:
    """One group's vector env stepped in one subprocess (SB3's SubprocVecEnv takes a process per
    env; here a group of ``n_envs`` envs shares one, so two groups cost two processes whatever the
    env count). The VecEnv calls collection makes: reset, step_async / step_wait, has_attr,
    env_method, close."""

    def __init__(self, recipe: Any, n_envs: int, seed: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("forkserver")
        self.remote, child = context.Pipe()
        self.process = context.Process(target=_serve_group, args=(child, recipe, n_envs, seed), daemon=True)
        self.process.start()
        child.close()
        self.num_envs = n_envs
        try:
            self.observation_space, self.action_space = _answer(self.remote, "its creation")
        except BaseException:
            self.close()
            raise

    def _call(self, method: str, *args: Any) -> Any:
        self.remote.send((method, args))
        return _answer(self.remote, method)

    def reset(self) -> np.ndarray:
        return self._call("reset")

    def step_async(self, actions: np.ndarray) -> None:
        self.remote.send(("step", (actions,)))

    def step_wait(self) -> tuple[Any, ...]:
        return _answer(self.remote, "step")

    def has_attr(self, name: str) -> bool:
        return self._call("has_attr", name)

    def env_method(self, name: str, *args: Any) -> list[Any]:
        return self._call("env_method", name, *args)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.remote.send(("close", ()))
            except (BrokenPipeError, ConnectionError):
                pass  # it is ending on its own
            self.process.join(timeout=10)
        self.remote.close()
