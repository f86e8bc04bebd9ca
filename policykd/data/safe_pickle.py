"""Read the pickles inside other people's experts (SB3 zips, ``vecnormalize.pkl``) through an allow-list.

A pickle is a program: unpickling one may call any function it names. SB3 zips store their
spaces, policy class and policy kwargs as cloudpickles in the ``data`` JSON, and rl-zoo keeps
VecNormalize statistics as a pickled object, so a crafted expert could run code the moment it is
loaded. Here every such pickle is read by :class:`RestrictedUnpickler`, which

- looks up only what real experts hold (``find_class``): numpy arrays, dtypes, scalars and random
  generators; gymnasium spaces; SB3 / sb3-contrib policy, feature-extractor, distribution and
  buffer classes; torch activation, layer and optimiser classes; ``RunningMeanStd``,
  ``VecNormalize``, SB3's action noises, ``TrainFreq``; ``collections.OrderedDict`` / ``deque``;
- builds (calls) only data: the numpy reconstructors, spaces, containers, enums and the
  statistics classes. Policy, layer, optimiser, extractor, distribution and buffer classes can
  only be *named* (as ``policy_class`` or ``activation_fn`` are), never called while unpickling;
- never imports a module outside numpy, gymnasium.spaces, stable_baselines3, sb3_contrib,
  torch.nn and torch.optim (nor a ``__main__`` module, nor a private or dunder attribute), and
  never changes a class, a function or an enum member, nor sets a dunder such as ``__class__``.

Anything else is refused with one :class:`PolicyKDError` line naming the global and the opt-in
(``--trust-pickles``, ``trust_pickles=True`` in Python) for files the user trusts. Schedules
(``learning_rate``, ``lr_schedule``, ``clip_range``...) are never unpickled: inference needs none,
so they are replaced as SB3's ``custom_objects`` would. Policy weights are read with
``torch.load(weights_only=True)``, which has its own allow-list of tensor types, trusted or not.
"""

from __future__ import annotations

import _compat_pickle
import base64
import enum
import functools
import importlib
import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from policykd.errors import PolicyKDError

TRUST_HINT = "if you trust this file, pass --trust-pickles (trust_pickles=True in Python)"

# Functions (and a few classes) a pickle may call: exact "module.name" strings.
_CALLABLE_GLOBALS = frozenset(
    {
        # numpy arrays and scalars (numpy 1.x names, then numpy 2.x names)
        "numpy.core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy._core.numeric._frombuffer",
        # numpy random generators (a space's np_random)
        "numpy.random._pickle.__generator_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        # containers and bytes
        "collections.OrderedDict",
        "collections.deque",
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.range",
        "builtins.complex",
        "builtins.bytearray",
        "_codecs.encode",  # bytes in protocol-2 pickles
        "torch.device",
    }
)
# SB3's schedule classes (SB3 >= 2.6): plain arithmetic when called; an expert may keep one in an
# entry that custom objects do not replace.
_SCHEDULES = ("ConstantSchedule", "FloatSchedule", "LinearSchedule")
# Packages a class may come from; a module outside them is never imported.
_CLASS_ROOTS = ("numpy", "gymnasium.spaces", "stable_baselines3", "sb3_contrib", "torch.nn", "torch.optim")


def _within(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def _plain_path(module: str, name: str) -> bool:
    """No ``__main__`` module (importing one runs a program) and no private or dunder attribute."""
    module_ok = all(part.isidentifier() and not part.startswith("__") for part in module.split("."))
    return module_ok and all(part.isidentifier() and not part.startswith("_") for part in name.split("."))


@functools.cache
def _class_rules() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(classes a pickle may rebuild exactly, bases whose subclasses it may rebuild, bases whose
    subclasses it may only name)."""
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3.common import utils as sb3_utils
    from stable_baselines3.common.buffers import BaseBuffer
    from stable_baselines3.common.distributions import Distribution
    from stable_baselines3.common.noise import ActionNoise
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.type_aliases import TrainFreq
    from stable_baselines3.common.vec_env import VecNormalize

    # np.ndarray exactly: a subclass such as np.memmap opens (and may truncate) a file when built.
    exact = (np.ndarray, np.random.Generator, np.random.RandomState, np.random.SeedSequence, RunningMeanStd)
    exact += (VecNormalize, TrainFreq)
    exact += tuple(getattr(sb3_utils, name) for name in _SCHEDULES if hasattr(sb3_utils, name))
    rebuild = (np.dtype, np.generic, np.random.BitGenerator, gym.spaces.Space, ActionNoise, enum.Enum)
    named = (torch.nn.Module, torch.optim.Optimizer, Distribution, BaseBuffer)
    return exact, rebuild, named


def _class_permission(obj: Any) -> str | None:
    """What a pickle may do with class ``obj``: "call" (rebuild it: data), "name" (only refer to
    it, as ``policy_class`` or ``activation_fn`` do), or None (refused)."""
    if not isinstance(obj, type) or not _within(obj.__module__, _CLASS_ROOTS):
        return None
    exact, rebuild, named = _class_rules()
    if obj in exact or (issubclass(obj, rebuild) and not issubclass(obj, named)):
        return "call"
    if issubclass(obj, named):
        return "name"
    return None


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickle only what SB3 experts hold (see the module docstring); ``source`` names the file in
    errors. It extends the pure-Python unpickler, whose opcodes (REDUCE, NEWOBJ, BUILD...) can be
    checked one by one; the C one only lets ``find_class`` be checked."""

    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source
        self._globals: dict[int, tuple[Any, str, str]] = {}  # id -> (object, "module.name", permission)

    def _refuse(self, what: str, why: str = "not on policykd's allow-list of what SB3 experts hold") -> PolicyKDError:
        return PolicyKDError(f"{self.source}: refused to unpickle {what} ({why}; it could run code); {TRUST_HINT}")

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # Python 2 names (__builtin__.set), which protocols 0-2 write: as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualified = f"{module}.{name}"
        if qualified in _CALLABLE_GLOBALS:
            obj, permission = self._resolve(module, name), "call"
        elif _within(module, _CLASS_ROOTS) and _plain_path(module, name):
            obj = self._resolve(module, name)
            permission = _class_permission(obj)
            if permission is None:
                raise self._refuse(qualified)
        else:
            raise self._refuse(qualified)
        self._globals[id(obj)] = (obj, qualified, permission)
        return obj

    @staticmethod
    def _resolve(module: str, name: str) -> Any:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def _check_call(self, func: Any) -> None:
        entry = self._globals.get(id(func))
        if entry is None or entry[0] is not func:
            raise self._refuse(f"a call to {getattr(func, '__qualname__', type(func).__name__)}", "not a global")
        if entry[2] != "call":
            raise self._refuse(f"a call to {entry[1]}", "an expert file may name this class, never build it")

    def load_reduce(self) -> None:
        self._check_call(self.stack[-2])
        super().load_reduce()

    def load_newobj(self) -> None:
        self._check_call(self.stack[-2])
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._check_call(self.stack[-3])
        super().load_newobj_ex()

    def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ (protocols 0 and 1)
        self._check_call(klass)
        super()._instantiate(klass, args)

    def load_build(self) -> None:
        """Set an object's state: never a global's, a class's or an enum member's (each is shared by
        every later user), and never a dunder attribute such as ``__class__``."""
        state, target = self.stack[-1], self.stack[-2]
        slots = state[1] if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict) else {}
        shared = id(target) in self._globals or isinstance(target, (type, enum.Enum))
        if shared or any(str(key).startswith("__") for key in slots):
            raise self._refuse(f"a change to {getattr(target, '__qualname__', target)!r}", "only new data may be set")
        super().load_build()

    def get_extension(self, code: int) -> None:
        raise self._refuse(f"copyreg extension code {code}")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def restricted_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` through :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data), source).load()


def load_pickle(path: Path, *, trust_pickles: bool = False) -> Any:
    """Read a pickle file (``vecnormalize.pkl``): restricted, or a plain ``pickle.load`` when trusted."""
    data = Path(path).read_bytes()
    return pickle.loads(data) if trust_pickles else restricted_loads(data, str(path))


def zip_data(
    json_string: str, custom_objects: Mapping[str, Any], *, source: str, trust_pickles: bool = False
) -> dict[str, Any]:
    """What SB3's ``save_util.json_to_data`` returns for an SB3 zip's ``data``: entries named in
    ``custom_objects`` replaced without being read, cloudpickled entries unpickled (restricted
    unless trusted), an entry that fails to unpickle left out with a warning, as SB3 does."""
    loads: Callable[[bytes, str], Any] = _cloudpickle_loads if trust_pickles else restricted_loads
    result: dict[str, Any] = {}
    for key, item in json.loads(json_string).items():
        if key in custom_objects:
            result[key] = custom_objects[key]
        elif isinstance(item, dict) and ":serialized:" in item:
            where = f"{source} (data entry {key!r})"
            try:
                result[key] = loads(base64.b64decode(item[":serialized:"].encode()), where)
            except (RuntimeError, TypeError, AttributeError) as err:
                warnings.warn(f"Could not deserialize object {key}: {err}", stacklevel=2)
            except ImportError as err:
                raise PolicyKDError(f"{where} needs the module {err.name}, which is not installed") from None
        else:
            result[key] = item
    return result


def _cloudpickle_loads(data: bytes, _: str) -> Any:
    import cloudpickle

    return cloudpickle.loads(data)  # the user trusts this file


def _torch_refusal(err: Exception) -> str:
    """The line of torch's weights-only refusal that says what it found."""
    text = " ".join(str(err).split())
    for lead in ("WeightsUnpickler error:", "trusted source."):
        if lead in text:
            text = text.split(lead, 1)[1]
            break
    return text.split(" Check the documentation")[0].strip().rstrip(".") or "not a state dict"


def read_sb3_zip(
    path: Path, custom_objects: Mapping[str, Any], *, trust_pickles: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, policy state dict)`` of an SB3 zip: the ``data`` JSON through :func:`zip_data`,
    ``policy.pth`` through ``torch.load(weights_only=True)`` on the CPU. Other weights (optimisers,
    ``pytorch_variables.pth``) are not read. Unreadable content raises what zipfile, json or torch
    raise (KeyError, ValueError, RuntimeError, ...): the caller words them for the user."""
    import torch

    with zipfile.ZipFile(path) as archive:
        data = zip_data(archive.read("data").decode(), custom_objects, source=str(path), trust_pickles=trust_pickles)
        with archive.open("policy.pth") as weights:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as err:  # torch's message is a page long and suggests weights_only=False
                raise PolicyKDError(
                    f"{path}: policy.pth holds more than tensors ({_torch_refusal(err)}), so "
                    "torch.load(weights_only=True) refused it; policy weights are never unpickled otherwise"
                ) from None
    return data, state
