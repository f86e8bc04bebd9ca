"""Collection split across workers: in this process one after another (``--backend local``), or
as Ray tasks (one per worker) on this machine or a cluster (``--backend ray``, ``--ray-address``).

The split, whichever backend runs it: ``--workers W`` share the ``N`` transitions (worker ``w``
takes ``N // W``, one more while ``w < N % W``), each on its own ``n_envs`` envs with its own copy
of the teachers. Worker ``w`` is exactly the collection ``policykd collect --seed S + w * n_envs``
would make (env ``i`` of worker ``w`` is seeded ``S + w * n_envs + i``: no two envs share a seed,
and worker 0 is the single-worker run); the chunks are concatenated in worker order into one buffer.
So the same seed and worker count give the same buffer in-process and on Ray, on any number of
machines. Teachers are checked once, in the driver, before any worker starts.

Ray is an optional dependency (``pip install policykd[ray]``): nothing here imports it unless the
ray backend is chosen. Every node needs policykd, the zoo's experts at the paths the driver names
(a shared folder, or the same checkout) and the same package versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from policykd.checks import check_int
from policykd.data.buffers import LabelledBuffer
from policykd.data.collect import CollectStats
from policykd.data.teachers import Teacher
from policykd.errors import PolicyKDError
from policykd.jobs.config import CollectConfig

BACKENDS = ("local", "ray")


def check_backend(config: Any) -> None:
    """Refuse an unknown backend, a worker count below 1 and an address without Ray, in one line
    (``config``: a CollectConfig, or a SweepConfig, which has no ``workers``)."""
    if config.backend not in BACKENDS:
        raise PolicyKDError(f"--backend {config.backend!r}: use local (this process) or ray")
    check_int("--workers", getattr(config, "workers", 1))
    if getattr(config, "vec_env", "dummy") not in ("dummy", "subproc"):
        raise PolicyKDError(f"--vec-env {config.vec_env!r}: use dummy (envs in this process) or subproc")
    if config.ray_address is not None and config.backend != "ray":
        raise PolicyKDError("--ray-address joins a Ray cluster; add --backend ray")
    if config.backend == "ray":
        import_ray()


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise PolicyKDError("--backend ray needs Ray: pip install 'policykd[ray]' (or pip install ray)") from None
    return ray


def worker_configs(config: CollectConfig, teachers: Sequence[Teacher], n_transitions: int, n_envs: int) -> list:
    """Each worker's CollectConfig (see the module docstring): its share, its seed, the teachers
    by absolute path (a worker may start in another folder), no second teacher check, one worker."""
    n_workers = config.workers
    shares = [n_transitions // n_workers + (w < n_transitions % n_workers) for w in range(n_workers)]
    if min(shares) < n_envs:
        raise PolicyKDError(
            f"--workers {n_workers} leaves a worker {min(shares):,} of the {n_transitions:,} transitions, fewer than "
            f"its {n_envs} envs take in one step; use fewer workers, fewer --n-envs or more --n-transitions"
        )
    sources = tuple(_absolute(t.source) for t in teachers)
    common = dict(
        teacher=None, teachers=sources, env_id=teachers[0].recipe.env_id, n_envs=n_envs, teacher_check=False,
        zoo_dir=None if config.zoo_dir is None else _absolute(config.zoo_dir), progress_bar=False,
        backend="local", workers=1, ray_address=None,
    )  # fmt: skip
    return [
        dataclasses.replace(config, **common, n_transitions=share, seed=config.seed + w * n_envs)
        for w, share in enumerate(shares)
    ]


def _absolute(source: str) -> str:
    return str(Path(source).resolve()) if Path(source).exists() else source


Chunk = tuple[LabelledBuffer, CollectStats]


def collect_split(
    config: CollectConfig,
    teachers: Sequence[Teacher],
    n_transitions: int,
    n_envs: int,
    run_chunk: Callable[[CollectConfig], Chunk],
) -> Chunk:
    """Run the workers on ``config.backend`` and merge their chunks in worker order.
    ``run_chunk(worker_config)``: one worker's collection (jobs/collect.collect_chunk)."""
    configs = worker_configs(config, teachers, n_transitions, n_envs)
    if config.backend == "ray":
        chunks = _run_on_ray(run_chunk, configs, config.ray_address, config.device)
    else:
        chunks = [run_chunk(worker) for worker in configs]
    return merge_chunks(chunks, config, configs)


def merge_chunks(chunks: Sequence[Chunk], config: CollectConfig, configs: Sequence[CollectConfig]) -> Chunk:
    """The workers' buffers one after another (each starts on reset envs, so no frame stack
    reaches across two chunks) and their statistics summed, episodes in worker order."""
    first = chunks[0][0]
    meta = {
        **first.meta,
        "seed": config.seed,
        "workers": len(chunks),
        "worker_seeds": [c.seed for c in configs],
        "worker_transitions": [len(buffer) for buffer, _ in chunks],
    }
    merged = LabelledBuffer(sum(len(buffer) for buffer, _ in chunks), meta=meta, **first.layout())
    stats = CollectStats()
    for buffer, chunk_stats in chunks:
        merged.extend(buffer)
        stats.n_transitions += chunk_stats.n_transitions
        stats.n_teacher_steps += chunk_stats.n_teacher_steps
        stats.episode_returns += chunk_stats.episode_returns
        stats.episode_lengths += chunk_stats.episode_lengths
    return merged, stats


def _run_on_ray(
    run_chunk: Callable[[CollectConfig], Chunk], configs: Sequence[CollectConfig], address: str | None, device: str
) -> list[Chunk]:
    """One Ray task per worker (one CPU each; one GPU each with ``--device cuda``): each loads its
    own teachers and builds its own envs. Tasks, not actors, so more workers than CPUs queue
    instead of waiting forever for CPUs that live actors hold. A Ray already started in this
    process (``ray.init``) is used as it is; else one is started (a local head, or the cluster at
    ``address``) and shut down after."""
    with ray_session(address) as ray:
        try:
            gpus = 1 if str(device).startswith("cuda") else 0
            remote = ray.remote(num_cpus=1, num_gpus=gpus)(collect_task)
            return ray.get([remote.remote(run_chunk, config) for config in configs])
        except ray.exceptions.RayError as err:
            reason = " ".join(str(err).split())[:300]
            raise PolicyKDError(f"a Ray worker failed ({reason}); run with --backend local to see the error") from None


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """The ``ray`` module, connected for the ``with`` block: a Ray already started in this process
    as it is, else one started here (a local head, or the cluster at ``address``) and shut down
    after. A cluster that cannot be reached is one line that says what to do."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, TimeoutError, ray.exceptions.RayError) as err:
            reason = " ".join(str(err).split())[:200]
            raise PolicyKDError(
                f"cannot start or join Ray at {address or 'a local head'} ({reason}); check --ray-address "
                "(the cluster's `ray start --head` prints it) or drop it to start a local Ray"
            ) from None
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def collect_task(run_chunk: Callable[[CollectConfig], Chunk], config: CollectConfig) -> Chunk:
    """What a Ray task runs: one worker's chunk on one torch thread (one CPU per task)."""
    import torch

    torch.set_num_threads(1)
    return run_chunk(config)


# -- experiment cells (sweep) -------------------------------------------------------------------


class _Submitted(Exception):
    """Raised out of a RunCache's ``run`` once the cell is sent to Ray, so nothing is stored yet."""


def run_cells(
    cells: Sequence[tuple[str, Callable[[], dict[str, Any]]]],
    cache: Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]],
    *,
    backend: str = "local",
    address: str | None = None,
    on_done: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Each cell's result, in order: ``cache(name, run)`` one after the other here, or with
    ``backend="ray"`` the cells the cache does not hold as Ray tasks at once (one CPU each),
    stored through the same cache when they come back. Cells are seeded by their names, so
    either way a cell's result is the same. ``on_done(name)`` after each cell."""
    if backend != "ray":
        results = []
        for name, run in cells:
            results.append(cache(name, run))
            if on_done is not None:
                on_done(name)
        return results
    return _run_cells_on_ray(cells, cache, address, on_done)


def _run_cells_on_ray(cells: Sequence, cache: Callable, address: str | None, on_done: Callable | None) -> list:
    with ray_session(address) as ray:
        return _gather_cells(ray, cells, cache, on_done)


def _gather_cells(ray: Any, cells: Sequence, cache: Callable, on_done: Callable | None) -> list:
    try:
        remote = ray.remote(num_cpus=1)(_run_cell)
        futures, done = {}, {}
        for name, run in cells:

            def submit(name: str = name, run: Callable = run) -> dict[str, Any]:
                futures[name] = remote.remote(run)
                raise _Submitted

            try:
                done[name] = cache(name, submit)  # a stored cell comes back at once
            except _Submitted:
                continue
        for name, result in zip(futures, ray.get(list(futures.values()))):
            done[name] = cache(name, lambda result=result: result)
        if on_done is not None:
            for name, _ in cells:
                on_done(name)
        return [done[name] for name, _ in cells]
    except ray.exceptions.RayError as err:
        reason = " ".join(str(err).split())[:300]
        raise PolicyKDError(f"a Ray task failed ({reason}); run with --backend local to see the error") from None


def _run_cell(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # one CPU per task
    return run()
