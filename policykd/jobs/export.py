"""Export a distilled student to ONNX, for serving it without Python, torch or policykd.

The exported graph is the whole greedy policy: raw env observations ``(batch, *obs_shape)`` in
(float32, or uint8 for images), env actions out (int64 indices, or float32 vectors already
clipped or squashed to the action bounds). Input normalisation and the action mapping are the
student's own (``Student.forward`` and ``ActionMapper.greedy``), so the file acts exactly as
``policykd evaluate`` plays the student. After writing, the file is run with onnxruntime on
random observations and compared with the student; a mismatch is an error, not a warning.

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
from policykd.fileio import atomic_path, check_folder_path
from policykd.jobs.evaluate import action_latency_ms
from policykd.jobs.run_folder import check_finished
from policykd.learn.students import Student

INPUT_NAME, OUTPUT_NAME = "observations", "actions"
CONFIG_KEY, RECIPE_KEY = "policykd.student", "policykd.recipe"
# float32 kernels may differ in the last bits between torch and onnxruntime
CONTINUOUS_TOLERANCE = 1e-4
INSTALL_HINT = "pip install 'policykd[onnx]' (onnx, onnxscript and onnxruntime)"


class GreedyPolicy(nn.Module):
    """A student and its action mapping as one module: raw observations -> greedy env actions."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.student.mapper.greedy(self.student(observations))


@dataclasses.dataclass(frozen=True)
class ExportReport:
    path: Path
    n_params: int
    size_bytes: int
    n_checked: int  # random observations compared between onnxruntime and the torch student
    max_abs_diff: float  # continuous actions; 0 for discrete ones, which must match exactly
    latency_ms_torch: float  # median batch-1 action, policykd's Student.act
    latency_ms_onnx: float  # the same through onnxruntime (1 thread)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "path": str(self.path)}


def export_onnx(student_dir: str | Path, out_path: str | Path, *, n_check: int = 256, seed: int = 0) -> ExportReport:
    """Write ``student_dir``'s student to ``out_path`` as ONNX (dynamic batch size), then check it."""
    from policykd.learn.multitask import CONFIG_FILE as MULTITASK_CONFIG

    _require("onnxscript", "onnx", "onnxruntime")
    check_finished(Path(student_dir).parent, f"student {student_dir}")  # a failed or running run's student
    if (Path(student_dir) / MULTITASK_CONFIG).is_file():
        raise PolicyKDError(
            f"{student_dir} is a multi-task student; `policykd export` writes single-task students only"
        )
    student = Student.load(student_dir)
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise PolicyKDError(f"{out_path}: the output file must end in .onnx")
    check_folder_path(out_path.parent)  # a folder that is a file or a loop: refused before the export
    policy = GreedyPolicy(student).eval()
    example = torch.as_tensor(random_observations(student, 2, np.random.default_rng(seed)))
    with atomic_path(out_path, suffix=".onnx") as tmp, _quiet_exporter():
        program = torch.onnx.export(
            policy,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
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
        dtype = np.uint8 if self.config.image else np.float32
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.asarray(observations, dtype=dtype)})[0]


def check_onnx(path: str | Path, student: Student, n_check: int = 256, seed: int = 0) -> tuple[int, float]:
    """Run the ONNX file and the student on the same random observations; raise PolicyKDError
    unless they give the same actions. Returns (observations checked, max abs difference)."""
    return _compare(OnnxPolicy(path), student, n_check, seed)


def _compare(exported: OnnxPolicy, student: Student, n_check: int, seed: int) -> tuple[int, float]:
    observations = random_observations(student, n_check, np.random.default_rng(seed))
    actions = exported.act(observations)
    expected = student.act(observations, deterministic=True)
    if student.config.head == "discrete":
        mismatches = int((actions != expected).sum())
        if mismatches:
            raise PolicyKDError(
                f"{exported.path}: the exported policy picks other actions than the student on "
                f"{mismatches}/{n_check} observations; please report this with the student folder"
            )
        return n_check, 0.0
    max_diff = float(np.abs(actions - expected).max())
    if not max_diff <= CONTINUOUS_TOLERANCE:
        raise PolicyKDError(
            f"{exported.path}: the exported actions differ from the student's by up to {max_diff:.3g}; "
            "please report this with the student folder"
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
    normalisation (mean ± 3 std, so saturated and clipped actions are exercised too)."""
    shape = (n, *student.config.observation_shape)
    if student.config.image:
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    mean, std = student.obs_mean.numpy(), student.obs_std.numpy()
    return (mean + 3.0 * std * rng.standard_normal(shape)).astype(np.float32)


def _require(*modules: str) -> None:
    import importlib.util

    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        raise PolicyKDError(f"exporting to ONNX needs torch >= 2.6 (this is {torch.__version__}): pip install -U torch")
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise PolicyKDError(f"exporting to ONNX needs {', '.join(missing)}: {INSTALL_HINT}")
