"""Export a distilled student to ONNX, for serving it without Python, torch or policykd.

The exported graph is the whole greedy policy: raw env observations ``(batch, *obs_shape)`` in
(float32, or uint8 for images), env actions out (int64 indices, or float32 vectors already
clipped or squashed to the action bounds), and beside them the head's outputs the actions are
taken from (``head_outputs``: logits, the Gaussian mean, or the deterministic head's [-1, 1]
action). Input normalisation (with the teacher's VecNormalize clip) and the action mapping are the
student's own (``Student.forward`` and ``ActionMapper.greedy``), so the file acts exactly as
``policykd evaluate`` plays the student. After writing, the file is run with onnxruntime on
random observations and its head outputs and actions are compared with the student's; a mismatch
is an error, not a warning.

The file carries the student's config and env recipe as ONNX metadata (``policykd.student``,
``policykd.recipe``), so ``policykd evaluate policy.onnx`` plays it with nothing else at hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path
from policykd.jobs.evaluate import action_latency_ms
from policykd.learn.students import Student
from policykd.types import StudentOutput

INPUT_NAME, OUTPUT_NAME, HEAD_OUTPUT_NAME = "observations", "actions", "head_outputs"
CONFIG_KEY, RECIPE_KEY = "policykd.student", "policykd.recipe"
# float32 kernels may differ in the last bits between torch and onnxruntime: outputs and continuous
# actions must agree within CONTINUOUS_TOLERANCE, absolute plus relative to the student's value
CONTINUOUS_TOLERANCE = 1e-4
INSTALL_HINT = "pip install 'policykd[onnx]' (onnx, onnxscript and onnxruntime)"


class GreedyPolicy(nn.Module):
    """A student and its action mapping as one module: raw observations -> (greedy env actions,
    the head outputs they come from)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.student(observations)
        return self.student.mapper.greedy(out), head_outputs(out)


def head_outputs(out: StudentOutput) -> torch.Tensor:
    """What a greedy action is taken from: the logits, the Gaussian mean, or the deterministic action."""
    if out.kind == "discrete":
        return out.logits
    return out.action if out.kind == "deterministic" else out.mean


@dataclasses.dataclass(frozen=True)
class ExportReport:
    path: Path
    n_params: int
    size_bytes: int
    n_checked: int  # random observations compared between onnxruntime and the torch student
    max_abs_diff: float  # between onnxruntime's and the student's head outputs (and continuous actions)
    latency_ms_torch: float  # median batch-1 action, policykd's Student.act
    latency_ms_onnx: float  # the same through onnxruntime (1 thread)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path)}


def export_onnx(student_dir: str | Path, out_path: str | Path, *, n_check: int = 256, seed: int = 0) -> ExportReport:
    """Write ``student_dir``'s student to ``out_path`` as ONNX (dynamic batch size), then check it."""
    from policykd.learn.multitask import CONFIG_FILE as MULTITASK_CONFIG

    _require("onnxscript", "onnx", "onnxruntime")
    if (Path(student_dir) / MULTITASK_CONFIG).is_file():
        raise PolicyKDError(
            f"{student_dir} is a multi-task student; `policykd export` writes single-task students only"
        )
    student = Student.load(student_dir)
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise PolicyKDError(f"{out_path}: the output file must end in .onnx")
    policy = GreedyPolicy(student).eval()
    example = torch.as_tensor(random_observations(student, 2, np.random.default_rng(seed)))
    with atomic_path(out_path, suffix=".onnx") as tmp, _quiet_exporter():
        program = torch.onnx.export(
            policy,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME, HEAD_OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
        program.model.metadata_props.update(_metadata(student, Path(student_dir)))
        program.save(str(tmp))  # weights embedded: one self-contained file
    exported = OnnxPolicy(out_path)
    n_checked, max_diff = _compare(exported, student, n_check, seed)
    observation = random_observations(student, 1, np.random.default_rng(seed))[0]
    torch_ms = action_latency_ms(lambda obs: student.act(obs), observation)
    onnx_ms = action_latency_ms(lambda obs: exported.session.run([OUTPUT_NAME], {INPUT_NAME: obs})[0], observation)
    return ExportReport(out_path, student.n_params, out_path.stat().st_size, n_checked, max_diff, torch_ms, onnx_ms)


class OnnxPolicy:
    """An exported student, played through onnxruntime: ``act`` as ``Student.act`` (greedy only)."""

    def __init__(self, path: str | Path) -> None:
        from policykd.data.envs import EnvRecipe
        from policykd.learn.students import StudentConfig

        _require("onnxruntime")
        self.path = path
        try:
            self.session = onnx_session(path)
        except Exception as err:  # onnxruntime raises its own exception types
            raise PolicyKDError(f"{path} is not a readable ONNX file ({' '.join(str(err).split())[:200]})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in metadata:
            raise PolicyKDError(
                f"{path} was not written by `policykd export` (no {CONFIG_KEY} metadata); export it again"
            )
        self.config = StudentConfig.from_json(json.loads(metadata[CONFIG_KEY]))
        self.recipe = EnvRecipe(**json.loads(metadata[RECIPE_KEY])) if RECIPE_KEY in metadata else None

    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        if not deterministic:
            raise PolicyKDError("an exported student acts greedily only; drop --stochastic")
        return self.run(observations, [OUTPUT_NAME])[0]  # files exported before head_outputs existed play too

    def run(self, observations: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
        """The graph's outputs ``names`` (default: greedy env actions, head outputs) for raw
        observations ``(B, *obs_shape)``."""
        dtype = np.uint8 if self.config.image else np.float32
        feed = {INPUT_NAME: np.asarray(observations, dtype=dtype)}
        return self.session.run(names or [OUTPUT_NAME, HEAD_OUTPUT_NAME], feed)


def check_onnx(path: str | Path, student: Student, n_check: int = 256, seed: int = 0) -> tuple[int, float]:
    """Run the ONNX file and the student on the same random observations; raise PolicyKDError
    unless they give the same head outputs (within CONTINUOUS_TOLERANCE) and actions. Returns
    (observations checked, max abs difference)."""
    return _compare(OnnxPolicy(path), student, n_check, seed)


def _compare(exported: OnnxPolicy, student: Student, n_check: int, seed: int) -> tuple[int, float]:
    observations = random_observations(student, n_check, np.random.default_rng(seed))
    actions, outputs = exported.run(observations)
    expected_actions = student.act(observations, deterministic=True)  # as `policykd evaluate` plays it
    with torch.no_grad():
        expected_outputs = head_outputs(student(torch.as_tensor(observations))).numpy()
    output_diff = np.abs(outputs - expected_outputs)
    off = (output_diff > CONTINUOUS_TOLERANCE * (1.0 + np.abs(expected_outputs))).any(axis=-1)
    if student.config.head == "discrete":
        top2 = np.sort(expected_outputs, axis=-1)[:, -2:]  # a near-tie may break either way in float32
        off |= (actions != expected_actions) & (top2[:, 1] - top2[:, 0] > CONTINUOUS_TOLERANCE)
        max_diff = float(output_diff.max())
    else:
        action_diff = np.abs(actions - expected_actions)
        off |= (action_diff > CONTINUOUS_TOLERANCE * (1.0 + np.abs(expected_actions))).any(axis=-1)
        max_diff = float(max(output_diff.max(), action_diff.max()))
    if off.any():
        raise PolicyKDError(
            f"{exported.path}: the exported policy picks other actions than the student on {int(off.sum())}/{n_check} "
            f"observations (its outputs differ by up to {max_diff:.3g}); please report this with the student folder"
        )
    return n_check, max_diff


def _metadata(student: Student, student_dir: Path) -> dict[str, str]:
    """What the ONNX file records: the student's config and (when its folder has one) env recipe."""
    from policykd.jobs.resolve import RECIPE_FILE

    entries = {CONFIG_KEY: json.dumps(dataclasses.asdict(student.config))}
    if (student_dir / RECIPE_FILE).is_file():
        entries[RECIPE_KEY] = (student_dir / RECIPE_FILE).read_text()
    return entries


def onnx_session(path: str | Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # as policykd's torch runs: 1 thread
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes on its own internals (e.g. "torchvision is not installed")."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def random_observations(student: Student, n: int, rng: np.random.Generator) -> np.ndarray:
    """Observations the student could meet: uniform bytes for images, else around its input
    normalisation (mean ± 3 std, so saturated and clipped actions are exercised too; with an input
    clip, every other observation spreads to twice the clip, so the clip is exercised as well)."""
    shape = (n, *student.config.observation_shape)
    if student.config.image:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    mean, std = student.obs_mean.numpy(), student.obs_std.numpy()
    noise = rng.standard_normal(shape)
    if student.config.obs_clip is not None:
        noise[1::2] *= max(1.0, 2.0 * student.config.obs_clip / 3.0)
    return (mean + 3.0 * std * noise).astype(np.float32)


def _require(*modules: str) -> None:
    import importlib.util

    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        raise PolicyKDError(f"exporting to ONNX needs torch >= 2.6 (this is {torch.__version__}): pip install -U torch")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise PolicyKDError(f"exporting to ONNX needs {', '.join(missing)}: {INSTALL_HINT}")
