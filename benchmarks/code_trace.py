"""Which library code computed a cached benchmark cell, down to the function.

A benchmark that opts in (``CodeTrace.start()`` first thing in its ``main``) runs under cProfile
(C-level, builtins off; it made a 10,000-transition distillation about 1.2-1.4x slower here, so
wall times in such a results file are the traced ones), which lists the library functions the
process executed. Each cell it computes is stamped with the hash of the source of every library
function the process had executed by the end of that cell (its own, and everything computed
before it that could have fed it: a superset), plus the hash of the skeleton of every library
module loaded in the process (the module with its function bodies taken out: constants, dataclass
fields and defaults, class attributes, imports, and the functions that module-level code and
decorators call), because module-level data is read without a call cProfile would see; a module
never imported cannot have shaped a result.

A cell stays fresh while all of that is unchanged, so an edit to library code the benchmark never
ran (another algorithm's adapter, the fine-tuning job, the CLI) does not make it stale; any edit to
a function it ran, or to a module-level statement of a module it loaded, does. Hashes are of syntax trees
without docstrings, so comments, docstrings and layout never count.

The env presets (``envs/<EnvId>.yml``) are data, not code, yet they set a run's budgets where its
config leaves them open: a cell's code map also holds, for every env whose preset the process looked
up (``load_preset``, ``has_preset``, watched from the first traced cell on), the hash of that
preset's values (``envs/<EnvId>.yml``; "absent" where the env had none). Editing a preset's values,
or adding one, makes those cells stale; a comment does not. Cells computed before presets were
recorded (2026-12-04) carry no such entries: the presets' values had not changed since the
repository began, but a later edit cannot flag them.

Not seen by a profile of this process, so not traced: cells computed in other processes (Ray
tasks), which are stamped with the whole library's fingerprint instead. Cells a benchmark computes
in its own process without the profiler (timed ones: ``vs_imitation``'s samples per second,
``kickstart``'s fine-tuning runs) are stamped with every function of every library module the
process had loaded (``loaded_stamp``): an edit to a module it never imported (the CLI, export,
Ray) leaves them fresh. Latency measurements
(``policykd.jobs.evaluate.call_latency_ms``) run with the profiler paused, so they time the
policy, not the profiler.
"""

from __future__ import annotations

import ast
import contextlib
import cProfile
import functools
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from policykd.fileio import read_json, write_json_atomic
from policykd.zoo import presets

MODULE = "<module>"  # "path.py:<module>": that module's skeleton; alone (early maps): every module's, as one hash
PRESET_KEY = "envs/{}.yml"  # a code map's key for the preset of an env the process looked up
PRESET_PREFIX, PRESET_SUFFIX = PRESET_KEY.split("{}")
ABSENT = "absent"  # its value where that env had no preset


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of every module, class and function removed (in place)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _outermost_functions(body: list[ast.stmt], prefix: str = "") -> Iterator[tuple[str, ast.stmt, list, int]]:
    """(qualified name, node, the list holding it, its first line) of each function defined at
    module level or in a class body (nested classes included); a function's inner functions and
    classes belong to it."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])  # cProfile's line: the decorator's
            yield prefix + node.name, node, body, first
        elif isinstance(node, ast.ClassDef):
            yield from _outermost_functions(node.body, f"{prefix}{node.name}.")


def _called_name(node: ast.expr) -> str | None:
    """The name a call (or a decorator, which is called) calls: ``f`` in ``f(x)``, ``m.f(x)``, ``@f``."""
    func = node.func if isinstance(node, ast.Call) else node
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


class ModuleCode:
    """One module's function hashes, the line span of each function, and its skeleton's hash."""

    def __init__(self, source: str) -> None:
        tree = strip_docstrings(ast.parse(source))
        self.hashes: dict[str, str] = {}
        self.spans: list[tuple[int, int, str]] = []
        found = list(_outermost_functions(tree.body))
        for name, node, _, first in found:
            self.hashes[name] = _digest(ast.dump(node))
            self.spans.append((first, node.end_lineno or first, name))
        decorators = [d for _, node, _, _ in found for d in node.decorator_list]
        for _, node, holder, _ in found:  # then cut them out of the tree: what is left is the skeleton
            holder.remove(node)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and not node.body:
                node.body = [ast.Pass()]
        self.skeleton = _digest(ast.dump(tree))
        # functions that run at import (called by module-level code or as decorators), by name: their
        # code shapes module-level data, so it counts as the skeleton's
        calls = [n for root in [tree, *decorators] for n in ast.walk(root) if isinstance(n, ast.Call)]
        self.import_time_calls = sorted({_called_name(n) for n in [*calls, *decorators]} - {None})

    def function_at(self, line: int) -> str:
        """The outermost function whose source holds ``line`` (a code object's first line), or
        MODULE for code outside every function (a module-level lambda or comprehension)."""
        for first, last, name in self.spans:
            if first <= line <= last:
                return name
        return MODULE


class LibraryCode:
    """The library's code as hashed for stamps: ``ModuleCode`` per module (path relative to the
    library folder), read from the files once."""

    def __init__(self, library_dir: Path) -> None:
        self.library_dir = library_dir.resolve()
        self.modules = {
            path.relative_to(self.library_dir).as_posix(): ModuleCode(path.read_text())
            for path in sorted(self.library_dir.rglob("*.py"))
        }
        by_name: dict[str, list[str]] = {}  # a function's last name -> the hashes of every function so named
        for module in self.modules.values():
            for name, digest in module.hashes.items():
                by_name.setdefault(name.rpartition(".")[2], []).append(digest)
        self.skeletons = {
            path: _digest(json.dumps([m.skeleton] + [h for name in m.import_time_calls for h in by_name.get(name, [])]))
            for path, m in self.modules.items()
        }
        self.skeleton = _digest(json.dumps(self.skeletons))  # every module's: the key MODULE of early maps

    def module_of(self, filename: str) -> str | None:
        """``filename``'s path relative to the library folder, or None outside it."""
        path = Path(filename).resolve()
        return path.relative_to(self.library_dir).as_posix() if path.is_relative_to(self.library_dir) else None

    def code_map(self, executed: list[tuple[str, int]], loaded: list[str]) -> dict[str, str]:
        """{"module.py:function": hash} of the library functions among ``executed`` (code objects'
        file and first line), and {"module.py:<module>": hash} of the skeleton of each ``loaded``
        module (paths relative to the library folder) and of each module a function ran from."""
        found = {f"{m}:{MODULE}": self.skeletons[m] for m in loaded if m in self.skeletons}
        for filename, line in executed:
            module = self.module_of(filename)
            code = self.modules.get(module) if module is not None else None
            if code is None:
                continue  # outside the library, or a file that appeared after the hashes were read
            found[f"{module}:{MODULE}"] = self.skeletons[module]
            name = code.function_at(line)
            if name != MODULE:
                found[f"{module}:{name}"] = code.hashes[name]
        return dict(sorted(found.items()))

    def loaded_map(self, loaded: list[str]) -> dict[str, str]:
        """{"module.py:<module>": hash, "module.py:function": hash} of every ``loaded`` module's
        skeleton and of every function in it, run or not."""
        found = {}
        for module in loaded:
            if module in self.modules:
                found[f"{module}:{MODULE}"] = self.skeletons[module]
                found.update({f"{module}:{name}": digest for name, digest in self.modules[module].hashes.items()})
        return dict(sorted(found.items()))

    def changed(self, code_map: dict[str, str]) -> list[str]:
        """The keys of ``code_map`` whose code is no longer the same (missing counts as changed)."""
        changed = []
        for key, recorded in code_map.items():
            module, _, name = key.partition(":")
            if key == MODULE:
                current = self.skeleton
            elif name == MODULE:
                current = self.skeletons.get(module)
            else:
                current = self.modules[module].hashes.get(name) if module in self.modules else None
            if current != recorded:
                changed.append(key)
        return changed


class CodeTrace:
    """A process-wide profile of the library code a benchmark executes, and the content-addressed
    store of the code maps cells are stamped with: ``maps_dir/<digest>.json``, written once and
    never rewritten (a quick run adds files, changes none)."""

    def __init__(self, library_dir: Path, maps_dir: Path) -> None:
        self.library_dir, self.maps_dir = library_dir, maps_dir
        self._profile: cProfile.Profile | None = None
        self.presets_seen: set[str] = set()  # env ids whose preset the process looked up (watch_presets)
        self._unwatch: Callable[[], None] | None = None
        self._preset_digests: dict[str, str] = {}  # read once per process, as the library's source is

    @functools.cached_property
    def library(self) -> LibraryCode:  # read once per process: the source does not change while a benchmark runs
        return LibraryCode(self.library_dir)

    @property
    def active(self) -> bool:
        return self._profile is not None

    def start(self) -> None:
        """Profile the rest of this process (idempotent), latency measurements excepted."""
        if self._profile is not None:
            return
        from policykd.jobs import evaluate

        self.library  # hash the source now, before any of it runs
        self.watch_presets()
        evaluate.call_latency_ms = self._paused(evaluate.call_latency_ms)
        self._profile = cProfile.Profile(builtins=False)
        self._profile.enable()

    def stop(self) -> None:
        """End the profile (tests; a benchmark's profile ends with its process)."""
        if self._profile is None:
            return
        from policykd.jobs import evaluate

        self._profile.disable()
        self._profile = None
        evaluate.call_latency_ms = evaluate.call_latency_ms.__wrapped__
        self.unwatch_presets()

    def watch_presets(self) -> None:
        """From now on, note each env id whose preset file the process looks up (idempotent): the
        library's ``load_preset`` (reading the file) and ``has_preset`` are swapped, in every loaded
        module that holds them, for wrappers that note the id and call them."""
        if self._unwatch is not None:
            return
        originals = {"load_preset": presets.load_preset, "has_preset": presets.has_preset}

        def load_preset(env_id: str, use_file: bool = True) -> dict[str, Any]:
            if use_file:
                self.presets_seen.add(env_id)
            return originals["load_preset"](env_id, use_file)

        def has_preset(env_id: str) -> bool:
            self.presets_seen.add(env_id)
            return originals["has_preset"](env_id)

        wrappers = {"load_preset": load_preset, "has_preset": has_preset}
        swapped = [(module, name) for module in list(sys.modules.values()) for name, original in originals.items()
                   if getattr(module, "__dict__", {}).get(name) is original]  # fmt: skip
        for module, name in swapped:
            setattr(module, name, wrappers[name])
        self._unwatch = lambda: [setattr(module, name, originals[name]) for module, name in swapped]

    def unwatch_presets(self) -> None:
        """Put the library's own preset functions back (tests)."""
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def _preset_map(self) -> dict[str, str]:
        return {PRESET_KEY.format(env_id): self._preset_digest(env_id) for env_id in sorted(self.presets_seen)}

    def _preset_digest(self, env_id: str) -> str:
        if env_id not in self._preset_digests:
            self._preset_digests[env_id] = preset_digest(env_id)
        return self._preset_digests[env_id]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No profiling inside: for timing, and for publishing results (code that renders finished
        cells feeds none, so it must not join the stamps of the cells computed after it)."""
        if self._profile is None:
            yield
            return
        self._profile.disable()
        try:
            yield
        finally:
            self._profile.enable()

    def _paused(self, timed: Callable[..., float]) -> Callable[..., float]:
        @functools.wraps(timed)
        def paused(*args: Any, **kwargs: Any) -> float:
            with self.paused():
                return timed(*args, **kwargs)

        return paused

    def stamp(self) -> str:
        """The digest of the code map of everything the library executed in this process so far
        (stored under ``maps_dir`` if new). Only while ``active``."""
        assert self._profile is not None, "CodeTrace.start() first"
        executed = [(entry.code.co_filename, entry.code.co_firstlineno) for entry in self._profile.getstats()
                    if not isinstance(entry.code, str)]  # fmt: skip
        return self._stored({**self.library.code_map(executed, self._loaded_modules()), **self._preset_map()})

    def loaded_stamp(self) -> str:
        """The digest of the code map of every function of every library module loaded in this
        process (stored as :meth:`stamp`'s are): for a cell computed in this process without the
        profiler (a timed benchmark), a superset of the code it ran, since a module never imported
        cannot have run. Coarser than :meth:`stamp`, far finer than the whole library's fingerprint."""
        return self._stored({**self.library.loaded_map(self._loaded_modules()), **self._preset_map()})

    def _loaded_modules(self) -> list[str]:
        loaded = [self.library.module_of(m.__file__) for m in list(sys.modules.values())
                  if isinstance(getattr(m, "__file__", None), str)]  # fmt: skip
        return [m for m in loaded if m is not None]

    def _stored(self, code_map: dict[str, str]) -> str:
        """``code_map``'s digest, the map written under ``maps_dir`` if new."""
        digest = _digest(json.dumps(code_map, sort_keys=True))
        path = self.maps_dir / f"{digest}.json"
        if not path.is_file():
            write_json_atomic(path, code_map)
        return digest

    def changed(self, digest: str) -> list[str] | None:
        """What changed since the cell stamped ``digest`` was computed ([] if nothing), or None
        when its code map is missing."""
        path = self.maps_dir / f"{digest}.json"
        if not path.is_file():
            return None
        code_map = _read_map(path)
        read = {key: value for key, value in code_map.items() if key.startswith(PRESET_PREFIX)}
        code = {key: value for key, value in code_map.items() if key not in read}
        return self.library.changed(code) + [
            key for key, value in read.items() if self._preset_digest(env_of(key)) != value
        ]


def preset_digest(env_id: str) -> str:
    """The hash of ``env_id``'s preset values as the library reads them (comments and layout aside),
    or ABSENT where the env has no preset file."""
    path = presets.presets_dir() / f"{env_id}.yml"
    if not path.is_file():
        return ABSENT
    return _digest(json.dumps(yaml.safe_load(path.read_text()) or {}, sort_keys=True, default=str))


def env_of(key: str) -> str:
    """The env id a code map's PRESET_KEY names."""
    return key.removeprefix(PRESET_PREFIX).removesuffix(PRESET_SUFFIX)


@functools.cache
def _read_map(path: Path) -> dict[str, str]:  # many cells share a map
    return read_json(path)
