"""Frame stacks rebuilt on the training device (issue 20).

A frame-deduplicated buffer (``LabelledBuffer(frame_stack=S)``, Atari) keeps each transition's
newest frame once and rebuilds the ``(B, S*C, H, W)`` stacks at sampling time. On the host that
gathers S frames per sample with numpy and copies all of them to the device. With a
:class:`FrameMirror` the stored frames live on the device too (copied once, then only the rows
written since the last sample), and a batch sends only its ``(B, S)`` row indices: the gather runs
there, on the very rows the host would read (``LabelledBuffer._stack_rows``), so the stacks are
bit-identical.

:func:`place_frame_stacks` is the choice the Trainer makes: on a CUDA device, a mirror when it takes
at most :data:`MIRROR_SHARE_OF_FREE` of the GPU's free memory; on the CPU never (there the gather is
the same work either way, and a mirror would double the frames' memory).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # annotations only: buffers imports this module
    from policykd.data.buffers import LabelledBuffer

MIRROR_SHARE_OF_FREE = 0.5
"""The most of the GPU's free memory (``torch.cuda.mem_get_info``) a mirror may take: the student,
its Adam state and the batches need the rest."""
_COPY_BYTES = 64 * 2**20  # rows are synced in chunks of about this size: a 7 GB buffer is never pinned whole


def _host_tensor(array: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """``array`` as a CPU tensor, in pinned memory when it is bound for a GPU."""
    tensor = torch.as_tensor(array)
    return tensor.pin_memory() if torch.device(device).type == "cuda" else tensor


def to_device(array: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``; to a GPU through pinned host memory, without waiting
    for the copy (the next kernel on the stream does), so sampling overlaps the previous step."""
    return _host_tensor(array, device).to(device, non_blocking=True)


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    """Whether ``a`` and ``b`` name one device (``cuda`` is the current GPU)."""
    a, b = torch.device(a), torch.device(b)
    if a.type != "cuda" or b.type != "cuda":
        return a == b
    current = torch.cuda.current_device() if a.index is None or b.index is None else -1
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


class FrameMirror:
    """A copy on ``device`` of a buffer's stored frames ``(capacity, C, H, W)``, plus one zero row
    at index ``capacity``: where a stack's missing frames (before an episode start, or older than
    the buffer kept) are read from, so that one gather builds a whole batch."""

    def __init__(self, capacity: int, frame_shape: tuple[int, ...], dtype: np.dtype, device: str | torch.device):
        torch_dtype = torch.from_numpy(np.zeros(0, dtype)).dtype
        self.frames = torch.zeros((capacity + 1, *frame_shape), dtype=torch_dtype, device=device)
        self.capacity = capacity
        self.synced = 0  # the buffer's count of rows written, at the last sync

    @property
    def device(self) -> torch.device:
        return self.frames.device

    def sync(self, frames: np.ndarray, n_written: int, pos: int) -> None:
        """Copy the rows written since the last sync: the last ``n_written - synced`` before ``pos``
        (every row once that is a capacity or more), in one or two runs around the ring's end."""
        n_new = min(n_written - self.synced, self.capacity)
        start = (pos - n_new) % self.capacity
        for lo, hi in ((start, min(start + n_new, self.capacity)), (0, max(start + n_new - self.capacity, 0))):
            step = max(_COPY_BYTES // max(frames[:1].nbytes, 1), 1)
            for first in range(lo, hi, step):
                last = min(first + step, hi)
                self.frames[first:last].copy_(_host_tensor(frames[first:last], self.device), non_blocking=True)
        self.synced = n_written

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        """Frames ``(*rows.shape, C, H, W)`` at storage ``rows`` (``capacity``: zeros), on the device."""
        index = to_device(rows.reshape(-1), self.device)  # index_select: on the CPU ~20x faster than frames[rows]
        return self.frames.index_select(0, index).view(*rows.shape, *self.frames.shape[1:])


def mirror_nbytes(buffer: LabelledBuffer) -> int:
    """Bytes a :class:`FrameMirror` of ``buffer``'s stored frames takes (all ``capacity`` rows, and the zero row)."""
    per_frame = int(np.prod(buffer.observation_shape)) // buffer.frame_stack * buffer.observation_dtype.itemsize
    return (buffer.capacity + 1) * per_frame


def place_frame_stacks(buffer: LabelledBuffer, device: str | torch.device) -> str | None:
    """Choose and set where ``buffer``'s frame stacks are rebuilt for training on ``device`` (the
    module docstring says how). Returns one line saying where and why; None when ``buffer`` stores
    whole observations (nothing to rebuild)."""
    if buffer.frame_stack == 1:
        return None
    device, need = torch.device(device), mirror_nbytes(buffer)
    if buffer.stacks_device is not None and same_device(buffer.stacks_device, device):
        return f"frame stacks rebuilt on {buffer.stacks_device} from its copy of the stored frames ({_gb(need)})"
    if device.type != "cuda":  # the gather costs the CPU the same either way; a mirror would double the memory
        return "frame stacks rebuilt on the host (training on the CPU)"
    free, _ = torch.cuda.mem_get_info(device)
    host = f"frame stacks rebuilt on the host, then copied to {device}: "
    if need > MIRROR_SHARE_OF_FREE * free:
        return host + (
            f"a copy of the stored frames ({_gb(need)}) would take more than "
            f"{MIRROR_SHARE_OF_FREE:.0%} of the GPU's free memory ({_gb(free)})"
        )
    try:
        buffer.stack_frames_on(device)
    except torch.cuda.OutOfMemoryError:
        return host + f"the GPU had no room for a copy of the stored frames ({_gb(need)})"
    return f"frame stacks rebuilt on {buffer.stacks_device} from a copy of the stored frames ({_gb(need)}, {_gb(free)} free)"


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:,.2f} GB"
