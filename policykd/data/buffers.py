"""A fixed-capacity ring of teacher-labelled transitions, saved as one ``.npz`` with a JSON header.

Layout follows SB3's ``common/buffers.py`` (one preallocated array per field, a write position
``pos`` and a ``full`` flag), with a teacher axis: each TeacherOutput field is stored as
``(capacity, K, *shape)`` float32, NaN where teacher ``k``'s kind does not set that field.
Sampling always takes an explicit ``np.random.Generator``; nothing here reads global state.

Frame-stacked image observations (Atari) can be stored deduplicated, as DQN replay buffers do:
with ``frame_stack=S`` only each transition's newest frame is kept and the stack is rebuilt at
sampling time from the same env's previous transitions (``n_envs`` rows apart, since vectorised
steps are added together), zero-filled before an episode start exactly as SB3's VecFrameStack
does. A 1M-transition Pong buffer then takes ~7 GB instead of ~28 GB. On a GPU the stacks can be
rebuilt there from a copy of the stored frames (:meth:`LabelledBuffer.stack_frames_on`,
``policykd.data.device_frames``), which the Trainer turns on when it fits.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from policykd.checks import check_int
from policykd.data.device_frames import FrameMirror, same_device, to_device
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path
from policykd.types import KIND_FIELDS, TEACHER_FIELDS, TEACHER_KINDS, DistillBatch, TeacherOutput

DRIVER_TEACHER = 0
DRIVER_STUDENT = 1
DRIVER_NAMES: tuple[str, ...] = ("teacher", "student")  # indexed by driver code

FORMAT = "policykd.buffer"
FORMAT_VERSION = 1
_HEADER_KEY = "__header__"
_MASKS = "action_masks"
_TRANSITION_DTYPES: dict[str, np.dtype] = {
    "rewards": np.dtype(np.float32),
    "terminated": np.dtype(bool),
    "truncated": np.dtype(bool),
    "episode_starts": np.dtype(bool),
    "drivers": np.dtype(np.int8),
}


def _allocate(columns: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.ndarray]:
    """One array per column (teacher outputs NaN-filled, the rest zeros), refused in one line
    when they cannot fit in this machine's memory, before any is allocated."""
    n_rows = next(iter(columns.values()))[0][0]
    n_bytes = sum(int(np.prod(shape, dtype=np.float64)) * dtype.itemsize for shape, dtype in columns.values())
    total = _physical_memory()
    too_big = PolicyKDError(
        f"a buffer of {n_rows:,} transitions needs {n_bytes / 1e9:,.1f} GB of memory"
        + (f", more than this machine's {total / 1e9:,.1f} GB" if total else "")
        + "; collect fewer transitions (--n-transitions)"
    )
    if total and n_bytes > total:
        raise too_big
    try:
        return {
            name: np.full(shape, np.nan, dtype) if name.startswith(_teacher_key("")) else np.zeros(shape, dtype)
            for name, (shape, dtype) in columns.items()
        }
    except MemoryError:
        raise too_big from None


def _physical_memory() -> int:
    """Bytes of RAM (0 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def _teacher_key(field: str) -> str:
    return f"teacher_{field}"


def _space_layout(space: spaces.Space, what: str) -> tuple[tuple[int, ...], np.dtype]:
    """Per-transition ``(shape, dtype)`` of a flat gymnasium space; Discrete is a scalar ``()``."""
    if isinstance(space, spaces.Discrete):
        return (), np.dtype(space.dtype)
    if isinstance(space, (spaces.Box, spaces.MultiDiscrete, spaces.MultiBinary)):
        return tuple(int(d) for d in space.shape), np.dtype(space.dtype)
    raise PolicyKDError(
        f"{what} space {space} is not supported by LabelledBuffer; "
        "use a Box, Discrete, MultiDiscrete or MultiBinary space (e.g. wrap with FlattenObservation)"
    )


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


class LabelledBuffer:
    """Ring buffer of transitions labelled by K teachers (K = 1 is just K = 1).

    Stored per transition: ``observations (*obs_shape)`` in the env dtype, ``actions
    (*action_shape)`` (``()`` for Discrete), ``rewards`` float32, ``terminated`` / ``truncated`` /
    ``episode_starts`` bool, ``drivers`` int8 (``DRIVER_TEACHER`` / ``DRIVER_STUDENT``) and, for each
    field in ``teacher_field_shapes``, ``(K, *shape)`` float32 with NaN for teachers of other kinds.
    With ``action_mask_shape`` (MaskablePPO teachers), also ``action_masks (*action_mask_shape)`` bool:
    the actions the env allowed in that state (True: allowed), stored raw beside the raw logits.
    """

    def __init__(
        self,
        capacity: int,
        *,
        observation_shape: Sequence[int],
        observation_dtype: np.dtype | type | str,
        action_shape: Sequence[int],
        action_dtype: np.dtype | type | str,
        teacher_kinds: Sequence[str],
        teacher_field_shapes: Mapping[str, Sequence[int]],
        meta: dict[str, Any] | None = None,
        frame_stack: int = 1,
        n_envs: int = 1,
        action_mask_shape: Sequence[int] | None = None,
    ) -> None:
        self._capacity = check_int("buffer capacity", capacity)
        self.observation_shape = tuple(int(d) for d in observation_shape)
        self.observation_dtype = np.dtype(observation_dtype)
        self.action_shape = tuple(int(d) for d in action_shape)
        self.action_dtype = np.dtype(action_dtype)
        self._kinds = self._check_kinds(teacher_kinds)
        self.teacher_field_shapes = self._check_field_shapes(self._kinds, teacher_field_shapes)
        self._meta = self._check_meta(meta)
        self._pos = 0
        self._full = False
        self.frame_stack, self.n_envs = check_int("frame_stack", frame_stack), check_int("n_envs", n_envs)
        if self.frame_stack > 1 and (len(self.observation_shape) != 3 or self.observation_shape[0] % self.frame_stack):
            raise PolicyKDError(
                f"frame_stack={frame_stack} needs channel-first stacked images (S*C, H, W), got {self.observation_shape}"
            )
        # observations hold whole observations, or only the newest frame (C, H, W) when deduplicating
        stored_obs_shape = (
            (self.observation_shape[0] // self.frame_stack, *self.observation_shape[1:])
            if self.frame_stack > 1
            else self.observation_shape
        )
        columns: dict[str, tuple[tuple[int, ...], np.dtype]] = {
            "observations": ((self._capacity, *stored_obs_shape), self.observation_dtype),
            "actions": ((self._capacity, *self.action_shape), self.action_dtype),
            **{name: ((self._capacity,), dtype) for name, dtype in _TRANSITION_DTYPES.items()},
            **{
                _teacher_key(field): ((self._capacity, len(self._kinds), *shape), np.dtype(np.float32))
                for field, shape in self.teacher_field_shapes.items()
            },
        }
        self.action_mask_shape = None if action_mask_shape is None else tuple(int(d) for d in action_mask_shape)
        if self.action_mask_shape is not None:
            columns[_MASKS] = ((self._capacity, *self.action_mask_shape), np.dtype(bool))
        self._data: dict[str, np.ndarray] = _allocate(columns)
        self._n_written = 0  # rows ever written: what a frame mirror has not seen yet is the rows since its last sync
        self._mirror: FrameMirror | None = None

    @classmethod
    def for_teachers(
        cls,
        capacity: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        teacher_outputs_example: Sequence[TeacherOutput],
        meta: dict[str, Any] | None = None,
        frame_stack: int = 1,
        n_envs: int = 1,
        action_mask_shape: Sequence[int] | None = None,
    ) -> LabelledBuffer:
        """A buffer whose layout fits these spaces and one example batch of K teacher outputs
        (each field's per-transition shape is its tensor's ``shape[1:]``). ``frame_stack > 1``
        stores image stacks deduplicated (see the module docstring); ``n_envs`` is the number of
        transitions each ``add`` call brings."""
        obs_shape, obs_dtype = _space_layout(observation_space, "observation")
        act_shape, act_dtype = _space_layout(action_space, "action")
        field_shapes: dict[str, tuple[int, ...]] = {}
        for k, out in enumerate(teacher_outputs_example):
            for field in KIND_FIELDS.get(out.kind, ()):
                tensor = getattr(out, field)
                if tensor is None:
                    raise PolicyKDError(f"teacher {k} ({out.kind}) gave no {field!r}; its adapter must set it")
                shape = tuple(int(d) for d in tensor.shape[1:])
                if field_shapes.setdefault(field, shape) != shape:
                    raise PolicyKDError(
                        f"teachers disagree on the shape of {field!r}: {field_shapes[field]} vs {shape} "
                        f"(teacher {k}); an ensemble must share one env and action space"
                    )
        kinds = [out.kind for out in teacher_outputs_example]
        return cls(
            capacity,
            observation_shape=obs_shape,
            observation_dtype=obs_dtype,
            action_shape=act_shape,
            action_dtype=act_dtype,
            teacher_kinds=kinds,
            teacher_field_shapes=field_shapes,
            meta=meta,
            frame_stack=frame_stack,
            n_envs=n_envs,
            action_mask_shape=action_mask_shape,
        )

    @staticmethod
    def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
        kinds = tuple(kinds)
        if not kinds:
            raise PolicyKDError("a LabelledBuffer needs at least one teacher kind; pass teacher_kinds")
        unknown = [kind for kind in kinds if kind not in TEACHER_KINDS]
        if unknown:
            raise PolicyKDError(f"unknown teacher kind(s) {unknown}; use one of {list(TEACHER_KINDS)}")
        return kinds

    @staticmethod
    def _check_field_shapes(kinds: tuple[str, ...], shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
        needed = {field for kind in kinds for field in KIND_FIELDS[kind]}
        if set(shapes) != needed:
            raise PolicyKDError(
                f"teacher_field_shapes has fields {sorted(shapes)} but teacher kinds {list(kinds)} "
                f"use {sorted(needed)}; give exactly one shape per field used"
            )
        return {field: tuple(int(d) for d in shapes[field]) for field in TEACHER_FIELDS if field in needed}

    @staticmethod
    def _check_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(meta or {}))
        except (TypeError, ValueError) as exc:
            raise PolicyKDError(f"buffer meta must be JSON-serialisable ({exc}); store plain numbers/strings") from None

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def full(self) -> bool:
        return self._full

    @property
    def pos(self) -> int:
        """Storage index the next transition is written to (the oldest one once ``full``)."""
        return self._pos

    @property
    def n_teachers(self) -> int:
        return len(self._kinds)

    @property
    def teacher_kinds(self) -> tuple[str, ...]:
        return self._kinds

    @property
    def meta(self) -> dict[str, Any]:
        """JSON-able dict (env_id, teacher sources, collection stats); mutable, saved with the buffer."""
        return self._meta

    def __len__(self) -> int:
        return self._capacity if self._full else self._pos

    def __repr__(self) -> str:
        return f"LabelledBuffer({len(self)}/{self._capacity}, kinds={list(self._kinds)}, obs={self.observation_shape})"

    def layout(self) -> dict[str, Any]:
        """Everything two buffers must share to exchange transitions (JSON-able)."""
        return {
            "observation_shape": list(self.observation_shape),
            "observation_dtype": self.observation_dtype.name,
            "action_shape": list(self.action_shape),
            "action_dtype": self.action_dtype.name,
            "teacher_kinds": list(self._kinds),
            "teacher_field_shapes": {f: list(s) for f, s in self.teacher_field_shapes.items()},
            "frame_stack": self.frame_stack,
            "n_envs": self.n_envs,
            **({} if self.action_mask_shape is None else {"action_mask_shape": list(self.action_mask_shape)}),
        }

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays (all ``capacity`` rows, as allocated)."""
        return sum(array.nbytes for array in self._data.values())

    def stack_frames_on(self, device: str | torch.device | None) -> None:
        """Rebuild frame stacks on ``device`` (None: on the host, the default), for batches sampled
        to that device: the stored frames are copied there once (a ``FrameMirror``; the rows added
        since are copied at the next sample, the ring's wrap included) and each batch sends only its
        row indices. The stacks are bit-identical to the host's. Any device works, ``cpu`` too
        (tests use it); the Trainer picks one with ``policykd.data.device_frames.place_frame_stacks``."""
        if self.frame_stack == 1:
            raise PolicyKDError(
                "only a frame-stacked buffer (frame_stack > 1) rebuilds stacks; this one stores them whole"
            )
        self._mirror = None  # the old copy is freed before a new one is allocated
        if device is not None:
            frames = self._data["observations"]
            self._mirror = FrameMirror(self._capacity, frames.shape[1:], frames.dtype, device)

    @property
    def stacks_device(self) -> torch.device | None:
        """The device frame stacks are rebuilt on for batches sampled there (:meth:`stack_frames_on`);
        None: on the host."""
        return None if self._mirror is None else self._mirror.device

    def driver_shares(self) -> dict[str, float]:
        """Fraction of stored transitions driven by each driver, e.g. ``{"teacher": 0.7, "student": 0.3}``."""
        counts = np.bincount(self._data["drivers"][: len(self)], minlength=len(DRIVER_NAMES))
        total = max(len(self), 1)
        return {name: float(counts[code]) / total for code, name in enumerate(DRIVER_NAMES)}

    def add(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        episode_starts: np.ndarray,
        drivers: np.ndarray | int,
        teacher_outputs: Sequence[TeacherOutput],
        action_masks: np.ndarray | None = None,
    ) -> None:
        """Add one vectorised step of ``n`` transitions: ``observations (n, *obs_shape)``, ``actions
        (n, *action_shape)`` (``(n, 1)`` is accepted for Discrete), the per-env columns ``(n,)``
        (``drivers`` may be one int for all), K teacher outputs with tensors of leading dim ``n``, and
        ``action_masks (n, *action_mask_shape)`` when the buffer stores them (and only then)."""
        observations = np.asarray(observations)
        n = observations.shape[0] if observations.ndim else 0
        rows = {
            "observations": self._newest_frames(
                self._check_array("observations", observations, (n, *self.observation_shape), self.observation_dtype)
            ),
            "actions": self._check_actions(np.asarray(actions), n),
            **self._check_columns(
                n,
                rewards=rewards,
                terminated=terminated,
                truncated=truncated,
                episode_starts=episode_starts,
                drivers=np.full(n, drivers) if np.ndim(drivers) == 0 else drivers,
            ),
            **self._teacher_rows(teacher_outputs, n),
            **self._mask_rows(action_masks, n),
        }
        for name in ("observations", "rewards"):
            _check_finite(name, rows[name], len(self))
        self._write(rows, n)

    def _mask_rows(self, action_masks: np.ndarray | None, n: int) -> dict[str, np.ndarray]:
        if (action_masks is None) != (self.action_mask_shape is None):
            raise PolicyKDError(
                "this buffer stores action masks: pass the env's with every step"
                if action_masks is None
                else "this buffer was made without action masks; create it with action_mask_shape"
            )
        if action_masks is None:
            return {}
        shape = (n, *self.action_mask_shape)  # type: ignore[misc]
        return {_MASKS: self._check_array("action_masks", np.asarray(action_masks), shape, np.dtype(bool))}

    def _newest_frames(self, observations: np.ndarray) -> np.ndarray:
        if self.frame_stack == 1:
            return observations
        if len(observations) != self.n_envs:
            raise PolicyKDError(
                f"a frame-deduplicated buffer takes one row per env ({self.n_envs}), got {len(observations)}"
            )
        return observations[:, -self.observation_shape[0] // self.frame_stack :]

    def _stack_rows(self, indices: np.ndarray) -> np.ndarray:
        """Storage rows ``(B, S)`` of each stack's frames, oldest first: the frame ``s`` steps back is
        ``s * n_envs`` rows earlier; ``capacity`` (no row: zeros) once an episode start lies in
        between, or once the frame is older than what the buffer kept. Host and device stacks both
        gather these rows."""
        back = np.arange(self.frame_stack)
        rows = (indices[:, None] - back * self.n_envs) % self._capacity  # (B, S), newest first
        # frame s+1 is there while frame s is, starts no episode, and is not the oldest kept of its env
        leads_on = ~self._data["episode_starts"][rows] & (self._age(indices)[:, None] >= (back + 1) * self.n_envs)
        present = np.ones(rows.shape, dtype=bool)
        present[:, 1:] = np.logical_and.accumulate(leads_on[:, :-1], axis=1)
        return np.ascontiguousarray(np.where(present, rows, self._capacity)[:, ::-1])

    def _stacked_observations(self, indices: np.ndarray, device: str | torch.device) -> torch.Tensor:
        """``(B, S*C, H, W)`` stacks at storage ``indices`` on ``device``: gathered there from the
        frame mirror when it is on ``device`` (:meth:`stack_frames_on`), else rebuilt here and copied."""
        rows = self._stack_rows(indices)
        if self._mirror is not None and same_device(self._mirror.device, device):
            self._mirror.sync(self._data["observations"], self._n_written, self._pos)
            return self._mirror.gather(rows).reshape(len(indices), *self.observation_shape)
        missing = rows == self._capacity
        stack = self._data["observations"][np.where(missing, 0, rows)]  # (B, S, C, H, W)
        stack[missing] = 0
        return to_device(stack.reshape(len(indices), *self.observation_shape), device)

    def _age(self, indices: np.ndarray) -> np.ndarray:
        """Chronological position of storage ``indices``: 0 = the oldest stored transition."""
        return (indices - self._pos) % self._capacity if self._full else indices

    def _check_array(self, name: str, array: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        if array.shape != shape:
            raise PolicyKDError(f"{name} has shape {array.shape}, expected {shape}; pass one row per env")
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise PolicyKDError(f"{name} has dtype {array.dtype}, the buffer stores {dtype}; pass env values as-is")
        return array

    def _check_actions(self, actions: np.ndarray, n: int) -> np.ndarray:
        if self.action_shape == () and actions.shape == (n, 1):
            actions = actions[:, 0]
        return self._check_array("actions", actions, (n, *self.action_shape), self.action_dtype)

    def _check_columns(self, n: int, **columns: Any) -> dict[str, np.ndarray]:
        checked = {name: np.asarray(value) for name, value in columns.items()}
        for name, value in checked.items():
            if value.shape != (n,):
                raise PolicyKDError(f"{name} has shape {value.shape}, expected ({n},); pass one entry per env")
        drivers = checked["drivers"]
        if ((drivers < 0) | (drivers >= len(DRIVER_NAMES))).any():  # cheaper than np.unique on every add
            bad = sorted(set(drivers.tolist()) - set(range(len(DRIVER_NAMES))))
            raise PolicyKDError(f"unknown driver codes {bad}; use DRIVER_TEACHER or DRIVER_STUDENT")
        return checked

    def _teacher_rows(self, outputs: Sequence[TeacherOutput], n: int) -> dict[str, np.ndarray]:
        """``teacher_<field>`` arrays ``(n, K, *shape)``, NaN where a teacher's kind lacks the field."""
        kinds = tuple(out.kind for out in outputs)
        if kinds != self._kinds:
            raise PolicyKDError(
                f"got {len(kinds)} teacher output(s) of kinds {list(kinds)}, but this buffer was made for "
                f"{self.n_teachers} of kinds {list(self._kinds)}; label with the same teachers in the same order"
            )
        rows = {}
        for field, shape in self.teacher_field_shapes.items():
            block = np.full((n, self.n_teachers, *shape), np.nan, np.float32)
            for k, out in enumerate(outputs):
                if field not in KIND_FIELDS[out.kind]:
                    continue
                tensor = getattr(out, field)
                if tensor is None or tuple(tensor.shape) != (n, *shape):
                    got = None if tensor is None else tuple(tensor.shape)
                    raise PolicyKDError(f"teacher {k} ({out.kind}) {field!r} has shape {got}, expected {(n, *shape)}")
                block[:, k] = _to_numpy(tensor)
                _check_finite(f"teacher {k}'s {field}", block[:, k], len(self))
            rows[_teacher_key(field)] = block
        return rows

    def _write(self, rows: Mapping[str, np.ndarray], n: int) -> None:
        """Write ``n`` rows at ``pos``, wrapping around; if ``n > capacity`` only the last ones survive."""
        if n == 0:
            return
        keep = min(n, self._capacity)
        start = (self._pos + n - keep) % self._capacity
        # a slice when the rows do not wrap (the common case): much cheaper than fancy indexing
        idx = (
            slice(start, start + keep) if start + keep <= self._capacity else (start + np.arange(keep)) % self._capacity
        )
        for name, array in self._data.items():
            array[idx] = rows[name][n - keep :]
        self._full = self._full or self._pos + n >= self._capacity
        self._pos = (self._pos + n) % self._capacity
        self._n_written += n

    def extend(self, other: LabelledBuffer) -> None:
        """Append ``other``'s transitions, oldest first, as if they had been added here (same layout)."""
        if other.layout() != self.layout():
            raise PolicyKDError(
                f"cannot extend a buffer with layout {self.layout()} by one with layout {other.layout()}; "
                "collect both with the same env and teachers"
            )
        order = other.chronological_indices()
        self._write({name: array[order] for name, array in other._data.items()}, len(order))

    def chronological_indices(self) -> np.ndarray:
        """Storage indices ``(len,)`` of the stored transitions, oldest first."""
        if not self._full:
            return np.arange(self._pos)
        return (self._pos + np.arange(self._capacity)) % self._capacity

    def sample(self, batch_size: int, rng: np.random.Generator, device: str | torch.device = "cpu") -> DistillBatch:
        """``batch_size`` transitions drawn uniformly, with replacement, from the filled part."""
        if len(self) == 0:
            raise PolicyKDError("cannot sample from an empty buffer; collect transitions first")
        batch_size = check_int("batch_size", batch_size)
        if self.frame_stack > 1 and self._full:  # the oldest rows' earlier frames were overwritten
            skip = (self.frame_stack - 1) * self.n_envs
            ages = rng.integers(skip, self._capacity, size=batch_size)
            return self.batch_at((self._pos + ages) % self._capacity, device=device)
        return self.batch_at(rng.integers(0, len(self), size=batch_size), device=device)

    def batch_at(self, indices: np.ndarray | Sequence[int], device: str | torch.device = "cpu") -> DistillBatch:
        """The transitions at storage ``indices (B,)`` in ``[0, len)``, e.g. ``np.arange(len(buf))``
        to evaluate the whole buffer. Observations and actions keep their stored dtype."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise PolicyKDError(f"buffer indices must lie in [0, {len(self)}); got {indices.min()}..{indices.max()}")

        def tensor(array: np.ndarray) -> torch.Tensor:
            return to_device(array[indices], device)

        outputs = tuple(
            TeacherOutput(kind, **{f: tensor(self._data[_teacher_key(f)][:, k]) for f in KIND_FIELDS[kind]})
            for k, kind in enumerate(self._kinds)
        )
        observations = (
            self._stacked_observations(indices, device) if self.frame_stack > 1 else tensor(self._data["observations"])
        )
        masks = tensor(self._data[_MASKS]) if _MASKS in self._data else None
        return DistillBatch(
            observations, tensor(self._data["actions"]), tensor(self._data["rewards"]), outputs, action_masks=masks
        )

    def column(self, name: str) -> np.ndarray:
        """Read-only view ``(len, ...)`` of one stored array in storage order (``terminated``,
        ``drivers``, ``teacher_logits`` ...), for statistics without sampling."""
        if name not in self._data:
            raise PolicyKDError(f"no column {name!r}; choose from {sorted(self._data)}")
        view = self._data[name][: len(self)]
        view.flags.writeable = False
        return view

    def save(self, path: str | os.PathLike) -> None:
        """Write the filled part (storage order, so ``pos``/``full`` round-trip) to one ``.npz``,
        atomically; the JSON header is the 0-d unicode array ``__header__``."""
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "capacity": self._capacity,
            "pos": self._pos,
            "full": self._full,
            "n_rows": len(self),
            **self.layout(),
            "meta": self._check_meta(self._meta),
        }
        arrays = {name: array[: len(self)] for name, array in self._data.items()}
        keys = self._observation_keys()
        if keys:  # dict observations: one column per key, observations/<key>; the header names them
            header["observation_keys"] = keys
            arrays.update(_split_keys(arrays.pop("observations"), keys))
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **{_HEADER_KEY: np.array(json.dumps(header))}, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelledBuffer:
        """Read a buffer written by :meth:`save` (no pickle); anything else raises PolicyKDError."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(str(data[_HEADER_KEY][()]))
                if header.get("format") != FORMAT:
                    raise ValueError(f"header format is {header.get('format')!r}")
                if header["version"] > FORMAT_VERSION:
                    raise ValueError(
                        f"format version {header['version']} is newer than {FORMAT_VERSION}; upgrade policykd"
                    )
                buffer = cls(
                    header["capacity"],
                    meta=header["meta"],
                    frame_stack=header.get("frame_stack", 1),
                    n_envs=header.get("n_envs", 1),
                    action_mask_shape=header.get("action_mask_shape"),
                    **{
                        key: header[key]
                        for key in (
                            "observation_shape",
                            "observation_dtype",
                            "action_shape",
                            "action_dtype",
                            "teacher_kinds",
                            "teacher_field_shapes",
                        )
                    },
                )
                buffer._restore(data, header)
        except (
            PolicyKDError,
            OSError,
            EOFError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            zipfile.BadZipFile,
        ) as exc:
            reason = str(exc) if isinstance(exc, PolicyKDError) else f"{type(exc).__name__}: {exc}"
            raise PolicyKDError(
                f"{path} is not a policykd buffer ({reason.replace(chr(10), ' ')}); collect one with `policykd collect`"
            ) from None
        return buffer

    def _observation_keys(self) -> dict[str, list[int]] | None:
        """``{key: shape}`` of dict observations stored as flat rows (collection records it in
        ``meta["observation_keys"]``, in the rows' order), when the shapes add up to a row."""
        keys = self._meta.get("observation_keys")
        if not isinstance(keys, dict) or not keys or self.frame_stack > 1 or len(self.observation_shape) != 1:
            return None
        sizes = [int(np.prod(shape)) for shape in keys.values()]
        return keys if sum(sizes) == self.observation_shape[0] else None

    def _restore(self, data: Mapping[str, np.ndarray], header: Mapping[str, Any]) -> None:
        n, pos, full = int(header["n_rows"]), int(header["pos"]), bool(header["full"])
        if n != (self._capacity if full else pos):
            raise ValueError(f"header says {n} rows with pos={pos}, full={full}, capacity={self._capacity}")
        keys = header.get("observation_keys")
        for name, array in self._data.items():
            stored = _join_keys(data, keys, n) if name == "observations" and keys else data[name]
            if stored.shape != (n, *array.shape[1:]) or stored.dtype != array.dtype:
                raise ValueError(
                    f"array {name!r} is {stored.dtype}{stored.shape}, expected {array.dtype}{(n, *array.shape[1:])}"
                )
            array[:n] = stored
        self._pos, self._full, self._n_written = pos, full, n


def _split_keys(rows: np.ndarray, keys: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """Flat dict-observation rows ``(n, D)`` -> ``{"observations/<key>": (n, *shape)}``, in row order."""
    out, start = {}, 0
    for key, shape in keys.items():
        size = int(np.prod(shape))
        out[f"observations/{key}"] = rows[:, start : start + size].reshape(len(rows), *shape)
        start += size
    return out


def _join_keys(data: Mapping[str, np.ndarray], keys: Mapping[str, Sequence[int]], n: int) -> np.ndarray:
    """The inverse of :func:`_split_keys` on a loaded ``.npz``: each key's column flattened, concatenated."""
    return np.concatenate([np.asarray(data[f"observations/{key}"]).reshape(n, -1) for key in keys], axis=1)


def _check_finite(what: str, values: np.ndarray, n_before: int) -> None:
    """Stop a collection whose observations, rewards or teacher outputs hold NaN or infinity: a
    broken env or teacher would otherwise train a student on garbage, silently."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise PolicyKDError(
            f"non-finite {what} after {n_before:,} transitions; "
            "the env or the teacher produced NaN or infinity: check the expert and its env recipe"
        )
