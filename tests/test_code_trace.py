"""benchmarks/code_trace.py: a cached cell is stale exactly when library code it could have run
changed: a function the benchmark executed, or module-level code anywhere; not when a function it
never ran changed, nor for comments and docstrings."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import code_trace  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import common  # noqa: E402

SOURCE = '''\
"""A toy library module."""
import functools

SCALE = 2


def register(f):
    return f


@register
def used(x):
    """Doubled."""
    return helper(x) * SCALE


def helper(x):
    return [x for _ in range(1)][0]


def unused(x):
    return x - 1


class Box:
    size = 3

    @functools.cache
    def area(self):
        return self.size**2
'''


def write_library(root: Path, source: str = SOURCE) -> Path:
    package = root / "toylib"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(source)
    return package


def edited(old: str, new: str) -> str:
    assert old in SOURCE
    return SOURCE.replace(old, new)


def test_each_function_has_its_own_hash_and_the_rest_is_the_skeleton():
    base = code_trace.ModuleCode(SOURCE)
    assert set(base.hashes) == {"register", "used", "helper", "unused", "Box.area"}
    body = code_trace.ModuleCode(edited("return x - 1", "return x - 2"))
    assert [k for k in base.hashes if base.hashes[k] != body.hashes[k]] == ["unused"]
    assert body.skeleton == base.skeleton
    constant = code_trace.ModuleCode(edited("SCALE = 2", "SCALE = 3"))
    assert constant.hashes == base.hashes and constant.skeleton != base.skeleton
    attribute = code_trace.ModuleCode(edited("size = 3", "size = 4"))
    assert attribute.skeleton != base.skeleton
    cosmetic = code_trace.ModuleCode(edited('"""Doubled."""', "# twice\n    "))
    assert cosmetic.hashes == base.hashes and cosmetic.skeleton == base.skeleton


def test_a_code_objects_first_line_finds_its_outermost_function():
    code = code_trace.ModuleCode(SOURCE)
    lines = SOURCE.splitlines()
    decorator = lines.index("@register") + 1  # cProfile reports a decorated function at its decorator
    comprehension = lines.index("    return [x for _ in range(1)][0]") + 1
    assert code.function_at(decorator) == "used"
    assert code.function_at(comprehension) == "helper"
    assert code.function_at(lines.index("SCALE = 2") + 1) == code_trace.MODULE


def test_a_function_called_at_import_counts_as_module_level(tmp_path):
    before = code_trace.LibraryCode(write_library(tmp_path / "a"))
    after = code_trace.LibraryCode(
        write_library(tmp_path / "b", edited("    return f\n", "    return f  # x\n    pass\n"))
    )
    assert before.skeleton != after.skeleton  # `register` runs as a decorator when the module is imported


@pytest.fixture(autouse=True)
def no_preset_watch_left():
    """A cached_run outside a started trace watches preset lookups for the benchmarks' own trace:
    put the library's functions back after each test."""
    yield
    common.CODE_TRACE.unwatch_presets()


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy library importable as ``toylib``, and a fresh trace over it."""
    library = write_library(tmp_path / "src")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    sys.modules.pop("toylib.mod", None)
    sys.modules.pop("toylib", None)
    trace = code_trace.CodeTrace(library, tmp_path / "maps")
    yield trace, library, importlib.import_module("toylib.mod")
    trace.stop()
    sys.modules.pop("toylib.mod", None)
    sys.modules.pop("toylib", None)


def recheck(trace: code_trace.CodeTrace, library: Path, digest: str, source: str) -> list[str] | None:
    (library / "mod.py").write_text(source)
    return code_trace.CodeTrace(library, trace.maps_dir).changed(digest)  # a later process reads the new source


def test_only_edits_to_what_ran_make_a_stamp_stale(toy):
    trace, library, mod = toy
    trace.start()
    assert mod.used(3) == 6
    digest = trace.stamp()
    code_map = code_trace.read_json(trace.maps_dir / f"{digest}.json")
    assert {"mod.py:used", "mod.py:helper", "mod.py:<module>", "__init__.py:<module>"} <= set(code_map)
    assert "mod.py:unused" not in code_map
    assert recheck(trace, library, digest, SOURCE) == []
    assert recheck(trace, library, digest, edited("return x - 1", "return x + 1")) == []  # never ran
    assert recheck(trace, library, digest, edited("range(1)", "range(2)")) == ["mod.py:helper"]
    assert recheck(trace, library, digest, edited("SCALE = 2", "SCALE = 5")) == ["mod.py:<module>"]
    (library / "mod.py").write_text(SOURCE)
    (library / "never_imported.py").write_text("LIMIT = 2\n")  # a module the process never loaded
    assert code_trace.CodeTrace(library, trace.maps_dir).changed(digest) == []
    assert code_trace.CodeTrace(library, trace.maps_dir / "elsewhere").changed(digest) is None


def test_latency_is_timed_with_the_profiler_paused(toy):
    from policykd.jobs import evaluate

    trace = toy[0]
    original = evaluate.call_latency_ms
    seen = []
    trace.start()
    evaluate.call_latency_ms.__wrapped__  # the timing function is wrapped while tracing
    assert evaluate.action_latency_ms(lambda obs: seen.append(sys.getprofile()), __import__("numpy").zeros(2), 3)
    assert seen and all(p is None for p in seen) and sys.getprofile() is not None
    with trace.paused():
        assert sys.getprofile() is None
    assert sys.getprofile() is not None
    trace.stop()
    assert evaluate.call_latency_ms is original and sys.getprofile() is None


def test_cached_run_keeps_a_traced_cell_fresh_until_code_it_ran_changes(toy, tmp_path, monkeypatch):
    trace, library, mod = toy
    monkeypatch.setattr(common, "CODE_TRACE", trace)
    monkeypatch.setattr(common, "STALE_CELLS", [])
    monkeypatch.setattr(common, "library_fingerprint", lambda: "v1")
    trace.start()
    assert common.cached_run(tmp_path / "cells", "cell", lambda: {"value": mod.used(1)}) == {"value": 2}
    untraced = common.cached_run(tmp_path / "cells", "untraced", lambda: {"value": 0}, traced=False)
    trace.stop()
    monkeypatch.setattr(common, "library_fingerprint", lambda: "v2")  # the library changed ...

    def read_back(source: str) -> list[str]:
        (library / "mod.py").write_text(source)
        monkeypatch.setattr(common, "CODE_TRACE", code_trace.CodeTrace(library, trace.maps_dir))
        common.STALE_CELLS.clear()
        for name in ("cell", "untraced"):
            common.cached_run(tmp_path / "cells", name, pytest.fail)  # read back, never rerun
        return [Path(cell).name for cell in common.STALE_CELLS]

    assert untraced == {"value": 0}
    assert read_back(edited("return x - 1", "return x * 7")) == ["untraced.json"]  # ... but not what the cell ran
    assert read_back(edited("* SCALE", "* SCALE + 1")) == ["cell.json", "untraced.json"]


def test_a_cell_run_in_other_processes_keeps_the_whole_library_stamp(toy, tmp_path, monkeypatch):
    import dataclasses

    from policykd.jobs.config import DistillConfig

    trace = toy[0]
    monkeypatch.setattr(common, "CODE_TRACE", trace)
    trace.start()
    for name, config in {"here": DistillConfig(), "ray": dataclasses.replace(DistillConfig(), backend="ray"),
                         "subproc": dataclasses.replace(DistillConfig(), vec_env="subproc")}.items():  # fmt: skip
        common.cached_run(tmp_path, name, lambda: {"value": 1}, config=config)
    trace.stop()
    stamps = {
        name: common.read_json(tmp_path / f"{name}.json")[common.CACHE_STAMP] for name in ("here", "ray", "subproc")
    }
    assert "code" in stamps["here"] and "code" not in stamps["ray"] and "code" not in stamps["subproc"]


def test_a_cell_computed_without_the_profiler_is_stamped_with_the_modules_it_loaded(toy, tmp_path, monkeypatch):
    """A timed benchmark (no profiler) stamps each cell with every function of every library module
    loaded: a module never imported may change, any function of a loaded one may not."""
    trace, library, mod = toy
    monkeypatch.setattr(common, "CODE_TRACE", trace)
    monkeypatch.setattr(common, "STALE_CELLS", [])
    monkeypatch.setattr(common, "library_fingerprint", lambda: "v1")
    assert not trace.active
    assert common.cached_run(tmp_path / "cells", "timed", lambda: {"value": mod.used(1)}) == {"value": 2}
    stamp = common.read_json(tmp_path / "cells" / "timed.json")[common.CACHE_STAMP]
    code_map = common.read_json(trace.maps_dir / f"{stamp['code']}.json")
    assert {"mod.py:used", "mod.py:unused", "mod.py:<module>"} <= set(code_map)  # run or not
    monkeypatch.setattr(common, "library_fingerprint", lambda: "v2")  # the library changed ...
    (library / "never_imported.py").write_text("LIMIT = 2\n")
    monkeypatch.setattr(common, "CODE_TRACE", code_trace.CodeTrace(library, trace.maps_dir))
    assert common.is_fresh(stamp)  # ... in a module the benchmark never loaded
    assert recheck(trace, library, stamp["code"], edited("return x - 1", "return x + 1")) == ["mod.py:unused"]


def test_a_cell_is_stale_when_a_preset_it_looked_up_changes_its_values(toy, tmp_path, monkeypatch):
    from policykd.jobs import resolve
    from policykd.zoo import presets

    envs = tmp_path / "envs"
    envs.mkdir()
    (envs / "Toy-v0.yml").write_text("# budgets\nn_updates: 100\n")
    monkeypatch.setattr(presets, "presets_dir", lambda: envs)
    trace, library, mod = toy
    before = presets.load_preset
    trace.start()
    assert resolve.load_preset("Toy-v0")["n_updates"] == 100  # looked up through a module that imported it
    assert not presets.has_preset("Bare-v0")
    digest = trace.stamp()
    trace.stop()
    assert resolve.load_preset is presets.load_preset is before  # the library's own functions are back
    assert {"envs/Toy-v0.yml", "envs/Bare-v0.yml"} <= set(code_trace.read_json(trace.maps_dir / f"{digest}.json"))

    def changed_after(path: Path, text: str) -> list[str] | None:
        path.write_text(text)
        return code_trace.CodeTrace(library, trace.maps_dir).changed(digest)

    assert changed_after(envs / "Toy-v0.yml", "n_updates: 100  # a comment\n") == []
    assert changed_after(envs / "Toy-v0.yml", "n_updates: 300\n") == ["envs/Toy-v0.yml"]
    (envs / "Toy-v0.yml").write_text("n_updates: 100\n")
    assert changed_after(envs / "Bare-v0.yml", "n_updates: 5\n") == ["envs/Bare-v0.yml"]  # a preset added since
