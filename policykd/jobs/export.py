"""Export a distilled student to ONNX, for serving it without Python, torch or policykd.

The exported graph is the whole greedy policy: raw env observations ``(batch, *obs_shape)`` in
(float32, or uint8 for images), env actions out (int64 indices, or float32 vectors already
clipped or squashed to the action bounds). Input normalisation and the action mapping are the
student's own (``Student.forward`` and ``ActionMapper.greedy``), so the file acts exactly as
``policykd evaluate`` plays the student. After writing, the file is run with onnxruntime on
random observations and compared with the student; a mismatch is an error, not a warning.

The file carries the student's config and env recipe as ONNX metadata (``policykd.student``,
``policykd.recipe``), so ``policykd evaluate policy.onnx`` plays it with nothing else at hand
(``jobs/onnx_policy.py``).

``--format sb3`` writes the student as a Stable-Baselines3 zip (``learn/sb3_export.py`` says how
each head maps onto PPO, DQN, SAC or TD3); it is loaded back with that SB3 class and its
``predict(obs, deterministic=True)`` compared with the student on random observations before the
file is put in place. A student of a dict-observation env (its rows: the keys flattened and
concatenated in the env's Dict key order) becomes a ``MultiInputPolicy`` zip that takes the env's
own dicts, as its teacher did (``learn/sb3_export.py``); its ONNX graph takes the rows, and the
file records their layout as ``policykd.observation_keys`` metadata (``{key: shape}`` in row
order; ``policykd.data.envs.flatten_dict_obs`` makes a row from a dict). ``--format hub`` writes a
folder ready for the Hugging Face hub (``jobs/export_hub.py``). Every format takes a run folder, a student folder, or one task of a
multi-task student (``task``, ``--env``), as ``jobs/load.py`` resolves them.
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

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from policykd.data.envs import EnvRecipe, flatten_dict_obs, make_vec_env, recipe_dict_space, unflatten_dict_obs
from policykd.errors import PolicyKDError
from policykd.fileio import atomic_path, check_folder_path
from policykd.jobs.evaluate import action_latency_ms
from policykd.jobs.load import OpenedStudent, open_student
from policykd.jobs.onnx_policy import (
    CONFIG_KEY,
    HEAD_OUTPUT_NAME,
    INPUT_NAME,
    OBSERVATION_KEYS_KEY,
    OUTPUT_NAME,
    RECIPE_KEY,
    OnnxPolicy,
    require_modules,
)
from policykd.learn.sb3_export import check_expressible, sb3_algo_for, to_sb3_model
from policykd.learn.sb3_policy import student_spaces
from policykd.learn.students import Student
from policykd.types import ActFn, StudentOutput

# float32 kernels may differ in the last bits between torch and onnxruntime (or SB3's folded layers):
# outputs and continuous actions must agree within CONTINUOUS_TOLERANCE, absolute plus relative
CONTINUOUS_TOLERANCE = 1e-4
FORMATS = ("onnx", "sb3", "hub")


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


def export_onnx(
    student_dir: str | Path, out_path: str | Path, *, n_check: int = 256, seed: int = 0, task: str | None = None
) -> ExportReport:
    """Write the student at ``student_dir`` (a run or student folder; ``task``: one task of a
    multi-task student) to ``out_path`` as ONNX (dynamic batch size), then check it."""
    _require("onnxscript", "onnx", "onnxruntime")
    opened = open_student(student_dir, task)
    student = opened.student
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise PolicyKDError(f"{out_path}: the output file must end in .onnx")
    check_folder_path(out_path.parent)  # a folder that is a file or a loop: refused before the export
    policy = GreedyPolicy(student).eval()
    observation_space = _recorded_dict_space(opened.recipe)
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
        program.model.metadata_props.update(_metadata(student, opened.recipe, observation_space))
        program.save(str(tmp))  # weights embedded: one self-contained file
    exported = OnnxPolicy(out_path)
    n_checked, max_diff = _compare_onnx(exported, student, n_check, seed)
    observation = random_observations(student, 1, np.random.default_rng(seed))[0]
    torch_ms = action_latency_ms(lambda obs: student.act(obs), observation)
    onnx_ms = action_latency_ms(lambda obs: exported.session.run([OUTPUT_NAME], {INPUT_NAME: obs})[0], observation)
    return ExportReport(out_path, student.n_params, out_path.stat().st_size, n_checked, max_diff, torch_ms, onnx_ms)


def check_onnx(path: str | Path, student: Student, n_check: int = 256, seed: int = 0) -> tuple[int, float]:
    """Run the ONNX file and the student on the same random observations; raise PolicyKDError
    unless they give the same head outputs (within CONTINUOUS_TOLERANCE) and actions. Returns
    (observations checked, max abs difference)."""
    return _compare_onnx(OnnxPolicy(path), student, n_check, seed)


@dataclasses.dataclass(frozen=True)
class SB3ExportReport:
    path: Path
    algo: str  # the SB3 class that loads it: ppo, dqn, sac or td3
    n_params: int  # the student's
    size_bytes: int
    n_checked: int  # random observations compared between the loaded zip's predict and the student
    max_abs_diff: float  # continuous actions; 0 for discrete ones, which must match exactly
    observation_keys: dict[str, list[int]] | None = None  # a MultiInputPolicy zip's dict keys and shapes


def export_sb3(
    source: str | Path,
    out_path: str | Path | None = None,
    *,
    task: str | None = None,
    algo: str | None = None,
    n_check: int = 1000,
    seed: int = 0,
) -> SB3ExportReport:
    """Write the student at ``source`` (a run or student folder; ``task``: one task of a
    multi-task student) as an SB3 zip: ``algo`` (default :func:`sb3_algo_for`, from the run's
    loss) at ``out_path`` (default ``<source>/<algo>-<env>.zip``). The zip is loaded back with
    that SB3 class and must act as the student on ``n_check`` random observations before it is
    put in place; a student SB3 cannot hold exactly is refused."""
    opened = open_student(source, task)
    algo = algo or sb3_algo_for(opened.student.config, (opened.summary or {}).get("loss"))
    out_path = Path(out_path) if out_path is not None else Path(source) / f"{algo}-{model_env_name(opened)}.zip"
    return write_sb3_zip(opened, out_path, algo, n_check=n_check, seed=seed)


def write_sb3_zip(opened: OpenedStudent, out_path: Path, algo: str, *, n_check: int, seed: int) -> SB3ExportReport:
    """:func:`export_sb3` for a student already opened."""
    student = opened.student
    check_expressible(student.config, algo)
    if out_path.suffix != ".zip":
        raise PolicyKDError(f"{out_path}: the output file must end in .zip")
    observation_space, action_space = _env_spaces(opened)
    model = to_sb3_model(student, algo, observation_space, action_space)
    with atomic_path(out_path, suffix=".zip") as tmp:
        model.save(tmp)
        loaded = sb3_class(algo).load(tmp, device="cpu")
        n_checked, max_diff = _compare(
            lambda obs: loaded.predict(_as_env_obs(observation_space, obs), deterministic=True)[0],
            out_path,
            student,
            n_check,
            seed,
            observation_space,
        )
    keys = observation_keys(observation_space) if isinstance(observation_space, gym.spaces.Dict) else None
    return SB3ExportReport(out_path, algo, student.n_params, out_path.stat().st_size, n_checked, max_diff, keys)


def sb3_class(algo: str) -> Any:
    """The SB3 class that loads an ``algo`` zip."""
    from stable_baselines3 import DQN, PPO, SAC, TD3

    return {"ppo": PPO, "dqn": DQN, "sac": SAC, "td3": TD3}[algo]


def model_env_name(opened: OpenedStudent) -> str:
    """The env part of the zip's name, as the hub writes it (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    env_id = opened.recipe.env_id if opened.recipe is not None else opened.task or "student"
    return env_id.replace("/", "-")


def _env_spaces(opened: OpenedStudent) -> tuple[Any, Any]:
    """The spaces SB3 records in the zip: the env's (SB3 compares them with the env it is loaded
    with; for dict observations the env's own Dict, not the flat rows policykd plays), else the
    student's own (``student_spaces``) when no env recipe is recorded."""
    config = opened.student.config
    if opened.recipe is None:
        return student_spaces(config)
    venv = make_vec_env(opened.recipe, 1, 0)
    try:
        observation_space, action_space = venv.observation_space, venv.action_space
        dict_space = getattr(venv, "dict_space", None)  # make_vec_env's rows of a Dict env (VecFlattenDict)
    finally:
        venv.close()
    if observation_space.shape != config.observation_shape or student_spaces(config)[1].shape != action_space.shape:
        raise PolicyKDError(
            f"student {opened.folder} takes observations {config.observation_shape} but its recorded env "
            f"{opened.recipe.env_id} gives {observation_space.shape}; restore the student's recipe.json"
        )
    return (dict_space if isinstance(dict_space, gym.spaces.Dict) else observation_space), action_space


def _recorded_dict_space(recipe: EnvRecipe | None) -> gym.spaces.Dict | None:
    """The Dict observation space of the recorded env, None for another space, no recipe, or an env
    that cannot be made here (an ONNX file does not need it: its graph takes the student's rows)."""
    if recipe is None:
        return None
    try:
        return recipe_dict_space(recipe)
    except (PolicyKDError, gym.error.Error, ImportError):
        return None


def _as_env_obs(space: gym.spaces.Space, rows: np.ndarray) -> Any:
    """Flat rows as the env gives them: a dict of per-key arrays for a Dict space, else the rows."""
    return unflatten_dict_obs(space, rows) if isinstance(space, gym.spaces.Dict) else rows


def _compare(
    act: ActFn, path: str | Path, student: Student, n_check: int, seed: int, space: Any = None
) -> tuple[int, float]:
    """``act`` (an exported file's greedy policy) against the student on ``n_check`` random
    observations: discrete actions must match exactly, continuous ones within the tolerance. With
    a Dict ``space``, the rows are first made values its keys' dtypes hold (a dict and back)."""
    observations = random_observations(student, n_check, np.random.default_rng(seed))
    if isinstance(space, gym.spaces.Dict):
        observations = flatten_dict_obs(space, unflatten_dict_obs(space, observations))
    actions = np.asarray(act(observations))
    expected = student.act(observations, deterministic=True)
    if student.config.head == "discrete":
        mismatches = int((actions != expected).reshape(len(expected), -1).any(axis=1).sum())
        if mismatches:
            raise PolicyKDError(
                f"{path}: the exported policy picks other actions than the student on "
                f"{mismatches}/{n_check} observations; please report this with the student folder"
            )
        return n_check, 0.0
    max_diff = float(np.abs(actions - expected).max())
    if not max_diff <= CONTINUOUS_TOLERANCE:
        raise PolicyKDError(
            f"{path}: the exported actions differ from the student's by up to {max_diff:.3g}; "
            "please report this with the student folder"
        )
    return n_check, max_diff


def _compare_onnx(exported: OnnxPolicy, student: Student, n_check: int, seed: int) -> tuple[int, float]:
    observations = random_observations(student, n_check, np.random.default_rng(seed))
    actions, outputs = exported.run(observations)
    expected_actions = student.act(observations, deterministic=True)  # as `policykd evaluate` plays it
    with torch.no_grad():
        expected_outputs = head_outputs(student(torch.as_tensor(observations))).numpy()
    output_diff = np.abs(outputs - expected_outputs)
    off = (output_diff > CONTINUOUS_TOLERANCE * (1.0 + np.abs(expected_outputs))).any(axis=-1)
    if student.config.head == "discrete":
        top2 = np.sort(expected_outputs, axis=-1)[..., -2:]  # a near-tie may break either way in float32
        off |= (actions != expected_actions) & (top2[..., 1] - top2[..., 0] > CONTINUOUS_TOLERANCE)
        max_diff = float(output_diff.max())
    else:
        action_diff = np.abs(actions - expected_actions)
        off |= (action_diff > CONTINUOUS_TOLERANCE * (1.0 + np.abs(expected_actions))).any(axis=-1)
        max_diff = float(max(output_diff.max(), action_diff.max()))
    off = off.reshape(len(off), -1).any(axis=1)  # factorised actions: any factor off
    if off.any():
        raise PolicyKDError(
            f"{exported.path}: the exported policy picks other actions than the student on {int(off.sum())}/{n_check} "
            f"observations (its outputs differ by up to {max_diff:.3g}); please report this with the student folder"
        )
    return n_check, max_diff


def _metadata(student: Student, recipe: EnvRecipe | None, observation_space: gym.spaces.Space | None) -> dict[str, str]:
    """What the ONNX file records: the student's config, (when recorded) its env recipe, and for a
    dict-observation env the layout of the rows its graph takes (``{key: shape}``, in row order)."""
    entries = {CONFIG_KEY: json.dumps(dataclasses.asdict(student.config))}
    if recipe is not None:
        entries[RECIPE_KEY] = json.dumps(recipe.to_json())
    if isinstance(observation_space, gym.spaces.Dict):
        entries[OBSERVATION_KEYS_KEY] = json.dumps(observation_keys(observation_space))
    return entries


def observation_keys(space: gym.spaces.Dict) -> dict[str, list[int]]:
    """``{key: shape}`` of a dict-observation env, in the order its keys are concatenated into a row."""
    return {key: list(sub.shape) for key, sub in space.spaces.items()}


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
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        raise PolicyKDError(f"exporting to ONNX needs torch >= 2.6 (this is {torch.__version__}): pip install -U torch")
    require_modules("exporting to ONNX", *modules)
