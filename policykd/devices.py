"""Which torch device a job runs on: ``--device cpu|cuda|cuda:N|auto``, resolved once at the job
layer and passed down as an argument (teacher labelling, the Trainer, evaluation); never a global.

CPU is the default: the students and most teachers here are MLPs of a few thousand weights, and a
batch of 8-256 rows costs less on one CPU thread than the host-to-GPU copy and kernel launches
around it. ``auto`` picks CUDA only where it pays: image observations (Atari CNNs), with a GPU.
Uses nothing of ours but ``errors``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from policykd.errors import PolicyKDError


def is_image_space(space: Any) -> bool:
    """Whether ``space`` holds images as the zoo's CNN policies take them: ``(C, H, W)`` uint8."""
    shape = getattr(space, "shape", None) or ()
    return len(shape) == 3 and getattr(space, "dtype", None) == np.uint8


def resolve_device(name: str | None, *, image_observations: bool = False) -> torch.device:
    """The torch device ``name`` asks for (None: cpu). ``auto``: CUDA for ``image_observations``
    when torch sees a GPU, else the CPU. Asking for CUDA without one is a PolicyKDError."""
    text = "cpu" if name is None else str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if image_observations and torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        check_cuda(text)
        return torch.device(text)
    raise PolicyKDError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or auto")


def check_cuda(text: str) -> None:
    """Refuse ``cuda`` / ``cuda:N`` when torch cannot use that GPU, in one line saying why."""
    if not torch.cuda.is_available():
        why = "this torch is built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise PolicyKDError(f"--device {text}: {why} (torch {torch.__version__}); use --device cpu or auto")
    index = int(text[5:]) if ":" in text else 0
    if index >= torch.cuda.device_count():
        raise PolicyKDError(
            f"--device {text}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0; pick one of those"
        )


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"
