"""Play a student exported by ``policykd export`` (ONNX) through onnxruntime.

The file carries the student's config and env recipe as metadata (``policykd.student``,
``policykd.recipe``), so :class:`OnnxPolicy` acts with nothing else at hand. Kept apart from the
exporter so that what plays a file (``load_student``, ``policykd evaluate``) needs neither the
exporter nor the job that writes it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from policykd.errors import PolicyKDError

INPUT_NAME, OUTPUT_NAME, HEAD_OUTPUT_NAME = "observations", "actions", "head_outputs"
CONFIG_KEY, RECIPE_KEY = "policykd.student", "policykd.recipe"
OBSERVATION_KEYS_KEY = "policykd.observation_keys"  # dict-observation envs: {key: shape} in the rows' order
INSTALL_HINT = "pip install 'policykd[onnx]' (onnx, onnxscript and onnxruntime)"


class OnnxPolicy:
    """An exported student, played through onnxruntime: ``act`` as ``Student.act`` (greedy only)."""

    def __init__(self, path: str | Path) -> None:
        from policykd.data.envs import EnvRecipe
        from policykd.learn.students import StudentConfig

        require_modules("exporting to ONNX", "onnxruntime")
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
        recipe = json.loads(metadata[RECIPE_KEY]) if RECIPE_KEY in metadata else None
        self.recipe = None if recipe is None else EnvRecipe.from_json(recipe, str(path))
        keys = metadata.get(OBSERVATION_KEYS_KEY)  # the graph takes flat rows: the env's dict keys, in this order
        self.observation_keys: dict[str, list[int]] | None = None if keys is None else json.loads(keys)

    def act(
        self, observations: np.ndarray, deterministic: bool = True, rng: np.random.Generator | None = None, **masks: Any
    ) -> np.ndarray:
        if masks.get("action_masks") is not None:
            raise PolicyKDError(
                "this env has action masks (MaskablePPO's), which an exported student cannot obey yet; "
                "evaluate the student folder instead"
            )
        if not deterministic:
            raise PolicyKDError(
                "an exported student acts greedily only; drop --stochastic (predict: deterministic=True)"
            )
        return self.run(observations, [OUTPUT_NAME])[0]  # files exported before head_outputs existed play too

    def run(self, observations: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
        """The graph's outputs ``names`` (default: greedy env actions, head outputs) for raw
        observations ``(B, *obs_shape)``."""
        dtype = np.uint8 if self.config.image else np.float32
        feed = {INPUT_NAME: np.asarray(observations, dtype=dtype)}
        return self.session.run(names or [OUTPUT_NAME, HEAD_OUTPUT_NAME], feed)


def onnx_session(path: str | Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # as policykd's torch runs: 1 thread
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def require_modules(what: str, *modules: str) -> None:
    """Refuse ``what`` (e.g. "exporting to ONNX") in one line when a module it needs is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise PolicyKDError(f"{what} needs {', '.join(missing)}: {INSTALL_HINT}")
